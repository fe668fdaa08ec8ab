"""x86-64: relocation kinds, GOT entries, far-call stubs and GOT-load relaxation.

ABI facts this file relies on (System V x86-64 psABI):

* Relocatable objects use RELA: the addend is in the relocation, the bytes
  at the fixup location are ignored.  S is the symbol's address, A the addend,
  P the fixup's address, G the address of the symbol's GOT entry, GOT the
  unit's GOT base (``_GLOBAL_OFFSET_TABLE_``), Z the symbol's size.
* ``PC32``/``PLT32`` are signed 32-bit PC-relative (+-2 GiB).  A call or jmp
  (``e8``/``e9`` before the field) to something farther goes through a
  stub ``jmp *0(%rip); .quad target``.  A data reference that far cannot be
  fixed: the object was not built for a JIT whose targets may be far away.
* ``32``/``32S`` are absolute 32-bit (zero/sign-extended): only for code
  linked below 2 GiB, which an arena near libc never is; they fail clearly.
* ``GOTPCRELX``/``REX_GOTPCRELX`` mark GOT loads the linker may rewrite when
  the target is near: ``mov foo@GOTPCREL(%rip), %reg`` becomes
  ``lea foo(%rip), %reg``; ``call *foo@GOTPCREL(%rip)`` becomes
  ``addr32 call foo``; ``jmp *foo@GOTPCREL(%rip)`` becomes ``nop; jmp foo``.
  The 32-bit field stays where it was, so only the opcode bytes change.
* The large code model (llvmlite's default) uses 64-bit forms: ``64``,
  ``PC64``, ``GOT64``, ``GOTOFF64``, ``GOTPC64``, ``PLTOFF64``; any address
  reaches, and the GOT base may be any address of the unit.
* TLS relocations get their values from ``tls.py`` (module IDs, offsets,
  GOT words and ``{module, offset}`` pairs), computed before the fixups;
  TLS descriptors are relaxed to initial exec.

Relocations are applied in two passes over the whole link, as mold and
JITLink do:

1. **scan** (``Scanner``), once every symbol has its final address: decides
   which GOT loads are relaxed (``relax_got_loads``, from the target's
   address and the instruction bytes), which targets need a GOT entry and
   which branches cannot reach their target and need a far-call stub.  It
   collects the targets per unit, and the unit acquires them in one batch
   (``tables.Acquired.acquire``) before any byte is written.
2. **fix up** (``Fixups``): computes each relocation's value and writes it
   through the checked writers (``write_i32`` ...), which check range and
   bounds in one step and raise an error naming object, section, offset,
   kind and symbol.  It decides nothing.

Three kinds, ``PLT32``, ``PC32`` and ``64``, are 99.8% of real relocations;
a section holding only those, with nothing redirected, is written by one
tight loop (``write_common``) whose ``struct`` writes do the same checks.
A big section (``vector.MIN_FIXUP_ROWS`` relocations and more, with numpy) is
scanned and written by kind as numpy columns instead (``Scanner.scan_columns``,
``Fixups.apply_columns``): the targets gathered by fancy indexing, S + A - P
computed and range-checked in one vector operation each, and the fields
scattered into the section's bytes; anything those vector checks refuse is
redone row by row by the checked writers, which say what is wrong.
"""
from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import IntEnum
from operator import itemgetter
from typing import Any, Protocol

from .elf import Rela, RelaColumns
from .errors import LinkError, MalformedObjectError, UnsupportedRelocationError
from .vector import numpy


class Reloc(IntEnum):
    """``R_X86_64_*`` relocation types (``NAMES`` has the ELF spelling)."""
    NONE = 0
    R64 = 1                 # S + A
    PC32 = 2                # S + A - P
    GOT32 = 3               # G - GOT + A
    PLT32 = 4               # L + A - P (L: S, or a far-call stub to S)
    COPY = 5
    GLOB_DAT = 6
    JUMP_SLOT = 7
    RELATIVE = 8
    GOTPCREL = 9            # G + A - P
    R32 = 10                # S + A, zero-extended
    R32S = 11               # S + A, sign-extended
    R16 = 12
    PC16 = 13
    R8 = 14
    PC8 = 15
    DTPMOD64 = 16
    DTPOFF64 = 17
    TPOFF64 = 18
    TLSGD = 19
    TLSLD = 20
    DTPOFF32 = 21
    GOTTPOFF = 22
    TPOFF32 = 23
    PC64 = 24               # S + A - P
    GOTOFF64 = 25           # S + A - GOT
    GOTPC32 = 26            # GOT + A - P
    GOT64 = 27              # G - GOT + A
    GOTPCREL64 = 28         # G + A - P
    GOTPC64 = 29            # GOT + A - P
    GOTPLT64 = 30           # G - GOT + A
    PLTOFF64 = 31           # S + A - GOT
    SIZE32 = 32             # Z + A
    SIZE64 = 33             # Z + A
    GOTPC32_TLSDESC = 34
    TLSDESC_CALL = 35
    TLSDESC = 36
    IRELATIVE = 37
    GOTPCRELX = 41          # G + A - P, or S + A - P once relaxed
    REX_GOTPCRELX = 42      # G + A - P, or S + A - P once relaxed


