"""A corrupt ``.eh_frame`` is refused at link time (issue 9, item 4).

libgcc decodes every registered ``.eh_frame`` the next time any C++ exception
searches for a frame, and it answers what it cannot decode with ``abort()``.
So ``add`` must refuse, with a ``MalformedObjectError`` naming the section and
the record, anything libgcc could choke on, leave the session as it was, and
C++ exceptions must keep working afterwards.  Every load of a corrupt object
runs in its own interpreter (the ``scenario`` fixture): a crash is a failing
test, not a dead test run.

The module also holds the little ``.eh_frame`` walker and the mutations the
property test uses; the property test's interpreter imports them from here.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parents[1]

# A C++ unit whose exceptions need both kinds of CIE g++ emits: "zR" for
# functions without a landing pad and "zPLR" (personality, LSDA) for those with one.
CXX_SOURCE = r"""
#include <stdexcept>
#include <string>
struct Guard { std::string s; ~Guard(); };
Guard::~Guard() {}
extern "C" int eh_plain(int x) { return x * 2 + 1; }
extern "C" int eh_thrower(int x) { if (x > 0) throw std::runtime_error("boom " + std::to_string(x)); return x; }
extern "C" int eh_catcher(int x) {
    try { Guard g{"guard"}; return eh_thrower(x); }
    catch (const std::exception &e) { return 100 + x; }
}
"""

# The independent witness: C++ throw/catch linked by hotlink, called after every corruption.
CHECKER_SOURCE = r"""
#include <stdexcept>
extern "C" int throw_catch(int x) {
    try { if (x >= 0) throw std::logic_error("fine"); } catch (const std::exception &) { return x + 42; }
    return -1;
}
"""

# A C unit with remember/restore_state (early returns) and a hand-written
# function whose CFI uses DWARF expressions and DW_CFA_GNU_args_size:
#   push %rbp; mov %rsp,%rbp; CFA = rbp + 16 (an expression), rbp saved at *(rbp) (an expression).
C_SOURCE = r"""
#include <string.h>
__attribute__((noinline)) int sink(void *p, int n) { return n + (int)((long)p & 7); }
int plain(int x) { return x * 3 + 1; }
int early(int *p, int n) {
    if (!p) return -1;
    int s = 0;
    for (int i = 0; i < n; i++) s += sink(p + i, p[i]);
    return s;
}
int aligned(int n) { double v[8] __attribute__((aligned(64))); memset(v, 0, sizeof v); return sink(v, n); }
__asm__(
    ".text\n.globl cfi_expr\n.type cfi_expr,@function\ncfi_expr:\n"
    ".cfi_startproc\n"
    "push %rbp\n.cfi_def_cfa_offset 16\n.cfi_offset %rbp, -16\n"
    "mov %rsp, %rbp\n"
    ".cfi_escape 0x0f, 0x02, 0x76, 0x10\n"          /* DW_CFA_def_cfa_expression: DW_OP_breg6 16 */
    ".cfi_escape 0x10, 0x06, 0x02, 0x76, 0x00\n"    /* DW_CFA_expression rbp: DW_OP_breg6 0 */
    ".cfi_escape 0x2e, 0x00\n"                      /* DW_CFA_GNU_args_size 0 */
    "lea 1(%rdi), %eax\n"
    "pop %rbp\n.cfi_def_cfa %rsp, 8\n.cfi_same_value %rbp\n"
    "ret\n.cfi_endproc\n.size cfi_expr, .-cfi_expr\n");
