"""``.eh_frame``: checked completely at link time, then pruned.

hotlink hands each unit's ``.eh_frame`` to libgcc's ``__register_frame``, and
libgcc trusts it: the first time any C++ exception anywhere in the process
searches the registered tables, libgcc decodes every CIE of every table, and
when it unwinds through a frame it runs that frame's CFA program.  What it
cannot decode it answers with ``abort()`` (``gcc_unreachable``,
``gcc_assert``), a NULL dereference or a wild read.  So everything libgcc will
ever decode is checked here, and anything it could choke on is a
``MalformedObjectError`` naming the section and the offset of the record.

Format facts this relies on (LSB "Exception Frames", DWARF 4 section 6.4,
and libgcc's ``unwind-dw2.c``, ``unwind-dw2-fde.c``, ``unwind-pe.h`` as of
GCC 12):

* A record is a 4-byte length (0 ends the table; ``0xffffffff``, 64-bit
  DWARF, is refused) and a 4-byte id: 0 for a CIE, else the distance from
  the id field back to the FDE's CIE, which must come earlier in the section.
* CIE: version (1 or 3: what gcc and LLVM emit), a NUL-terminated
  augmentation string, ULEB128 code and SLEB128 data alignment factors, the
  return-address column (a byte in version 1, ULEB128 in 3), then, when the
  string starts with ``z``, a ULEB128 length and that many bytes of
  augmentation data, then CFA instructions up to the end of the record.
* Augmentation letters.  libgcc has two parsers that must agree:
  ``get_cie_encoding`` (sorting FDEs) returns at ``R``, skips the data of
  ``P``, ``L`` and ``B``, and takes anything else as "absptr"; while
  ``extract_cie_info`` (unwinding) also knows ``S`` and gives ``B`` no data.
  So: ``z`` first, then each of ``R``, ``P``, ``L`` at most once, then each
  of ``S``, ``B`` at most once; ``"eh"`` (g++ 2.x) and other letters are
  refused, and the augmentation data must be exactly the letters' data.
* ``DW_EH_PE`` pointer encodings: low nibble the format (absptr = 8 bytes,
  udata2/4/8, sdata2/4/8, uleb128, sleb128; libgcc aborts on the others),
  bits 0x70 the application: only absptr 0x00 and pcrel 0x10 (textrel and
  datarel need bases ``__register_frame`` never sets, funcrel and aligned
  abort), bit 0x80 indirect: only for the personality.  ``R`` must be
  fixed-size (``size_of_encoded_value`` aborts on LEB128); ``L`` may be
  ``DW_EH_PE_omit`` (0xff).
* FDE: ``pc_begin`` and ``pc_range`` in the CIE's ``R`` format (``pc_range``
  with the format nibble only; a negative one is refused), then, with ``z``,
  a ULEB128 length and the LSDA pointer in the ``L`` encoding.  libgcc reads
  that pointer without looking at the length, so the length must equal the
  pointer's size.  Then CFA instructions up to the end of the record.
* Relocations.  In an object file the only fields relocated are
  ``pc_begin``, the LSDA pointer, the personality pointer (and
  ``DW_CFA_set_loc`` operands).  Each relocation must produce what libgcc
  reads in that field's encoding (``PC32`` for pcrel sdata4, ``PC64`` for
  8-byte pcrel, ``R_X86_64_64`` for 8-byte absolute, ...), and no relocation
  may apply anywhere else: it would rewrite a length or an instruction after
  this check.  A pointer field without a relocation must be 0, which libgcc
  reads as "none".
* CFA instructions: every DWARF 4 opcode plus ``DW_CFA_GNU_args_size`` and
  ``DW_CFA_GNU_negative_offset_extended``, operands inside the record.
  ``DW_CFA_GNU_window_save`` (SPARC) and the ``DW_CFA_MIPS``/user range are
  refused.  libgcc dereferences NULL on a ``DW_CFA_restore_state`` with no
  ``DW_CFA_remember_state`` before it in the same program (and allocas a
  register set per open one: at most 64 are allowed), and asserts when
  it reads a register it has no column for, so the CFA register, the source
  of ``DW_CFA_register``, the targets of ``val`` rules and the return-address
  column must be DWARF registers 0-16 (rax..r15 and the return address;
  other rule targets are ignored by libgcc and accepted).
* DWARF expressions (``DW_CFA_def_cfa_expression``, ``DW_CFA_expression``,
  ``DW_CFA_val_expression``): only the operations libgcc's
  ``execute_stack_op`` implements, operands inside the block, stack depth
  within 1..64 on every path, branches forward only (no loops) onto an
  operation, no ``DW_OP_div``/``DW_OP_mod`` (SIGFPE on zero).
* What the pointers point at (when the caller passes the object): an FDE at
  code of this object, ``pc_begin`` to ``pc_begin + pc_range`` inside that
  one section (libgcc looks frames up in registered tables before the loaded
  libraries', so an FDE covering more would answer for libgcc's and
  libstdc++'s own frames); an LSDA at data of this object; a direct
  personality at code, an indirect one at a slot (``DW.ref.*``) that holds it.

What cannot be checked: that the rules describe the code correctly.
"""
from __future__ import annotations

import bisect
import re
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import native
from .elf import SHF_EXECINSTR, STT_FUNC, STT_OBJECT, Rela, RelaColumns
from .errors import MalformedObjectError
from .vector import numpy
from .x86_64 import NAMES, Reloc

if TYPE_CHECKING:
    from .elf import ObjectFile

__all__ = ["prune_eh_frame"]

_u32 = struct.Struct("<I")

MAX_REGISTER = 16     # the x86-64 DWARF registers libgcc can read: rax..r15 (0-15), return address (16)
OMIT = 0xFF           # DW_EH_PE_omit
_FIXED = {0x0: 8, 0x2: 2, 0x3: 4, 0x4: 8, 0xA: 2, 0xB: 4, 0xC: 8}   # format nibble -> bytes
_LEB = (0x1, 0x9)                                                   # uleb128, sleb128

