"""The in-memory ELF image a debugger reads for one linked object.

A relocatable object (``ET_REL``) like the one linked, rewritten for where
it now runs:

* every placed section keeps its name and flags and gets its run address
  as ``sh_addr``; code and data are ``SHT_NOBITS`` (the debugger reads
  them from the process), except ``.eh_frame``, copied as linked (its
  PC-relative pointers are right for its run address), so the debugger
  unwinds through JIT frames;
* ``.symtab`` keeps the object's function and data symbols (locals too),
  section-relative as in any ``ET_REL``;
* the ``.debug_*`` sections are copied with their relocations applied
  (with the link's final symbol values), so DWARF addresses are run
  addresses; relocation sections are left out, so nothing applies them
  twice.  Compressed (zlib) debug sections are inflated first.

Sections of discarded COMDAT groups and everything else (notes, groups,
``.comment``) are left out.
"""
from __future__ import annotations

import ctypes
import struct
import zlib
from typing import TYPE_CHECKING

from .. import elf
from ..graph import EH_FRAME
from ..x86_64 import Reloc

if TYPE_CHECKING:
    from ..graph import LinkObject

SHF_COMPRESSED = 0x800
ELFCOMPRESS_ZLIB = 1
_CHDR = struct.Struct("<IIQQ")      # ch_type, ch_reserved, ch_size, ch_addralign
(R_X86_64_NONE, R_X86_64_64, R_X86_64_PC32, R_X86_64_DTPOFF64, R_X86_64_32, R_X86_64_32S,
 R_X86_64_DTPOFF32, R_X86_64_PC64, R_X86_64_SIZE32, R_X86_64_SIZE64) = (
    Reloc.NONE, Reloc.R64, Reloc.PC32, Reloc.DTPOFF64, Reloc.R32, Reloc.R32S,
    Reloc.DTPOFF32, Reloc.PC64, Reloc.SIZE32, Reloc.SIZE64)
# relocation type -> (struct format, PC-relative, symbol size instead of address)
_KINDS: dict[int, tuple[str, bool, bool]] = {
          R_X86_64_64: ("<Q", False, False), R_X86_64_32: ("<I", False, False), R_X86_64_32S: ("<i", False, False),
          R_X86_64_PC32: ("<i", True, False), R_X86_64_PC64: ("<q", True, False),
          R_X86_64_DTPOFF32: ("<i", False, False), R_X86_64_DTPOFF64: ("<q", False, False),
          R_X86_64_SIZE32: ("<I", False, True), R_X86_64_SIZE64: ("<Q", False, True)}
_KEEP_SYMBOLS = (elf.STT_NOTYPE, elf.STT_OBJECT, elf.STT_FUNC, elf.STT_GNU_IFUNC)


def _debug_contents(lo: LinkObject, i: int) -> bytes | None:
    """Section ``i`` (a ``.debug_*`` section) with its relocations applied;
    None if it cannot be read (a compression other than zlib)."""
    obj = lo.obj
    data = obj.section_bytes(i)
    if obj.sh_flags[i] & SHF_COMPRESSED:
        if len(data) < _CHDR.size or _CHDR.unpack_from(data)[0] != ELFCOMPRESS_ZLIB:
            return None
        try:
            data = zlib.decompress(data[_CHDR.size:])
        except zlib.error:
            return None
    if not obj.has_relocations(i):
        return data
    out = bytearray(data)
    values, tls = lo.values, obj.sym_value
    for offset, rtype, si, addend in obj.relocations(i):
        kind = _KINDS.get(rtype)
        if kind is None:
            continue        # (R_X86_64_NONE, or a kind no debug section uses: left as it is)
        fmt, pcrel, size = kind
        if size:
            s = obj.sym_size[si]
        elif rtype in (R_X86_64_DTPOFF32, R_X86_64_DTPOFF64):
            s = tls[si]     # offset in the TLS block
        else:
            s = values[si] if si < len(values) else 0
        v = s + addend - (offset if pcrel else 0)
        width = struct.calcsize(fmt)
        if offset + width > len(out):
            continue
        bits = 8 * width
        v &= (1 << bits) - 1
        if fmt[1].islower() and v >> (bits - 1):
            v -= 1 << bits
        struct.pack_into(fmt, out, offset, v)
    return bytes(out)