# ELF names for messages: R64 -> R_X86_64_64, PC32 -> R_X86_64_PC32.
NAMES: dict[int, str] = {
    k: "R_X86_64_" + (k.name[1:] if k.name[1].isdigit() else k.name) for k in Reloc}


def kind_name(kind: int) -> str:
    """``R_X86_64_*`` for a known kind, else the number."""
    return NAMES.get(kind) or str(kind)


TLS_KINDS = frozenset((Reloc.DTPMOD64, Reloc.DTPOFF64, Reloc.TPOFF64, Reloc.TLSGD, Reloc.TLSLD,
                       Reloc.DTPOFF32, Reloc.GOTTPOFF, Reloc.TPOFF32, Reloc.GOTPC32_TLSDESC,
                       Reloc.TLSDESC_CALL, Reloc.TLSDESC))
# Kinds whose symbol needs a GOT entry unless relaxed away.
GOT_KINDS = frozenset((Reloc.GOT32, Reloc.GOTPCREL, Reloc.GOT64, Reloc.GOTPCREL64, Reloc.GOTPLT64,
                       Reloc.GOTPCRELX, Reloc.REX_GOTPCRELX))
# Kinds ``write_common`` handles.
_COMMON = frozenset((Reloc.NONE, Reloc.R64, Reloc.PC32, Reloc.PLT32))
_COMMON_BYTES = bytes(_COMMON)
_GOTPCREL_KINDS = frozenset((Reloc.GOTPCREL, Reloc.GOTPCRELX, Reloc.REX_GOTPCRELX))
_SMALL_BITS: dict[int, int] = {Reloc.R16: 16, Reloc.PC16: 16, Reloc.R8: 8, Reloc.PC8: 8}

# The hot loops compare plain ints (an IntEnum member costs an attribute
# lookup and a subclass check per comparison).
_NONE, _R64, _PC32, _PLT32 = int(Reloc.NONE), int(Reloc.R64), int(Reloc.PC32), int(Reloc.PLT32)

GOT_ENTRY_SIZE = 8
FAR_STUB_SIZE, FAR_STUB_ALIGN = 16, 16

_REACH = 1 << 31                 # PC32 reach: -2 GiB <= S + A - P < 2 GiB
_ADDEND_SLACK = 1 << 24          # addends the symbol window below vouches for
_MASK64 = (1 << 64) - 1
_BRANCH_OPCODES = (0xE8, 0xE9)   # call rel32, jmp rel32

_i32 = struct.Struct("<i").pack_into
_u32 = struct.Struct("<I").pack_into
_u64 = struct.Struct("<Q").pack_into
# what a ``struct`` write raises for a value out of range or a field out of
# the buffer (IndexError, OverflowError: an offset beyond any buffer)
WRITE_ERRORS = (struct.error, OverflowError, IndexError)
_kind, _symbol = itemgetter(1), itemgetter(2)


def far_stub_bytes(target: int) -> bytes:
    # jmp *0(%rip)  ; .quad target ; int3 int3
    return b"\xff\x25\x00\x00\x00\x00" + struct.pack("<Q", target & _MASK64) + b"\xcc\xcc"


def got_entry_bytes(target: int) -> bytes:
    return struct.pack("<Q", target & _MASK64)


