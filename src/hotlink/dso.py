"""Small ELF shared objects written in Python and loaded with ``dlopen``.

Some things only the dynamic loader can give: a module ID and a block of
static TLS at one thread-pointer offset in every thread, existing ones
included (``tls.py``); and a symbol that a debugger finds in a real loaded
object (the GDB JIT interface).  hotlink gets them by writing a minimal
shared object itself — no compiler at run time — and letting ``ld.so`` load
and relocate it.  ``ld.so`` then writes what it computed (TLS offsets,
module IDs, addresses of other objects' symbols) into the object's data
words, where hotlink reads them.

The object has two ``PT_LOAD`` segments: read-execute (headers, symbol and
hash tables, relocations, ``text``) and read-write (``.dynamic``, ``data``,
the TLS image), plus ``PT_DYNAMIC``, ``PT_TLS`` when there is TLS and
``PT_GNU_STACK``.  Section headers name the same ranges, so ``readelf`` and
gdb read it like any other shared object.
"""
from __future__ import annotations

import ctypes
import os
import struct
from dataclasses import dataclass
from typing import Literal

from . import libc
from .errors import LinkError

PAGE = 4096

# symbol kinds: defined in text, data or the TLS image; or undefined (looked up by ld.so)
Kind = Literal["func", "object", "tls", "undefined", "undefined_tls"]

DF_STATIC_TLS = 0x10
_STT = {"func": 2, "object": 1, "tls": 6, "undefined": 0, "undefined_tls": 6}
(DT_NULL, DT_NEEDED, DT_HASH, DT_STRTAB, DT_SYMTAB, DT_RELA, DT_RELASZ, DT_RELAENT, DT_STRSZ, DT_SYMENT,
 DT_SONAME, DT_FLAGS) = 0, 1, 4, 5, 6, 7, 8, 9, 10, 11, 14, 30


@dataclass(frozen=True)
class Symbol:
    name: str
    kind: Kind
    value: int = 0      # offset in text, data or the TLS image
    size: int = 0


@dataclass(frozen=True)
class Relocation:
    offset: int          # into ``data``
    type: int            # x86_64.Reloc
    symbol: str | None   # None: the object itself (its module, its own TLS block)
    addend: int = 0


@dataclass(frozen=True)
class TlsImage:
    data: bytes          # .tdata
    size: int            # .tdata + .tbss
    align: int


def _elf_hash(name: bytes) -> int:
    h = 0
    for c in name:
        h = (h << 4) + c
        g = h & 0xF0000000
        if g:
            h ^= g >> 24
        h &= ~g & 0xFFFFFFFF
    return h


def _align(x: int, a: int) -> int:
    return (x + a - 1) & -a


