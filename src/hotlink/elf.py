"""A small, defensive ELF64 little-endian reader for relocatable objects,
and the one place the ELF constants and record layouts hotlink uses are
defined (``host.py`` reads the running program's symbol tables with them).

Only what a JIT linker needs: section headers, the symbol table, RELA
relocations and COMDAT groups.  Every offset, size and index read from the
file is checked before use; anything inconsistent raises
MalformedObjectError naming the object and the offending item.

Tables are decoded with one ``struct`` call each and kept as columns (one
tuple per field) so that the checks run in C (``max``, set inclusion) and a
1 KiB object parses in a few microseconds.  Names are decoded only for
allocated sections and global symbols, the ones a link looks at.  A big
symbol table (``vector.MIN_ROWS``) is read by numpy instead, its names cut
from the string table in one go; a big section's relocations are also
offered as numpy columns (``relocation_columns``) for the vector paths of
``x86_64.py`` and ``ehframe.py``.
"""
from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from operator import add
from typing import Any, NamedTuple, TypeAlias

from . import vector
from .errors import MalformedObjectError

# File identification and types (gABI).
ELFMAG = b"\x7fELF"
EI_CLASS, EI_DATA = 4, 5                        # indexes into e_ident
ELFCLASS64, ELFDATA2LSB = 2, 1
ET_REL, ET_EXEC, ET_DYN = 1, 2, 3
EM_X86_64 = 62

# Section types and flags (gABI).
SHT_NULL, SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_RELA = 0, 1, 2, 3, 4
SHT_NOTE, SHT_NOBITS, SHT_REL, SHT_DYNSYM = 7, 8, 9, 11
SHT_INIT_ARRAY, SHT_FINI_ARRAY, SHT_PREINIT_ARRAY, SHT_GROUP, SHT_SYMTAB_SHNDX = 14, 15, 16, 17, 18
SHT_X86_64_UNWIND = 0x70000001
SHT_GNU_VERSYM = 0x6FFFFFFF                     # .gnu.version: one 16-bit version index per .dynsym entry
VERSYM_HIDDEN = 0x8000                          # in a .gnu.version entry: not the default version
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR, SHF_GROUP, SHF_TLS = 0x1, 0x2, 0x4, 0x200, 0x400
SHF_EXCLUDE = 0x80000000
GRP_COMDAT = 1

# Symbols.
SHN_UNDEF, SHN_ABS, SHN_COMMON, SHN_XINDEX, SHN_LORESERVE = 0, 0xFFF1, 0xFFF2, 0xFFFF, 0xFF00
STB_LOCAL, STB_GLOBAL, STB_WEAK, STB_GNU_UNIQUE = 0, 1, 2, 10
STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_SECTION, STT_FILE = 0, 1, 2, 3, 4
STT_COMMON, STT_TLS, STT_GNU_IFUNC = 5, 6, 10
STV_DEFAULT, STV_INTERNAL, STV_HIDDEN, STV_PROTECTED = 0, 1, 2, 3

# Notes.
NT_GNU_BUILD_ID = 3                             # with name "GNU\0": the build id, which names the debug file

# Record layouts (little-endian ELF64).
EHDR = struct.Struct("<16sHHIQQQIHHHHHH")       # e_ident, e_type, e_machine, e_version, e_entry, e_phoff,
                                                # e_shoff, e_flags, e_ehsize, e_phentsize, e_phnum,
                                                # e_shentsize, e_shnum, e_shstrndx
SHDR = struct.Struct("<IIQQQQIIQQ")             # sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size,
                                                # sh_link, sh_info, sh_addralign, sh_entsize
SYM = struct.Struct("<IBBHQQ")                  # st_name, st_info, st_other, st_shndx, st_value, st_size
RELA = struct.Struct("<QQq")                    # r_offset, r_info (symbol << 32 | type), r_addend
NOTE = struct.Struct("<III")                    # n_namesz, n_descsz, n_type; name and desc 4-aligned follow