# encoding (with the indirect bit) -> relocation kinds that write what libgcc reads there
_KINDS: dict[int, tuple[int, ...]] = {0x03: (Reloc.R32,), 0x0B: (Reloc.R32S,), 0x1B: (Reloc.PC32,)}
for _fmt in (0x0, 0x4, 0xC):
    _KINDS[_fmt] = (Reloc.R64,)
    _KINDS[0x10 | _fmt] = (Reloc.PC64,)
for _enc in list(_KINDS):
    _KINDS[0x80 | _enc] = _KINDS[_enc]
_KINDS[0x9B] = (Reloc.PC32, Reloc.GOTPCREL)   # pcrel to a GOT slot holding the personality

# CFA opcodes below 0x40 -> operands: u/s = U/SLEB128 number, r = register (any),
# g = register libgcc reads (0-16), 1/2/4 = fixed bytes, a = address in the FDE
# encoding, e = DWARF expression block, + / - = remember / restore state.
_CFA: list[str | None] = [None] * 0x40
for _op, _form in ((0x00, ""), (0x01, "a"), (0x02, "1"), (0x03, "2"), (0x04, "4"),
                   (0x05, "ru"), (0x06, "r"), (0x07, "r"), (0x08, "r"), (0x09, "rg"),
                   (0x0A, "+"), (0x0B, "-"), (0x0C, "gu"), (0x0D, "g"), (0x0E, "u"),
                   (0x0F, "e"), (0x10, "re"), (0x11, "rs"), (0x12, "gs"), (0x13, "s"),
                   (0x14, "gu"), (0x15, "gs"), (0x16, "ge"),       # val rules: libgcc writes the value
                   (0x2E, "u"), (0x2F, "ru")):                     # GNU_args_size, GNU_negative_offset_extended
    _CFA[_op] = _form

# DW_OP -> (operands, values popped, net change of the stack); operands as above,
# plus 8 = 8 bytes, j = 2-byte branch offset, k = pick index, z = deref size.
_OPS: dict[int, tuple[str, int, int]] = {
    0x03: ("8", 0, 1), 0x06: ("", 1, 0), 0x08: ("1", 0, 1), 0x09: ("1", 0, 1),
    0x0A: ("2", 0, 1), 0x0B: ("2", 0, 1), 0x0C: ("4", 0, 1), 0x0D: ("4", 0, 1),
    0x0E: ("8", 0, 1), 0x0F: ("8", 0, 1), 0x10: ("u", 0, 1), 0x11: ("s", 0, 1),
    0x12: ("", 1, 1), 0x13: ("", 1, -1), 0x14: ("", 2, 1), 0x15: ("k", 0, 1),
    0x16: ("", 2, 0), 0x17: ("", 3, 0), 0x19: ("", 1, 0), 0x1F: ("", 1, 0),
    0x20: ("", 1, 0), 0x23: ("u", 1, 0), 0x28: ("j", 1, -1), 0x2F: ("j", 0, 0),
    0x90: ("g", 0, 1), 0x92: ("gs", 0, 1), 0x94: ("z", 1, 0), 0x96: ("", 0, 0),
}
for _op in (0x1A, 0x1C, 0x1E, 0x21, 0x22, 0x24, 0x25, 0x26, 0x27, 0x29, 0x2A, 0x2B, 0x2C, 0x2D, 0x2E):
    _OPS[_op] = ("", 2, -1)                                   # binary operations
for _i in range(32):
    _OPS[0x30 + _i] = ("", 0, 1)                              # lit0..lit31
for _i in range(MAX_REGISTER + 1):
    _OPS[0x50 + _i] = ("", 0, 1)                              # reg0..reg16
    _OPS[0x70 + _i] = ("s", 0, 1)                             # breg0..breg16


# The CFA programs gcc and LLVM emit, matched in one go by a regular expression
# (an instruction encoding is prefix-free, so the match is a decode): the
# instructions without addresses or expressions, registers libgcc reads given
# as one byte, and remember/restore nested at most 3 deep with at most 4
# remembers left open.  A program that does not match is decoded by _program,
# which accepts more and says what is wrong.
_LEB_RE = rb"[\x80-\xff]{0,9}[\x00-\x7f]"
_REG_RE = rb"[\x00-\x10]"
_SIMPLE = (rb"(?:[\x00\x40-\x7f\xc0-\xff]|[\x06-\x08\x0e\x13\x2e\x80-\xbf]" + _LEB_RE
           + rb"|[\x05\x11\x2f]" + _LEB_RE + _LEB_RE + rb"|[\x0c\x12\x14\x15]" + _REG_RE + _LEB_RE
           + rb"|\x0d" + _REG_RE + rb"|\x09" + _LEB_RE + _REG_RE
           + rb"|\x02.|\x03..|\x04....)")
_nested = _SIMPLE + rb"*+"
for _ in range(3):
    _nested = rb"(?:" + _SIMPLE + rb"|\x0a" + _nested + rb"\x0b)*+"
_FAST_PROGRAM = re.compile(_nested + rb"(?:\x0a" + _nested + rb"){0,4}+", re.DOTALL)
MAX_REMEMBERED = 64     # libgcc allocas a register set per open DW_CFA_remember_state


class _Bad(Exception):
    """What is wrong with the record being checked (the caller adds where)."""


def _uleb(d: bytes, p: int) -> tuple[int, int]:
    b = d[p]
    if b < 0x80:
        return b, p + 1
    v, shift = b & 0x7F, 7
    while True:
        p += 1
        b = d[p]
        v |= (b & 0x7F) << shift
        if b < 0x80:
            return v, p + 1
        shift += 7
        if shift > 63:
            raise _Bad(f"has a LEB128 number longer than 10 bytes at +{p:#x}")