def elf_image(lo: LinkObject) -> bytes:
    """The image of ``lo`` for the GDB JIT interface."""
    obj = lo.obj
    roles = {i: role for i, role, _ in lo.sections}
    shstr = bytearray(b"\0")
    strtab = bytearray(b"\0")
    headers: list[tuple[int, int, int, int, int, int, int, int, int, int]] = [(0, 0, 0, 0, 0, 0, 0, 0, 0, 0)]
    blobs: list[bytes] = [b""]
    new_index: dict[int, int] = {}

    def name_of(s: str) -> int:
        shstr.extend(s.encode("utf-8", "surrogateescape") + b"\0")
        return len(shstr) - len(s.encode("utf-8", "surrogateescape")) - 1

    for i in range(1, obj.shnum):
        flags = obj.sh_flags[i]
        if flags & elf.SHF_ALLOC:
            if i not in roles or not lo.addr[i] or flags & elf.SHF_TLS:   # (a TLS template has no run address)
                continue
            name = obj.section_name(i)
            if roles[i] == EH_FRAME and i in lo.eh:
                data = ctypes.string_at(lo.addr[i], len(lo.eh[i][0]))
                header = (name_of(name), elf.SHT_PROGBITS, elf.SHF_ALLOC, lo.addr[i], 0, len(data), 0, 0, 8, 0)
            else:
                data = b""
                header = (name_of(name), elf.SHT_NOBITS, flags & ~elf.SHF_GROUP, lo.addr[i], 0, obj.sh_size[i],
                          0, 0, obj.sh_align[i] or 1, 0)
        else:
            name = obj.section_name(i)
            if not name.startswith(".debug_") or obj.sh_type[i] != elf.SHT_PROGBITS or i in lo.dropped:
                continue
            contents = _debug_contents(lo, i)
            if contents is None:
                continue
            data = contents
            header = (name_of(name), elf.SHT_PROGBITS, flags & ~(SHF_COMPRESSED | elf.SHF_GROUP), 0, 0, len(data),
                      0, 0, 1, 0)
        new_index[i] = len(headers)
        headers.append(header)
        blobs.append(data)

    # .symtab: locals first (sh_info is the first global), section-relative values as in any ET_REL
    syms = [bytes(elf.SYM.size)]
    first_global = 0
    for local in (True, False):
        if not local:
            first_global = len(syms)
        start, stop = (0, obj.first_global) if local else (obj.first_global, len(obj.sym_info))
        for si in range(start, stop):
            info, x = obj.sym_info[si], obj.sym_shndx[si]
            if info & 15 not in _KEEP_SYMBOLS or x not in new_index:
                continue
            sym_name = obj.symbol_name(si).encode("utf-8", "surrogateescape")
            if not sym_name:
                continue
            strtab.extend(sym_name + b"\0")
            syms.append(elf.SYM.pack(len(strtab) - len(sym_name) - 1, info, obj.sym_other[si], new_index[x],
                                     obj.sym_value[si], obj.sym_size[si]))
    symtab_index = len(headers)
    headers.append((name_of(".symtab"), elf.SHT_SYMTAB, 0, 0, 0, len(syms) * elf.SYM.size,
                    symtab_index + 1, first_global, 8, elf.SYM.size))
    blobs.append(b"".join(syms))
    headers.append((name_of(".strtab"), elf.SHT_STRTAB, 0, 0, 0, len(strtab), 0, 0, 1, 0))
    blobs.append(bytes(strtab))
    shstrndx = len(headers)
    headers.append((name_of(".shstrtab"), elf.SHT_STRTAB, 0, 0, 0, 0, 0, 0, 1, 0))
    blobs.append(b"")
    headers[-1] = headers[-1][:5] + (len(shstr),) + headers[-1][6:]
    blobs[-1] = bytes(shstr)

    out = bytearray(elf.EHDR.size)
    placed = []
    for (nm, typ, flags, addr, _, size, link, info, align, entsize), blob in zip(headers, blobs):
        if blob:
            out.extend(bytes(-len(out) % 8))
            offset = len(out)
            out.extend(blob)
        else:
            offset = len(out) if typ != elf.SHT_NULL else 0
        placed.append((nm, typ, flags, addr, offset, size, link, info, align, entsize))
    out.extend(bytes(-len(out) % 8))
    shoff = len(out)
    for h in placed:
        out.extend(elf.SHDR.pack(*h))
    elf.EHDR.pack_into(out, 0, b"\x7fELF\x02\x01\x01" + bytes(9), elf.ET_REL, elf.EM_X86_64, 1, 0, 0, shoff, 0,
                       elf.EHDR.size, 0, 0, elf.SHDR.size, len(placed), shstrndx)
    return bytes(out)
