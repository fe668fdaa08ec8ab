"""Static archives (``ar``): the member table and the lazy symbol index.

Understands GNU archives (``/`` and ``/SYM64/`` symbol tables, ``//`` long
names) and BSD ones (``__.SYMDEF``, ``__.SYMDEF SORTED`` and their ``_64``
forms, ``#1/len`` names).  When an archive has no symbol index, one is built
from the members' own symbol tables; members without a ``.symtab`` (sqlite
has some) simply define nothing.  Thin archives (``!<thin>``), whose members
live in other files, are refused.

Every size and offset read from the archive is checked before use; anything
inconsistent raises ``MalformedObjectError`` naming the archive and the
offset of the offending header.

Symbol table layouts (offsets are of member headers, from the archive's start):

* GNU ``/`` (``/SYM64/``): a big-endian 4-byte (8-byte) count ``n``, ``n``
  offsets of the same width, then ``n`` NUL-terminated names.
* BSD ``__.SYMDEF`` (``__.SYMDEF_64``): a little-endian 4-byte (8-byte) size
  in bytes of the ranlib array, the array of ``(name offset, member offset)``
  pairs of that width, a size of the string table, then the string table.
"""
from __future__ import annotations

import struct
from typing import NamedTuple

from .elf import ObjectFile, is_elf
from .errors import MalformedObjectError

MAGIC = b"!<arch>\n"
THIN_MAGIC = b"!<thin>\n"
HEADER_SIZE = 60         # name[16] date[12] uid[6] gid[6] mode[8] size[10] fmag[2]
HEADER_END = b"`\n"      # fmag

# symbol table member names -> width in bytes of its numbers
GNU_SYMTABS = {"/": 4, "/SYM64/": 8}
BSD_SYMTABS = {"__.SYMDEF": 4, "__.SYMDEF SORTED": 4, "__.SYMDEF_64": 8, "__.SYMDEF_64 SORTED": 8}
LONG_NAMES = "//"


def is_archive(data: bytes) -> bool:
    return data[:8] == MAGIC or data[:8] == THIN_MAGIC


class Member(NamedTuple):
    name: str
    offset: int      # of the member header: what symbol indexes point at
    data_start: int
    size: int


class _SymbolTable(NamedTuple):
    bsd: bool        # BSD ranlib layout, else GNU
    width: int       # 4 or 8
    data: bytes
    offset: int      # of its member header, for error messages