def _encoding(enc: int, letter: str) -> None:
    if enc == OMIT and letter == "L":
        return
    fmt = enc & 0x0F
    if fmt not in _FIXED and fmt not in _LEB:
        raise _Bad(f"'{letter}' encoding {enc:#04x} has an unknown value format")
    if enc & 0x70 > 0x10:
        raise _Bad(f"'{letter}' encoding {enc:#04x} is not absolute or pc-relative")
    if enc & 0x80 and letter != "P":
        raise _Bad(f"'{letter}' encoding {enc:#04x} is indirect")
    if letter == "R" and fmt in _LEB:
        raise _Bad(f"'R' encoding {enc:#04x} is not fixed-size")


def _pointer(d: bytes, p: int, end: int, enc: int, rel: dict[int, int], used: list[int], what: str) -> int:
    """Check the encoded pointer at ``p`` against its relocation; return where it ends."""
    size = _FIXED.get(enc & 0x0F)
    kind = rel.get(p)
    if size is None:                      # LEB128: no relocation can write one
        q = _uleb(d, p)[1]
        if kind is not None or q != p + 1 or d[p]:
            raise _Bad(f"{what} at +{p:#x} is a non-zero LEB128 number, which cannot be relocated")
        return q
    if p + size > end:
        raise _Bad(f"{what} at +{p:#x} runs past the end of the record")
    if kind is None:
        if any(d[p:p + size]):
            raise _Bad(f"{what} at +{p:#x} is not zero and has no relocation")
    elif kind in _KINDS.get(enc, ()):
        used.append(p)
    else:
        raise _Bad(f"{what} at +{p:#x} is encoded {enc:#04x} but relocated with "
                   f"{NAMES.get(kind, kind)}, which writes something else")
    return p + size


def _register(d: bytes, p: int, limit: bool) -> int:
    at = p
    reg = d[p]
    if reg < 0x80:
        p += 1
    else:
        reg, p = _uleb(d, p)
    if limit and reg > MAX_REGISTER:
        raise _Bad(f"names DWARF register {reg} at +{at:#x}, which the unwinder cannot read")
    return p


def _expression(d: bytes, start: int, end: int) -> None:
    """Check the DWARF expression block d[start:end] as libgcc would run it."""
    ops = []        # (offset, values popped, net change, branch target or -1, pick index or -1, is skip)
    p = start
    while p < end:
        at, op = p, d[p]
        p += 1
        spec = _OPS.get(op)
        if spec is None:
            raise _Bad(f"has DWARF operation {op:#04x} at +{at:#x}, which the unwinder cannot run")
        form, pops, net = spec
        target = pick = -1
        for f in form:
            if f == "u" or f == "s":
                p = _uleb(d, p)[1]
            elif f == "g":
                p = _register(d, p, True)
            elif f == "k":
                pick = d[p]
                p += 1
            elif f == "z":
                if d[p] not in (1, 2, 4, 8):
                    raise _Bad(f"has DW_OP_deref_size {d[p]} at +{at:#x}")
                p += 1
            elif f == "j":
                if p + 2 > end:
                    raise _Bad(f"has a DWARF expression at +{start:#x} that runs past its block")
                target = p + 2 + int.from_bytes(d[p:p + 2], "little", signed=True)
                p += 2
                if target < p:
                    raise _Bad(f"has a backward DWARF branch at +{at:#x}")
            else:
                p += int(f)
        ops.append((at, pops, net, target, pick, op == 0x2F))
    if p != end:
        raise _Bad(f"has a DWARF expression at +{start:#x} that runs past its block")
    starts = {o[0] for o in ops}
    depths: dict[int, set[int]] = {start: {1}}     # libgcc pushes one initial value
    for i, (at, pops, net, target, pick, skip) in enumerate(ops):
        here = depths.pop(at, None)
        if not here:                                # unreachable
            continue
        for n in here:
            if n < pops or (pick >= 0 and pick >= n - 1):   # libgcc asserts pick < depth - 1
                raise _Bad(f"has a DWARF operation at +{at:#x} that pops an empty stack")
            if n + net > 64:
                raise _Bad(f"has a DWARF expression at +{start:#x} that overflows the unwinder's stack")
        after = {n + net for n in here}
        if target >= 0:
            if target != end and target not in starts:
                raise _Bad(f"has a DWARF branch at +{at:#x} into the middle of an operation")
            depths.setdefault(target, set()).update(after)
        if not skip:
            depths.setdefault(ops[i + 1][0] if i + 1 < len(ops) else end, set()).update(after)
    if min(depths.get(end, (1,))) < 1:
        raise _Bad(f"has a DWARF expression at +{start:#x} that leaves no value")


def _program(d: bytes, p: int, end: int, fde_enc: int, rel: dict[int, int], used: list[int]) -> None:
    """Decode the CFA instructions d[p:end] (those _FAST_PROGRAM does not match)."""
    depth = 0
    cfa = _CFA
    while p < end:
        op = d[p]
        p += 1
        if op >= 0x40:
            if 0x80 <= op < 0xC0:         # DW_CFA_offset: ULEB128 offset (advance_loc, restore: none)
                if d[p] < 0x80:
                    p += 1
                else:
                    p = _uleb(d, p)[1]
            continue
        form = cfa[op]
        if form is None:
            raise _Bad(f"has unknown CFA instruction {op:#04x} at +{p - 1:#x}")
        for f in form:
            if f == "u" or f == "s":
                if d[p] < 0x80:
                    p += 1
                else:
                    p = _uleb(d, p)[1]
            elif f == "r" or f == "g":
                p = _register(d, p, f == "g")
            elif f == "+":
                depth += 1
                if depth > MAX_REMEMBERED:
                    raise _Bad(f"has more than {MAX_REMEMBERED} nested DW_CFA_remember_state at +{p - 1:#x}")
            elif f == "-":
                if not depth:
                    raise _Bad(f"has DW_CFA_restore_state at +{p - 1:#x} with no DW_CFA_remember_state before it")
                depth -= 1
            elif f == "a":
                p = _pointer(d, p, end, fde_enc, rel, used, "DW_CFA_set_loc address")
            elif f == "e":
                n, p = _uleb(d, p)
                if p + n > end:
                    raise _Bad(f"has a DWARF expression block at +{p:#x} that runs past the end of the record")
                _expression(d, p, p + n)
                p += n
            else:
                p += int(f)
    if p > end:
        raise _Bad("has CFA instructions that run past the end of the record")