"""

# An LLVM object (llvmlite's defaults: large code model, so 8-byte pc-relative
# FDE pointers, encoding 0x1c, relocated with R_X86_64_PC64).
LLVM_IR = r"""
declare void @llvm.memset.p0.i64(ptr, i8, i64, i1)
define i32 @ll_square(i32 %x) noinline {
  %r = mul i32 %x, %x
  ret i32 %r
}
define i32 @ll_frame(i32 %x) {
  %a = alloca [64 x i32]
  call void @llvm.memset.p0.i64(ptr %a, i8 0, i64 256, i1 false)
  %p = getelementptr [64 x i32], ptr %a, i32 0, i32 %x
  store i32 %x, ptr %p
  %s = call i32 @ll_square(i32 %x)
  %q = getelementptr [64 x i32], ptr %a, i32 0, i32 3
  %t = load i32, ptr %q
  %r = add i32 %s, %t
  ret i32 %r
}
"""


# --- finding things in .eh_frame (independent of hotlink's reader) ----------

def _uleb(d: bytes, p: int) -> tuple[int, int]:
    v = shift = 0
    while True:
        b = d[p]
        p += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return v, p


_SIZES = {0x0: 8, 0x2: 2, 0x3: 4, 0x4: 8, 0xA: 2, 0xB: 4, 0xC: 8}


@dataclass
class Record:
    """One CIE or FDE; every offset is relative to the section."""
    start: int
    length: int
    is_cie: bool
    end: int = 0
    version_at: int = -1
    aug: bytes = b""
    aug_at: int = -1            # first byte of the augmentation string
    aug_len_at: int = -1        # the ULEB128 augmentation data length
    enc_at: dict[str, int] = field(default_factory=dict)   # 'R'/'P'/'L' -> offset of its encoding byte
    ra_at: int = -1
    pc_range_at: int = -1
    pc_size: int = 0
    program_at: int = -1


def eh_frame_section(data: bytes) -> tuple[int, int]:
    """(file offset, size) of the object's ``.eh_frame``, from the section headers."""
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    strtab = headers[shstrndx][4]
    for h in headers:
        name = data[strtab + h[0]:data.index(b"\0", strtab + h[0])]
        if name == b".eh_frame":
            return h[4], h[5]
    raise AssertionError("no .eh_frame")


def rela_eh_frame(data: bytes) -> tuple[int, int]:
    """(file offset, entry count) of the object's ``.rela.eh_frame``."""
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    strtab = struct.unpack_from("<IIQQQQIIQQ", data, shoff + shstrndx * shentsize)[4]
    for i in range(shnum):
        h = struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)
        if data[strtab + h[0]:data.index(b"\0", strtab + h[0])] == b".rela.eh_frame":
            return h[4], h[5] // 24
    raise AssertionError("no .rela.eh_frame")


def records(section: bytes) -> list[Record]:
    out: list[Record] = []
    cies: dict[int, Record] = {}
    pos = 0
    while pos + 4 <= len(section):
        length, = struct.unpack_from("<I", section, pos)
        if length == 0:
            break
        cie_id, = struct.unpack_from("<I", section, pos + 4)
        r = Record(pos, length, cie_id == 0, end=pos + 4 + length)
        p = pos + 8
        if r.is_cie:
            r.version_at = p
            r.aug_at = p + 1
            nul = section.index(b"\0", p + 1)
            r.aug = section[p + 1:nul]
            p = _uleb(section, nul + 1)[1]
            p = _uleb(section, p)[1]
            r.ra_at = p
            p = p + 1 if section[r.version_at] == 1 else _uleb(section, p)[1]
            if r.aug.startswith(b"z"):
                r.aug_len_at = p
                n, p = _uleb(section, p)
                r.program_at = p + n
                for c in r.aug[1:].decode():
                    if c in "RPL":
                        r.enc_at[c] = p
                        enc = section[p]
                        p += 1
                        if c == "P":
                            p += _SIZES[enc & 0x0F]
            else:
                r.program_at = p
            cies[pos] = r
        else:
            cie = cies[pos + 4 - cie_id]
            enc = section[cie.enc_at["R"]] if "R" in cie.enc_at else 0
            r.pc_size = _SIZES[enc & 0x0F]
            r.pc_range_at = p + r.pc_size
            p += 2 * r.pc_size
            if cie.aug.startswith(b"z"):
                r.aug_len_at = p
                n, p = _uleb(section, p)
                p += n
            r.program_at = p
        out.append(r)
        pos = r.end
    return out


class Layout:
    """Where an object's ``.eh_frame`` is and what is in it."""

    def __init__(self, data: bytes):
        self.offset, self.size = eh_frame_section(data)
        self.records = records(data[self.offset:self.offset + self.size])

    def cie(self, aug: bytes) -> Record:
        return next(r for r in self.records if r.is_cie and r.aug == aug)

    def fdes(self, aug: bytes | None = None) -> list[Record]:
        return [r for r in self.records if not r.is_cie
                and (aug is None or self.cie_of(r).aug == aug)]

    def cie_of(self, fde: Record) -> Record:
        return next(r for r in reversed(self.records) if r.is_cie and r.start < fde.start)


def patched(data: bytes, layout: Layout, at: int, new: bytes) -> bytes:
    """``data`` with the bytes at section offset ``at`` replaced by ``new``."""
    buf = bytearray(data)
    buf[layout.offset + at:layout.offset + at + len(new)] = new
    return bytes(buf)