# --- GOT-load relaxation --------------------------------------------------
#
# The two bytes before a GOTPCRELX field (opcode, ModRM) -> their rewrite.
# ModRM 00 reg 101 is rip-relative; the reg field (and a REX.R prefix,
# which stays) names the destination, so a mov to any register becomes a
# lea to the same one.  Only call and jmp without a REX prefix are
# relaxable, so REX_GOTPCRELX has the mov rows only.
_RELAX_MOV = {
    b"\x8b\x05": b"\x8d\x05",   # mov foo@GOTPCREL(%rip), %rax -> lea foo(%rip), %rax  (or %eax, %r8, %r8d)
    b"\x8b\x0d": b"\x8d\x0d",   # mov foo@GOTPCREL(%rip), %rcx -> lea foo(%rip), %rcx  (%ecx, %r9, %r9d)
    b"\x8b\x15": b"\x8d\x15",   # mov foo@GOTPCREL(%rip), %rdx -> lea foo(%rip), %rdx  (%edx, %r10, %r10d)
    b"\x8b\x1d": b"\x8d\x1d",   # mov foo@GOTPCREL(%rip), %rbx -> lea foo(%rip), %rbx  (%ebx, %r11, %r11d)
    b"\x8b\x25": b"\x8d\x25",   # mov foo@GOTPCREL(%rip), %rsp -> lea foo(%rip), %rsp  (%esp, %r12, %r12d)
    b"\x8b\x2d": b"\x8d\x2d",   # mov foo@GOTPCREL(%rip), %rbp -> lea foo(%rip), %rbp  (%ebp, %r13, %r13d)
    b"\x8b\x35": b"\x8d\x35",   # mov foo@GOTPCREL(%rip), %rsi -> lea foo(%rip), %rsi  (%esi, %r14, %r14d)
    b"\x8b\x3d": b"\x8d\x3d",   # mov foo@GOTPCREL(%rip), %rdi -> lea foo(%rip), %rdi  (%edi, %r15, %r15d)
}
_RELAXATIONS: dict[int, dict[bytes, bytes]] = {
    Reloc.GOTPCRELX: {
        **_RELAX_MOV,
        b"\xff\x15": b"\x67\xe8",   # call *foo@GOTPCREL(%rip)     -> addr32 call foo
        b"\xff\x25": b"\x90\xe9",   # jmp  *foo@GOTPCREL(%rip)     -> nop; jmp foo
    },
    Reloc.REX_GOTPCRELX: _RELAX_MOV,
}


class Rows(Protocol):
    """Relocations by index: a list of them, or the rows of ``RelaColumns`` wanted."""
    def __getitem__(self, i: int, /) -> Rela: ...


def relax_got_loads(data: bytes | bytearray, relocs: Rows, candidates: Iterable[int],
                    values: Sequence[int], base: int) -> dict[int, bytes]:
    """Which of the GOT loads ``candidates`` (indices of GOTPCRELX and
    REX_GOTPCRELX relocations of a section placed at ``base``) become direct
    references: index -> the opcode bytes that replace the two before the
    field.  A load is relaxed when its target is defined (not a weak 0),
    within +-2 GiB of the field, and the instruction is in the table above."""
    out: dict[int, bytes] = {}
    end = len(data)
    for i in candidates:
        off, kind, si, a = relocs[i]
        s = values[si]
        if s and -_REACH <= s + a - base - off < _REACH and 2 <= off <= end - 4:
            new = _RELAXATIONS[kind].get(bytes(data[off - 2:off]))
            if new is not None:
                out[i] = new
    return out


# --- the scan pass --------------------------------------------------------

class SectionPlan:
    """What the scan decided for one section, by relocation index."""

    __slots__ = ("special", "relaxed", "via_stub")

    def __init__(self, special: list[int], relaxed: dict[int, bytes], via_stub: set[int]) -> None:
        self.special = special      # in order: the relocations ``write_common`` does not write
        self.relaxed = relaxed      # GOT loads made direct: the new opcode bytes
        self.via_stub = via_stub    # branches that reach their target through a far-call stub


class ColumnPlan(SectionPlan):
    """The plan of a big section (``Scanner.scan_columns``), with what the
    scan computed for every row: S, and S + A - P modulo 2**64 read as signed."""

    __slots__ = ("target", "delta")

    def __init__(self, special: list[int], relaxed: dict[int, bytes], via_stub: set[int], target: Any,
                 delta: Any) -> None:
        super().__init__(special, relaxed, via_stub)
        self.target = target        # uint64 array
        self.delta = delta          # int64 array


_NOTHING_DECIDED = SectionPlan([], {}, set())
_FEW = 16      # up to this many relocations, the scan computes each rather than use a window