# (has 'z', FDE encoding, its size, LSDA encoding, relocation kinds for pc_begin)
_CieInfo = tuple[bool, int, int, int, tuple[int, ...]]


def _cie(d: bytes, pos: int, end: int, rel: dict[int, int],
         used: list[int]) -> tuple[_CieInfo, tuple[int, int] | None, bool]:
    """Check a CIE; return what its FDEs need, its personality field as
    (offset in the record, encoding) and whether the result depends on the
    record's bytes alone (apart from that field's relocation)."""
    p = pos + 8
    if p >= end:
        raise _Bad("has no version")
    version = d[p]
    if version != 1 and version != 3:
        raise _Bad(f"has version {version} (1 or 3 expected)")
    nul = d.find(b"\0", p + 1, end)
    if nul < 0:
        raise _Bad("has an augmentation string that runs past the end of the record")
    aug = d[p + 1:nul]
    p = _uleb(d, nul + 1)[1]                  # code alignment factor
    p = _uleb(d, p)[1]                        # data alignment factor
    if version == 1:
        ra = d[p]
        p += 1
    else:
        ra, p = _uleb(d, p)
    if ra > MAX_REGISTER:
        raise _Bad(f"has return-address column {ra}, which the unwinder cannot read")
    fde_enc, lsda_enc = 0, OMIT               # no 'R': absptr
    personality = None
    z = aug[:1] == b"z"
    if aug and not z:
        raise _Bad(f"has augmentation {aug.decode('latin-1')!r}, which does not start with 'z'")
    if z:
        n, p = _uleb(d, p)
        aug_end = p + n
        if aug_end > end:
            raise _Bad(f"has {n} bytes of augmentation data, past the end of the record")
        seen = ""
        for c in aug[1:].decode("latin-1"):
            if c not in "RPLSB" or c in seen or (c in "RPL" and ("S" in seen or "B" in seen)):
                raise _Bad(f"has augmentation {aug.decode('latin-1')!r}, which the unwinder cannot read "
                           "('z', then R, P, L, then S, B, each at most once)")
            seen += c
            if c == "R" or c == "L" or c == "P":
                if p >= aug_end:
                    raise _Bad(f"has augmentation data too short for {aug.decode('latin-1')!r}")
                enc = d[p]
                _encoding(enc, c)
                p += 1
                if c == "R":
                    fde_enc = enc
                elif c == "L":
                    lsda_enc = enc
                else:
                    personality = (p - pos, enc)
                    p = _pointer(d, p, aug_end, enc, rel, used, "personality pointer")
        if p != aug_end:
            raise _Bad(f"has {n} bytes of augmentation data, but {aug.decode('latin-1')!r} "
                       f"describes {n - aug_end + p}")
    elif p > end:
        raise _Bad("runs past the end of the record")
    simple = _FAST_PROGRAM.fullmatch(d, p, end) is not None
    if not simple:
        _program(d, p, end, fde_enc, rel, used)
    return (z, fde_enc, _FIXED[fde_enc & 0x0F], lsda_enc, _KINDS.get(fde_enc, ())), personality, simple


def _fde(d: bytes, pos: int, end: int, cie: _CieInfo, rel: dict[int, int], used: list[int]) -> None:
    z, fde_enc, size, lsda_enc, kinds = cie
    p = pos + 8
    q = p + size
    if q + size > end:
        raise _Bad("is too short for pc_begin and pc_range")
    kind = rel.get(p)
    if kind is not None and kind in kinds:
        used.append(p)
    else:
        _pointer(d, p, end, fde_enc, rel, used, "pc_begin")      # says what is wrong, or it is 0
    p = q + size
    if fde_enc & 0x8 and d[p - 1] & 0x80:
        raise _Bad(f"has a negative pc_range at +{q:#x}")
    if z:
        n = d[p]
        if n < 0x80:
            p += 1
        else:
            n, p = _uleb(d, p)
        aug_end = p + n
        if aug_end > end:
            raise _Bad(f"has {n} bytes of augmentation data, past the end of the record")
        if lsda_enc != OMIT:
            q = _pointer(d, p, aug_end, lsda_enc, rel, used, "LSDA pointer")
            if q != aug_end:
                raise _Bad(f"has {n} bytes of augmentation data for a {q - p}-byte LSDA pointer")
        p = aug_end
    if _FAST_PROGRAM.fullmatch(d, p, end) is None:
        _program(d, p, end, fde_enc, rel, used)


# CIE record bytes -> (what its FDEs need, personality field): most objects
# repeat the same few CIEs.  Only CIEs whose check depends on nothing but
# their bytes and the personality relocation are kept; any other relocation
# inside a cached CIE stays unclaimed and is reported at the end.
_cie_cache: dict[bytes, tuple[_CieInfo, tuple[int, int] | None]] = {}


# FDE tails (what follows pc_range: augmentation data and CFA program) that
# ``_fde`` passed, by (has 'z', tail bytes): functions with the same
# prologue have the same tail whatever their address and size, so most FDEs
# of most objects are found here and only their pc_begin and pc_range are
# checked.  Only tails without an LSDA whose program the fast decode matched
# are kept: their check depends on their bytes alone (a relocation inside
# one is claimed by no field and reported at the end).
_fde_cache: set[tuple[bool, bytes]] = set()


