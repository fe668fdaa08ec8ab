"""The running host's own symbols, internal (static) ones included.

``dlsym`` sees only the dynamic symbol table: exported names. JIT code that
shares state with the program already running often needs its *static*
functions and variables, which only the full ``.symtab`` lists (or, for a
stripped binary, the separate debug file found by build-id). This module
reads those tables from the files of the loaded objects (found with
``dl_iterate_phdr``) and adds each object's load bias.

A name defined more than once in one object (two ``static`` helpers in
different translation units, or a static and a global) is *ambiguous*: it is
left out of the mapping, listed in ``HostSymbols.ambiguous``, and looking it
up raises ``AmbiguousSymbolError`` naming the candidates and their source
files; ``candidates(name)`` lets the caller choose.
"""
from __future__ import annotations

import functools
import os
import struct
from typing import TYPE_CHECKING, NamedTuple, TypeAlias

from . import libc
from .elf import (
    EHDR,
    ELFMAG,
    ET_DYN,
    NOTE,
    NT_GNU_BUILD_ID,
    SHDR,
    SHN_ABS,
    SHN_UNDEF,
    SHT_DYNSYM,
    SHT_GNU_VERSYM,
    SHT_NOTE,
    SHT_SYMTAB,
    STB_GLOBAL,
    STB_GNU_UNIQUE,
    STB_LOCAL,
    STB_WEAK,
    STT_FILE,
    STT_FUNC,
    STT_NOTYPE,
    STT_OBJECT,
    SYM,
    VERSYM_HIDDEN,
    is_elf64_le,
)
from .errors import LinkError, SymbolNotFoundError

if TYPE_CHECKING:
    from ctypes import _Pointer

_BINDINGS = {STB_LOCAL: "local", STB_GLOBAL: "global", STB_WEAK: "weak", STB_GNU_UNIQUE: "unique"}
_KINDS = {STT_NOTYPE: "notype", STT_OBJECT: "object", STT_FUNC: "func"}
DEBUG_DIR = "/usr/lib/debug"


class AmbiguousSymbolError(LinkError, KeyError):
    """A host name with more than one definition; ``candidates`` lists them."""

    def __init__(self, name: str, candidates: list[HostSymbol], where: str):
        self.symbol = name
        self.candidates = candidates
        cands = "; ".join(f"{c.binding} {c.kind} at {c.address:#x}" + (f" from {c.file}" if c.file else "")
                          for c in candidates)
        super().__init__(f"host symbol {name!r} is ambiguous in {where}: {cands} "
                         f"(choose one with HostSymbols.candidates())")

    def __str__(self) -> str:
        return str(self.args[0])


class HostSymbol(NamedTuple):
    name: str
    address: int        # load bias applied: where it is in this process
    size: int
    kind: str           # "func", "object", "notype"
    binding: str        # "local", "global", "weak", "unique"
    file: str | None    # the translation unit (STT_FILE) a local comes from, when known


class HostSymbols(dict[str, int]):
    """name -> address, plus what could not be decided."""

    def __init__(self, path: str, bias: int, table: str, symbols: list[HostSymbol]):
        super().__init__()
        self.path = path
        self.bias = bias
        self.table = table                              # ".symtab", "debug file", or ".dynsym"
        self._by_name: dict[str, list[HostSymbol]] = {}
        for s in symbols:
            self._by_name.setdefault(s.name, []).append(s)
        self.ambiguous: dict[str, list[HostSymbol]] = {}
        for name, syms in self._by_name.items():
            if len({s.address for s in syms}) == 1:
                self[name] = syms[0].address            # aliases of one address are fine
            else:
                self.ambiguous[name] = syms

    def __missing__(self, name: str) -> int:
        if name in self.ambiguous:
            raise AmbiguousSymbolError(name, self.ambiguous[name], self.path)
        raise SymbolNotFoundError(f"host symbol {name!r} is not defined in {self.path} ({self.table})")

    def candidates(self, name: str) -> list[HostSymbol]:
        """Every definition of ``name``, with its binding and source file."""
        return list(self._by_name.get(name, ()))


