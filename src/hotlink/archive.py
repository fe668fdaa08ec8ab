"""Static archives (``ar``): the member table and the lazy symbol index.

Understands GNU (``/``, ``/SYM64/``, ``//`` long names) and BSD
(``__.SYMDEF``, ``#1/len`` names) archives.  When an archive has no symbol
index, one is built from the members' own symbol tables; members without a
``.symtab`` (sqlite has some) simply define nothing.
"""
from __future__ import annotations

import struct
from typing import NamedTuple

from .elf import ObjectFile, is_elf
from .errors import MalformedObjectError

MAGIC = b"!<arch>\n"
THIN_MAGIC = b"!<thin>\n"


def is_archive(data: bytes) -> bool:
    return data[:8] == MAGIC or data[:8] == THIN_MAGIC


class Member(NamedTuple):
    name: str
    offset: int      # of the member header: what symbol indexes point at
    data_start: int
    size: int


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
        symtab: tuple[bytes, int] | None = None
        longnames = b""
        pos, n = 8, len(data)
        while pos < n:
            if pos + 60 > n:
                raise MalformedObjectError(f"{name}: truncated member header at offset {pos:#x}")
            hdr = data[pos:pos + 60]
            if hdr[58:60] != b"`\n":
                raise MalformedObjectError(f"{name}: bad member header magic at offset {pos:#x}")
            try:
                size = int(hdr[48:58].decode("ascii").strip() or "0")
            except ValueError:
                raise MalformedObjectError(f"{name}: member size field at offset {pos:#x} is not a number") from None
            start = pos + 60
            if size < 0 or start + size > n:
                raise MalformedObjectError(f"{name}: member at offset {pos:#x} (size {size}) runs past the end of the archive")
            raw = hdr[:16].decode("ascii", "replace").rstrip()
            if raw in ("/", "/SYM64/"):
                symtab = (data[start:start + size], 8 if raw == "/SYM64/" else 4)
            elif raw in ("__.SYMDEF", "__.SYMDEF SORTED", "#1/__.SYMDEF", "#1/__.SYMDEF SORTED"):
                symtab = (data[start:start + size], 0)
            elif raw == "//":
                longnames = data[start:start + size]
            else:
                mname, mstart, msize = raw, start, size
                if raw.startswith("#1/"):  # BSD: the name follows the header
                    try:
                        ln = int(raw[3:])
                    except ValueError:
                        raise MalformedObjectError(f"{name}: bad BSD name length at offset {pos:#x}") from None
                    if ln > size:
                        raise MalformedObjectError(f"{name}: BSD name at offset {pos:#x} is longer than its member")
                    mname = data[start:start + ln].rstrip(b"\0").decode("utf-8", "replace")
                    if mname.startswith("__.SYMDEF"):
                        symtab = (data[start + ln:start + size], 0)
                        pos = start + size + (size & 1)
                        continue
                    mstart, msize = start + ln, size - ln
                elif raw.startswith("/") and raw[1:].isdigit():  # GNU long name
                    off = int(raw[1:])
                    end = longnames.find(b"/\n", off)
                    if off >= len(longnames) or end < 0:
                        raise MalformedObjectError(f"{name}: long member name offset {off} at {pos:#x} is outside '//'")
                    mname = longnames[off:end].decode("utf-8", "replace")
                else:
                    mname = raw[:-1] if raw.endswith("/") else raw
                self.members[pos] = Member(mname, pos, mstart, msize)
            pos = start + size + (size & 1)
        self.index: dict[str, int] = self._read_index(symtab) if symtab else self._build_index()
        self._by_member: dict[int, list[str]] | None = None

    def _read_index(self, symtab: tuple[bytes, int]) -> dict[str, int]:
        table, width = symtab
        name = self.name
        index: dict[str, int] = {}
        try:
            if width:  # GNU: big-endian count, offsets, then NUL-separated names
                fmt = ">I" if width == 4 else ">Q"
                (count,) = struct.unpack_from(fmt, table)
                offsets = struct.unpack_from(f">{count}{fmt[1]}", table, width)
                names = table[width * (count + 1):].split(b"\0")
                if len(names) < count:
                    raise MalformedObjectError(f"{name}: symbol index lists {count} symbols but has fewer names")
                pairs = zip(names, offsets)
            else:  # BSD: ranlib (strx, off) pairs, then the string table
                (nbytes,) = struct.unpack_from("<I", table)
                entries = list(struct.iter_unpack("<II", table[4:4 + nbytes]))
                (strsize,) = struct.unpack_from("<I", table, 4 + nbytes)
                strtab = table[8 + nbytes:8 + nbytes + strsize]
                pairs = []
                for strx, off in entries:
                    end = strtab.find(b"\0", strx)
                    pairs.append((strtab[strx:end if end >= 0 else len(strtab)], off))
        except struct.error:
            raise MalformedObjectError(f"{name}: the archive symbol index is truncated") from None
        for sym, off in pairs:
            if off not in self.members:
                raise MalformedObjectError(f"{name}: symbol index entry {sym!r} points at {off:#x}, which is no member")
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