def _known_fde(d: bytes, pos: int, end: int, cie: _CieInfo, rel: dict[int, int], used: list[int]) -> bool:
    """Whether the FDE at ``pos`` passes ``_fde`` by the cache (then its
    pc_begin is claimed in ``used``)."""
    z, fde_enc, size, lsda_enc, kinds = cie
    q = pos + 8 + 2 * size
    if lsda_enc != OMIT or q > end or rel.get(pos + 8) not in kinds or fde_enc & 0x8 and d[q - 1] & 0x80:
        return False
    if (z, d[q:end]) not in _fde_cache:
        return False
    used.append(pos + 8)
    return True


def _remember_fde(d: bytes, pos: int, end: int, cie: _CieInfo) -> None:
    """Keep the tail of an FDE ``_fde`` passed, if its check depends on its bytes alone."""
    z, _, size, lsda_enc, _ = cie
    q = pos + 8 + 2 * size
    if lsda_enc == OMIT and q <= end:
        p = q
        if z:
            if d[p] >= 0x80:
                return
            p += 1 + d[p]
        if _FAST_PROGRAM.fullmatch(d, p, end) is not None:
            if len(_fde_cache) >= 4096:
                _fde_cache.clear()
            _fde_cache.add((z, d[q:end]))


def known_records(data: bytes, rel: dict[int, int]) -> tuple[int, list[tuple[int, int]]] | None:
    """The check of the quick link (quick.py), from the caches alone: where
    the records end and each FDE's (position, pointer size), if every CIE
    and every FDE tail is one ``prune_eh_frame`` passed before and every
    relocation (``rel``: offset -> kind) is an FDE's ``pc_begin``; else None,
    and the full check runs.  Where each ``pc_begin`` points and how far its
    range reaches depend on the object: the caller checks those."""
    n = len(data)
    pos = 0
    cies: dict[int, _CieInfo] = {}
    fdes: list[tuple[int, int]] = []
    used: list[int] = []
    unpack = _u32.unpack_from
    while pos + 4 <= n:
        (length,) = unpack(data, pos)
        if length == 0:
            break
        end = pos + 4 + length
        if end > n or length < 4:
            return None
        (cie_id,) = unpack(data, pos + 4)
        if cie_id == 0:
            hit = _cie_cache.get(data[pos:end])
            if hit is None or hit[1] is not None:
                return None
            cies[pos] = hit[0]
        else:
            cie = cies.get(pos + 4 - cie_id)
            if cie is None or not _known_fde(data, pos, end, cie, rel, used):
                return None
            fdes.append((pos, cie[2]))
        pos = end
    if len(used) != len(rel) or any(data[pos:]):
        return None
    return pos, fdes


def _check_targets(data: bytes, relocs: list[Rela], where: str, obj: ObjectFile,
                   fdes: list[tuple[int, _CieInfo]], personalities: list[tuple[int, int, int]]) -> None:
    """What the relocated pointers point at: each FDE at code of this object,
    all its ``pc_range`` inside that section; each LSDA at data of this
    object; each personality at code, or at a slot holding it when indirect."""
    target = {off: (kind, si, a) for off, kind, si, a in relocs if kind != Reloc.NONE}
    shnum, shndx, flags = obj.shnum, obj.sym_shndx, obj.sh_flags
    for pos, (z, _enc, size, lsda_enc, _kinds) in fdes:
        t = target.get(pos + 8)
        if t is None:                    # pc_begin 0: libgcc skips the FDE
            continue
        _k, si, a = t
        x = shndx[si]
        if not 0 < x < shnum or not flags[x] & SHF_EXECINSTR:
            raise MalformedObjectError(f"{where}+{pos:#x}: FDE pc_begin points at {obj.symbol_name(si) or si!r}, "
                                       "which is not code of this object")
        start = obj.sym_value[si] + a
        p = pos + 8 + size
        stop = start + int.from_bytes(data[p:p + size], "little")
        if start < 0 or stop > obj.sh_size[x]:
            raise MalformedObjectError(f"{where}+{pos:#x}: FDE covers {start:#x}..{stop:#x} of section "
                                       f"{obj.section_name(x)!r}, which has {obj.sh_size[x]:#x} bytes")
        if z and lsda_enc != OMIT:
            p = _uleb(data, p + size)[1]
            t = target.get(p)
            if t is not None:
                _k, si, a = t
                x = shndx[si]
                if not 0 < x < shnum or flags[x] & SHF_EXECINSTR or not 0 <= obj.sym_value[si] + a < obj.sh_size[x]:
                    raise MalformedObjectError(f"{where}+{pos:#x}: FDE LSDA pointer points at "
                                               f"{obj.symbol_name(si) or si!r}, which is not data of this object")
    for pos, off, enc in personalities:
        t = target.get(off)
        if t is None:
            continue
        kind, si, _a = t
        x = shndx[si]
        typ = obj.sym_info[si] & 15
        defined = 0 < x < shnum
        code = typ == STT_FUNC or (defined and flags[x] & SHF_EXECINSTR)
        data_object = typ == STT_OBJECT or (defined and not flags[x] & SHF_EXECINSTR)
        if enc & 0x80 and kind != Reloc.GOTPCREL:
            if code:
                raise MalformedObjectError(f"{where}+{pos:#x}: CIE personality pointer at +{off:#x} is encoded "
                                           f"{enc:#04x} (indirect) but points at code ({obj.symbol_name(si) or si!r})")
        elif data_object:
            raise MalformedObjectError(f"{where}+{pos:#x}: CIE personality pointer at +{off:#x} is encoded "
                                       f"{enc:#04x} (direct) but points at data ({obj.symbol_name(si) or si!r})")


