"""The code arena: one memfd seen through two mappings.

* The *run view* is a reserved range within +-2 GiB of libc (so that
  ``PC32``/``PLT32`` references to libc reach without stubs, as Debian's
  archives require for ``stderr``).  It is handed out in chunks, each chunk
  mapped with the protection of the pool that owns it: code ``r-x``,
  read-only data ``r--``, data ``rw-``.  Code is never writable here.
* The *write view* maps the whole memfd read-write somewhere else.  The linker
  writes through it, so code is never executable where it is written (W^X)
  and no mprotect dance happens per link.

Inside a pool, a first-fit allocator with coalescing hands out blocks of any
alignment up to a page, so many small units share pages.  When a free makes a
page wholly unused, the page is punched out of the memfd
(``FALLOC_FL_PUNCH_HOLE``): the memory goes back to the OS from both views.
"""
from __future__ import annotations

import bisect
import ctypes
import errno
import mmap
import os
import threading

from .errors import LinkError

PAGE = mmap.PAGESIZE
CHUNK = 64 * 1024
PROT_NONE, PROT_READ, PROT_WRITE, PROT_EXEC = 0, 1, 2, 4
MAP_SHARED, MAP_FIXED, MAP_FIXED_NOREPLACE = 0x01, 0x10, 0x100000
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
MAP_FAILED = ctypes.c_void_p(-1).value

CODE, RODATA, DATA = 0, 1, 2
POOL_NAMES = ("code", "rodata", "data")
_POOL_PROT = (PROT_READ | PROT_EXEC, PROT_READ, PROT_READ | PROT_WRITE)

_libc = ctypes.CDLL(None, use_errno=True)
_mmap = _libc.mmap
_mmap.restype = ctypes.c_void_p
_mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
_munmap = _libc.munmap
_munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_mprotect = _libc.mprotect
_mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_fallocate = _libc.fallocate
_fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long)


def libc_address() -> int:
    """An address inside libc's text: the anchor the arena must stay near."""
    return ctypes.cast(_libc.memcpy, ctypes.c_void_p).value or 0


def _reserve(fd: int, size: int, anchor: int) -> int:
    """Map the memfd PROT_NONE at an address within +-2 GiB of ``anchor``."""
    limit = (1 << 31) - (64 << 20)
    step = 64 << 20
    hints = []
    base = (anchor - size - (32 << 20)) & ~(CHUNK - 1)
    while anchor - base < limit:
        hints.append(base)
        base -= step
    base = (anchor + (256 << 20)) & ~(CHUNK - 1)
    while base + size - anchor < limit:
        hints.append(base)
        base += step
    for hint in hints:
        addr = _mmap(hint, size, PROT_NONE, MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0)
        if addr is None or addr == MAP_FAILED:
            continue
        if addr == hint:
            return addr
        _munmap(addr, size)  # an old kernel treated the address as a hint only
    raise LinkError(f"cannot reserve a {size >> 20} MiB code arena within 2 GiB of libc ({anchor:#x})")


class Pool:
    """Blocks of one protection: a sorted free list over the pool's chunks."""

    __slots__ = ("arena", "kind", "starts", "ends", "mapped", "used")

    def __init__(self, arena: Arena, kind: int):
        self.arena = arena
        self.kind = kind
        self.starts: list[int] = []   # free extents, sorted, never adjacent
        self.ends: list[int] = []
        self.mapped = 0
        self.used = 0

    def alloc(self, size: int, align: int) -> int:
        starts, ends = self.starts, self.ends
        mask = align - 1
        for i in range(len(starts)):
            s = starts[i]
            a = (s + mask) & ~mask
            e = ends[i]
            if a + size <= e:
                break
        else:
            self._grow(size + align)
            return self.alloc(size, align)
        # carve [a, a+size) out of [s, e)
        if a + size == e:
            if a == s:
                del starts[i], ends[i]
            else:
                ends[i] = a
        elif a == s:
            starts[i] = a + size
        else:
            ends[i] = a
            starts.insert(i + 1, a + size)
            ends.insert(i + 1, e)
        self.used += size
        return a

    def free(self, addr: int, size: int) -> None:
        if size <= 0:
            return
        self.used -= size
        end = addr + size
        s, e = self._insert(addr, end)
        # pages of the freed block that are now wholly free go back to the OS
        lo = (max(s, addr & ~(PAGE - 1)) + PAGE - 1) & ~(PAGE - 1)
        hi = min(e, (end + PAGE - 1) & ~(PAGE - 1)) & ~(PAGE - 1)
        if hi > lo:
            self.arena.punch(lo, hi - lo)

    def _insert(self, addr: int, end: int) -> tuple[int, int]:
        """Add [addr, end) to the free list, coalescing; return the merged extent."""
        starts, ends = self.starts, self.ends
        i = bisect.bisect_left(starts, addr)
        s, e = addr, end
        if i < len(starts) and starts[i] == end:       # merge with the next extent
            e = ends[i]
            del starts[i], ends[i]
        if i > 0 and ends[i - 1] == addr:              # merge with the previous one
            s = starts[i - 1]
            ends[i - 1] = e
        else:
            starts.insert(i, s)
            ends.insert(i, e)
        return s, e

    def _grow(self, need: int) -> None:
        size = max(CHUNK, (need + CHUNK - 1) & ~(CHUNK - 1))
        addr = self.arena.take_chunk(size, _POOL_PROT[self.kind])
        self.mapped += size
        self._insert(addr, addr + size)  # untouched pages: nothing to punch


class Arena:
    def __init__(self, size: int = 1 << 30):
        self.size = size
        self.fd = os.memfd_create("hotlink-arena", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, size)
        self.base = _reserve(self.fd, size, libc_address())
        self.writer = mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.bump = self.base
        self.lock = threading.Lock()
        self.pools = (Pool(self, CODE), Pool(self, RODATA), Pool(self, DATA))
        self.punched = 0

    def take_chunk(self, size: int, prot: int) -> int:
        addr = self.bump
        if addr + size > self.base + self.size:
            raise LinkError(f"code arena exhausted ({self.size >> 20} MiB); create the Session with a larger arena_size")
        if _mprotect(addr, size, prot) != 0:
            raise OSError(ctypes.get_errno(), f"mprotect of arena chunk {addr:#x} failed")
        self.bump = addr + size
        return addr

    def write(self, addr: int, data: bytes | bytearray) -> None:
        off = addr - self.base
        self.writer[off:off + len(data)] = data

    def read(self, addr: int, size: int) -> bytes:
        off = addr - self.base
        return self.writer[off:off + size]

    def punch(self, addr: int, size: int) -> None:
        if _fallocate(self.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, addr - self.base, size) != 0:
            err = ctypes.get_errno()
            if err != errno.EOPNOTSUPP:
                raise OSError(err, "fallocate(PUNCH_HOLE) on the arena failed")
        self.punched += size

    def contains(self, addr: int) -> bool:
        return self.base <= addr < self.base + self.size

    def close(self) -> None:
        if self.fd < 0:
            return
        self.writer.close()
        _munmap(self.base, self.size)
        os.close(self.fd)
        self.fd = -1

    def resident(self) -> int:
        """Bytes of memory the memfd holds (pages written and not punched)."""
        return os.fstat(self.fd).st_blocks * 512
