"""A small, defensive ELF64 little-endian reader for relocatable objects.

Only what a JIT linker needs: section headers, the symbol table, RELA
relocations and COMDAT groups.  Every offset, size and index read from the
file is checked before use; anything inconsistent raises
MalformedObjectError naming the object and the offending item.  ``struct``
does the decoding, which keeps a 1 KiB object in the microseconds.
"""
from __future__ import annotations

import struct
from typing import NamedTuple

from .errors import MalformedObjectError

# Section types and flags (gABI).
SHT_NULL, SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_RELA = 0, 1, 2, 3, 4
SHT_NOBITS, SHT_REL, SHT_INIT_ARRAY, SHT_FINI_ARRAY, SHT_PREINIT_ARRAY = 8, 9, 14, 15, 16
SHT_GROUP, SHT_SYMTAB_SHNDX = 17, 18
SHT_X86_64_UNWIND = 0x70000001
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR, SHF_GROUP, SHF_TLS = 0x1, 0x2, 0x4, 0x200, 0x400
SHF_EXCLUDE = 0x80000000
GRP_COMDAT = 1

# Symbols.
SHN_UNDEF, SHN_ABS, SHN_COMMON, SHN_XINDEX, SHN_LORESERVE = 0, 0xFFF1, 0xFFF2, 0xFFFF, 0xFF00
STB_LOCAL, STB_GLOBAL, STB_WEAK, STB_GNU_UNIQUE = 0, 1, 2, 10
STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_SECTION, STT_FILE = 0, 1, 2, 3, 4
STT_COMMON, STT_TLS, STT_GNU_IFUNC = 5, 6, 10
STV_DEFAULT, STV_INTERNAL, STV_HIDDEN, STV_PROTECTED = 0, 1, 2, 3

EM_X86_64 = 62
ET_REL = 1

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")
_RELA = struct.Struct("<QQq")
_MAX_ALIGN = 1 << 20


class Section(NamedTuple):
    index: int
    name: str
    type: int
    flags: int
    offset: int
    size: int
    link: int
    info: int
    align: int
    entsize: int


class Symbol(NamedTuple):
    name: str
    value: int
    size: int
    bind: int
    type: int
    visibility: int
    shndx: int  # resolved through SHT_SYMTAB_SHNDX when it was SHN_XINDEX


class Group(NamedTuple):
    signature: str
    comdat: bool
    members: tuple[int, ...]


def is_elf(data: bytes) -> bool:
    return data[:4] == b"\x7fELF"