# One RELA entry as ObjectFile.relocations gives it: (offset, type, symbol index, addend).
Rela: TypeAlias = tuple[int, int, int, int]
# The same record as a numpy dtype (ObjectFile.relocation_columns).
RELA_DTYPE = [("offset", "<u8"), ("info", "<u8"), ("addend", "<i8")]
SYM_DTYPE = [("name", "<u4"), ("info", "u1"), ("other", "u1"), ("shndx", "<u2"), ("value", "<u8"), ("size", "<u8")]

SHDR_RECORD = SHDR.format[1:]       # one section header's fields, repeated to read the table in one call
SYM_RECORD = SYM.format[1:]
RELA_RECORD = RELA.format[1:]
# compiled readers of whole tables, by (record, count): one struct call per table
_TableReader = Callable[[Any, int], tuple[int, ...]]   # (any buffer, offset)
_readers: dict[tuple[str, int], _TableReader] = {}


def table_reader(record: str, count: int) -> _TableReader:
    """``unpack_from`` of ``count`` records of ``record`` (compiled once per count)."""
    key = (record, count)
    read = _readers.get(key)
    if read is None:
        if len(_readers) >= 512:
            _readers.clear()
        read = _readers[key] = struct.Struct("<" + record * count).unpack_from
    return read
_VALID_ALIGN = frozenset([0] + [1 << i for i in range(21)])
_SPECIAL_SHNDX = frozenset((SHN_ABS, SHN_COMMON))


class Section(NamedTuple):
    index: int      # type: ignore[assignment]  # shadows tuple.index(); the field name is public API
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
    shndx: int


class Group(NamedTuple):
    signature: str
    comdat: bool
    members: tuple[int, ...]


class RelaColumns:
    """A section's relocations as numpy columns (int64 arrays, one row per
    relocation), for the vector paths of big sections (``vector.py``)."""

    __slots__ = ("offset", "kind", "symbol", "addend")

    def __init__(self, offset: Any, kind: Any, symbol: Any, addend: Any) -> None:
        self.offset = offset
        self.kind = kind
        self.symbol = symbol
        self.addend = addend

    def __len__(self) -> int:
        return len(self.offset)

    def row(self, i: int) -> Rela:
        return int(self.offset[i]), int(self.kind[i]), int(self.symbol[i]), int(self.addend[i])

    def rows(self) -> list[Rela]:
        """Every relocation as a tuple, as ``ObjectFile.relocations`` gives them."""
        return list(zip(self.offset.tolist(), self.kind.tolist(), self.symbol.tolist(), self.addend.tolist()))


def is_elf(data: bytes) -> bool:
    return data[:4] == ELFMAG


def is_elf64_le(ident: bytes) -> bool:
    """Whether ``e_ident`` says 64-bit little-endian (the only ELF hotlink reads)."""
    return ident[EI_CLASS] == ELFCLASS64 and ident[EI_DATA] == ELFDATA2LSB


def _names_at(np: Any, table: bytes, offsets: Sequence[int]) -> list[str] | None:
    """The NUL-terminated strings of ``table`` at ``offsets`` ("" for offset
    0), the table decoded in one go (a name that is the tail of another,
    which ld makes, alone); None if one is not terminated."""
    ends = np.flatnonzero(np.frombuffer(table, np.uint8) == 0)
    at = np.array(offsets, np.int64)
    if not len(ends) or (at > ends[-1]).any():
        return None
    piece = np.searchsorted(ends, at)            # strings before the one at each offset
    strings = table.decode("utf-8", "surrogateescape").split("\0")
    out = [strings[k] if o else "" for k, o in zip(piece.tolist(), offsets)]
    for i in np.flatnonzero((at != 0) & (at != np.concatenate(([0], ends[:-1] + 1))[piece])).tolist():
        out[i] = cstr(table, offsets[i]) or ""       # (terminated: at <= the last NUL)
    return out