# --- mutations for the property test ----------------------------------------

FIELDS = ("length", "cie_id", "version", "aug_char", "aug_len", "encoding", "ra", "pc_range",
          "fde_aug_len", "cfa_op", "cfa_byte")
INTERESTING_BYTES = (0x00, 0x01, 0x03, 0x04, 0x05, 0x09, 0x0B, 0x0C, 0x0F, 0x10, 0x13, 0x14, 0x1B,
                     0x1C, 0x2D, 0x3F, 0x40, 0x50, 0x7B, 0x7F, 0x80, 0x8B, 0x90, 0x9B, 0xC0, 0xFF,
                     ord("z"), ord("R"), ord("P"), ord("L"), ord("S"), ord("B"), ord("e"), ord("h"))


def mutation_strategy():
    from hypothesis import strategies as st
    where = st.floats(0, 1, exclude_max=True)
    value = st.one_of(st.sampled_from(INTERESTING_BYTES), st.integers(0, 255), st.integers(0, (1 << 64) - 1))
    return st.one_of(
        st.tuples(st.just("flip"), where, st.integers(0, 7)),
        st.tuples(st.just("byte"), where, st.integers(0, 255)),
        st.tuples(st.just("field"), where, st.sampled_from(FIELDS), value),
        st.tuples(st.just("truncate"), where, st.floats(0, 1)),
    )


def _field(layout: Layout, which: float, name: str) -> tuple[int, int] | None:
    """(section offset, width) of field ``name`` in the record ``which`` picks among those that have it."""
    rs = layout.records
    cies = [r for r in rs if r.is_cie]
    fdes = [r for r in rs if not r.is_cie]
    if name == "length":
        r = rs[int(which * len(rs))]
        return r.start, 4
    if name == "cie_id":
        r = rs[int(which * len(rs))]
        return r.start + 4, 4
    if name in ("version", "ra", "aug_char", "aug_len", "encoding"):
        r = cies[int(which * len(cies))]
        if name == "version":
            return r.version_at, 1
        if name == "ra":
            return r.ra_at, 1
        if name == "aug_char":
            return r.aug_at + int(which * 7919) % (len(r.aug) + 1), 1
        if name == "aug_len":
            return (r.aug_len_at, 1) if r.aug_len_at >= 0 else None
        encs = sorted(r.enc_at.values())
        return (encs[int(which * 7919) % len(encs)], 1) if encs else None
    if not fdes:
        return None
    if name == "pc_range":
        r = fdes[int(which * len(fdes))]
        return r.pc_range_at, r.pc_size
    if name == "fde_aug_len":
        r = fdes[int(which * len(fdes))]
        return (r.aug_len_at, 1) if r.aug_len_at >= 0 else None
    r = rs[int(which * len(rs))]                       # cfa_op / cfa_byte: inside a CFA program
    if r.end <= r.program_at:
        return None
    if name == "cfa_op":
        return r.program_at, 1
    return r.program_at + int(which * 7919) % (r.end - r.program_at), 1