class Scanner:
    """The scan pass over one unit's sections, before any is written.

    ``scan`` decides for a section, from the symbols' final addresses
    (``values[i]`` is symbol i's) and the section's bytes, and adds the
    targets that need a GOT entry to ``got`` and those that need a
    far-call stub to ``stubs``: the unit acquires them in one batch.
    """

    __slots__ = ("got", "stubs", "relax")

    def __init__(self, relax: bool = True) -> None:
        self.got: set[int] = set()
        self.stubs: set[int] = set()
        self.relax = relax

    def scan(self, data: bytes | bytearray, relocs: Sequence[Rela], values: Sequence[int],
             base: int) -> SectionPlan | None:
        """The plan for the relocations of ``data``, placed at ``base``; None
        when ``write_common`` can write them all (only R64/PC32/PLT32, none
        redirected)."""
        if len(relocs) <= _FEW:         # a tiny object's section: one look at each is cheapest
            for off, kind, si, a in relocs:
                if kind == _PC32 or kind == _PLT32:
                    if not -_REACH <= values[si] + a - base - off < _REACH:
                        break
                elif kind != _R64 and kind != _NONE:
                    break
            else:
                return None
        kind_of = _kinds(relocs)
        via_stub = self._far_branches(data, relocs, values, base) \
            if _PC32 in kind_of or _PLT32 in kind_of else set()
        rare = _rare_kinds(kind_of)
        if not rare:
            return SectionPlan(sorted(via_stub), {}, via_stub) if via_stub else None
        where = {k: _indices(kind_of, k) for k in rare}
        relaxed = relax_got_loads(data, relocs, where.get(Reloc.GOTPCRELX, []) + where.get(Reloc.REX_GOTPCRELX, []),
                                  values, base) if self.relax else {}
        for k in GOT_KINDS.intersection(rare):
            self.got.update(values[relocs[i][2]] for i in where[k] if i not in relaxed)
        special = sorted(via_stub.union(*where.values()))
        return SectionPlan(special, relaxed, via_stub)

    def _far_branches(self, data: bytes | bytearray, relocs: Sequence[Rela], values: Sequence[int],
                      base: int) -> set[int]:
        """PC32/PLT32 relocations out of reach that a stub can fix: PLT32, and
        PC32 after a call or jmp opcode.  (Out-of-reach data references are
        left to the fixup, which reports them.)

        Computing each of many would cost as much as writing it, so a window
        vouches for most: every field of the section reaches a target symbol
        within ``2 GiB - _ADDEND_SLACK`` of both ends of the section with an
        addend up to the slack.  (With a larger addend a stub is no help:
        the branch goes to symbol + addend, into the middle of the stub; the
        fixup reports it if it does not fit.)  Only relocations of symbols
        outside the window are computed.
        """
        size = len(data)
        if len(relocs) > _FEW:
            low, high = base + size - _REACH + _ADDEND_SLACK, base + _REACH - _ADDEND_SLACK
            targets = set(map(_symbol, relocs))
            addresses = [values[si] for si in targets]
            if low <= min(addresses) and max(addresses) < high:
                return set()
            far = {si for si in targets if not low <= values[si] < high}
            candidates: Iterable[int] = [i for i, si in enumerate(map(_symbol, relocs)) if si in far]
        else:
            candidates = range(len(relocs))
        stubs = self.stubs
        out: set[int] = set()
        for i in candidates:
            off, kind, si, a = relocs[i]
            if kind == _PC32 or kind == _PLT32:
                s = values[si]
                if not -_REACH <= s + a - base - off < _REACH \
                        and (kind == _PLT32 or 0 < off <= size and data[off - 1] in _BRANCH_OPCODES):
                    out.add(i)
                    stubs.add(s)
        return out

    def scan_columns(self, data: bytes | bytearray, cols: RelaColumns, targets: Any, values: Sequence[int],
                     base: int) -> ColumnPlan | None:
        """``scan`` for a big section, by kind over numpy columns (``targets``
        is ``values`` as a uint64 array), for ``Fixups.apply_columns``.  None
        when a target of the section does not fit the vector arithmetic (at
        2**63 or above): then ``scan`` must decide row by row."""
        np = numpy()
        assert np is not None
        kind, off = cols.kind, cols.offset
        s = targets[cols.symbol]
        if int(s.max(initial=0)) >> 63:
            return None         # S + A - P modulo 2**64 may fit where the true value does not
        # S + A - P of every row (modulo 2**64, read as signed): PC32/PLT32 checked for reach at once
        v = (s + cols.addend.view(np.uint64) - off.view(np.uint64) - np.uint64(base)).view(np.int64)
        pc = (kind == _PC32) | (kind == _PLT32)
        via_stub: set[int] = set()
        far = np.flatnonzero(pc & ((v < -_REACH) | (v >= _REACH)))
        if len(far):
            size = len(data)
            for i in far.tolist():
                o, k, si = int(off[i]), int(kind[i]), int(cols.symbol[i])
                if k == _PLT32 or 0 < o <= size and data[o - 1] in _BRANCH_OPCODES:
                    via_stub.add(i)
                    self.stubs.add(values[si])
        rare = np.flatnonzero(~(pc | (kind == _R64) | (kind == _NONE))).tolist()
        if not rare:
            return ColumnPlan(sorted(via_stub), {}, via_stub, s, v)
        rows = {i: cols.row(i) for i in rare}
        where: dict[int, list[int]] = {}
        for i in rare:
            where.setdefault(rows[i][1], []).append(i)
        relaxed = relax_got_loads(data, rows, where.get(Reloc.GOTPCRELX, []) + where.get(Reloc.REX_GOTPCRELX, []),
                                  values, base) if self.relax else {}
        for k in GOT_KINDS.intersection(where):
            self.got.update(values[rows[i][2]] for i in where[k] if i not in relaxed)
        return ColumnPlan(sorted(via_stub.union(rare)), relaxed, via_stub, s, v)