class ObjectFile:
    """One parsed relocatable object.  ``name`` is used in error messages."""

    __slots__ = ("name", "data", "sections", "symbols", "groups", "relocations", "symtab_index")

    def __init__(self, data: bytes, name: str = "<object>"):
        self.name = name
        self.data = data
        n = len(data)
        if n < 64:
            raise MalformedObjectError(f"{name}: {n} bytes is too short for an ELF header")
        (ident, e_type, machine, _ver, _entry, _phoff, shoff, _flags, _ehsize,
         _phentsize, _phnum, shentsize, shnum, shstrndx) = _EHDR.unpack_from(data)
        if ident[:4] != b"\x7fELF":
            raise MalformedObjectError(f"{name}: not an ELF file (bad magic)")
        if ident[4] != 2 or ident[5] != 1:
            raise MalformedObjectError(f"{name}: not a 64-bit little-endian ELF file")
        if machine != EM_X86_64:
            raise MalformedObjectError(f"{name}: machine {machine} is not x86-64 (62)")
        if e_type != ET_REL:
            raise MalformedObjectError(f"{name}: ELF type {e_type} is not a relocatable object (ET_REL)")
        if shoff == 0:
            raise MalformedObjectError(f"{name}: no section header table")
        if shentsize != 64:
            raise MalformedObjectError(f"{name}: section header size {shentsize}, expected 64")
        if shoff + 64 > n:
            raise MalformedObjectError(f"{name}: section header table at offset {shoff:#x} lies past the end ({n:#x})")
        if shnum == 0 or shstrndx == SHN_XINDEX:  # extended numbering lives in section 0
            _, _, _, _, _, size0, link0, _, _, _ = _SHDR.unpack_from(data, shoff)
            shnum = shnum or size0
            if shstrndx == SHN_XINDEX:
                shstrndx = link0
        if shoff + shnum * 64 > n:
            raise MalformedObjectError(
                f"{name}: {shnum} section headers at offset {shoff:#x} run past the end of the file ({n:#x})")
        raw = list(_SHDR.iter_unpack(data[shoff:shoff + shnum * 64]))
        if shstrndx >= shnum:
            raise MalformedObjectError(f"{name}: section name table index {shstrndx} out of range ({shnum} sections)")
        s_name, s_type, _, _, s_off, s_size, *_ = raw[shstrndx]
        if s_type == SHT_NOBITS or s_off + s_size > n:
            raise MalformedObjectError(f"{name}: section name table (section {shstrndx}) lies outside the file")
        shstrtab = data[s_off:s_off + s_size]
        sections = []
        append = sections.append
        for i, (sh_name, sh_type, sh_flags, _addr, sh_offset, sh_size, sh_link, sh_info,
                sh_align, sh_entsize) in enumerate(raw):
            end = shstrtab.find(b"\0", sh_name)
            if end < 0:
                raise MalformedObjectError(f"{name}: section {i} has a name offset {sh_name:#x} outside the name table")
            sname = shstrtab[sh_name:end].decode("utf-8", "surrogateescape")
            if sh_type != SHT_NOBITS and sh_type != SHT_NULL and sh_offset + sh_size > n:
                raise MalformedObjectError(
                    f"{name}: section {sname!r} (index {i}) at offset {sh_offset:#x} size {sh_size:#x} "
                    f"runs past the end of the file ({n:#x})")
            if sh_align & (sh_align - 1) or sh_align > _MAX_ALIGN:
                raise MalformedObjectError(f"{name}: section {sname!r} has invalid alignment {sh_align}")
            append(Section(i, sname, sh_type, sh_flags, sh_offset, sh_size, sh_link, sh_info,
                           sh_align or 1, sh_entsize))
        self.sections = sections
        self.symtab_index = 0
        self.symbols: list[Symbol] = []
        self.groups: list[Group] = []
        self.relocations: dict[int, list[tuple[int, int, int, int]]] = {}
        for sec in sections:
            if sec.type == SHT_SYMTAB:
                if self.symtab_index:
                    raise MalformedObjectError(f"{name}: more than one symbol table")
                self.symtab_index = sec.index
                self._read_symbols(sec)
        for sec in sections:
            t = sec.type
            if t == SHT_RELA:
                self._read_relocations(sec)
            elif t == SHT_REL:
                raise MalformedObjectError(f"{name}: section {sec.name!r} uses REL relocations; x86-64 objects use RELA")
            elif t == SHT_GROUP:
                self._read_group(sec)

    def _read_symbols(self, sec: Section) -> None:
        name, data, sections = self.name, self.data, self.sections
        if sec.size % 24 or (sec.entsize and sec.entsize != 24):
            raise MalformedObjectError(f"{name}: symbol table size {sec.size} is not a multiple of 24")
        if sec.link >= len(sections) or sections[sec.link].type != SHT_STRTAB:
            raise MalformedObjectError(f"{name}: symbol table links to section {sec.link}, which is not a string table")
        st = sections[sec.link]
        strtab = data[st.offset:st.offset + st.size]
        xindex = None
        nsec = len(sections)
        out = []
        append = out.append
        for i, (st_name, info, other, shndx, value, size) in enumerate(
                _SYM.iter_unpack(data[sec.offset:sec.offset + sec.size])):
            if st_name:
                end = strtab.find(b"\0", st_name)
                if end < 0:
                    raise MalformedObjectError(f"{name}: symbol {i} has a name offset {st_name:#x} outside the string table")
                sname = strtab[st_name:end].decode("utf-8", "surrogateescape")
            else:
                sname = ""
            if shndx == SHN_XINDEX:
                if xindex is None:
                    xindex = self._xindex_table(sec.index)
                if i >= len(xindex):
                    raise MalformedObjectError(f"{name}: symbol {sname!r} has no entry in SHT_SYMTAB_SHNDX")
                shndx = xindex[i]
            elif SHN_LORESERVE <= shndx < SHN_ABS or SHN_COMMON < shndx < SHN_XINDEX:
                raise MalformedObjectError(f"{name}: symbol {sname!r} has reserved section index {shndx:#x}")
            if shndx >= nsec and shndx != SHN_ABS and shndx != SHN_COMMON:
                raise MalformedObjectError(f"{name}: symbol {sname!r} refers to section {shndx}, past the last ({nsec - 1})")
            append(Symbol(sname, value, size, info >> 4, info & 15, other & 3, shndx))
        self.symbols = out

    def _xindex_table(self, symtab: int) -> tuple[int, ...]:
        for s in self.sections:
            if s.type == SHT_SYMTAB_SHNDX and s.link == symtab:
                return struct.unpack_from(f"<{s.size // 4}I", self.data, s.offset)
        raise MalformedObjectError(f"{self.name}: a symbol uses SHN_XINDEX but there is no SHT_SYMTAB_SHNDX section")

    def _read_relocations(self, sec: Section) -> None:
        name = self.name
        if sec.size % 24 or (sec.entsize and sec.entsize != 24):
            raise MalformedObjectError(f"{name}: relocation section {sec.name!r} size {sec.size} is not a multiple of 24")
        if sec.info == 0 or sec.info >= len(self.sections):
            raise MalformedObjectError(f"{name}: relocation section {sec.name!r} applies to invalid section {sec.info}")
        if not sec.size:
            return
        if sec.link != self.symtab_index or not self.symtab_index:
            raise MalformedObjectError(f"{name}: relocation section {sec.name!r} does not use the symbol table")
        nsyms = len(self.symbols)
        relocs = []
        append = relocs.append
        for off, info, addend in _RELA.iter_unpack(self.data[sec.offset:sec.offset + sec.size]):
            sym = info >> 32
            if sym >= nsyms:
                raise MalformedObjectError(
                    f"{name}: relocation at {self.sections[sec.info].name}+{off:#x} names symbol {sym}, "
                    f"past the last ({nsyms - 1})")
            append((off, info & 0xFFFFFFFF, sym, addend))
        if sec.info in self.relocations:
            self.relocations[sec.info].extend(relocs)
        else:
            self.relocations[sec.info] = relocs

    def _read_group(self, sec: Section) -> None:
        name = self.name
        if sec.size < 4 or sec.size % 4:
            raise MalformedObjectError(f"{name}: group section {sec.name!r} has size {sec.size}")
        if sec.link != self.symtab_index or sec.info >= len(self.symbols):
            raise MalformedObjectError(f"{name}: group section {sec.name!r} has an invalid signature symbol {sec.info}")
        words = struct.unpack_from(f"<{sec.size // 4}I", self.data, sec.offset)
        nsec = len(self.sections)
        for m in words[1:]:
            if m == 0 or m >= nsec:
                raise MalformedObjectError(f"{name}: group section {sec.name!r} lists invalid member section {m}")
        sig = self.symbols[sec.info]
        signature = sig.name or (self.sections[sig.shndx].name if sig.type == STT_SECTION and sig.shndx < nsec else "")
        self.groups.append(Group(signature, bool(words[0] & GRP_COMDAT), tuple(words[1:])))

    def section_bytes(self, sec: Section) -> bytes:
        if sec.type == SHT_NOBITS:
            return bytes(sec.size)
        return self.data[sec.offset:sec.offset + sec.size]

    def defined_globals(self) -> list[str]:
        """Names this object offers to others (used to index archive members)."""
        return [s.name for s in self.symbols
                if s.bind != STB_LOCAL and s.shndx != SHN_UNDEF and s.name]