def _check_cie(data: bytes, pos: int, end: int, rel: dict[int, int], used: list[int],
               where: str) -> tuple[_CieInfo, tuple[int, int] | None]:
    """``_cie`` through the cache of CIEs already checked, errors named."""
    try:
        key = data[pos:end]
        hit = _cie_cache.get(key)
        if hit is None:
            info, personality, simple = _cie(data, pos, end, rel, used)
            if simple:
                if len(_cie_cache) >= 256:
                    _cie_cache.clear()
                _cie_cache[key] = info, personality
            return info, personality
        info, personality = hit
        if personality:
            _pointer(data, pos + personality[0], end, personality[1], rel, used, "personality pointer")
        return info, personality
    except _Bad as e:
        raise MalformedObjectError(f"{where}+{pos:#x}: CIE {e}") from None
    except IndexError:
        raise MalformedObjectError(f"{where}+{pos:#x}: CIE runs past the end of the section") from None


def _check_fde(data: bytes, pos: int, end: int, cie: _CieInfo, rel: dict[int, int], used: list[int],
               where: str) -> None:
    """``_fde``, errors named."""
    try:
        _fde(data, pos, end, cie, rel, used)
    except _Bad as e:
        raise MalformedObjectError(f"{where}+{pos:#x}: FDE {e}") from None
    except IndexError:
        raise MalformedObjectError(f"{where}+{pos:#x}: FDE runs past the end of the section") from None


# --- big sections: records as numpy columns ------------------------------------
#
# A section with many relocations (``vector.MIN_ROWS``: gcc's and LLVM's
# objects carry one or two per FDE) is checked as columns: the native
# helpers walk its records and decode its CFA programs (``native.py``), numpy
# checks the fields of all FDEs of one CIE at once, and what they do not
# vouch for goes through the record-by-record code above, which says what
# is wrong.  Same checks, same errors; only which of several errors is named
# first may differ.

class _Fdes:
    """A big section's FDEs as columns: start, end, and which of ``infos``
    (the distinct CIE contents) each one's CIE has."""

    __slots__ = ("pos", "end", "group", "infos")

    def __init__(self, pos: Any, end: Any, group: Any, infos: list[_CieInfo]) -> None:
        self.pos, self.end, self.group, self.infos = pos, end, group, infos

    def records(self) -> list[tuple[int, _CieInfo]]:
        infos = self.infos
        return [(p, infos[g]) for p, g in zip(self.pos.tolist(), self.group.tolist())]


def _u32s(np: Any, d: Any, at: Any) -> Any:
    """The little-endian 32-bit words of byte array ``d`` at offsets ``at`` (int64)."""
    b = d[at[:, None] + np.arange(4)].astype(np.int64)
    return b[:, 0] | b[:, 1] << 8 | b[:, 2] << 16 | b[:, 3] << 24


def _failing_programs(data: bytes, starts: Any, ends: Any) -> Any:
    """Which of the CFA programs ``data[starts[k]:ends[k]]`` (int64 arrays;
    0 <= start <= end <= len(data)) the fast decode does not vouch for, by index."""
    np = numpy()
    assert np is not None
    h = native.helpers()
    if h is not None and len(starts):
        starts = np.ascontiguousarray(starts, np.int64)
        ends = np.ascontiguousarray(ends, np.int64)
        ok = np.zeros(len(starts), np.uint8)
        d = np.frombuffer(data, np.uint8)
        h.cfa_check(d.ctypes.data, starts.ctypes.data, ends.ctypes.data, len(starts), ok.ctypes.data)
        return np.flatnonzero(ok == 0)
    match = _FAST_PROGRAM.fullmatch
    return np.array([k for k, (p, end) in enumerate(zip(starts.tolist(), ends.tolist()))
                     if match(data, p, end) is None], np.int64)


def _check_fdes(data: bytes, fdes: _Fdes, rel: dict[int, int], fields: tuple[Any, Any] | None, used: list[int],
                where: str) -> None:
    """``_fde`` for the FDEs of a big section, one CIE's FDEs at a time:
    pc_begin relocated as the CIE's encoding says, pc_range not negative,
    augmentation data inside the record, the CFA program decoded.  FDEs the
    columns do not vouch for (an LSDA, a pc_begin without relocation,
    anything odd) go through ``_fde`` one by one.  ``fields``: the offsets
    and kinds of ``rel`` as arrays sorted by offset, if the caller has them."""
    np = numpy()
    assert np is not None
    d = np.frombuffer(data, np.uint8)
    last = len(data) - 1
    if fields is None:
        ordered = sorted(rel.items())
        fields = np.array([o for o, _ in ordered], np.int64), np.array([k for _, k in ordered], np.int64)
    roff, rkind = fields
    if not len(roff):
        roff, rkind = np.array([-1], np.int64), np.array([-1], np.int64)
    slow: list[int] = []
    for g, (z, fde_enc, size, lsda_enc, kinds) in enumerate(fdes.infos):
        m = np.flatnonzero(fdes.group == g)
        if lsda_enc != OMIT or not kinds:
            slow += m.tolist()
            continue
        end = fdes.end[m]
        pc_begin = fdes.pos[m] + 8
        p = pc_begin + 2 * size                         # past pc_range
        ok = p <= end
        i = np.minimum(np.searchsorted(roff, pc_begin), len(roff) - 1)
        ok &= roff[i] == pc_begin
        k = rkind[i]
        ok &= (k == kinds[0]) if len(kinds) == 1 else np.isin(k, kinds)
        if fde_enc & 0x8:
            ok &= d[np.minimum(p - 1, last)] < 0x80     # pc_range's sign bit
        if z:
            n = d[np.minimum(p, last)].astype(np.int64)  # augmentation length: one ULEB128 byte
            ok &= (p < end) & (n < 0x80)
            p = p + 1 + n
            ok &= p <= end
        rows = np.flatnonzero(ok)
        ok[rows[_failing_programs(data, p[rows], end[rows])]] = False
        used += pc_begin[ok].tolist()
        slow += m[~ok].tolist()
    for j in sorted(slow):
        _check_fde(data, int(fdes.pos[j]), int(fdes.end[j]), fdes.infos[int(fdes.group[j])], rel, used, where)