def _kinds(relocs: Sequence[Rela]) -> bytes | list[int]:
    """The relocations' kinds as a column: bytes (searched at C speed) unless
    one is beyond 255 (an unknown kind)."""
    try:
        return bytes(map(_kind, relocs))
    except ValueError:
        return list(map(_kind, relocs))


def _rare_kinds(kind_of: bytes | list[int]) -> set[int]:
    """The kinds in the column that ``write_common`` does not handle."""
    if isinstance(kind_of, bytes):
        return set(kind_of.translate(None, _COMMON_BYTES))
    return set(kind_of) - _COMMON


def _indices(items: bytes | list[int], value: int) -> list[int]:
    """Where ``value`` occurs in ``items`` (``index`` scans at C speed)."""
    out: list[int] = []
    i = -1
    try:
        while True:
            i = items.index(value, i + 1)
            out.append(i)
    except ValueError:
        return out


# --- the fixup pass -------------------------------------------------------

class ObjectNames(Protocol):
    """What error messages name (``elf.ObjectFile`` provides it)."""
    @property
    def name(self) -> str: ...
    def section_name(self, i: int) -> str: ...
    def symbol_name(self, i: int) -> str: ...


def write_common(buf: bytearray, relocs: Sequence[Rela], values: Sequence[int], base: int) -> None:
    """R64, PC32 and PLT32 in one loop: the checked writers' fast path.
    ``struct`` checks range and bounds of each write; one of
    ``WRITE_ERRORS`` means one failed, and the caller redoes them through
    the checked writers to say which."""
    i32, u64 = _i32, _u64
    r64, none, mask = _R64, _NONE, _MASK64
    for off, kind, si, a in relocs:
        if kind == r64:
            u64(buf, off, (values[si] + a) & mask)          # S + A
        elif kind != none:
            i32(buf, off, values[si] + a - base - off)      # PC32, PLT32: S + A - P


