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
PUNCH_BATCH = 64 * 1024   # free pages kept resident at most before they are punched
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
    """Map the memfd PROT_NONE at an address within +-2 GiB of ``anchor``.

    The kernel hands out mappings top-down, just below the lowest one, so an
    arena right under libc would sit in the path of every later mmap and
    split other JITs' allocations (MCJIT needs its sections within 2 GiB of
    each other).  Try the far end of the window first and come upwards.
    """
    limit = (1 << 31) - (64 << 20)
    step = 64 << 20
    hints = []
    base = (anchor - limit) & ~(CHUNK - 1)
    while base + size + (32 << 20) <= anchor:
        hints.append(base)
        base += step
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


GRANULE = 16   # every block starts and ends on 16 bytes, so no unusable slivers


def pack_block(pool: int, addr: int, size: int, frame: bool = False) -> int:
    """One int per block keeps a tiny unit's bookkeeping small: the address
    (user space fits in 47 bits), the pool, whether the block is a registered
    .eh_frame table, and the size."""
    return addr | pool << 47 | frame << 49 | size << 50


def unpack_block(block: int) -> tuple[int, int, int, bool]:
    """(pool, address, size, frame) of a packed block."""
    return (block >> 47) & 3, block & ((1 << 47) - 1), block >> 50, bool(block >> 49 & 1)


class Pool:
    """Blocks of one protection.

    New blocks come from the *top* of the pool (a bump pointer into the
    newest chunk) unless a hole left by a free fits: holes are kept by
    address (to coalesce on free) and by (size, address) (best fit in
    O(log n)).  A hole that reaches the top merges back into it.
    """

    __slots__ = ("arena", "kind", "starts", "ends", "by_size", "top", "top_end", "mapped", "used")

    def __init__(self, arena: Arena, kind: int):
        self.arena = arena
        self.kind = kind
        self.starts: list[int] = []   # holes, sorted by address, never adjacent
        self.ends: list[int] = []
        self.by_size: list[tuple[int, int]] = []
        self.top = self.top_end = 0
        self.mapped = 0
        self.used = 0

    def alloc(self, size: int, align: int) -> int:
        with self.arena.lock:
            return self._alloc(size, align)

    def _alloc(self, size: int, align: int) -> int:
        size = (size + GRANULE - 1) & -GRANULE
        if align < GRANULE:
            align = GRANULE
        by_size = self.by_size
        if by_size:
            i = bisect.bisect_left(by_size, (size, 0))
            for length, s in by_size[i:i + 8]:
                a = (s + align - 1) & -align
                if a + size <= s + length:
                    e = s + length
                    self._remove(bisect.bisect_left(self.starts, s), i)
                    if a > s:
                        self._add(s, a)
                    if a + size < e:
                        self._add(a + size, e)
                    self.used += size
                    return a
                i += 1
        a = (self.top + align - 1) & -align
        if a + size > self.top_end:
            self._grow(size + align)
            return self._alloc(size, align)
        if a > self.top:
            self._add(self.top, a)
        self.top = a + size
        self.used += size
        return a

    def free(self, addr: int, size: int) -> None:
        if size > 0:
            with self.arena.lock:
                self._free(addr, size)

    def _free(self, addr: int, size: int) -> None:
        size = (size + GRANULE - 1) & -GRANULE
        self.used -= size
        end = addr + size
        starts, ends = self.starts, self.ends
        s, e = addr, end
        j = bisect.bisect_left(starts, addr)
        if j < len(starts) and starts[j] == end:        # merge with the next hole
            e = ends[j]
            self._remove(j)
        if j > 0 and ends[j - 1] == addr:               # and with the previous one
            s = starts[j - 1]
            self._remove(j - 1)
        if e == self.top:
            self.top = s
            e = self.top_end
        else:
            self._add(s, e)
        # pages of the freed block that are now wholly free go back to the OS
        lo = (max(s, addr & -PAGE) + PAGE - 1) & -PAGE
        hi = min(e, (end + PAGE - 1) & -PAGE) & -PAGE
        if hi > lo:
            self.arena.release_pages(lo, hi - lo)

    def is_free(self, addr: int, end: int) -> bool:
        if self.top <= addr and end <= self.top_end:
            return True
        j = bisect.bisect_right(self.starts, addr) - 1
        return j >= 0 and self.ends[j] >= end

    def _add(self, s: int, e: int) -> None:
        j = bisect.bisect_left(self.starts, s)
        self.starts.insert(j, s)
        self.ends.insert(j, e)
        bisect.insort(self.by_size, (e - s, s))

    def _remove(self, j: int, k: int = -1) -> None:
        s = self.starts.pop(j)
        e = self.ends.pop(j)
        if k < 0:
            k = bisect.bisect_left(self.by_size, (e - s, s))
        del self.by_size[k]

    def _grow(self, need: int) -> None:
        size = max(CHUNK, (need + CHUNK - 1) & -CHUNK)
        addr = self.arena.take_chunk(size, self)
        self.mapped += size
        if addr != self.top_end:        # not contiguous: the old top becomes a hole
            if self.top_end > self.top:
                self._add(self.top, self.top_end)
            self.top = addr
        self.top_end = addr + size