# --- the loaded objects ------------------------------------------------------

def loaded_objects() -> list[tuple[str, int]]:
    """(path, load bias) of every object in the process; the executable first."""
    found: list[tuple[str, int]] = []

    def visit(info: _Pointer[libc.PhdrInfo], size: int, data: int | None) -> int:
        name: bytes | None = info.contents.dlpi_name
        bias: int = info.contents.dlpi_addr
        found.append((os.fsdecode(name) if name else "", bias))
        return 0

    libc.dl_iterate_phdr(libc.PHDR_CALLBACK(visit), None)
    exe = os.path.realpath("/proc/self/exe")
    return [(p or exe, bias) for p, bias in found if (p or exe) and os.path.exists(p or exe)]


def find_object(library: str | None) -> tuple[str, int]:
    """The (path, bias) of the executable (None) or of the one loaded object
    ``library`` names: an exact path, a file name, or a unique substring."""
    objects = loaded_objects()
    if library is None:
        return objects[0]
    want = os.fspath(library)
    tiers = [
        [o for o in objects if o[0] == want or os.path.realpath(o[0]) == os.path.realpath(want)],
        [o for o in objects if os.path.basename(o[0]) == want],
        [o for o in objects if os.path.basename(o[0]).startswith(want)],
        [o for o in objects if want in o[0]],
    ]
    for tier in tiers:
        if len(tier) == 1:
            return tier[0]
        if len(tier) > 1:
            raise LinkError(f"host_symbols: {want!r} matches several loaded objects: "
                            + ", ".join(p for p, _ in tier))
    raise LinkError(f"host_symbols: no loaded object matches {want!r}")


# --- reading the files ---------------------------------------------------------

class _Section(NamedTuple):
    """The fields of a section header the symbol reader needs."""
    type: int
    offset: int
    size: int
    link: int


# (name, value, size, type, binding, shndx, file) of one symbol, as read from a table
_RawSymbol: TypeAlias = tuple[str, int, int, int, int, int, str | None]


def _sections(f: int) -> tuple[int, list[_Section]]:
    """(e_type, section headers) of the ELF file open as ``f``."""
    head = os.pread(f, EHDR.size, 0)
    if len(head) < EHDR.size or head[:4] != ELFMAG or not is_elf64_le(head):
        raise LinkError("not an ELF64 little-endian file")
    fields = EHDR.unpack(head)
    e_type: int = fields[1]
    shoff: int = fields[6]
    shentsize: int = fields[11]
    shnum: int = fields[12]
    if shoff == 0:
        return e_type, []
    if shnum == 0:                                   # extended numbering: the count is in section 0
        shnum = SHDR.unpack(os.pread(f, SHDR.size, shoff))[5]
    raw = os.pread(f, shentsize * shnum, shoff)
    headers = (SHDR.unpack_from(raw, i * shentsize) for i in range(shnum))
    return e_type, [_Section(h[1], h[4], h[5], h[6]) for h in headers]


def _build_id(f: int, sections: list[_Section]) -> str | None:
    for sh in sections:
        if sh.type == SHT_NOTE:
            note = os.pread(f, sh.size, sh.offset)
            off = 0
            while off + NOTE.size <= len(note):
                namesz, descsz, ntype = NOTE.unpack_from(note, off)
                name_end = off + NOTE.size + ((namesz + 3) & ~3)
                if ntype == NT_GNU_BUILD_ID and note[off + NOTE.size:off + NOTE.size + namesz] == b"GNU\0":
                    return note[name_end:name_end + descsz].hex()
                off = name_end + ((descsz + 3) & ~3)
    return None