class Fixups:
    """The fixup pass for one object: computes every relocation's value and
    writes it.  It decides nothing: relaxed loads and stubbed branches come
    from the scan's ``SectionPlan``; ``got``/``stubs`` map targets to the
    entries acquired for them."""

    __slots__ = ("obj", "values", "got_base", "got", "stubs", "sizes", "tls", "section", "base")

    def __init__(self, obj: ObjectNames, values: Sequence[int], got_base: int,
                 got: Mapping[int, int], stubs: Mapping[int, int], sizes: Callable[[int], int],
                 tls: Mapping[tuple[int, int], int] | None = None) -> None:
        self.obj = obj
        self.tls = tls or {}        # (TLS kind, symbol) -> what it writes (tls.py, linker.thread_locals)
        self.values = values
        self.got_base = got_base
        self.got = got
        self.stubs = stubs
        self.sizes = sizes          # symbol index -> Z
        self.section = 0            # the section being fixed up, for messages
        self.base = 0

    def apply(self, buf: bytearray, section: int, base: int, relocs: Sequence[Rela],
              plan: SectionPlan | None) -> None:
        """Apply ``relocs`` to ``buf``, the bytes of ``section`` placed at
        ``base``, in order: runs of common ones by ``write_common``, the
        plan's special ones one by one."""
        self.section, self.base = section, base
        if plan is None:
            try:
                write_common(buf, relocs, self.values, base)
                return
            except WRITE_ERRORS:
                plan = _NOTHING_DECIDED         # one failed: the loop below says which
        start = 0
        for i in plan.special:
            if i > start:
                self._common(buf, relocs[start:i])
            off, kind, si, a = relocs[i]
            self._write(buf, off, kind, si, a, i, plan)
            start = i + 1
        if start < len(relocs):
            self._common(buf, relocs[start:])

    def apply_columns(self, buf: bytearray, section: int, base: int, cols: RelaColumns, plan: ColumnPlan) -> None:
        """``apply`` for a big section: R64, PC32 and PLT32 by kind as numpy
        columns, from what the scan computed, then the plan's special ones one
        by one.  When a field is out of the section or of range, or fields
        overlap (where the order of writes would matter), everything is redone
        by ``apply``, row by row, which says what is wrong."""
        np = numpy()
        assert np is not None
        self.section, self.base = section, base
        kind, off, v = cols.kind, cols.offset, plan.delta
        special = plan.special
        # every field apart from the next (so no order of writes matters) and inside the section
        width, lead = _field_tables(np)
        start = off - lead.take(kind, mode="clip")
        end = off + width.take(kind, mode="clip")
        ok = bool(len(off) and start[0] >= 0 and end.max() <= len(buf) and (start[1:] >= end[:-1]).all())
        pc = (kind == _PC32) | (kind == _PLT32)
        r64 = kind == _R64
        if special:
            pc[special] = False
            r64[special] = False
        if not ok or (pc & ((v < -_REACH) | (v >= _REACH))).any():
            self.apply(buf, section, base, cols.rows(), plan)
            return
        at = np.flatnonzero(pc)
        _scatter(np, buf, off[at], v[at].astype("<u4"), 4)
        at = np.flatnonzero(r64)
        _scatter(np, buf, off[at], plan.target[at] + cols.addend[at].view(np.uint64), 8)
        if special:
            for i, (off_i, kind_i, si, a_i) in zip(special, zip(off[special].tolist(), kind[special].tolist(),
                                                                cols.symbol[special].tolist(),
                                                                cols.addend[special].tolist())):
                self._write(buf, off_i, kind_i, si, a_i, i, plan)

    def _common(self, buf: bytearray, relocs: Sequence[Rela]) -> None:
        try:
            write_common(buf, relocs, self.values, self.base)
        except WRITE_ERRORS:
            # one failed: the checked writers say which, or write it (they
            # take values modulo 2**64, which ``struct`` does not)
            for off, kind, si, a in relocs:
                self._write(buf, off, kind, si, a, -1, _NOTHING_DECIDED)

    def _write(self, buf: bytearray, off: int, kind: int, si: int, a: int, i: int, plan: SectionPlan) -> None:
        """Relocation ``i`` (its fields unpacked) through the checked writers."""
        s = self.values[si]
        p = self.base + off
        gb = self.got_base
        if kind == _PLT32 or kind == _PC32:
            if i in plan.via_stub:
                # PLT32 is L + A - P, the stub being L; a PC32 branch may use
                # it only to go to S itself (call/jmp rel32: A = -4)
                if kind == _PC32 and a != -4:
                    raise self.error(buf, off, 4, s + a - p, kind, si)
                s = self.stubs[s]
            write_i32(buf, off, s + a - p, self, kind, si)
        elif kind == _R64:
            write_u64(buf, off, s + a, self, kind, si)
        elif kind in _GOTPCREL_KINDS:
            new = plan.relaxed.get(i)
            if new is None:
                write_i32(buf, off, self.got[s] + a - p, self, kind, si)
            else:                                        # bounds checked by the scan
                buf[off - 2:off] = new
                write_i32(buf, off, s + a - p, self, kind, si)
        elif kind == Reloc.PC64:
            write_u64(buf, off, s + a - p, self, kind, si)
        elif kind == Reloc.R32:
            write_u32(buf, off, s + a, self, kind, si)
        elif kind == Reloc.R32S:
            write_i32(buf, off, s + a, self, kind, si)
        elif kind == Reloc.GOTOFF64 or kind == Reloc.PLTOFF64:
            write_u64(buf, off, s + a - gb, self, kind, si)
        elif kind == Reloc.GOTPC64:
            write_u64(buf, off, gb + a - p, self, kind, si)
        elif kind == Reloc.GOTPC32:
            write_i32(buf, off, gb + a - p, self, kind, si)
        elif kind == Reloc.GOT64 or kind == Reloc.GOTPLT64:
            write_u64(buf, off, self.got[s] - gb + a, self, kind, si)
        elif kind == Reloc.GOTPCREL64:
            write_u64(buf, off, self.got[s] + a - p, self, kind, si)
        elif kind == Reloc.GOT32:
            # signed (mold: unsigned): the shared GOT table may lie below the
            # unit's GOT base, and the CPU sign-extends a 32-bit displacement
            write_i32(buf, off, self.got[s] - gb + a, self, kind, si)
        elif kind == Reloc.SIZE32:
            write_u32(buf, off, self.sizes(si) + a, self, kind, si)
        elif kind == Reloc.SIZE64:
            write_u64(buf, off, self.sizes(si) + a, self, kind, si)
        elif kind == Reloc.PC16:
            write_small(buf, off, s + a - p, self, kind, si, 2)
        elif kind == Reloc.R16:
            write_small(buf, off, s + a, self, kind, si, 2)
        elif kind == Reloc.PC8:
            write_small(buf, off, s + a - p, self, kind, si, 1)
        elif kind == Reloc.R8:
            write_small(buf, off, s + a, self, kind, si, 1)
        elif kind in TLS_KINDS:
            self._thread_local(buf, off, kind, si, a, p)
        elif kind != _NONE:
            raise self.unsupported(off, kind, si)

    def _thread_local(self, buf: bytearray, off: int, kind: int, si: int, a: int, p: int) -> None:
        """A TLS relocation; ``self.tls`` holds its value: the address of the
        GOT word or ``{module, offset}`` pair, or the offset or module itself."""
        v = self.tls.get((kind, si))
        if v is None:
            raise self.unsupported(off, kind, si)
        if kind == Reloc.GOTTPOFF or kind == Reloc.TLSGD or kind == Reloc.TLSLD:
            write_i32(buf, off, v + a - p, self, kind, si)
        elif kind == Reloc.GOTPC32_TLSDESC:
            # TLS descriptors relaxed to initial exec, as ld does for static TLS:
            # lea x@tlsdesc(%rip), %rax -> mov x@gottpoff(%rip), %rax
            if bytes(buf[max(off - 3, 0):off]) not in (b"\x48\x8d\x05", b"\x4c\x8d\x05"):
                raise self.unsupported(off, kind, si)
            buf[off - 2] = 0x8B
            write_i32(buf, off, v + a - p, self, kind, si)
        elif kind == Reloc.TLSDESC_CALL:
            # call *x@tlsdesc(%rax) -> xchg %ax, %ax (two-byte nop): %rax holds the offset
            if bytes(buf[off:off + 2]) != b"\xff\x10":
                raise self.unsupported(off, kind, si)
            buf[off:off + 2] = b"\x66\x90"
        elif kind == Reloc.TPOFF32 or kind == Reloc.DTPOFF32:
            write_i32(buf, off, v + a, self, kind, si)
        else:                                           # TPOFF64, DTPOFF64, DTPMOD64
            write_u64(buf, off, v + a, self, kind, si)

    # --- messages --------------------------------------------------------

    def _where(self, off: int) -> str:
        return f"{self.obj.name}:{self.obj.section_name(self.section)}+{off:#x}"

    def unsupported(self, off: int, kind: int, si: int) -> UnsupportedRelocationError:
        sym = self.obj.symbol_name(si)
        if kind in TLS_KINDS:
            return UnsupportedRelocationError(
                f"{self._where(off)}: thread-local relocation {kind_name(kind)} against {sym} "
                f"is not supported (thread-locals need the dynamic loader's TLS blocks)")
        return UnsupportedRelocationError(
            f"{self._where(off)}: relocation type {kind_name(kind)} against {sym} is not supported")

    def error(self, buf: bytearray, off: int, width: int, value: int, kind: int, si: int) -> LinkError:
        """Why writing ``value`` (``width`` bytes at ``off``) failed: the field
        is outside the section, or the value does not fit it."""
        where, name = self._where(off), kind_name(kind)
        if off + width > len(buf):
            return MalformedObjectError(f"{where}: {name} lies outside the section ({len(buf)} bytes)")
        p = self.base + off
        if kind == _PC32 or kind == _PLT32:
            # code below 2 GiB is there because it is not position-independent (arena.LOW_LIMIT)
            why = (" (this object is not position-independent, so it was placed below 2 GiB, out of "
                   "reach of shared libraries' data: compile it with -fPIC)") if p < 1 << 31 else ""
            return UnsupportedRelocationError(
                f"{where}: {name} to {self.obj.symbol_name(si)} at {self.values[si]:#x} is out of the "
                f"+-2 GiB range of {p:#x}{why}")
        if kind == Reloc.R32 or kind == Reloc.R32S:
            return UnsupportedRelocationError(
                f"{where}: {name} to {self.obj.symbol_name(si)} at {value:#x} is out of range "
                f"(absolute 32-bit addresses must lie below {'4' if kind == Reloc.R32 else '2'} GiB; "
                f"hotlink places non-PIC objects there, but not what they reference in shared "
                f"libraries): compile with -fPIC")
        if kind in _SMALL_BITS:
            sign = "a signed" if kind == Reloc.PC16 or kind == Reloc.PC8 else "an unsigned"
            return UnsupportedRelocationError(
                f"{where}: {name} to {self.obj.symbol_name(si)}: {value} does not fit in {sign} "
                f"{_SMALL_BITS[kind]}-bit field")
        target = "_GLOBAL_OFFSET_TABLE_" if kind == Reloc.GOTPC32 else self.obj.symbol_name(si)
        sign = "an unsigned" if kind == Reloc.SIZE32 else "a signed"
        return UnsupportedRelocationError(f"{where}: {name} to {target}: {value:#x} does not fit in {sign} "
                                          f"32-bit field")


