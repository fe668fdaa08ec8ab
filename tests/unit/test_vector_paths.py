"""The vector paths of big sections give exactly what the row-by-row paths give.

A section with ``vector.MIN_ROWS`` relocations or more is parsed, scanned,
fixed up and (``.eh_frame``) checked as numpy columns, with native helpers
for the ``.eh_frame`` walk and CFA programs (``native.py``).  Each test
here runs both paths on the same real object, all of Debian's
``libsqlite3.a`` merged by ``ld -r`` (2 MB, 24,000 relocations, 2,700
FDEs; the object of ``benchmarks/big_object.py``), and compares: the bytes
written, the plans, the symbol columns, and, for every kind of damage, the
error and its message.  The last test links the object and runs SQL in it.
"""
from __future__ import annotations

import ctypes
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hotlink
from hotlink import ehframe, elf, native, vector
from hotlink.elf import ObjectFile, RelaColumns
from hotlink.errors import MalformedObjectError, UnsupportedRelocationError
from hotlink.x86_64 import Fixups, Reloc, Scanner

LIBSQLITE3_A = Path("/usr/lib/x86_64-linux-gnu/libsqlite3.a")
BASE = 0x7F00_0000_0000         # where the tests pretend the object is placed


@pytest.fixture(scope="module")
def sqlite_object(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    work = tmp_path_factory.mktemp("sqlite")
    subprocess.run(["ar", "x", str(LIBSQLITE3_A)], cwd=work, check=True)
    members = sorted(p.name for p in work.glob("*.o"))
    subprocess.run(["ld", "-r", "-o", "sqlite.o", *members], cwd=work, check=True)
    return (work / "sqlite.o").read_bytes()


@pytest.fixture(scope="module")
def obj(sqlite_object: bytes) -> ObjectFile:
    return ObjectFile(sqlite_object, "sqlite.o")


def _section(obj: ObjectFile, name: str) -> int:
    return next(i for i in range(obj.shnum) if obj.section_name(i) == name)


def _values(obj: ObjectFile, far: set[int] = frozenset()) -> list[int]:
    """Made-up symbol addresses near BASE; those in ``far`` 3 GiB away."""
    return [BASE + (3 << 30 if si in far else 0) + 0x40 * si for si in range(len(obj.sym_info))]


def _fixups(obj: ObjectFile, values: list[int], scanner: Scanner) -> Fixups:
    got = {t: BASE - 0x10000 - 8 * k for k, t in enumerate(sorted(scanner.got))}
    stubs = {t: BASE - 0x20000 - 16 * k for k, t in enumerate(sorted(scanner.stubs))}
    return Fixups(obj, values, BASE, got, stubs, obj.sym_size.__getitem__)


def _both(obj: ObjectFile, i: int, values: list[int], cols: RelaColumns | None = None) -> tuple[bytearray, bytearray]:
    """Section ``i`` fixed up by columns and by rows, from the same values."""
    data = obj.section_bytes(i)
    cols = cols or obj.relocation_columns(i)
    assert cols is not None
    rows = cols.rows()
    base = BASE + 0x1000 * i
    by_cols, by_rows = Scanner(), Scanner()
    plan = by_cols.scan_columns(data, cols, np.array(values, np.uint64), values, base)
    row_plan = by_rows.scan(data, rows, values, base)
    assert plan is not None
    assert (by_cols.got, by_cols.stubs) == (by_rows.got, by_rows.stubs)
    assert plan.special == (row_plan.special if row_plan else [])
    assert plan.relaxed == (row_plan.relaxed if row_plan else {})
    out_cols, out_rows = bytearray(data), bytearray(data)
    _fixups(obj, values, by_cols).apply_columns(out_cols, i, base, cols, plan)
    _fixups(obj, values, by_rows).apply(out_rows, i, base, rows, row_plan)
    return out_cols, out_rows


def test_the_object_takes_the_vector_paths(obj: ObjectFile) -> None:
    assert np is vector.numpy() and native.helpers() is not None
    big = [i for i in range(obj.shnum) if obj.sh_flags[i] & elf.SHF_ALLOC and obj.relocation_count(i) >= vector.MIN_ROWS]
    assert {obj.section_name(i) for i in big} >= {".text", ".rodata", ".eh_frame", ".data.rel.ro"}
    cols = obj.relocation_columns(_section(obj, ".text"))
    assert cols is not None and cols.rows() == obj.relocations(_section(obj, ".text"))
    assert {Reloc.PC32, Reloc.PLT32, Reloc.GOTPCREL, Reloc.REX_GOTPCRELX} <= set(cols.kind.tolist())
    assert Reloc.R64 in obj.relocation_columns(_section(obj, ".data.rel.ro")).kind.tolist()


def test_symbol_columns_are_the_struct_reader_s(sqlite_object: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    by_numpy = ObjectFile(sqlite_object, "sqlite.o")
    monkeypatch.setattr(vector, "MIN_ROWS", 1 << 40)
    by_struct = ObjectFile(sqlite_object, "sqlite.o")
    assert type(by_numpy.sym_value) is list and type(by_struct.sym_value) is tuple
    for column in ("sym_name", "sym_value", "sym_size", "sym_info", "sym_other", "sym_shndx"):
        assert list(getattr(by_numpy, column)) == list(getattr(by_struct, column)), column
    # ld shares tails of names in .strtab ("log" in "...log"): those are found too
    assert "log" in by_numpy.sym_name and "malloc" in by_numpy.sym_name


@pytest.mark.parametrize("section", [".text", ".rodata", ".data.rel.ro", ".data.rel.ro.local", ".data.rel"])
def test_relocations_by_columns_write_what_rows_write(obj: ObjectFile, section: str) -> None:
    i = _section(obj, section)
    by_cols, by_rows = _both(obj, i, _values(obj))
    assert by_cols == by_rows
    assert by_cols != bytearray(obj.section_bytes(i))


def test_far_branches_go_through_stubs_in_both(obj: ObjectFile) -> None:
    """Every called function 3 GiB away: PLT32 calls get stubs, by both paths."""
    text = _section(obj, ".text")
    rows = obj.relocations(text)
    far = {si for _, kind, si, _ in rows if kind == Reloc.PLT32} - {si for _, kind, si, _ in rows if kind != Reloc.PLT32}
    assert len(far) > 100
    by_cols, by_rows = _both(obj, text, _values(obj, far))
    assert by_cols == by_rows


def test_an_out_of_range_reference_is_named_alike(obj: ObjectFile) -> None:
    """A PC32 data reference 3 GiB away: the vector path hands the section
    to the row path, which names the relocation."""
    text = _section(obj, ".text")
    rows = obj.relocations(text)
    k = next(k for k, (off, kind, _, _) in enumerate(rows)
             if kind == Reloc.PC32 and obj.section_bytes(text)[off - 1] not in (0xE8, 0xE9))
    values = _values(obj, {rows[k][2]})
    with pytest.raises(UnsupportedRelocationError) as by_cols:
        _both(obj, text, values)
    data = obj.section_bytes(text)
    scanner = Scanner()
    plan = scanner.scan(data, rows, values, BASE + 0x1000 * text)
    with pytest.raises(UnsupportedRelocationError) as by_rows:
        _fixups(obj, values, scanner).apply(bytearray(data), text, BASE + 0x1000 * text, rows, plan)
    assert str(by_cols.value) == str(by_rows.value)
    assert f"+{rows[k][0]:#x}: R_X86_64_PC32 to " in str(by_cols.value)


def test_overlapping_fields_are_written_in_order(obj: ObjectFile) -> None:
    """Two relocations on one field: the later one wins, as row by row."""
    text = _section(obj, ".text")
    cols = obj.relocation_columns(text)
    assert cols is not None
    offset = cols.offset.copy()
    offset[101] = offset[100]
    by_cols, by_rows = _both(obj, text, _values(obj), RelaColumns(offset, cols.kind, cols.symbol, cols.addend))
    assert by_cols == by_rows


# --- .eh_frame -------------------------------------------------------------------

def _eh(obj: ObjectFile) -> tuple[int, bytes, RelaColumns]:
    i = _section(obj, ".eh_frame")
    cols = obj.relocation_columns(i)
    assert cols is not None
    return i, obj.section_bytes(i), cols


def _records(data: bytes) -> list[tuple[int, int, int]]:
    out, pos = [], 0
    while pos + 4 <= len(data):
        length, ident = int.from_bytes(data[pos:pos + 4], "little"), int.from_bytes(data[pos + 4:pos + 8], "little")
        if not length:
            break
        out.append((pos, pos + 4 + length, ident))
        pos += 4 + length
    return out


def _same_error(data: bytes, cols: RelaColumns, obj: ObjectFile | None = None) -> str:
    with pytest.raises(MalformedObjectError) as by_cols:
        ehframe.prune_eh_frame(data, cols, "sqlite.o:.eh_frame", obj=obj)
    with pytest.raises(MalformedObjectError) as by_rows:
        ehframe.prune_eh_frame(data, cols.rows(), "sqlite.o:.eh_frame", obj=obj)
    assert str(by_cols.value) == str(by_rows.value)
    return str(by_cols.value)


def test_eh_frame_columns_pass_what_rows_pass(obj: ObjectFile) -> None:
    _, data, cols = _eh(obj)
    out, relocs = ehframe.prune_eh_frame(data, cols, "sqlite.o:.eh_frame", obj=obj)
    assert (out, relocs) == (data[:len(out)], cols) and len(out) >= len(data) - 4
    assert ehframe.prune_eh_frame(data, cols.rows(), "sqlite.o:.eh_frame", obj=obj) == (out, cols.rows())


def test_eh_frame_columns_prune_what_rows_prune(obj: ObjectFile) -> None:
    """With FDEs to drop (as for a discarded COMDAT group), both paths keep the same."""
    _, data, cols = _eh(obj)
    symbols = sorted(set(cols.symbol.tolist()))
    sizes = []
    for dropped in (lambda si: False, lambda si: si == symbols[0], lambda si: si == symbols[1]):
        out, relocs = ehframe.prune_eh_frame(data, cols, "x", dropped)
        assert (out, relocs if isinstance(relocs, list) else relocs.rows()) == \
            ehframe.prune_eh_frame(data, cols.rows(), "x", dropped)
        sizes.append(len(out))
    assert sizes[0] > sizes[2] > sizes[1]           # FDEs of .text.unlikely, then of .text, went


def _fde(data: bytes, nth: int) -> tuple[int, int]:
    """The start and end of an FDE with a CFA program of a few instructions, from the middle."""
    fdes = [(p, e) for p, e, ident in _records(data) if ident and e - p > 28]
    return fdes[nth]


@pytest.mark.parametrize("damage, message", [
    ("restore", "DW_CFA_restore_state at"),
    ("opcode", "unknown CFA instruction 0x3f"),
    ("register", "names DWARF register 40"),
    ("pc_range", "negative pc_range"),
    ("cie_pointer", "which is no CIE"),
    ("length", "runs past the section"),
    ("program_past_end", "run past the end of the record"),
])
def test_eh_frame_damage_is_named_alike(obj: ObjectFile, damage: str, message: str) -> None:
    _, data, cols = _eh(obj)
    pos, end = _fde(data, 1000)
    d = bytearray(data)
    program = pos + 17                      # zR, pcrel sdata4: length, CIE pointer, pc_begin, pc_range, 0
    if damage == "restore":
        d[program] = 0x0B
    elif damage == "opcode":
        d[program] = 0x3F
    elif damage == "register":
        d[program:program + 3] = b"\x0c\x28\x08"     # DW_CFA_def_cfa r40, 8
    elif damage == "pc_range":
        d[pos + 15] |= 0x80
    elif damage == "cie_pointer":
        d[pos + 4:pos + 8] = (pos + 4 - 8).to_bytes(4, "little")    # at the first FDE
    elif damage == "length":
        d[pos:pos + 4] = (len(data)).to_bytes(4, "little")
    elif damage == "program_past_end":
        d[end - 1] = 0x0E                   # DW_CFA_def_cfa_offset, its operand past the record
    assert message in _same_error(bytes(d), cols)


@pytest.mark.parametrize("damage, message", [
    ("kind", "relocated with R_X86_64_64"),
    ("extra", "applies to no pointer field"),
    ("twice", "two relocations apply to one .eh_frame field"),
    ("range", "FDE covers"),
    ("target", "not code of this object"),
])
def test_eh_frame_relocation_damage_is_named_alike(obj: ObjectFile, damage: str, message: str) -> None:
    _, data, cols = _eh(obj)
    pos, _ = _fde(data, 1500)
    k = int(np.flatnonzero(cols.offset == pos + 8)[0])
    offset, kind, symbol, addend = (c.copy() for c in (cols.offset, cols.kind, cols.symbol, cols.addend))
    d = bytearray(data)
    if damage == "kind":
        kind[k] = Reloc.R64
    elif damage == "extra":
        offset[k] = pos + 17
    elif damage == "twice":
        offset[k + 1] = offset[k]
    elif damage == "range":
        d[pos + 12:pos + 16] = (0x7FFFFFF).to_bytes(4, "little")
    elif damage == "target":
        symbol[k] = next(si for si in range(len(obj.sym_info))
                         if 0 < obj.sym_shndx[si] < obj.shnum and not obj.sh_flags[obj.sym_shndx[si]] & elf.SHF_EXECINSTR)
    assert message in _same_error(bytes(d), RelaColumns(offset, kind, symbol, addend), obj)


# CFA programs: the native decode vouches only for what the Python decoder accepts,
# and for everything the regular expression (the row path's fast decode) matches.
_instruction = st.one_of(
    st.integers(0x40, 0xFF).map(lambda op: bytes([op]) + (b"\x08" if op >= 0x80 and op < 0xC0 else b"")),
    st.sampled_from([b"\x00", b"\x0a", b"\x0b", b"\x02\x10", b"\x03\x01\x02", b"\x04\x01\x02\x03\x04",
                     b"\x0e\x10", b"\x0e\x80\x01", b"\x0c\x07\x08", b"\x0d\x06", b"\x05\x03\x02", b"\x09\x10\x06",
                     b"\x0c\x11\x08", b"\x01", b"\x0f\x01\x30", b"\x2e\x08", b"\x3f"]),
    st.binary(min_size=1, max_size=3),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_instruction, max_size=40).map(b"".join), st.binary(max_size=2))
def test_native_cfa_decode_is_between_the_two(program: bytes, tail: bytes) -> None:
    data = b"\xff" * 3 + program + tail
    start, end = 3, 3 + len(program)
    h = native.helpers()
    assert h is not None
    starts, ends = np.array([start], np.int64), np.array([end], np.int64)
    ok = np.zeros(1, np.uint8)
    buf = np.frombuffer(data, np.uint8)
    h.cfa_check(buf.ctypes.data, starts.ctypes.data, ends.ctypes.data, 1, ok.ctypes.data)
    if ehframe._FAST_PROGRAM.fullmatch(data, start, end) is not None:
        assert ok[0] == 1
    if ok[0]:
        ehframe._program(data, start, end, 0x1B, {}, [])      # must not raise


def test_native_walk_finds_every_record(obj: ObjectFile) -> None:
    _, data, _ = _eh(obj)
    h = native.helpers()
    assert h is not None
    buf = np.frombuffer(data, np.uint8)
    out, stop = np.zeros(len(data) // 8 + 1, np.int64), np.zeros(1, np.int64)
    count = h.eh_records(buf.ctypes.data, len(data), out.ctypes.data, len(out), stop.ctypes.data)
    records = _records(data)
    assert out[:count].tolist() == [p for p, _, _ in records]
    assert int(stop[0]) == records[-1][1]
    assert h.eh_records(buf.ctypes.data, len(data), out.ctypes.data, 10, stop.ctypes.data) == -1   # no room


# --- the whole link ------------------------------------------------------------------

@pytest.mark.parametrize("with_numpy", [True, False])
def test_linked_by_columns_it_runs_sql(sqlite_object: bytes, monkeypatch: pytest.MonkeyPatch, with_numpy: bool) -> None:
    """Linked by the vector paths, or (numpy missing) row by row, sqlite runs SQL."""
    calls = []
    apply_columns = Fixups.apply_columns
    monkeypatch.setattr(Fixups, "apply_columns", lambda self, *a: calls.append(1) or apply_columns(self, *a))
    if not with_numpy:
        monkeypatch.setattr(vector, "_tried", True)
        monkeypatch.setattr(vector, "_numpy", None)
    with hotlink.Session() as s:
        lib = s.library("sqlite")
        lib.add(sqlite_object)
        assert len(calls) >= 5 if with_numpy else not calls
        version = lib.function("sqlite3_libversion_number", ctypes.c_int)
        assert version() == sqlite3.sqlite_version_info[0] * 1_000_000 + sqlite3.sqlite_version_info[1] * 1000 \
            + sqlite3.sqlite_version_info[2]
        db = ctypes.c_void_p()
        assert lib.function("sqlite3_open", ctypes.c_int, [ctypes.c_char_p, ctypes.c_void_p])(
            b":memory:", ctypes.byref(db)) == 0
        rows: list[bytes] = []
        callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_char_p),
                                    ctypes.c_void_p)(lambda _a, _n, values, _names: rows.append(values[0]) or 0)
        sql = b"CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (39); SELECT sum(x) || ':' || hex(zeroblob(2)) FROM t"
        exec_ = lib.function("sqlite3_exec", ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p,
                                                           ctypes.c_void_p, ctypes.c_void_p])
        assert exec_(db, sql, ctypes.cast(callback, ctypes.c_void_p), None, None) == 0
        assert rows == [b"42:0000"]
        assert lib.function("sqlite3_close", ctypes.c_int, [ctypes.c_void_p])(db) == 0
        lib.function("sqlite3_shutdown", ctypes.c_int)()