class Archive:
    __slots__ = ("name", "data", "members", "index", "_by_member")

    def __init__(self, data: bytes, name: str = "<archive>"):
        self.name = name
        self.data = data
        if data[:8] == THIN_MAGIC:
            raise MalformedObjectError(f"{name}: thin archives are not supported (members live in other files)")
        if data[:8] != MAGIC:
            raise MalformedObjectError(f"{name}: not an ar archive")
        self.members: dict[int, Member] = {}
        symtab: _SymbolTable | None = None
        longnames = b""
        pos, n = len(MAGIC), len(data)
        while pos < n:
            if pos + HEADER_SIZE > n:
                raise MalformedObjectError(f"{name}: truncated member header at offset {pos:#x}")
            hdr = data[pos:pos + HEADER_SIZE]
            if hdr[58:60] != HEADER_END:
                raise MalformedObjectError(f"{name}: bad member header magic at offset {pos:#x}")
            field = hdr[48:58].strip() or b"0"
            if not field.isdigit():     # ASCII decimal digits only: no sign, no spaces inside
                raise MalformedObjectError(f"{name}: member size field at offset {pos:#x} is not a number")
            size = int(field)
            start = pos + HEADER_SIZE
            if start + size > n:
                raise MalformedObjectError(
                    f"{name}: member at offset {pos:#x} (size {size}) runs past the end of the archive")
            raw = hdr[:16].decode("ascii", "replace").rstrip()
            mname, mstart, msize = raw, start, size
            if raw.startswith("#1/"):   # BSD: the name follows the header
                digits = raw[3:]
                if not digits.isdigit() or int(digits) > size:
                    raise MalformedObjectError(f"{name}: bad BSD name length {digits!r} at offset {pos:#x}")
                ln = int(digits)
                mname = data[start:start + ln].rstrip(b"\0").decode("utf-8", "replace")
                mstart, msize = start + ln, size - ln
            if mname in GNU_SYMTABS or mname in BSD_SYMTABS:
                if symtab is not None:
                    raise MalformedObjectError(f"{name}: a second symbol table at offset {pos:#x}")
                symtab = _SymbolTable(mname in BSD_SYMTABS, GNU_SYMTABS.get(mname) or BSD_SYMTABS[mname],
                                      data[mstart:mstart + msize], pos)
            elif mname == LONG_NAMES:
                longnames = data[mstart:mstart + msize]
            else:
                if raw[:1] == "/" and raw[1:].isdigit():   # GNU long name: "/offset" into "//"
                    off = int(raw[1:])
                    end = longnames.find(b"/\n", off)
                    if off >= len(longnames) or end < 0:
                        raise MalformedObjectError(
                            f"{name}: long member name offset {off} at {pos:#x} is outside '//'")
                    mname = longnames[off:end].decode("utf-8", "replace")
                elif not raw.startswith("#1/") and raw.endswith("/"):   # GNU short name
                    mname = raw[:-1]
                self.members[pos] = Member(mname, pos, mstart, msize)
            pos = start + size + (size & 1)
        self.index: dict[str, int] = self._read_index(symtab) if symtab else self._build_index()
        self._by_member: dict[int, list[str]] | None = None

    def _read_index(self, symtab: _SymbolTable) -> dict[str, int]:
        table, width = symtab.data, symtab.width
        where = f"{self.name}: the symbol table at offset {symtab.offset:#x}"
        pairs: list[tuple[bytes, int]] = []
        if not symtab.bsd:      # GNU: count, offsets, names (big-endian)
            word = ">I" if width == 4 else ">Q"
            if len(table) < width:
                raise MalformedObjectError(f"{where} is truncated")
            (count,) = struct.unpack_from(word, table)
            names_at = width * (count + 1)
            if names_at > len(table):
                raise MalformedObjectError(f"{where} lists {count} symbols but has room for fewer")
            offsets = struct.unpack_from(f">{count}{word[1]}", table, width)
            names = table[names_at:].split(b"\0")
            if len(names) - 1 < count:      # each name ends with a NUL: the last piece is what follows
                raise MalformedObjectError(f"{where} lists {count} symbols but has fewer names")
            pairs = list(zip(names, offsets))
        else:                   # BSD: ranlib (name offset, member offset) pairs, then the string table
            word = "<I" if width == 4 else "<Q"
            if len(table) < width:
                raise MalformedObjectError(f"{where} is truncated")
            (nbytes,) = struct.unpack_from(word, table)
            strsize_at = width + nbytes
            if nbytes % (2 * width) or strsize_at + width > len(table):
                raise MalformedObjectError(f"{where} has a ranlib array of {nbytes} bytes, which does not fit")
            (strsize,) = struct.unpack_from(word, table, strsize_at)
            strtab_at = strsize_at + width
            if strtab_at + strsize > len(table):
                raise MalformedObjectError(f"{where} has a string table of {strsize} bytes, which does not fit")
            strtab = table[strtab_at:strtab_at + strsize]
            flat = struct.unpack_from(f"{word[0]}{nbytes // width}{word[1]}", table, width)
            for strx, off in zip(flat[0::2], flat[1::2]):
                end = strtab.find(b"\0", strx)
                if strx >= strsize or end < 0:
                    raise MalformedObjectError(f"{where} has a name offset {strx:#x} outside its string table")
                pairs.append((strtab[strx:end], off))
        index: dict[str, int] = {}
        for sym, off in pairs:
            if off not in self.members:
                raise MalformedObjectError(
                    f"{self.name}: symbol index entry {sym!r} points at {off:#x}, which is no member")
            index.setdefault(sym.decode("utf-8", "surrogateescape"), off)
        return index

    def _build_index(self) -> dict[str, int]:
        index: dict[str, int] = {}
        for off, m in self.members.items():
            blob = self.data[m.data_start:m.data_start + m.size]
            if not is_elf(blob):
                continue
            for sym in ObjectFile(blob, f"{self.name}({m.name})").defined_globals():
                index.setdefault(sym, off)
        return index

    def load_member(self, offset: int) -> ObjectFile:
        m = self.members[offset]
        return ObjectFile(self.data[m.data_start:m.data_start + m.size], f"{self.name}({m.name})")

    def member_symbols(self, offset: int) -> list[str]:
        """The indexed names that member ``offset`` defines."""
        if self._by_member is None:
            self._by_member = {}
            for name, off in self.index.items():
                self._by_member.setdefault(off, []).append(name)
        return self._by_member.get(offset, [])