def _check_targets_columns(data: bytes, cols: RelaColumns, where: str, obj: ObjectFile, fdes: _Fdes,
                           personalities: list[tuple[int, int, int]]) -> None:
    """``_check_targets`` for a big section: every FDE's pc_begin at code of
    this object and its range inside that section, as columns; LSDA and
    personality pointers (few) and anything the columns refuse go through
    ``_check_targets``, which says what is wrong."""
    np = numpy()
    assert np is not None
    live = cols.kind != Reloc.NONE
    off, sym, addend = cols.offset[live], cols.symbol[live], cols.addend[live]
    if len(off) > 1 and not (off[1:] > off[:-1]).all():
        order = np.argsort(off, kind="stable")
        off, sym, addend = off[order], sym[order], addend[order]
    value, shndx, _, _ = obj.symbol_columns()
    flags = np.array(obj.sh_flags, np.uint64)
    section_size = np.array(obj.sh_size, np.uint64)
    d = np.frombuffer(data, np.uint8)
    good = True
    for g, info in enumerate(fdes.infos):
        size = info[2]
        pc_begin = fdes.pos[fdes.group == g] + 8
        if not len(off):
            break
        i = np.minimum(np.searchsorted(off, pc_begin), len(off) - 1)
        has = off[i] == pc_begin
        i, pc_begin = i[has], pc_begin[has]      # pc_begin 0: libgcc skips the FDE
        si = sym[i]
        x = shndx[si]
        inside = (x > 0) & (x < obj.shnum)
        x = np.where(inside, x, 0)
        start = value[si] + addend[i].view(np.uint64)       # modulo 2**64: below 0 is far above
        at = (pc_begin + size)[:, None] + np.arange(size)
        length = (d[at].astype(np.uint64) << (np.arange(size, dtype=np.uint64) * np.uint64(8))).sum(
            axis=1, dtype=np.uint64)
        stop = start + length
        good = good and bool((inside & (flags[x] & np.uint64(SHF_EXECINSTR) != 0) & (start >> np.uint64(63) == 0)
                              & (stop >= start) & (stop <= section_size[x])).all())
    lsda = [g for g, info in enumerate(fdes.infos) if info[0] and info[3] != OMIT]
    if not good or lsda or personalities:
        records = fdes.records()
        _check_targets(data, cols.rows(), where, obj,
                       records if not good else [r for r in records if r[1][0] and r[1][3] != OMIT], personalities)