def test_the_cache_of_fde_tails_vouches_only_for_what_it_saw(obj: ObjectFile) -> None:
    """Small sections go row by row, with FDE tails (augmentation and CFA
    program) that passed kept: a record seen before passes by the cache, the
    same record with one byte of its program changed does not."""
    _, data, cols = _eh(obj)
    records = _records(data)
    cut = records[3][1]                              # a CIE and its first FDEs: a tiny object's section
    rows = [r for r in cols.rows() if r[0] < cut]
    section = data[:cut]
    ehframe._fde_cache.clear()
    assert ehframe.prune_eh_frame(section, rows, "x", obj=obj) == (section, rows)
    assert ehframe._fde_cache                       # the tails were kept ...
    assert ehframe.prune_eh_frame(section, rows, "x", obj=obj) == (section, rows)     # ... and found
    pos, end, _ = records[2]
    d = bytearray(section)
    d[end - 1] = 0x0B                                # DW_CFA_restore_state, nothing remembered
    with pytest.raises(MalformedObjectError, match=r"\+0x[0-9a-f]+: FDE has DW_CFA_restore_state"):
        ehframe.prune_eh_frame(bytes(d), rows, "x", obj=obj)
    d = bytearray(section)
    d[pos + 15] |= 0x80                              # pc_range negative: not part of the tail
    with pytest.raises(MalformedObjectError, match="negative pc_range"):
        ehframe.prune_eh_frame(bytes(d), rows, "x", obj=obj)


def test_without_the_native_helpers_columns_still_check(obj: ObjectFile, monkeypatch: pytest.MonkeyPatch) -> None:
    """If llvmlite cannot compile the helpers, the records are walked in
    Python and the programs decoded by the regular expression: same results."""
    _, data, cols = _eh(obj)
    with_helpers = ehframe.prune_eh_frame(data, cols, "sqlite.o:.eh_frame", obj=obj)
    monkeypatch.setattr(native, "helpers", lambda: None)
    assert ehframe.prune_eh_frame(data, cols, "sqlite.o:.eh_frame", obj=obj) == with_helpers
    pos, _ = _fde(data, 700)
    d = bytearray(data)
    d[pos + 17] = 0x0B
    assert "DW_CFA_restore_state at" in _same_error(bytes(d), cols)