def build(soname: str, *, text: bytes = b"", data: bytes = b"", symbols: tuple[Symbol, ...] = (),
          relocations: tuple[Relocation, ...] = (), tls: TlsImage | None = None,
          static_tls: bool = False, needed: tuple[str, ...] = ()) -> tuple[bytes, int]:
    """The bytes of a shared object, and the offset of ``data`` from its load
    base; ``needed``: shared objects to search first (``DT_NEEDED``)."""
    strtab = bytearray(b"\0")

    def string(s: str) -> int:
        strtab.extend(s.encode() + b"\0")
        return len(strtab) - len(s) - 1

    soname_at = string(soname)
    needed_at = [string(n) for n in needed]
    names = [string(s.name) for s in symbols]
    index = {s.name: i + 1 for i, s in enumerate(symbols)}
    nsyms = len(symbols) + 1
    nbucket = max(1, nsyms // 2)
    buckets, chains = [0] * nbucket, [0] * nsyms
    for i, s in enumerate(symbols, 1):
        b = _elf_hash(s.name.encode()) % nbucket
        chains[i], buckets[b] = buckets[b], i
    hash_bytes = struct.pack(f"<{2 + nbucket + nsyms}I", nbucket, nsyms, *buckets, *chains)

    # read-execute segment: ehdr, phdrs, .hash, .dynsym, .dynstr, .rela.dyn, .text
    nphdr = 4 + (tls is not None)
    off = 64 + 56 * nphdr
    hash_at = off = _align(off, 8)
    dynsym_at = off = _align(off + len(hash_bytes), 8)
    dynstr_at = off + 24 * nsyms
    rela_at = _align(dynstr_at + len(strtab), 8)
    text_at = _align(rela_at + 24 * len(relocations), 16)
    rx_end = text_at + len(text)
    # read-write segment, on its own page: .dynamic, data, the TLS image
    dynamic_at = _align(rx_end, PAGE)
    ndyn = 11 + bool(static_tls) + len(needed)
    data_at = _align(dynamic_at + 16 * ndyn, 16)
    tls_align = tls.align if tls else 1
    tdata_at = _align(data_at + len(data), max(tls_align, 8))
    rw_end = tdata_at + (len(tls.data) if tls else 0)

    shndx = {"func": 6, "object": 8, "tls": 9}    # section numbers below
    syms = bytearray(24)
    for s, n in zip(symbols, names):
        bind = 1                                            # STB_GLOBAL
        ndx = shndx.get(s.kind, 0)
        syms += struct.pack("<IBBHQQ", n, (bind << 4) | _STT[s.kind], 0, ndx, s.value + {
            "func": text_at, "object": data_at}.get(s.kind, 0), s.size)
    rela = b"".join(struct.pack("<QQq", data_at + r.offset,
                                (index[r.symbol] if r.symbol else 0) << 32 | r.type, r.addend)
                    for r in relocations)
    dyn = [*((DT_NEEDED, n) for n in needed_at),
           (DT_HASH, hash_at), (DT_STRTAB, dynstr_at), (DT_SYMTAB, dynsym_at), (DT_STRSZ, len(strtab)),
           (DT_SYMENT, 24), (DT_SONAME, soname_at), (DT_RELA, rela_at), (DT_RELASZ, len(rela)),
           (DT_RELAENT, 24)]
    if static_tls:
        dyn.append((DT_FLAGS, DF_STATIC_TLS))
    dyn += [(DT_NULL, 0)] * (ndyn - len(dyn))
    dynamic = b"".join(struct.pack("<qQ", t, v) for t, v in dyn)

    shstr = bytearray(b"\0")
    sections = [(0, 0, 0, 0, 0, 0, 0, 0, 0)]

    def section(name: str, type_: int, flags: int, at: int, size: int, link: int = 0,
                info: int = 0, align: int = 1, entsize: int = 0) -> None:
        shstr.extend(name.encode() + b"\0")
        sections.append((len(shstr) - len(name) - 1, type_, flags, at, size, link, info, align, entsize))

    A, W, X, T = 2, 1, 4, 0x400
    section(".hash", 5, A, hash_at, len(hash_bytes), 2, 0, 8, 4)                      # 1
    section(".dynsym", 11, A, dynsym_at, len(syms), 3, 1, 8, 24)                     # 2
    section(".dynstr", 3, A, dynstr_at, len(strtab))                                 # 3
    section(".rela.dyn", 4, A, rela_at, len(rela), 2, 0, 8, 24)                     # 4
    section(".dynamic", 6, A | W, dynamic_at, len(dynamic), 3, 0, 8, 16)             # 5
    section(".text", 1, A | X, text_at, len(text), 0, 0, 16)                         # 6
    section(".symtab", 2, 0, dynsym_at, len(syms), 3, 1, 8, 24)                      # 7 (gdb, readelf)
    section(".data", 1, A | W, data_at, len(data), 0, 0, 16)                         # 8
    tdata, tsize = (tls.data, tls.size) if tls else (b"", 0)
    section(".tdata", 1, A | W | T, tdata_at, len(tdata), 0, 0, tls_align)           # 9
    section(".tbss", 8, A | W | T, tdata_at + len(tdata), tsize - len(tdata), 0, 0, tls_align)  # 10
    section(".shstrtab", 3, 0, 0, 0)                                                 # 11
    shstr_at = rw_end
    shoff = _align(shstr_at + len(shstr), 8)
    sections[-1] = sections[-1][:3] + (shstr_at, len(shstr)) + sections[-1][5:]

    phdrs = [(1, 5, 0, 0, rx_end, rx_end, PAGE),                                     # PT_LOAD r-x
             (1, 6, dynamic_at, dynamic_at, rw_end - dynamic_at, rw_end - dynamic_at, PAGE),
             (2, 6, dynamic_at, dynamic_at, len(dynamic), len(dynamic), 8)]          # PT_DYNAMIC
    if tls:
        phdrs.append((7, 4, tdata_at, tdata_at, len(tdata), tsize, tls_align))      # PT_TLS
    phdrs.append((0x6474E551, 6, 0, 0, 0, 0, 16))                                    # PT_GNU_STACK

    out = bytearray(shoff + 64 * len(sections))
    out[0:64] = struct.pack("<4sBBBBB7xHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 0, 3, 62, 1, 0,
                            64, shoff, 0, 64, 56, len(phdrs), 64, len(sections), len(sections) - 1)
    for i, (typ, flags, o, va, filesz, memsz, align) in enumerate(phdrs):
        struct.pack_into("<IIQQQQQQ", out, 64 + 56 * i, typ, flags, o, va, va, filesz, memsz, align)
    for at, blob in ((hash_at, hash_bytes), (dynsym_at, syms), (dynstr_at, strtab), (rela_at, rela),
                     (text_at, text), (dynamic_at, dynamic), (data_at, data), (tdata_at, tdata),
                     (shstr_at, shstr)):
        out[at:at + len(blob)] = blob
    for i, (name, typ, flags, at, size, link, info, align, entsize) in enumerate(sections):
        addr = at if flags & A else 0
        struct.pack_into("<IIQQQQIIQQ", out, shoff + 64 * i, name, typ, flags, addr, at, size,
                         link, info, align, entsize)
    return bytes(out), data_at


RTLD_NOW, RTLD_LOCAL = 2, 0
RTLD_DI_LINKMAP = 2


class SharedObject:
    """A shared object built by ``build``, loaded with ``dlopen`` from a
    memfd.  The memfd stays open while the object is loaded: ld.so knows an
    object by its path, ``/proc/PID/fd/N``, and would take a later object
    loaded through a reused ``N`` for this one.  The path names the pid, not
    ``self``: gdb opens every loaded object by its path, and its own
    ``/proc/self/fd/N`` may be a pipe it would wait on forever.  (A debugger
    reads symbols from a path on disk: the GDB registration object is
    written to a file, debug/gdb.py.)"""

    def __init__(self, image: bytes, data_offset: int, *, name: str):
        self.fd = fd = os.memfd_create(name, os.MFD_CLOEXEC)
        os.write(fd, image)
        handle = libc.dlopen(f"/proc/{os.getpid()}/fd/{fd}".encode(), RTLD_NOW | RTLD_LOCAL)
        if not handle:
            os.close(fd)
            raise LinkError(f"the dynamic loader refused {name}: {(libc.dlerror() or b'').decode()}")
        self.handle: int = handle
        link_map = ctypes.c_void_p()
        libc.dlinfo(handle, RTLD_DI_LINKMAP, ctypes.byref(link_map))
        self.base: int = ctypes.c_uint64.from_address(link_map.value or 0).value     # l_addr
        self.data: int = self.base + data_offset

    def word(self, offset: int) -> int:
        """The 64-bit word at ``offset`` into ``data`` (what ld.so wrote there)."""
        return ctypes.c_uint64.from_address(self.data + offset).value

    def close(self) -> None:
        if self.handle:
            libc.dlclose(self.handle)
            self.handle = 0
            os.close(self.fd)
