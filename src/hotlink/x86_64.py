"""x86-64: relocation kinds, GOT entries, stubs and GOT-load relaxation.

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
* TLS relocations need the dynamic loader's TLS blocks; not supported.
"""
from __future__ import annotations

import struct
from typing import Any, Callable, Protocol

from .errors import MalformedObjectError, UnsupportedRelocationError

R_NONE, R_64, R_PC32, R_GOT32, R_PLT32 = 0, 1, 2, 3, 4
R_GOTPCREL, R_32, R_32S, R_16, R_PC16, R_8, R_PC8 = 9, 10, 11, 12, 13, 14, 15
R_DTPMOD64, R_DTPOFF64, R_TPOFF64, R_TLSGD, R_TLSLD, R_DTPOFF32 = 16, 17, 18, 19, 20, 21
R_GOTTPOFF, R_TPOFF32, R_PC64, R_GOTOFF64, R_GOTPC32, R_GOT64 = 22, 23, 24, 25, 26, 27
R_GOTPCREL64, R_GOTPC64, R_GOTPLT64, R_PLTOFF64, R_SIZE32, R_SIZE64 = 28, 29, 30, 31, 32, 33
R_GOTPC32_TLSDESC, R_TLSDESC_CALL, R_TLSDESC = 34, 35, 36
R_GOTPCRELX, R_REX_GOTPCRELX = 41, 42

NAMES = {
    0: "R_X86_64_NONE", 1: "R_X86_64_64", 2: "R_X86_64_PC32", 3: "R_X86_64_GOT32",
    4: "R_X86_64_PLT32", 5: "R_X86_64_COPY", 6: "R_X86_64_GLOB_DAT", 7: "R_X86_64_JUMP_SLOT",
    8: "R_X86_64_RELATIVE", 9: "R_X86_64_GOTPCREL", 10: "R_X86_64_32", 11: "R_X86_64_32S",
    12: "R_X86_64_16", 13: "R_X86_64_PC16", 14: "R_X86_64_8", 15: "R_X86_64_PC8",
    16: "R_X86_64_DTPMOD64", 17: "R_X86_64_DTPOFF64", 18: "R_X86_64_TPOFF64", 19: "R_X86_64_TLSGD",
    20: "R_X86_64_TLSLD", 21: "R_X86_64_DTPOFF32", 22: "R_X86_64_GOTTPOFF", 23: "R_X86_64_TPOFF32",
    24: "R_X86_64_PC64", 25: "R_X86_64_GOTOFF64", 26: "R_X86_64_GOTPC32", 27: "R_X86_64_GOT64",
    28: "R_X86_64_GOTPCREL64", 29: "R_X86_64_GOTPC64", 30: "R_X86_64_GOTPLT64",
    31: "R_X86_64_PLTOFF64", 32: "R_X86_64_SIZE32", 33: "R_X86_64_SIZE64",
    34: "R_X86_64_GOTPC32_TLSDESC", 35: "R_X86_64_TLSDESC_CALL", 36: "R_X86_64_TLSDESC",
    37: "R_X86_64_IRELATIVE", 41: "R_X86_64_GOTPCRELX", 42: "R_X86_64_REX_GOTPCRELX",
}
TLS_KINDS = frozenset((R_DTPMOD64, R_DTPOFF64, R_TPOFF64, R_TLSGD, R_TLSLD, R_DTPOFF32,
                       R_GOTTPOFF, R_TPOFF32, R_GOTPC32_TLSDESC, R_TLSDESC_CALL, R_TLSDESC))
# Kinds whose symbol needs a GOT entry unless relaxed away.
GOT_KINDS = frozenset((R_GOT32, R_GOTPCREL, R_GOT64, R_GOTPCREL64, R_GOTPLT64,
                       R_GOTPCRELX, R_REX_GOTPCRELX))

GOT_ENTRY_SIZE = 8
STUB_SIZE, STUB_ALIGN = 16, 16
_MASK64 = (1 << 64) - 1
_S32 = 1 << 31

_i32 = struct.Struct("<i").pack_into
_u32 = struct.Struct("<I").pack_into
_q64 = struct.Struct("<Q").pack_into
_u16 = struct.Struct("<H").pack_into


def stub_bytes(target: int) -> bytes:
    # jmp *0(%rip)  ; .quad target ; int3 int3
    return b"\xff\x25\x00\x00\x00\x00" + struct.pack("<Q", target) + b"\xcc\xcc"


def got_entry_bytes(target: int) -> bytes:
    return struct.pack("<Q", target & _MASK64)


class Tables(Protocol):
    def got(self, target: int) -> int: ...
    def stub(self, target: int) -> int: ...


def _near(v: int) -> bool:
    return -_S32 <= v < _S32


def _relax_got_load(buf: bytearray, off: int, kind: int) -> bool:
    """Rewrite a GOT load at ``off`` into a direct reference; False if not a known pattern."""
    if off < 2:
        return False
    op, modrm = buf[off - 2], buf[off - 1]
    if op == 0x8B and (modrm & 0xC7) == 0x05:           # mov foo@GOTPCREL(%rip), %reg
        buf[off - 2] = 0x8D                               # lea foo(%rip), %reg
        return True
    if kind == R_GOTPCRELX and op == 0xFF and modrm == 0x15:   # call *foo@GOTPCREL(%rip)
        buf[off - 2], buf[off - 1] = 0x67, 0xE8                # addr32 call foo
        return True
    if kind == R_GOTPCRELX and op == 0xFF and modrm == 0x25:   # jmp *foo@GOTPCREL(%rip)
        buf[off - 2], buf[off - 1] = 0x90, 0xE9                # nop; jmp foo
        return True
    return False