def _read_table(f: int, sections: list[_Section], sh: _Section) -> list[_RawSymbol]:
    """(name, value, size, type, binding, shndx, file) for each symbol of table ``sh``.

    Versioned names: ``foo@@V`` (the default version) is ``foo``; ``foo@V``
    (an old version, and in ``.dynsym`` any entry whose version is hidden)
    keeps its version, so ``foo`` means what the dynamic linker binds to."""
    data = os.pread(f, sh.size, sh.offset)
    strtab = sections[sh.link]
    strings = os.pread(f, strtab.size, strtab.offset)
    count = len(data) // SYM.size
    hidden = _hidden_versions(f, sections, count) if sh.type == SHT_DYNSYM else None
    out: list[_RawSymbol] = []
    current_file: str | None = None
    for i, (st_name, st_info, _other, shndx, value, size) in enumerate(SYM.iter_unpack(data[: count * SYM.size])):
        end = strings.find(b"\0", st_name)
        name: str = strings[st_name:end].decode("utf-8", "surrogateescape") if st_name else ""
        stype, bind = st_info & 0xF, st_info >> 4
        if stype == STT_FILE:
            current_file = name or None
            continue
        if "@@" in name:
            name = name.split("@@", 1)[0]
        elif hidden is not None and i < len(hidden) and hidden[i] & VERSYM_HIDDEN:
            name += "@old"
        out.append((name, value, size, stype, bind, shndx, current_file if bind == STB_LOCAL else None))
    return out


def _hidden_versions(f: int, sections: list[_Section], count: int) -> tuple[int, ...]:
    versym = next((s for s in sections if s.type == SHT_GNU_VERSYM), None)
    if versym is None:
        return ()
    raw = os.pread(f, min(versym.size, 2 * count), versym.offset)
    return struct.unpack(f"<{len(raw) // 2}H", raw[: len(raw) // 2 * 2])


@functools.lru_cache(maxsize=16)
def _file_symbols(path: str, stamp: tuple[int, int]) -> tuple[int, str, tuple[_RawSymbol, ...]]:
    """(ELF type, table used, symbols) of a file; cached by path, mtime and size."""
    fd = os.open(path, os.O_RDONLY)
    try:
        e_type, sections = _sections(fd)
        symtab = next((s for s in sections if s.type == SHT_SYMTAB), None)
        if symtab is not None:
            return e_type, ".symtab", tuple(_read_table(fd, sections, symtab))
        bid = _build_id(fd, sections)
        debug = os.path.join(DEBUG_DIR, ".build-id", bid[:2], bid[2:] + ".debug") if bid else None
        if debug and os.path.exists(debug):
            dfd = os.open(debug, os.O_RDONLY)
            try:
                _, dsections = _sections(dfd)
                dsym = next((s for s in dsections if s.type == SHT_SYMTAB), None)
                if dsym is not None:
                    return e_type, f"debug file {debug}", tuple(_read_table(dfd, dsections, dsym))
            finally:
                os.close(dfd)
        dynsym = next((s for s in sections if s.type == SHT_DYNSYM), None)
        return e_type, ".dynsym", tuple(_read_table(fd, sections, dynsym)) if dynsym else ()
    finally:
        os.close(fd)


def host_symbols(library: str | None = None, include_local: bool = True) -> HostSymbols:
    """Name -> address of the functions and variables defined by the executable
    (``library=None``) or by the loaded object ``library`` names, from its full
    symbol table (static functions and variables too, unless
    ``include_local=False``). Thread-locals and IFUNC resolvers are left out
    (their values are not addresses of the thing); ambiguous names are left
    out and listed in ``.ambiguous``."""
    path, bias = find_object(library)
    st = os.stat(path)
    try:
        e_type, table, raw = _file_symbols(path, (st.st_mtime_ns, st.st_size))
    except (OSError, struct.error) as e:
        raise LinkError(f"host_symbols: cannot read the symbol table of {path}: {e}") from None
    if e_type != ET_DYN:
        bias = 0                                      # ET_EXEC: values are already addresses
    symbols = []
    for name, value, size, stype, bind, shndx, tu in raw:
        if not name or shndx in (SHN_UNDEF, SHN_ABS) or stype not in _KINDS or bind not in _BINDINGS:
            continue
        if bind == STB_LOCAL and (not include_local or stype == STT_NOTYPE):
            continue                                  # local NOTYPE: assembler labels, not things
        symbols.append(HostSymbol(name, value + bias, size, _KINDS[stype], _BINDINGS[bind], tu))
    return HostSymbols(path, bias, table, symbols)