def _check_columns(data: bytes, cols: RelaColumns, rel: dict[int, int], where: str,
                   obj: ObjectFile | None) -> int | None:
    """The whole check of a big section none of whose FDEs is dropped, as
    columns; where its records end (the terminator).  None when the native
    walk finds something odd or is not there: the record-by-record check
    then runs, and says what."""
    np = numpy()
    h = native.helpers()
    if np is None or h is None:
        return None
    n = len(data)
    d = np.frombuffer(data, np.uint8)
    out = np.empty(n // 8 + 1, np.int64)
    stop = np.zeros(1, np.int64)
    count = h.eh_records(d.ctypes.data, n, out.ctypes.data, len(out), stop.ctypes.data)
    if count < 0:
        return None
    pos, end_of_records = out[:count], int(stop[0])
    length = _u32s(np, d, pos)
    ident = _u32s(np, d, pos + 4)
    end = pos + 4 + length
    cie = ident == 0
    fde_pos, fde_end, fde_cie = pos[~cie], end[~cie], (pos + 4 - ident)[~cie]
    cie_pos = pos[cie]
    j = np.minimum(np.searchsorted(cie_pos, fde_cie), max(len(cie_pos) - 1, 0))
    if len(fde_pos) and (not len(cie_pos) or not (cie_pos[j] == fde_cie).all()):
        return None                                 # an FDE whose CIE is not one
    used: list[int] = []
    personalities: list[tuple[int, int, int]] = []
    infos: dict[_CieInfo, int] = {}
    cie_group: list[int] = []
    for p, e in zip(cie_pos.tolist(), end[cie].tolist()):
        info, personality = _check_cie(data, p, e, rel, used, where)
        if personality:
            personalities.append((p, p + personality[0], personality[1]))
        cie_group.append(infos.setdefault(info, len(infos)))
    if end_of_records != n and any(data[end_of_records:]):
        raise MalformedObjectError(f"{where}+{end_of_records:#x}: trailing bytes after the .eh_frame terminator")
    fdes = _Fdes(fde_pos, fde_end, np.array(cie_group, np.int64)[j] if len(fde_pos) else j, list(infos))
    live = cols.kind != Reloc.NONE
    roff, rkind = cols.offset[live], cols.kind[live]
    if len(roff) > 1 and not (roff[1:] > roff[:-1]).all():
        order = np.argsort(roff, kind="stable")
        roff, rkind = roff[order], rkind[order]
    _check_fdes(data, fdes, rel, (roff, rkind), used, where)
    if len(used) != len(rel):
        _unclaimed(data, rel, used, end_of_records, where)
    if obj is not None:
        _check_targets_columns(data, cols, where, obj, fdes, personalities)
    return end_of_records


def _unclaimed(data: bytes, rel: dict[int, int], used: list[int], pos: int, where: str) -> None:
    """The error for a relocation that applies to no pointer field."""
    off = min(set(rel).difference(used))
    start = 0
    while start + 4 <= pos and start + 4 + _u32.unpack_from(data, start)[0] <= off:
        start += 4 + _u32.unpack_from(data, start)[0]
    raise MalformedObjectError(f"{where}+{start:#x}: relocation {NAMES.get(rel[off], rel[off])} at +{off:#x} "
                               "applies to no pointer field of a CIE or FDE")


def prune_eh_frame(data: bytes, relocs: list[Rela] | RelaColumns, where: str,
                   dropped: Callable[[int], bool] | None = None, *,
                   obj: ObjectFile | None = None) -> tuple[bytes, list[Rela] | RelaColumns]:
    """Check an ``.eh_frame`` section completely (see the module docstring)
    and remove FDEs whose ``pc_begin`` points into a discarded section.
    With ``obj``, the object the section belongs to, also check what the
    relocated pointers point at (``_check_targets``).

    ``relocs`` are the section's relocations, as a list or (a big section)
    as numpy columns, which are checked as columns (see above).

    Returns the section bytes and relocations, moved to match when FDEs were removed.
    """
    if type(data) is not bytes:
        data = bytes(data)
    n = len(data)
    rel: dict[int, int] = {}
    cols = relocs if isinstance(relocs, RelaColumns) else None
    if cols is not None:
        live = cols.kind != Reloc.NONE
        rel = dict(zip(cols.offset[live].tolist(), cols.kind[live].tolist()))
        if len(rel) != int(live.sum()):         # the row-by-row check says which field
            return prune_eh_frame(data, cols.rows(), where, dropped, obj=obj)
        if dropped is None:
            stop = _check_columns(data, cols, rel, where, obj)
            if stop is not None:
                return (data[:stop] if stop != n else data), relocs
    else:
        for off, kind, _si, _a in _rows(relocs):
            if kind != Reloc.NONE:
                if off in rel:
                    raise MalformedObjectError(f"{where}+{off:#x}: two relocations apply to one .eh_frame field")
                rel[off] = kind
    used: list[int] = []        # relocations found at the pointer fields they belong to
    # field offset -> the symbol its relocation names: an FDE goes when its pc_begin's symbol is dropped
    pc_symbol: dict[int, int] = {}
    if dropped is not None:
        pc_symbol = {off: si for off, kind, si, _a in _rows(relocs) if kind != Reloc.NONE}
    keep: list[tuple[int, int]] = []   # kept records as (start, end), when some may go
    cies: dict[int, _CieInfo] = {}
    fdes: list[tuple[int, _CieInfo]] = []
    batch: list[tuple[int, int, _CieInfo]] | None = [] if cols is not None else None   # FDEs checked as columns
    personalities: list[tuple[int, int, int]] = []     # (CIE, personality field, encoding)
    pos = 0
    unpack = _u32.unpack_from
    while pos + 4 <= n:
        (length,) = unpack(data, pos)
        if length == 0:
            break
        if length == 0xFFFFFFFF:
            raise MalformedObjectError(f"{where}+{pos:#x}: 64-bit .eh_frame records are not supported")
        end = pos + 4 + length
        if end > n or length < 4:
            raise MalformedObjectError(f"{where}+{pos:#x}: .eh_frame record of length {length} runs past the section")
        (cie_id,) = unpack(data, pos + 4)
        if cie_id == 0:
            hit = _cie_cache.get(data[pos:end])
            if hit is not None and hit[1] is None:      # seen before, nothing relocated in it
                cies[pos] = hit[0]
            else:
                info, personality = _check_cie(data, pos, end, rel, used, where)
                if personality:
                    personalities.append((pos, pos + personality[0], personality[1]))
                cies[pos] = info
        else:
            cie = cies.get(pos + 4 - cie_id)
            if cie is None:
                raise MalformedObjectError(f"{where}+{pos:#x}: FDE points at {pos + 4 - cie_id:#x}, which is no CIE")
            if batch is not None:
                batch.append((pos, end, cie))
            elif not _known_fde(data, pos, end, cie, rel, used):
                _check_fde(data, pos, end, cie, rel, used, where)
                _remember_fde(data, pos, end, cie)
            fdes.append((pos, cie))
        if dropped is not None:
            pc_begin = pc_symbol.get(pos + 8) if cie_id else None
            if pc_begin is None or not dropped(pc_begin):
                keep.append((pos, end))
        pos = end
    if pos != n and any(data[pos:]):
        raise MalformedObjectError(f"{where}+{pos:#x}: trailing bytes after the .eh_frame terminator")
    if batch:
        np = numpy()
        assert np is not None
        groups: dict[_CieInfo, int] = {}
        _check_fdes(data, _Fdes(np.array([b[0] for b in batch], np.int64), np.array([b[1] for b in batch], np.int64),
                                np.array([groups.setdefault(b[2], len(groups)) for b in batch], np.int64),
                                list(groups)), rel, None, used, where)
    if len(used) != len(rel):
        _unclaimed(data, rel, used, pos, where)
    if obj is not None:
        _check_targets(data, _rows(relocs), where, obj, fdes, personalities)
    if dropped is None or sum(stop - start for start, stop in keep) == pos:
        # without its terminator: one object's sections are laid end to end
        # in one table, and the linker writes a single terminator after them
        return (data[:pos] if pos != n else data), relocs
    new_pos: dict[int, int] = {}
    out = bytearray()
    for start, stop in keep:
        new_pos[start] = len(out)
        out += data[start:stop]
    for start, _stop in keep:   # FDEs point back at their CIE relative to the id field
        (cie_id,) = _u32.unpack_from(data, start + 4)
        if cie_id:
            _u32.pack_into(out, new_pos[start] + 4, new_pos[start] + 4 - new_pos[start + 4 - cie_id])
    starts = [start for start, _ in keep]
    moved: list[Rela] = []
    for off, kind, si, a in _rows(relocs):
        j = bisect.bisect_right(starts, off) - 1
        if j >= 0 and off < keep[j][1]:
            moved.append((off - starts[j] + new_pos[starts[j]], kind, si, a))
    return bytes(out), moved


def _rows(relocs: list[Rela] | RelaColumns) -> list[Rela]:
    return relocs.rows() if isinstance(relocs, RelaColumns) else relocs