def apply_relocations(buf: bytearray, obj: Any, section: int, base: int,
                      relocs: list[tuple[int, int, int, int]],
                      values: list[int], sizes: Callable[[int], int],
                      got_base: int, tables: Tables, relax: bool = True) -> None:
    """Apply RELA ``relocs`` to ``buf``, the bytes of section ``section`` of
    ``obj`` placed at ``base``.  ``values[i]`` is symbol i's address."""
    end = len(buf)
    names = obj.symbol_name
    where: Any = _Where(obj, section)
    for off, kind, si, a in relocs:
        p = base + off
        s = values[si]
        try:
            if kind == R_PLT32 or kind == R_PC32:
                v = s + a - p
                if not _near(v):
                    # only branches can be redirected through a stub
                    if kind == R_PLT32 or (off >= 1 and buf[off - 1] in (0xE8, 0xE9)):
                        v = tables.stub(s) + a - p
                    if not _near(v):
                        raise UnsupportedRelocationError(
                            f"{where}+{off:#x}: {NAMES[kind]} to {names(si)} at {s:#x} is out of the "
                            f"+-2 GiB range of {p:#x}")
                if off + 4 > end:
                    raise struct.error
                _i32(buf, off, v)
            elif kind == R_64:
                if off + 8 > end:
                    raise struct.error
                _q64(buf, off, (s + a) & _MASK64)
            elif kind == R_GOTPCRELX or kind == R_REX_GOTPCRELX or kind == R_GOTPCREL:
                if off + 4 > end:
                    raise struct.error
                v = s + a - p
                if relax and kind != R_GOTPCREL and s and _near(v) and _relax_got_load(buf, off, kind):
                    _i32(buf, off, v)
                else:
                    _i32(buf, off, _checked32(tables.got(s) + a - p, where, off, kind, names(si)))
            elif kind == R_PC64:
                _q64(buf, off, (s + a - p) & _MASK64)
            elif kind == R_32 or kind == R_32S:
                v = s + a
                if kind == R_32 and not 0 <= v < (1 << 32) or kind == R_32S and not _near(v):
                    raise UnsupportedRelocationError(
                        f"{where}+{off:#x}: {NAMES[kind]} to {names(si)} at {v:#x} is out of range "
                        f"(absolute 32-bit addresses must lie below 2 GiB, and the arena is near libc "
                        f"at {p:#x}): compile with -fPIC")
                if off + 4 > end:
                    raise struct.error
                _u32(buf, off, v & 0xFFFFFFFF)
            elif kind == R_GOTOFF64:
                _q64(buf, off, (s + a - got_base) & _MASK64)
            elif kind == R_GOTPC64:
                _q64(buf, off, (got_base + a - p) & _MASK64)
            elif kind == R_GOTPC32:
                _i32(buf, off, _checked32(got_base + a - p, where, off, kind, "_GLOBAL_OFFSET_TABLE_"))
            elif kind == R_GOT64 or kind == R_GOTPLT64:
                _q64(buf, off, (tables.got(s) - got_base + a) & _MASK64)
            elif kind == R_GOTPCREL64:
                _q64(buf, off, (tables.got(s) + a - p) & _MASK64)
            elif kind == R_GOT32:
                _i32(buf, off, _checked32(tables.got(s) - got_base + a, where, off, kind, names(si)))
            elif kind == R_PLTOFF64:
                _q64(buf, off, (s + a - got_base) & _MASK64)
            elif kind == R_SIZE32:
                _u32(buf, off, (sizes(si) + a) & 0xFFFFFFFF)
            elif kind == R_SIZE64:
                _q64(buf, off, (sizes(si) + a) & _MASK64)
            elif kind == R_NONE:
                pass
            elif kind == R_PC16 or kind == R_PC8 or kind == R_16 or kind == R_8:
                pcrel = kind in (R_PC16, R_PC8)
                bits = 16 if kind in (R_16, R_PC16) else 8
                v = s + a - (p if pcrel else 0)
                if not -(1 << (bits - 1)) <= v < (1 << bits):
                    raise UnsupportedRelocationError(
                        f"{where}+{off:#x}: {NAMES[kind]} to {names(si)} does not fit in {bits} bits")
                if bits == 16:
                    _u16(buf, off, v & 0xFFFF)
                else:
                    if off >= end:
                        raise struct.error
                    buf[off] = v & 0xFF
            elif kind in TLS_KINDS:
                raise UnsupportedRelocationError(
                    f"{where}+{off:#x}: thread-local relocation {NAMES[kind]} against {names(si)} "
                    f"is not supported (thread-locals need the dynamic loader's TLS blocks)")
            else:
                raise UnsupportedRelocationError(
                    f"{where}+{off:#x}: relocation type {NAMES.get(kind, kind)} against {names(si)} is not supported")
        except (struct.error, IndexError):
            raise MalformedObjectError(
                f"{where}+{off:#x}: {NAMES.get(kind, kind)} lies outside the section ({end} bytes)") from None


class _Where:
    """Names the section in error messages; formatted only when one is raised."""
    __slots__ = ("obj", "section")

    def __init__(self, obj: Any, section: int):
        self.obj = obj
        self.section = section

    def __format__(self, spec: str) -> str:
        return f"{self.obj.name}:{self.obj.section_name(self.section)}"


def _checked32(v: int, where: Any, off: int, kind: int, target: str) -> int:
    if not _near(v):
        raise UnsupportedRelocationError(
            f"{where}+{off:#x}: {NAMES[kind]} to {target} does not fit in 32 bits ({v:#x})")
    return v