# --- the vector path's tables and scatter ----------------------------------

_WIDE = (Reloc.R64, Reloc.DTPMOD64, Reloc.DTPOFF64, Reloc.TPOFF64, Reloc.PC64, Reloc.GOTOFF64, Reloc.GOT64,
         Reloc.GOTPCREL64, Reloc.GOTPC64, Reloc.GOTPLT64, Reloc.PLTOFF64, Reloc.SIZE64)
# bytes a relocation of each kind may touch: the field, and before it the
# opcode bytes a relaxation rewrites or reads (the last entry stands for
# every unknown kind, which the fixups refuse anyway)
_FIELD_WIDTH = [0 if k == Reloc.NONE else 8 if k in _WIDE else 2 if k in (Reloc.R16, Reloc.PC16)
                else 1 if k in (Reloc.R8, Reloc.PC8) else 4 for k in range(Reloc.REX_GOTPCRELX + 2)]
_FIELD_LEAD = [2 if k in (Reloc.GOTPCRELX, Reloc.REX_GOTPCRELX) else 3 if k == Reloc.GOTPC32_TLSDESC else 0
               for k in range(Reloc.REX_GOTPCRELX + 2)]
_FIELD_WIDTH[-1] = 8
_field_arrays: list[Any] = []


def _field_tables(np: Any) -> tuple[Any, Any]:
    """``_FIELD_WIDTH`` and ``_FIELD_LEAD`` as numpy arrays (made once)."""
    if not _field_arrays:
        _field_arrays[:] = np.array(_FIELD_WIDTH, np.int64), np.array(_FIELD_LEAD, np.int64)
    return _field_arrays[0], _field_arrays[1]