def cstr(table: bytes, off: int) -> str | None:
    end = table.find(b"\0", off)
    return None if end < 0 else table[off:end].decode("utf-8", "surrogateescape")


class ObjectFile:
    """One parsed relocatable object.  ``name`` is used in error messages.

    Section columns: ``sh_type``, ``sh_flags``, ``sh_offset``, ``sh_size``,
    ``sh_link``, ``sh_info``, ``sh_align`` (tuples indexed by section).
    Symbol columns: ``sym_name`` (globals only; locals ``""`` until asked
    with ``symbol_name``), ``sym_value``, ``sym_size``, ``sym_info`` (bind
    << 4 | type), ``sym_other`` (visibility in the low bits), ``sym_shndx``;
    ``first_global`` is the first non-local symbol index.
    """

    __slots__ = ("name", "data", "shnum", "sh_name", "sh_type", "sh_flags", "sh_offset", "sh_size",
                 "sh_link", "sh_info", "sh_align", "_shstrtab", "_names", "symtab_index",
                 "sym_name", "sym_value", "sym_size", "sym_info", "sym_other",
                 "sym_shndx", "first_global", "_strtab", "rela_sections", "_relocs", "_columns", "_symbol_columns",
                 "groups")

    # (annotations only: the values live in the slots)
    name: str
    data: bytes
    shnum: int       # the section header columns (sh_*) are typed where they are read
    # the symbol table, one column per field, indexed by symbol number
    symtab_index: int
    sym_name: list[str]
    sym_value: Sequence[int]     # a tuple, or for a big table a list
    sym_size: Sequence[int]
    sym_info: Sequence[int]
    sym_other: Sequence[int]
    sym_shndx: Sequence[int]
    first_global: int
    groups: list[Group]

    def __init__(self, data: bytes, name: str = "<object>"):
        self.name = name
        self.data = data
        n = len(data)
        if n < EHDR.size:
            raise MalformedObjectError(f"{name}: {n} bytes is too short for an ELF header")
        (ident, e_type, machine, _ver, _entry, _phoff, shoff, _flags, _ehsize,
         _phentsize, _phnum, shentsize, shnum, shstrndx) = EHDR.unpack_from(data)
        if ident[:4] != ELFMAG:
            raise MalformedObjectError(f"{name}: not an ELF file (bad magic)")
        if not is_elf64_le(ident):
            raise MalformedObjectError(f"{name}: not a 64-bit little-endian ELF file")
        if machine != EM_X86_64:
            raise MalformedObjectError(f"{name}: machine {machine} is not x86-64 ({EM_X86_64})")
        if e_type != ET_REL:
            raise MalformedObjectError(f"{name}: ELF type {e_type} is not a relocatable object (ET_REL)")
        if shentsize != SHDR.size:
            raise MalformedObjectError(f"{name}: section header size {shentsize}, expected {SHDR.size}")
        if shoff == 0 or shoff + SHDR.size > n:
            raise MalformedObjectError(f"{name}: section header table offset {shoff:#x} is outside the file ({n:#x})")
        if shnum == 0 or shstrndx == SHN_XINDEX:  # extended numbering lives in section 0
            size0, link0 = struct.unpack_from("<QI", data, shoff + 32)   # its sh_size, sh_link
            shnum = shnum or size0
            if shstrndx == SHN_XINDEX:
                shstrndx = link0
        if shnum == 0 or shoff + shnum * SHDR.size > n:
            raise MalformedObjectError(
                f"{name}: {shnum} section headers at offset {shoff:#x} run past the end of the file ({n:#x})")
        flat = table_reader(SHDR_RECORD, shnum)(data, shoff)
        self.shnum = shnum
        self.sh_name = flat[0::10]
        self.sh_type = types = flat[1::10]
        self.sh_flags = flat[2::10]
        self.sh_offset = flat[4::10]
        self.sh_size = flat[5::10]
        self.sh_link = flat[6::10]
        self.sh_info = flat[7::10]
        self.sh_align = flat[8::10]
        if max(map(add, self.sh_offset, self.sh_size)) > n:   # slow path only when something is off
            for i in range(shnum):
                if types[i] not in (SHT_NOBITS, SHT_NULL) and self.sh_offset[i] + self.sh_size[i] > n:
                    raise MalformedObjectError(
                        f"{name}: section {i} at offset {self.sh_offset[i]:#x} size {self.sh_size[i]:#x} "
                        f"runs past the end of the file ({n:#x})")
        if not _VALID_ALIGN.issuperset(self.sh_align):
            bad = next(i for i, a in enumerate(self.sh_align) if a not in _VALID_ALIGN)
            raise MalformedObjectError(f"{name}: section {bad} has invalid alignment {self.sh_align[bad]}")
        if shstrndx >= shnum or types[shstrndx] != SHT_STRTAB:
            raise MalformedObjectError(f"{name}: section name table index {shstrndx} is not a string table")
        off = self.sh_offset[shstrndx]
        self._shstrtab = data[off:off + self.sh_size[shstrndx]]
        self._names: dict[int, str] = {}
        self._relocs: dict[int, list[Rela]] = {}
        self._columns: dict[int, RelaColumns] = {}
        self._symbol_columns: tuple[Any, Any, Any, Any] | None = None
        self.groups: list[Group] = []
        self.symtab_index = 0
        self.sym_name = []
        self.sym_value = self.sym_size = self.sym_info = self.sym_other = self.sym_shndx = ()
        self.first_global = 0
        if SHT_SYMTAB in types:
            if types.count(SHT_SYMTAB) > 1:
                raise MalformedObjectError(f"{name}: more than one symbol table")
            self._read_symbols(types.index(SHT_SYMTAB))
        if SHT_REL in types:
            raise MalformedObjectError(f"{name}: section {self.section_name(types.index(SHT_REL))!r} "
                                       "uses REL relocations; x86-64 uses RELA")
        self.rela_sections: dict[int, list[int]] = {}   # section -> the RELA sections for it
        if SHT_RELA in types:
            i = types.index(SHT_RELA)
            while True:
                self._check_rela(i)
                try:
                    i = types.index(SHT_RELA, i + 1)
                except ValueError:
                    break
        if SHT_GROUP in types:
            for i, t in enumerate(types):
                if t == SHT_GROUP:
                    self._read_group(i)

    # --- sections --------------------------------------------------------

    def section_name(self, i: int) -> str:
        name = self._names.get(i)
        if name is None:
            name = cstr(self._shstrtab, self.sh_name[i])
            if name is None:
                raise MalformedObjectError(
                    f"{self.name}: section {i} has a name offset {self.sh_name[i]:#x} outside the name table")
            self._names[i] = name
        return name

    def section(self, i: int) -> Section:
        return Section(i, self.section_name(i), self.sh_type[i], self.sh_flags[i], self.sh_offset[i],
                       self.sh_size[i], self.sh_link[i], self.sh_info[i], self.sh_align[i] or 1, 0)

    @property
    def sections(self) -> list[Section]:
        return [self.section(i) for i in range(self.shnum)]

    def section_bytes(self, i: int) -> bytes:
        if self.sh_type[i] == SHT_NOBITS:
            return bytes(self.sh_size[i])
        off = self.sh_offset[i]
        return self.data[off:off + self.sh_size[i]]

    # --- symbols ---------------------------------------------------------

    def _read_symbols(self, si: int) -> None:
        name, data = self.name, self.data
        size, link = self.sh_size[si], self.sh_link[si]
        if size % SYM.size:
            raise MalformedObjectError(f"{name}: symbol table size {size} is not a multiple of {SYM.size}")
        if link >= self.shnum or self.sh_type[link] != SHT_STRTAB:
            raise MalformedObjectError(f"{name}: symbol table links to section {link}, which is not a string table")
        self.symtab_index = si
        count = size // SYM.size
        off = self.sh_offset[link]
        strtab = self._strtab = data[off:off + self.sh_size[link]]
        np = vector.numpy() if count >= vector.MIN_ROWS else None
        names_off: tuple[int, ...] | list[int]
        shndx: tuple[int, ...] | list[int]
        if np is None:
            flat = table_reader(SYM_RECORD, count)(data, self.sh_offset[si])
            names_off = flat[0::6]
            self.sym_info = info = flat[1::6]       # bind << 4 | type
            self.sym_other = flat[2::6]             # visibility in the low 2 bits
            shndx = flat[3::6]
            self.sym_value = flat[4::6]
            self.sym_size = flat[5::6]
            top_shndx = max(shndx) if count else 0
            top_name = -1           # checked name by name below (only globals' are read)
        else:                                       # a big table: its columns in C, by numpy
            table = np.frombuffer(data, SYM_DTYPE, count, self.sh_offset[si])
            names_off = table["name"].tolist()
            self.sym_info = info = table["info"].tolist()
            self.sym_other = table["other"].tolist()
            shndx = table["shndx"].tolist()
            self.sym_value = table["value"].tolist()
            self.sym_size = table["size"].tolist()
            top_shndx, top_name = int(table["shndx"].max()), int(table["name"].max())
        nsec = self.shnum
        beyond = set(shndx) if top_shndx >= nsec else None   # (gcc's file symbol is SHN_ABS)
        if beyond is not None:
            beyond -= _SPECIAL_SHNDX
        if beyond and max(beyond) >= nsec:
            fixed = list(shndx)
            for i, x in enumerate(shndx):
                if x < nsec or x == SHN_ABS or x == SHN_COMMON:
                    continue
                if x == SHN_XINDEX:
                    x = fixed[i] = self._xindex(si, i)
                    if x < nsec:
                        continue
                raise MalformedObjectError(
                    f"{name}: symbol {i} refers to section {x:#x}, past the last ({nsec - 1})")
            shndx = tuple(fixed)
        self.sym_shndx = shndx
        if top_name >= max(len(strtab), 1):
            self._name_outside(names_off, len(strtab))
        # locals come first (sh_info is the first global), but trust nothing
        first = self.sh_info[si]
        if first > count or first == 0 and count or first < count and min(info[first:]) < 16:
            first = next((i for i in range(count) if info[i] >= 16), count)
            if min(info[first:], default=16) < 16:
                raise MalformedObjectError(f"{name}: local symbols follow global ones in the symbol table")
        self.first_global = first
        names = [""] * first
        if np is not None and count - first >= vector.MIN_ROWS:
            found = _names_at(np, strtab, names_off[first:])
            if found is not None:
                self.sym_name = names + found
                return
        for o in names_off[first:]:
            s = cstr(strtab, o) if o else ""
            if s is None:
                if o >= len(strtab):
                    self._name_outside(names_off, len(strtab))
                raise MalformedObjectError(f"{name}: a symbol name at {o:#x} is not terminated")
            names.append(s)
        self.sym_name = names

    def _name_outside(self, names_off: Sequence[int], size: int) -> None:
        i = next(i for i, o in enumerate(names_off) if o >= size and o)
        raise MalformedObjectError(
            f"{self.name}: symbol {i} has a name offset {names_off[i]:#x} outside the string table")

    def symbol_columns(self) -> tuple[Any, Any, Any, Any]:
        """``sym_value`` (uint64), ``sym_shndx``, ``sym_info`` and
        ``sym_other`` (int64) as numpy arrays, for the vector paths of big
        objects; numpy must be installed."""
        if self._symbol_columns is None:
            np = vector.numpy()
            assert np is not None
            count = len(self.sym_info)
            table = np.frombuffer(self.data, SYM_DTYPE, count, self.sh_offset[self.symtab_index]) if count \
                else np.zeros(0, SYM_DTYPE)
            shndx = table["shndx"].astype(np.int64)
            if (shndx == SHN_XINDEX).any():
                shndx = np.array(self.sym_shndx, np.int64)      # the extended indices, as read
            self._symbol_columns = (table["value"].copy(), shndx, table["info"].astype(np.int64),
                                    table["other"].astype(np.int64))
        return self._symbol_columns

    def _xindex(self, symtab: int, i: int) -> int:
        for s in range(self.shnum):
            if self.sh_type[s] == SHT_SYMTAB_SHNDX and self.sh_link[s] == symtab:
                if (i + 1) * 4 > self.sh_size[s]:
                    break
                index: int = struct.unpack_from("<I", self.data, self.sh_offset[s] + 4 * i)[0]
                return index
        raise MalformedObjectError(f"{self.name}: symbol {i} uses SHN_XINDEX without an SHT_SYMTAB_SHNDX entry")

    def symbol_name(self, i: int) -> str:
        """Any symbol's name, locals included; section symbols are named after their section."""
        if i >= self.first_global:
            return self.sym_name[i]
        if self.sym_info[i] & 15 == STT_SECTION and self.sym_shndx[i] < self.shnum:
            return self.section_name(self.sym_shndx[i])
        off: int = struct.unpack_from("<I", self.data, self.sh_offset[self.symtab_index] + SYM.size * i)[0]
        return (cstr(self._strtab, off) or f"symbol {i}") if off else f"symbol {i}"

    def symbol(self, i: int) -> Symbol:
        info = self.sym_info[i]
        return Symbol(self.symbol_name(i), self.sym_value[i], self.sym_size[i], info >> 4,
                      info & 15, self.sym_other[i] & 3, self.sym_shndx[i])

    @property
    def symbols(self) -> list[Symbol]:
        return [self.symbol(i) for i in range(len(self.sym_info))]

    def defined_globals(self) -> list[str]:
        """Names this object offers to others (used to index archive members)."""
        shndx, names = self.sym_shndx, self.sym_name
        return [names[i] for i in range(self.first_global, len(names)) if shndx[i] and names[i]]

    def global_index(self, name: str) -> int | None:
        """Index of the defined global symbol ``name``, or None."""
        shndx, names = self.sym_shndx, self.sym_name
        for i in range(self.first_global, len(names)):
            if names[i] == name and shndx[i]:
                return i
        return None

    def is_code_symbol(self, i: int) -> bool:
        """A function (an IFUNC too), or an untyped symbol in executable code
        (assembly without ``.type``)."""
        typ, x = self.sym_info[i] & 15, self.sym_shndx[i]
        return typ == STT_FUNC or typ == STT_GNU_IFUNC or (
            typ == STT_NOTYPE and 0 < x < SHN_LORESERVE and x < self.shnum and bool(self.sh_flags[x] & SHF_EXECINSTR))

    # --- relocations -----------------------------------------------------

    def _check_rela(self, r: int) -> None:
        name, size, target = self.name, self.sh_size[r], self.sh_info[r]
        if size % RELA.size:
            raise MalformedObjectError(
                f"{name}: relocation section {self.section_name(r)!r} size {size} is not a multiple of {RELA.size}")
        if target == 0 or target >= self.shnum:
            raise MalformedObjectError(
                f"{name}: relocation section {self.section_name(r)!r} applies to invalid section {target}")
        if size and (self.sh_link[r] != self.symtab_index or not self.symtab_index):
            raise MalformedObjectError(
                f"{name}: relocation section {self.section_name(r)!r} does not use the symbol table")
        if size:
            self.rela_sections.setdefault(target, []).append(r)

    def relocations(self, target: int) -> list[Rela]:
        """RELA entries (offset, type, symbol index, addend) that apply to section ``target``."""
        relocs = self._relocs.get(target)
        if relocs is None:
            relocs = []
            nsyms = len(self.sym_info)
            for r in self.rela_sections.get(target, ()):
                count = self.sh_size[r] // RELA.size
                if count == 1:              # (an .eh_frame of one FDE, the common tiny case)
                    off, info, a = RELA.unpack_from(self.data, self.sh_offset[r])
                    if info >> 32 < nsyms:
                        relocs.append((off, info & 0xFFFFFFFF, info >> 32, a))
                        continue
                flat = table_reader(RELA_RECORD, count)(self.data, self.sh_offset[r])
                info = flat[1::3]
                if max(info) >> 32 >= nsyms:
                    i = next(i for i, x in enumerate(info) if x >> 32 >= nsyms)
                    raise MalformedObjectError(
                        f"{self.name}: relocation {i} of {self.section_name(r)!r} names symbol {info[i] >> 32}, "
                        f"past the last ({nsyms - 1})")
                relocs += zip(flat[0::3], [x & 0xFFFFFFFF for x in info], [x >> 32 for x in info], flat[2::3])
            self._relocs[target] = relocs
        return relocs

    def relocation_count(self, target: int) -> int:
        return sum(self.sh_size[r] for r in self.rela_sections.get(target, ())) // RELA.size

    def relocation_columns(self, target: int, min_rows: int | None = None) -> RelaColumns | None:
        """The relocations of section ``target`` as numpy columns, when there
        are at least ``min_rows`` of them (``vector.MIN_ROWS`` by default:
        where the vector paths pay off) and numpy is installed; else None
        (use ``relocations``)."""
        if min_rows is None:
            min_rows = vector.MIN_ROWS
        parts = self.rela_sections.get(target)
        if parts is None or len(parts) == 1 and self.sh_size[parts[0]] < min_rows * RELA.size:
            return None                 # few: the common case, answered at once
        cols = self._columns.get(target)
        if cols is not None:
            return cols
        count = self.relocation_count(target)
        np = vector.numpy() if count >= min_rows else None
        if np is None:
            return None
        tables = [np.frombuffer(self.data, RELA_DTYPE, self.sh_size[r] // RELA.size, self.sh_offset[r])
                  for r in parts]
        table = tables[0] if len(tables) == 1 else np.concatenate(tables)
        info = table["info"]
        symbol = (info >> np.uint64(32)).astype(np.int64)
        if int(symbol.max()) >= len(self.sym_info):
            self.relocations(target)        # raises, naming the relocation
        # (an offset past 2**63 turns negative: out of the section either way)
        cols = self._columns[target] = RelaColumns(
            table["offset"].astype(np.int64), (info & np.uint64(0xFFFFFFFF)).astype(np.int64), symbol,
            table["addend"].astype(np.int64))
        return cols

    def has_relocations(self, target: int) -> bool:
        return target in self.rela_sections

    # --- groups ----------------------------------------------------------

    def _read_group(self, g: int) -> None:
        name, size = self.name, self.sh_size[g]
        if size < 4 or size % 4:
            raise MalformedObjectError(f"{name}: group section {self.section_name(g)!r} has size {size}")
        sig = self.sh_info[g]
        if self.sh_link[g] != self.symtab_index or sig >= len(self.sym_info):
            raise MalformedObjectError(
                f"{name}: group section {self.section_name(g)!r} has an invalid signature symbol {sig}")
        words = struct.unpack_from(f"<{size // 4}I", self.data, self.sh_offset[g])
        for m in words[1:]:
            if m == 0 or m >= self.shnum:
                raise MalformedObjectError(
                    f"{name}: group section {self.section_name(g)!r} lists invalid member section {m}")
        self.groups.append(Group(self.symbol_name(sig), bool(words[0] & GRP_COMDAT), tuple(words[1:])))