def mutate(data: bytes, layout: Layout, ops) -> bytes:
    """Apply hypothesis-drawn ``ops`` to the ``.eh_frame`` of ``data`` (only to its bytes)."""
    buf = bytearray(data)
    base, size = layout.offset, layout.size
    for op in ops:
        kind, where = op[0], op[1]
        if kind == "flip":
            buf[base + int(where * size)] ^= 1 << op[2]
        elif kind == "byte":
            buf[base + int(where * size)] = op[2]
        elif kind == "field":
            f = _field(layout, where, op[2])
            if f is not None:
                at, width = f
                buf[base + at:base + at + width] = (op[3] & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
        else:   # truncate a record: shorten its length, leaving the rest of its bytes behind it
            r = layout.records[int(where * len(layout.records))]
            struct.pack_into("<I", buf, base + r.start, int(op[2] * r.length))
    return bytes(buf)


# --- fixtures -----------------------------------------------------------------

@dataclass
class Objects:
    cxx: Path
    c: Path
    checker: Path
    llvm: Path | None


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> Objects:
    from conftest import Toolchain
    tc = Toolchain(tmp_path_factory.mktemp("ehframe"))
    cxx = tc.compile_cxx(CXX_SOURCE, "-fPIC", name="eh_cxx")
    c = tc.compile_c(C_SOURCE, "-fPIC", name="eh_c")
    checker = tc.compile_cxx(CHECKER_SOURCE, "-fPIC", name="checker")
    llvm = None
    try:
        import llvmlite.binding as ll
    except ImportError:     # pragma: no cover - llvmlite is a test dependency
        pass
    else:
        ll.initialize_native_target()
        ll.initialize_native_asmprinter()
        tm = ll.Target.from_default_triple().create_target_machine()
        llvm = tc.workdir / "eh_llvm.o"
        llvm.write_bytes(tm.emit_object(ll.parse_assembly(LLVM_IR)))
    return Objects(cxx, c, checker, llvm)


def test_fixtures_have_what_the_corruptions_need(objects: Objects):
    cxx = Layout(objects.cxx.read_bytes())
    assert {r.aug for r in cxx.records if r.is_cie} == {b"zR", b"zPLR"}
    zplr = cxx.cie(b"zPLR")
    assert set(zplr.enc_at) == {"R", "P", "L"}
    c = Layout(objects.c.read_bytes())
    c_programs = b"".join(objects.c.read_bytes()[c.offset + r.program_at:c.offset + r.end] for r in c.records)
    assert b"\x0a" in c_programs and b"\x0f\x02\x76\x10" in c_programs   # remember_state, an expression
    if objects.llvm is not None:
        ll = Layout(objects.llvm.read_bytes())
        data = objects.llvm.read_bytes()
        assert data[ll.offset + ll.cie(b"zR").enc_at["R"]] == 0x1C and ll.fdes()


# --- one corruption at a time ---------------------------------------------

# both kinds of scenario first link a C++ thrower the corrupt objects must not break
CHECKER_SETUP = """
    s = hotlink.Session()
    s.load_shared("libstdc++.so.6")
    good = s.library("good")
    good.add({checker!r})
    throw_catch = good.function("throw_catch", ctypes.c_int, [ctypes.c_int])
    assert throw_catch(1) == 43
"""

TARGETED = """
    import ctypes, hotlink
    from hotlink import platform
""" + CHECKER_SETUP + """    s.synchronize()
    before = s.memory()
    frames = platform.registered_frames
    bad = s.library("bad")
    try:
        bad.add({bad!r}, name={name!r})
    except hotlink.MalformedObjectError as e:
        print("ERROR:", e)
    else:
        raise SystemExit("the corrupt object was accepted")
    s.synchronize()
    after = s.memory()
    assert bad.units == [] and after.libraries["bad"].symbols == 0, after.libraries["bad"]
    assert not any(name in bad for name in ("eh_catcher", "eh_plain", "plain", "cfi_expr"))
    assert after.used == before.used, (before.used, after.used)
    assert (after.got_entries, after.stubs) == (before.got_entries, before.stubs)
    assert platform.registered_frames == frames
    assert throw_catch(2) == 44                  # C++ exceptions still work ...
    again = s.library("again")                   # ... also through a unit linked afterwards
    again.add({original!r})
    catcher = again.function("eh_catcher", ctypes.c_int, [ctypes.c_int])
    assert catcher(5) == 105 and catcher(-1) == -1
    s.close()
    print("OK")
"""


def _cxx(objects: Objects) -> tuple[bytes, Layout]:
    """The g++ object's bytes and the layout of its .eh_frame."""
    data = objects.cxx.read_bytes()
    return data, Layout(data)


def _expect_refused(scenario, objects: Objects, data: bytes, record: Record, words: str) -> str:
    bad = scenario.workdir / "corrupt.o"
    bad.write_bytes(data)
    proc = scenario.expect_ok(TARGETED.format(checker=str(objects.checker), bad=str(bad), name="corrupt.o",
                                              original=str(objects.cxx)))
    assert "OK" in proc.stdout
    message = proc.stdout.split("ERROR: ", 1)[1].splitlines()[0]
    assert f"corrupt.o:.eh_frame+{record.start:#x}:" in message, message
    assert words in message, message
    return message


# 'R': the FDE pointer encoding; 'L': the LSDA pointer encoding
@pytest.mark.parametrize(("letter", "encoding"), [("R", e) for e in (0x05, 0x7B, 0x50, 0x40, 0x9B, 0x01)]
                         + [("L", e) for e in (0x0D, 0x40, 0x8B, 0x5B)])
@pytest.mark.slow
def test_pointer_encoding(scenario, objects, letter, encoding):
    data, lay = _cxx(objects)
    cie = lay.cie(b"zPLR")
    _expect_refused(scenario, objects, patched(data, lay, cie.enc_at[letter], bytes([encoding])), cie,
                    f"'{letter}' encoding {encoding:#04x}")


def test_unknown_augmentation_letter(scenario, objects):
    data, lay = _cxx(objects)
    cie = lay.cie(b"zPLR")
    _expect_refused(scenario, objects, patched(data, lay, cie.aug_at + 2, b"Q"), cie, "augmentation 'zPQR'")


@pytest.mark.slow
def test_augmentation_letters_out_of_order(scenario, objects):
    # libgcc's two parsers disagree on "zPSR": the FDE sorter stops at 'S' and takes absptr
    data, lay = _cxx(objects)
    cie = lay.cie(b"zPLR")
    corrupt = patched(data, lay, cie.aug_at + 2, b"S")        # "zPLR" -> "zPSR"
    _expect_refused(scenario, objects, corrupt, cie, "augmentation 'zPSR'")


@pytest.mark.parametrize("version", [0, 2, 4])
@pytest.mark.slow
def test_cie_version(scenario, objects, version):
    data, lay = _cxx(objects)
    cie = lay.cie(b"zPLR")
    _expect_refused(scenario, objects, patched(data, lay, cie.version_at, bytes([version])), cie,
                    f"version {version}")


@pytest.mark.parametrize("delta", [1, 0x40])
@pytest.mark.slow
def test_augmentation_length(scenario, objects, delta):
    data, lay = _cxx(objects)
    cie = lay.cie(b"zPLR")
    n = data[lay.offset + cie.aug_len_at]
    _expect_refused(scenario, objects, patched(data, lay, cie.aug_len_at, bytes([n + delta])), cie,
                    f"{n + delta} bytes of augmentation data")


@pytest.mark.parametrize("opcode", [0x17, 0x1C, 0x2D, 0x3F])
@pytest.mark.slow
def test_unknown_cfa_opcode(scenario, objects, opcode):
    data, lay = _cxx(objects)
    fde = next(r for r in lay.fdes() if data[lay.offset + r.program_at] != 0)   # a real instruction
    _expect_refused(scenario, objects, patched(data, lay, fde.program_at, bytes([opcode])), fde,
                    f"unknown CFA instruction {opcode:#04x}")


@pytest.mark.slow
def test_restore_state_without_remember_state(scenario, objects):
    # libgcc would dereference NULL when it unwinds through this function
    data = objects.c.read_bytes()
    lay = Layout(data)
    fde = next(r for r in lay.fdes() if data[lay.offset + r.program_at] != 0)
    _expect_refused(scenario, objects, patched(data, lay, fde.program_at, b"\x0b"), fde,
                    "DW_CFA_restore_state")


@pytest.mark.parametrize("op, words", [(0xE0, "DWARF operation 0xe0"),      # DW_OP_lo_user: unknown
                                       (0x1B, "DWARF operation 0x1b"),      # DW_OP_div: SIGFPE on zero
                                       (0x13, "pops an empty stack")])      # DW_OP_drop twice
@pytest.mark.slow
def test_bad_cfa_expression(scenario, objects, op, words):
    data = objects.c.read_bytes()
    lay = Layout(data)
    at = data.index(b"\x0f\x02\x76\x10", lay.offset) - lay.offset        # DW_CFA_def_cfa_expression: breg6 16
    fde = next(r for r in lay.fdes() if r.program_at <= at < r.end)
    if op == 0x13:      # DW_OP_drop DW_OP_drop: the second pops an empty stack
        new = b"\x0f\x02\x13\x13"
    else:
        new = bytes([0x0F, 0x02, op, 0x10])
    _expect_refused(scenario, objects, patched(data, lay, at, new), fde, words)


def test_cfa_expression_block_past_the_record(scenario, objects):
    data = objects.c.read_bytes()
    lay = Layout(data)
    at = data.index(b"\x0f\x02\x76\x10", lay.offset) - lay.offset
    fde = next(r for r in lay.fdes() if r.program_at <= at < r.end)
    _expect_refused(scenario, objects, patched(data, lay, at + 1, b"\x7f"), fde, "runs past the end of the record")


def test_fde_pc_range_past_the_record(scenario, objects):
    # The FDE keeps only its CIE pointer and pc_begin; what followed becomes an
    # (empty) CIE so the section still walks: libgcc would read pc_range from it.
    data, lay = _cxx(objects)
    fde = lay.fdes(b"zR")[0]
    rest = fde.end - (fde.start + 12)
    assert rest >= 8
    corrupt = patched(data, lay, fde.start, struct.pack("<II", 8, fde.start + 4 - lay.cie_of(fde).start))
    corrupt = patched(corrupt, lay, fde.start + 12, struct.pack("<II", rest - 4, 0) + bytes(rest - 8))
    _expect_refused(scenario, objects, corrupt, fde, "too short for pc_begin and pc_range")


@pytest.mark.parametrize("which", ["cxx", "llvm"])
@pytest.mark.slow
def test_fde_pc_range_beyond_its_section(scenario, objects, which):
    # The FDE would answer for whatever lies after the function, libgcc's and
    # libstdc++'s own frames included (found by the property test: an LLVM
    # FDE with bit 43 of its 8-byte pc_range flipped).
    path = objects.cxx if which == "cxx" else objects.llvm
    assert path is not None, "llvmlite is a dependency: its object must exist"
    data = path.read_bytes()
    lay = Layout(data)
    fde = lay.fdes()[-1]
    old = int.from_bytes(data[lay.offset + fde.pc_range_at:lay.offset + fde.pc_range_at + fde.pc_size], "little")
    for new in (old + 0x10000, old | (1 << 30)):
        corrupt = patched(data, lay, fde.pc_range_at, new.to_bytes(fde.pc_size, "little"))
        _expect_refused(scenario, objects, corrupt, fde, "FDE covers")


@pytest.mark.slow
def test_fde_encoding_that_its_relocation_does_not_write(scenario, objects):
    # pcrel sdata4 -> absolute udata4: R_X86_64_PC32 still writes an offset,
    # which libgcc would take for an address
    data, lay = _cxx(objects)
    cie = lay.cie(b"zR")
    fde = lay.fdes(b"zR")[0]
    _expect_refused(scenario, objects, patched(data, lay, cie.enc_at["R"], b"\x03"), fde,
                    "relocated with R_X86_64_PC32")


@pytest.mark.slow
def test_relocation_outside_the_pointer_fields(scenario, objects):
    # a relocation aimed at a CFA instruction would rewrite it after the check
    data, lay = _cxx(objects)
    fde = next(r for r in lay.fdes() if r.end - r.program_at >= 4)
    rela, count = rela_eh_frame(data)
    buf = bytearray(data)
    entry = next(rela + 24 * i for i in range(count)
                 if struct.unpack_from("<Q", data, rela + 24 * i)[0] == fde.start + 8)   # its pc_begin
    struct.pack_into("<Q", buf, entry, fde.program_at)
    _expect_refused(scenario, objects, bytes(buf), fde, f"R_X86_64_PC32 at +{fde.program_at:#x}")


def test_lsda_encoding_wider_than_its_field(scenario, objects):
    # pcrel sdata4 -> pcrel sdata8: libgcc would read 8 bytes for a 4-byte pointer
    data, lay = _cxx(objects)
    cie = lay.cie(b"zPLR")
    fde = lay.fdes(b"zPLR")[0]
    _expect_refused(scenario, objects, patched(data, lay, cie.enc_at["L"], b"\x1c"), fde, "LSDA pointer")


@pytest.mark.parametrize("encoding", [0x1B, 0x0D])
@pytest.mark.slow
def test_personality_encoding(scenario, objects, encoding):
    # 0x1b drops the indirection: the unwinder would call DW.ref.__gxx_personality_v0 (data) as code
    data, lay = _cxx(objects)
    cie = lay.cie(b"zPLR")
    _expect_refused(scenario, objects, patched(data, lay, cie.enc_at["P"], bytes([encoding])), cie,
                    "personality" if encoding == 0x1B else f"'P' encoding {encoding:#04x}")


# --- the checker alone (no session: nothing is loaded) -----------------------

@pytest.mark.slow
def test_checker_raises_only_malformed_object_error(objects):
    """The checker itself, on many more mutations (of the bytes and of the
    relocations), never fails with anything but MalformedObjectError."""
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import strategies as st

    from hotlink import ehframe
    from hotlink.elf import ObjectFile
    from hotlink.errors import MalformedObjectError

    paths = [p for p in (objects.cxx, objects.c, objects.llvm) if p is not None]
    originals = [p.read_bytes() for p in paths]
    layouts = [Layout(d) for d in originals]
    reloc_change = st.tuples(st.floats(0, 1, exclude_max=True), st.integers(-16, 16),
                             st.sampled_from([None, 0, 1, 2, 4, 9, 10, 11, 24, 42]))

    @hypothesis.settings(max_examples=2000, deadline=None, database=None, derandomize=True,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(which=st.integers(0, len(paths) - 1), ops=st.lists(mutation_strategy(), max_size=4),
                      changes=st.lists(reloc_change, max_size=2))
    def check(which, ops, changes):
        data = mutate(originals[which], layouts[which], ops)
        obj = ObjectFile(data, "x.o")
        i = next(i for i in range(obj.shnum) if obj.section_name(i) == ".eh_frame")
        relocs = list(obj.relocations(i))
        for where, shift, kind in changes:
            j = int(where * len(relocs))
            off, k, si, a = relocs[j]
            relocs[j] = (max(0, off + shift), k if kind is None else kind, si, a)
        try:
            ehframe.prune_eh_frame(obj.section_bytes(i), relocs, "x.o:.eh_frame", obj=obj)
            ehframe.prune_eh_frame(obj.section_bytes(i), relocs, "x.o:.eh_frame", lambda si: si % 2 == 0)
        except MalformedObjectError as e:
            assert str(e).startswith("x.o:.eh_frame+0x"), str(e)

    check()


# --- everything at once: hypothesis, in one interpreter ---------------------

PROPERTY_EXAMPLES = 4000

PROPERTY = """
    import ctypes, sys, time
    sys.path.insert(0, {tests_dir!r})
    import hotlink
    from hotlink import platform
    from hypothesis import HealthCheck, given, settings, strategies as st
    from faults.test_eh_frame import Layout, mutate, mutation_strategy

    objects = [(name, open(path, "rb").read()) for name, path in {objects!r}]
    layouts = [Layout(data) for _, data in objects]
""" + CHECKER_SETUP + """    for name, data in objects:            # every fixture links as it is
        plain = s.library("plain")
        plain.add(data, name=name)
        assert throw_catch(2) == 44
        plain.remove()
    stats = dict(examples=0, linked=0, refused=0)
    started = time.monotonic()

    @settings(max_examples={examples}, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(which=st.integers(0, len(objects) - 1), ops=st.lists(mutation_strategy(), min_size=1, max_size=3))
    def corrupt_eh_frame_is_linked_or_refused(which, ops):
        stats["examples"] += 1
        name, data = objects[which]
        corrupt = mutate(data, layouts[which], ops)
        s.synchronize()
        before = s.memory()
        frames = platform.registered_frames
        lib = s.library("fuzz")
        try:
            unit = lib.add(corrupt, name=name)
        except hotlink.MalformedObjectError as e:
            stats["refused"] += 1
            assert name + ":.eh_frame+0x" in str(e), str(e)
            assert lib.units == []
        else:
            stats["linked"] += 1
            # libgcc decodes the new table at the next search: the throw makes it
            assert throw_catch(stats["linked"]) == stats["linked"] + 42
            unit.remove()
        lib.remove()
        s.synchronize()
        after = s.memory()
        assert after.used == before.used, (before.used, after.used)
        assert (after.got_entries, after.stubs) == (before.got_entries, before.stubs)
        assert platform.registered_frames == frames

    corrupt_eh_frame_is_linked_or_refused()
    assert throw_catch(7) == 49
    s.close()
    print("EXAMPLES", stats["examples"], "LINKED", stats["linked"], "REFUSED", stats["refused"],
          "SECONDS", round(time.monotonic() - started, 1))
"""


@pytest.mark.slow
def test_mutated_eh_frames_link_or_are_refused(scenario, objects):
    pytest.importorskip("hypothesis")
    objs = [("cxx.o", str(objects.cxx)), ("c.o", str(objects.c))]
    if objects.llvm is not None:
        objs.append(("llvm.o", str(objects.llvm)))
    proc = scenario.expect_ok(PROPERTY.format(tests_dir=str(TESTS_DIR), objects=objs, checker=str(objects.checker),
                                              examples=PROPERTY_EXAMPLES), timeout=300)
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("EXAMPLES"))
    print(line)
    words = line.split()
    examples, linked, refused = int(words[1]), int(words[3]), int(words[5])
    assert examples >= 2000, line
    assert linked + refused == examples and linked > 100 and refused > 500, line