def _scatter(np: Any, buf: bytearray, offsets: Any, values: Any, width: int) -> None:
    """Write ``values`` (little-endian, ``width`` bytes each) at ``offsets``
    of ``buf`` (inside it, apart from each other): one fancy-indexed store
    through a view of ``buf`` as words starting at every byte."""
    if len(offsets):
        np.ndarray((len(buf) - width + 1,), "<u4" if width == 4 else "<u8", buf, 0, (1,))[offsets] = values


# --- checked writers: range and bounds in one step -------------------------

def write_i32(buf: bytearray, off: int, value: int, fx: Fixups, kind: int, si: int) -> None:
    """A signed 32-bit field (PC32, PLT32, 32S, GOTPC32, the GOTPCREL forms, GOT32)."""
    try:
        _i32(buf, off, value)
    except WRITE_ERRORS:
        try:
            _i32(buf, off, _wrapped(value, True))
        except WRITE_ERRORS:
            raise fx.error(buf, off, 4, value, kind, si) from None


def write_u32(buf: bytearray, off: int, value: int, fx: Fixups, kind: int, si: int) -> None:
    """An unsigned 32-bit field (32, SIZE32)."""
    try:
        _u32(buf, off, value)
    except WRITE_ERRORS:
        try:
            _u32(buf, off, _wrapped(value, False))
        except WRITE_ERRORS:
            raise fx.error(buf, off, 4, value, kind, si) from None


def write_u64(buf: bytearray, off: int, value: int, fx: Fixups, kind: int, si: int) -> None:
    """A 64-bit field: every value fits (modulo 2**64); only bounds can fail."""
    try:
        _u64(buf, off, value & _MASK64)
    except WRITE_ERRORS:
        raise fx.error(buf, off, 8, value, kind, si) from None


# PC8/PC16 are signed, 8/16 unsigned: the ranges mold (arch-x86-64.cc) and
# LLVM JITLink (Pointer8/16 isUInt, Delta8 isInt) check.  GNU ld checks 8,
# 16 and PC16 only as bit fields (either range): a PC16 of 40000 becomes -25536.
_SMALL: dict[int, Callable[..., None]] = {
    Reloc.R16: struct.Struct("<H").pack_into, Reloc.PC16: struct.Struct("<h").pack_into,
    Reloc.R8: struct.Struct("<B").pack_into, Reloc.PC8: struct.Struct("<b").pack_into}


def write_small(buf: bytearray, off: int, value: int, fx: Fixups, kind: int, si: int, size: int) -> None:
    """A 16- or 8-bit field, signed (PC16, PC8) or unsigned (16, 8)."""
    try:
        _SMALL[kind](buf, off, _wrapped(value, kind == Reloc.PC16 or kind == Reloc.PC8))
    except WRITE_ERRORS:
        raise fx.error(buf, off, size, value, kind, si) from None


def _wrapped(value: int, signed: bool) -> int:
    """``value`` modulo 2**64, as the psABI computes: to a signed field an
    absolute symbol at 0xffff_ffff_ffff_fff8 is -8."""
    v = value & _MASK64
    return v - (1 << 64) if signed and v >> 63 else v