class Arena:
    def __init__(self, size: int = 256 << 20):
        self.size = size
        self.fd = os.memfd_create("hotlink-arena", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, size)
        self.base = _reserve(self.fd, size, libc_address())
        # the write view goes right below the run view, out of the way of later mmaps too
        hint = self.base - size
        wr = _mmap(hint, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED_NOREPLACE, self.fd, 0)
        if wr is None or wr == MAP_FAILED:
            wr = _mmap(None, size, PROT_READ | PROT_WRITE, MAP_SHARED, self.fd, 0)
            if wr is None or wr == MAP_FAILED:
                raise OSError(ctypes.get_errno(), "cannot map the arena's write view")
        self.write_base = wr
        self.writer = memoryview((ctypes.c_char * size).from_address(wr)).cast("B")
        self.bump = self.base
        # guards the pools and tables: links allocate under the session lock,
        # but retired memory is freed from whichever thread ends a grace period
        self.lock = threading.RLock()
        self.pools = (Pool(self, CODE), Pool(self, RODATA), Pool(self, DATA))
        self.punched = 0
        self.chunk_pool: list[Pool | None] = [None] * (size // CHUNK)
        self._unpunched: set[int] = set()   # wholly free pages not yet punched

    def take_chunk(self, size: int, pool: Pool) -> int:
        addr = self.bump
        prot = _POOL_PROT[pool.kind]
        if addr + size > self.base + self.size:
            raise LinkError(f"code arena exhausted ({self.size >> 20} MiB); create the Session with a larger arena_size")
        if _mprotect(addr, size, prot) != 0:
            raise OSError(ctypes.get_errno(), f"mprotect of arena chunk {addr:#x} failed")
        self.bump = addr + size
        first = (addr - self.base) // CHUNK
        self.chunk_pool[first:first + size // CHUNK] = [pool] * (size // CHUNK)
        return addr

    def write(self, addr: int, data: bytes | bytearray) -> None:
        off = addr - self.base
        self.writer[off:off + len(data)] = data

    def zero(self, addr: int, size: int) -> None:
        step = 1 << 20
        for a in range(addr, addr + size, step):
            self.write(a, bytes(min(step, addr + size - a)))

    def release_pages(self, addr: int, size: int) -> None:
        """Note pages that became wholly free; they are punched in batches,
        since a hole punch costs several microseconds and a tiny unit's page
        is often reused right away."""
        self._unpunched.update(range(addr, addr + size, PAGE))
        if len(self._unpunched) * PAGE >= PUNCH_BATCH:
            self._flush()

    def flush(self) -> None:
        """Punch every noted page that is still free."""
        with self.lock:
            self._flush()

    def _flush(self) -> None:
        pending, self._unpunched = self._unpunched, set()
        for page in sorted(pending):
            if self._pool_of(page).is_free(page, page + PAGE):
                self.punch(page, PAGE)

    def _pool_of(self, addr: int) -> Pool:
        pool = self.chunk_pool[(addr - self.base) // CHUNK]
        assert pool is not None
        return pool

    def punch(self, addr: int, size: int) -> None:
        if _fallocate(self.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, addr - self.base, size) != 0:
            err = ctypes.get_errno()
            if err != errno.EOPNOTSUPP:
                raise OSError(err, "fallocate(PUNCH_HOLE) on the arena failed")
        self.punched += size

    def close(self) -> None:
        if self.fd < 0:
            return
        self.writer.release()
        _munmap(self.write_base, self.size)
        _munmap(self.base, self.size)
        os.close(self.fd)
        self.fd = -1

    def resident(self) -> int:
        """Bytes of memory the memfd holds (pages written and not punched)."""
        return os.fstat(self.fd).st_blocks * 512
