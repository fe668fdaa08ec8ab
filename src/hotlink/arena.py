"""The code arena: memfds seen through two mappings each.

* The *run view* of a region is a reserved range within +-2 GiB of libc (so
  that ``PC32``/``PLT32`` references to libc reach without stubs, as Debian's
  archives require for ``stderr``).  It is handed out in 64 KiB chunks, each
  chunk mapped with the protection of the pool that owns it: code ``r-x``,
  read-only data ``r--``, data ``rw-``; a chunk no pool owns is ``---``.
  Code is never writable here.
* The *write view* maps the region's memfd read-write somewhere else.  The
  linker writes through it, so code is never executable where it is written
  (W^X) and no mprotect dance happens per link.

The arena starts with one region of the size asked for.  When no run of
free chunks is left in it, another region is reserved (all regions stay
within +-2 GiB of libc and within 2 GiB of each other, and no two touch, so
no block ever straddles two regions); only when none fits any more is the
arena exhausted.

Inside a pool, a best-fit allocator with coalescing hands out blocks of any
alignment up to a page, so many small units share pages.  When a free makes
a page wholly unused, the page is punched out of the memfd
(``FALLOC_FL_PUNCH_HOLE``, in batches): the memory goes back to the OS from
both views.  When a free leaves whole chunks of a pool unused, the chunks go
back to the arena (punched, ``PROT_NONE``) for any pool to take: freed code
space can hold data and the other way round.  Each pool keeps one empty
chunk at its top, so a churn of tiny units never mprotects; those spares are
taken back too before the arena reserves another region.

Objects compiled without ``-fPIC`` use absolute 32-bit addresses
(``R_X86_64_32``, zero-extended, and ``R_X86_64_32S``, sign-extended): their
code and data must lie below 2 GiB.  They get pools of their own
(``zone(low=True)``) whose chunks come from *low regions*, reserved on first
use between 1 GiB and 2 GiB (the window the kernel's ``MAP_32BIT`` uses,
above the brk heap of a non-PIE program) up to ``low_size`` bytes in all.
Everything such code reaches PC-relatively (its GOT entries, far-call stubs,
entry stubs) is allocated there too, so it lies within 2 GiB of it.  When
the last low block is freed, the low regions are unmapped: low address
space is scarce and other programs' JITs (LuaJIT's) want it too.  A block
is freed through the pool of its kind in either zone: its address says
which zone it came from.

``fork_prepare`` / ``fork_parent`` / ``fork_child`` (for ``os.register_at_fork``)
give a forked child its own copy of the arena (every region, low ones
included) instead of the parent's shared memfds.
"""
from __future__ import annotations

import bisect
import ctypes
import errno
import mmap
import operator
import os
import re
import threading
from collections.abc import Sequence
from typing import SupportsIndex

from . import forkcopy
from .errors import LinkError
from .libc import fallocate as _fallocate
from .libc import libc_address
from .libc import mmap as _mmap  # module-level names: fault tests replace _mmap
from .libc import mprotect as _mprotect
from .libc import munmap as _munmap

PAGE = mmap.PAGESIZE
CHUNK = 64 * 1024
PUNCH_BATCH = 64 * 1024   # free pages kept resident at most before they are punched
ZERO_BY_PUNCH = 64 * 1024  # zero() punches the whole pages of ranges at least this long
PROT_NONE, PROT_READ, PROT_WRITE, PROT_EXEC = 0, 1, 2, 4
MAP_SHARED, MAP_FIXED, MAP_32BIT, MAP_FIXED_NOREPLACE = 0x01, 0x10, 0x40, 0x100000
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
MAP_FAILED = ctypes.c_void_p(-1).value

REACH = (1 << 31) - (64 << 20)      # how far apart two arena addresses (or one and libc) may lie
MAX_ARENA_SIZE = REACH - (64 << 20)  # the largest region that can fit beside libc

# Low regions, for code linked with absolute 32-bit addresses: they end at or
# below 2 GiB (R_X86_64_32S sign-extends) and start at or above 1 GiB.
LOW_LIMIT = 1 << 31
LOW_FLOOR = 1 << 30
MAX_LOW_SIZE = LOW_LIMIT - LOW_FLOOR
LOW_REGION = 64 << 20               # the first low region's size (address space only)

CODE, RODATA, DATA = 0, 1, 2
POOL_NAMES = ("code", "rodata", "data")
_POOL_PROT = (PROT_READ | PROT_EXEC, PROT_READ, PROT_READ | PROT_WRITE)
_RUNS = re.compile(rb"(.)\1*", re.S)   # runs of equal bytes in a chunk map


def _check_size(size: object) -> int:
    if not isinstance(size, SupportsIndex):
        raise TypeError(f"arena_size must be an int (bytes), not {type(size).__name__}")
    n = operator.index(size)
    if n <= 0 or n % CHUNK or n > MAX_ARENA_SIZE:
        raise ValueError(f"arena_size must be a positive multiple of {CHUNK} bytes (64 KiB) and at most "
                         f"{MAX_ARENA_SIZE >> 20} MiB; got {n}")
    return n


def _check_low_size(size: object) -> int:
    if not isinstance(size, SupportsIndex):
        raise TypeError(f"low_arena_size must be an int (bytes), not {type(size).__name__}")
    n = operator.index(size)
    if n < 0 or n % CHUNK or n > MAX_LOW_SIZE:
        raise ValueError(f"low_arena_size must be 0 (no memory below 2 GiB) or a multiple of {CHUNK} bytes "
                         f"(64 KiB) up to {MAX_LOW_SIZE >> 20} MiB; got {n}")
    return n


def _map_reserved(fd: int, size: int, hint: int) -> int:
    """The memfd mapped PROT_NONE exactly at ``hint`` (never over another mapping); 0 if not."""
    addr = _mmap(hint, size, PROT_NONE, MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0)
    if addr is None or addr == MAP_FAILED:
        return 0
    if addr == hint:
        return addr
    _munmap(addr, size)  # an old kernel treated the address as a hint only
    return 0


def _reserve_low(fd: int, size: int, others: Sequence[_Region]) -> int:
    """Map the memfd PROT_NONE between 1 GiB and 2 GiB, touching none of
    ``others``; 0 if no such address is free.  Top-down from 2 GiB, then
    wherever ``MAP_32BIT`` puts it (the kernel knows its window's holes)."""
    touching = {r.end for r in others} | {r.base - size for r in others}
    for hint in range((LOW_LIMIT - size) & -CHUNK, LOW_FLOOR - 1, -LOW_REGION):
        if hint not in touching:
            addr = _map_reserved(fd, size, hint)
            if addr:
                return addr
    got = _mmap(None, size, PROT_NONE, MAP_SHARED | MAP_32BIT, fd, 0)
    if got is None or got == MAP_FAILED:
        return 0
    if got + size <= LOW_LIMIT and got not in touching:
        return got
    _munmap(got, size)
    return 0


def _reserve(fd: int, size: int, anchor: int, others: Sequence[_Region] = ()) -> int:
    """Map the memfd PROT_NONE at an address within +-2 GiB of ``anchor``
    (and, with ``others``, within 2 GiB of every other region, touching
    none of them); 0 if no such address is free.

    The kernel hands out mappings top-down, just below the lowest one, so an
    arena right under libc would sit in the path of every later mmap and
    split other JITs' allocations (MCJIT needs its sections within 2 GiB of
    each other).  Try the far end of the window first and come upwards.
    """
    limit = REACH
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
    if others:
        lo = max(r.end for r in others) - limit
        hi = min(r.base for r in others) + limit
        touching = {r.end for r in others} | {r.base - size for r in others}
        hints = [h for h in hints if lo <= h and h + size <= hi and h not in touching]
    for hint in hints:
        if hint > 0:
            addr = _map_reserved(fd, size, hint)
            if addr:
                return addr
    return 0


def _os_error(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}")


class _Region:
    """One memfd: its run view at ``base`` and its write view at ``write_base``.

    ``kinds[i]`` says who owns chunk i: 0 nobody, else the pool's kind + 1
    (a pool of the region's zone: low regions serve only low pools).
    """

    __slots__ = ("fd", "base", "size", "end", "write_base", "writer", "kinds", "low")

    def __init__(self, size: int, anchor: int, others: Sequence[_Region] = (), low: bool = False):
        self.size = size
        self.low = low
        self.fd = -1
        self.base = self.end = self.write_base = 0
        self.writer: memoryview | None = None
        self.kinds = bytearray(size // CHUNK)
        try:
            self.fd = os.memfd_create("hotlink-arena", os.MFD_CLOEXEC)
            os.ftruncate(self.fd, size)
            self.base = _reserve_low(self.fd, size, others) if low else _reserve(self.fd, size, anchor, others)
            if not self.base:
                raise _NoRoom(size, low)
            self.end = self.base + size
            # the write view goes right below the run view, out of the way of later mmaps too
            # (a low region's anywhere else: low address space is for running code)
            wr = None if low else _mmap(self.base - size, size, PROT_READ | PROT_WRITE,
                                        MAP_SHARED | MAP_FIXED_NOREPLACE, self.fd, 0)
            if wr is None or wr == MAP_FAILED:
                wr = _mmap(None, size, PROT_READ | PROT_WRITE, MAP_SHARED, self.fd, 0)
                if wr is None or wr == MAP_FAILED:
                    raise _os_error("cannot map the arena's write view")
            self.write_base = wr
            self.writer = memoryview((ctypes.c_char * size).from_address(wr)).cast("B")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.writer is not None:
            try:
                self.writer.release()
            except BufferError:   # someone still exports it: leave the view mapped
                self.write_base = 0
            self.writer = None
        if self.write_base:
            _munmap(self.write_base, self.size)
            self.write_base = 0
        if self.base:
            _munmap(self.base, self.size)
            self.base = 0
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _NoRoom(LinkError):
    def __init__(self, size: int, low: bool = False):
        where = "between 1 GiB and 2 GiB" if low else f"within 2 GiB of libc ({libc_address():#x})"
        super().__init__(f"cannot reserve a {size >> 10} KiB code arena region {where}")


class LowMemoryError(LinkError):
    """No memory below 2 GiB for code linked with absolute 32-bit addresses
    (disabled, exhausted, or the address range is taken)."""


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

    New blocks come from the *top* of the pool (a bump pointer into its
    newest chunks) unless a hole left by a free fits: holes are kept by
    address (to coalesce on free) and by (size, address) (best fit in
    O(log n)).  A hole that reaches the top merges back into it.  Whole
    chunks a free leaves unused go back to the arena, except one spare
    chunk at the top.  A low pool (``low``) takes chunks only from low regions.
    """

    __slots__ = ("arena", "kind", "low", "starts", "ends", "by_size", "top", "top_end", "mapped", "used")

    def __init__(self, arena: Arena, kind: int, low: bool = False):
        self.arena = arena
        self.kind = kind
        self.low = low
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
            self._grow(a, size, align)
            return self._alloc(size, align)
        if a > self.top:
            self._add(self.top, a)
        self.top = a + size
        self.used += size
        return a

    def free(self, addr: int, size: int) -> None:
        """Free a block of this pool's kind, whichever zone it came from."""
        if size > 0:
            arena = self.arena
            with arena.lock:
                pool = self
                if arena.low_regions:           # blocks are recorded as (kind, address)
                    r = arena._region_of(addr)
                    if r is not None and r.low != self.low:
                        pool = arena.zone(r.low)[self.kind]
                pool._free(addr, size)
                if pool.low and not pool.used:
                    arena._release_low()

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
        r0 = r1 = 0                                     # whole chunks given back
        if e == self.top:
            self.top = s
            e = self.top_end
            # keep the chunk the top is in and one empty chunk above it
            keep = ((s + CHUNK - 1) & -CHUNK) + CHUNK
            if e > keep:
                r0, r1 = keep, e
                self.top_end = e = keep
        else:
            c0 = (s + CHUNK - 1) & -CHUNK
            c1 = e & -CHUNK
            if c1 > c0:
                if s < c0:
                    self._add(s, c0)
                if c1 < e:
                    self._add(c1, e)
                r0, r1 = c0, c1
            else:
                self._add(s, e)
        if r1:
            self._give_back(r0, r1)
        # pages of the freed block that are now wholly free go back to the OS
        lo = (max(s, addr & -PAGE) + PAGE - 1) & -PAGE
        hi = min(e, (end + PAGE - 1) & -PAGE) & -PAGE
        if hi > lo:
            if r1 > lo and r0 < hi:                     # minus the chunks already given back
                if r0 > lo:
                    self.arena.release_pages(lo, r0 - lo)
                if hi > r1:
                    self.arena.release_pages(r1, hi - r1)
            else:
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

    def _give_back(self, start: int, end: int) -> None:
        self.mapped -= end - start
        self.arena.release_chunks(start, end - start)

    def _grow(self, a: int, size: int, align: int) -> None:
        """Make room for ``size`` bytes at ``align`` at the top."""
        arena = self.arena
        top, top_end = self.top, self.top_end
        if top_end:
            # the chunks right after the top, if free, extend it in place
            extra = (a + size - top_end + CHUNK - 1) & -CHUNK
            if arena.claim_at(top_end, extra, self):
                self.mapped += extra
                self.top_end = top_end + extra
                return
            # else the old top's whole chunks go back (the new chunks may be
            # those), and what is left of its first chunk becomes a hole
            keep = (top + CHUNK - 1) & -CHUNK
            self.top = self.top_end = 0
            if keep < top_end:
                self._give_back(keep, top_end)
            if top < keep:
                self._add(top, keep)
        n = (size + (align if align > CHUNK else 0) + CHUNK - 1) & -CHUNK
        addr = arena.take_chunk(n, self)
        self.mapped += n
        j = bisect.bisect_left(self.starts, addr) - 1
        if j >= 0 and self.ends[j] == addr:             # a hole just below joins the new top
            self.top = self.starts[j]
            self._remove(j)
        else:
            self.top = addr
        self.top_end = addr + n


class Arena:
    def __init__(self, size: int = 256 << 20, low_size: int = MAX_LOW_SIZE):
        size = _check_size(size)
        self.low_size = _check_low_size(low_size)   # at most this much below 2 GiB, reserved on demand
        # guards the pools and tables: links allocate under the session lock,
        # but retired memory is freed from whichever thread ends a grace period
        self.lock = threading.RLock()
        self._anchor = libc_address()
        first = _Region(size, self._anchor)   # releases what it made if it fails
        self.regions = [first]           # in creation order: the first is searched first
        self._sorted = [first]           # by address
        self._bases = [first.base]
        # the first region, inlined for write(): every link writes through it
        self.size = size
        self.base = first.base
        self.write_base = first.write_base
        self.writer: memoryview | None = first.writer   # None once closed
        self.fd = first.fd
        self.pools = (Pool(self, CODE), Pool(self, RODATA), Pool(self, DATA))
        self.low_regions: list[_Region] = []
        self.low_pools: tuple[Pool, ...] = ()       # made on first use
        self.punched = 0
        self._unpunched: set[int] = set()   # wholly free pages not yet punched
        self._closed = False
        self._fork_depth = 0
        self._fork_pending = False
        self._snapshots: list[int] | None = None
        self._native_copy: list[tuple[int, int]] = []    # snapshot views the native prepare handler fills

    # --- regions and chunks ---------------------------------------------

    @property
    def reserved(self) -> int:
        """Bytes of address space reserved near libc, over every region."""
        return sum(r.size for r in self.regions)

    @property
    def low_reserved(self) -> int:
        """Bytes of address space reserved below 2 GiB."""
        return sum(r.size for r in self.low_regions)

    def all_regions(self) -> list[_Region]:
        return self.regions + self.low_regions

    def zone(self, low: bool) -> tuple[Pool, ...]:
        """The code, rodata and data pools near libc, or below 2 GiB."""
        if not low:
            return self.pools
        if not self.low_pools:
            self.low_pools = (Pool(self, CODE, True), Pool(self, RODATA, True), Pool(self, DATA, True))
        return self.low_pools

    def alloc_blocks(self, sizes: Sequence[int], aligns: Sequence[int], extra: int, extra_pool: int,
                     extra_align: int, low: bool = False) -> tuple[list[int], int, list[tuple[int, int, int]]]:
        """A block of ``sizes[p]`` bytes (if any) from each pool p near libc
        (``low``: below 2 GiB), and one of ``extra`` bytes (if any) from
        ``extra_pool``, under one hold of the lock, all or nothing: each
        pool's block address (0 for none), the extra one's, and every block
        as (pool, address, size)."""
        pools = self.zone(low)
        bases = [0, 0, 0]
        blocks: list[tuple[int, int, int]] = []
        with self.lock:
            try:
                for p in (CODE, RODATA, DATA):
                    if sizes[p]:
                        bases[p] = pools[p]._alloc(sizes[p], aligns[p])
                        blocks.append((p, bases[p], sizes[p]))
                address = pools[extra_pool]._alloc(extra, extra_align) if extra else 0
            except BaseException:
                for p, a, n in blocks:
                    pools[p].free(a, n)
                raise
        if extra:
            blocks.append((extra_pool, address, extra))
        return bases, address, blocks

    def tops(self) -> tuple[int, int, int, int, int, int] | None:
        """The top and the top's end of the code, read-only and data pools,
        for native code that takes blocks at the tops itself as
        ``alloc_blocks`` would (quickcore.py); None if a hole of one of them
        would come first.  The caller holds the lock until ``set_tops``."""
        code, rodata, data = self.pools
        if code.by_size or rodata.by_size or data.by_size:
            return None
        return code.top, code.top_end, rodata.top, rodata.top_end, data.top, data.top_end

    def set_tops(self, code_top: int, rodata_top: int, data_top: int) -> None:
        """The pools' tops after native code took blocks there (see ``tops``)."""
        code, rodata, data = self.pools
        code.used += code_top - code.top
        code.top = code_top
        rodata.used += rodata_top - rodata.top
        rodata.top = rodata_top
        data.used += data_top - data.top
        data.top = data_top

    def named_pools(self) -> list[tuple[str, Pool]]:
        """Every pool with its name for statistics (``low code`` ... once low pools exist)."""
        return [*zip(POOL_NAMES, self.pools), *(("low " + n, p) for n, p in zip(POOL_NAMES, self.low_pools))]

    def _region_of(self, addr: int) -> _Region | None:
        i = bisect.bisect_right(self._bases, addr) - 1
        if i >= 0:
            r = self._sorted[i]
            if addr < r.end:
                return r
        return None

    def owner(self, addr: int) -> Pool | None:
        """The pool that owns the chunk holding ``addr``, if any."""
        r = self._region_of(addr)
        if r is None:
            return None
        k = r.kinds[(addr - r.base) // CHUNK]
        return self.zone(r.low)[k - 1] if k else None

    def _claim(self, r: _Region, addr: int, size: int, pool: Pool) -> None:
        if _mprotect(addr, size, _POOL_PROT[pool.kind]) != 0:
            raise _os_error(f"mprotect of arena chunk {addr:#x} failed")
        i = (addr - r.base) // CHUNK
        r.kinds[i:i + size // CHUNK] = bytes((pool.kind + 1,)) * (size // CHUNK)

    def take_chunk(self, size: int, pool: Pool) -> int:
        """Hand ``size`` bytes (whole chunks, contiguous) to ``pool``: the
        first free run in any region of its zone, else a new region."""
        if size > MAX_ARENA_SIZE:
            raise LinkError(f"code arena exhausted: a block of {size} bytes cannot fit in any region "
                            f"(at most {MAX_ARENA_SIZE >> 20} MiB within reach of libc)")
        free = bytes(size // CHUNK)
        for attempt in (0, 1):
            for r in self.low_regions if pool.low else self.regions:
                i = r.kinds.find(free)
                if i >= 0:
                    addr = r.base + i * CHUNK
                    self._claim(r, addr, size, pool)
                    return addr
            if attempt or not self._reclaim_spares(pool.low):
                break
        r = self._add_low_region(size) if pool.low else self._add_region(size)
        self._claim(r, r.base, size, pool)
        return r.base

    def _reclaim_spares(self, low: bool = False) -> bool:
        """Take back the empty chunks the pools of a zone keep at their tops; True if any."""
        got = False
        for pool in self.zone(low):
            keep = (pool.top + CHUNK - 1) & -CHUNK
            if pool.top_end > keep:
                pool._give_back(keep, pool.top_end)
                pool.top_end = keep
                got = True
        return got

    def claim_at(self, addr: int, size: int, pool: Pool) -> bool:
        """Hand the chunks at [addr, addr + size) to ``pool`` if all are free."""
        r = self._region_of(addr)
        if r is None or addr + size > r.end or r.low != pool.low:
            return False
        i = (addr - r.base) // CHUNK
        if r.kinds.find(bytes(size // CHUNK), i, i + size // CHUNK) != i:
            return False
        self._claim(r, addr, size, pool)
        return True

    def release_chunks(self, addr: int, size: int) -> None:
        """Chunks a pool no longer uses: punched, made inaccessible, free for any pool."""
        r = self._region_of(addr)
        assert r is not None and addr + size <= r.end and not (addr | size) & (CHUNK - 1)
        if self._unpunched:
            self._unpunched.difference_update(range(addr, addr + size, PAGE))
        before = os.fstat(r.fd).st_blocks
        self._punch(r, addr, size)
        self.punched += max(0, before - os.fstat(r.fd).st_blocks) * 512
        if _mprotect(addr, size, PROT_NONE) != 0:
            raise _os_error(f"mprotect of arena chunk {addr:#x} failed")
        i = (addr - r.base) // CHUNK
        r.kinds[i:i + size // CHUNK] = bytes(size // CHUNK)

    def _add_region(self, need: int) -> _Region:
        """Reserve another region holding at least ``need`` bytes: as large as
        everything so far (so there are few regions), else as large as the
        first, else just ``need``."""
        total = self.reserved
        sizes = []
        for s in (max(need, min(total, MAX_ARENA_SIZE)), max(need, self.size), need):
            if s <= MAX_ARENA_SIZE and s not in sizes:
                sizes.append(s)
        for s in sizes:
            try:
                r = _Region(s, self._anchor, self.regions)
            except _NoRoom:
                continue
            self.regions.append(r)
            i = bisect.bisect_left(self._bases, r.base)
            self._bases.insert(i, r.base)
            self._sorted.insert(i, r)
            return r
        raise LinkError(f"code arena exhausted: {total >> 20} MiB reserved in {len(self.regions)} "
                        f"region(s), and no room for {need >> 10} KiB more within 2 GiB of libc and of "
                        f"the arena")

    def _add_low_region(self, need: int) -> _Region:
        """Reserve another low region holding at least ``need`` bytes, within
        the ``low_size`` budget: as large as the low regions so far and at
        least ``LOW_REGION`` (so there are few), else just ``need``."""
        if not self.low_size:
            raise LowMemoryError("memory below 2 GiB is turned off (Session(low_arena_size=0))")
        total = self.low_reserved
        budget = self.low_size - total
        sizes = []
        for s in (max(need, min(max(total, LOW_REGION), budget)), need):
            if s <= budget and s not in sizes:
                sizes.append(s)
        if not sizes:
            raise LowMemoryError(f"memory below 2 GiB is exhausted: {total >> 10} KiB of the "
                                 f"{self.low_size >> 10} KiB allowed (Session(low_arena_size=...)) are "
                                 f"reserved, and {need >> 10} KiB more are needed")
        for s in sizes:
            try:
                r = _Region(s, 0, self.low_regions, low=True)
            except _NoRoom:
                continue
            self.low_regions.append(r)
            i = bisect.bisect_left(self._bases, r.base)
            self._bases.insert(i, r.base)
            self._sorted.insert(i, r)
            return r
        raise LowMemoryError(f"no free address range of {need >> 10} KiB between 1 GiB and 2 GiB "
                             f"(other mappings hold it)")

    def _release_low(self) -> None:
        """Unmap the low regions once no low pool holds a block: the pools
        start afresh, and low address space goes back to the process."""
        if not self.low_regions or any(p.used for p in self.low_pools) or self._fork_depth:
            return
        for p in self.low_pools:
            p.starts.clear()
            p.ends.clear()
            p.by_size.clear()
            p.top = p.top_end = p.mapped = 0
        for r in self.low_regions:
            i = self._sorted.index(r)
            del self._sorted[i], self._bases[i]
            if self._unpunched:
                self._unpunched = {p for p in self._unpunched if not r.base <= p < r.end}
            r.close()
        self.low_regions = []

    # --- writing ------------------------------------------------------------

    def write(self, addr: int, data: bytes | bytearray) -> None:
        off = addr - self.base
        n = len(data)
        writer = self.writer
        if writer is not None and 0 <= off and off + n <= self.size:
            writer[off:off + n] = data
        else:
            self._write_far(addr, data, n)

    def _write_far(self, addr: int, data: bytes | bytearray, n: int) -> None:
        r = self._region_of(addr)
        if r is None or addr + n > r.end or r.writer is None:
            raise ValueError(f"arena write of {n} bytes at {addr:#x} is outside the arena")
        off = addr - r.base
        r.writer[off:off + n] = data

    def zero(self, addr: int, size: int) -> None:
        end = addr + size
        if size >= ZERO_BY_PUNCH:
            # whole pages are zeroed by punching them out: nothing becomes resident
            lo = (addr + PAGE - 1) & -PAGE
            hi = end & -PAGE
            r = self._region_of(addr)
            if r is not None and hi <= r.end and \
                    _fallocate(r.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, lo - r.base, hi - lo) == 0:
                self.write(addr, bytes(lo - addr))
                self.write(hi, bytes(end - hi))
                return
        step = 1 << 20
        for a in range(addr, end, step):
            self.write(a, bytes(min(step, end - a)))

    # --- giving memory back -------------------------------------------------

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
        run_start = run_end = 0
        for page in sorted(pending):
            pool = self.owner(page)
            if pool is None or not pool.is_free(page, page + PAGE):
                continue
            if page == run_end:         # regions never touch: a run stays in one
                run_end += PAGE
                continue
            if run_end:
                self.punch(run_start, run_end - run_start)
            run_start, run_end = page, page + PAGE
        if run_end:
            self.punch(run_start, run_end - run_start)

    def punch(self, addr: int, size: int) -> None:
        r = self._region_of(addr)
        if r is None or addr + size > r.end:
            raise ValueError(f"punch of {size} bytes at {addr:#x} is outside the arena")
        self._punch(r, addr, size)
        self.punched += size

    @staticmethod
    def _punch(r: _Region, addr: int, size: int) -> None:
        if _fallocate(r.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, addr - r.base, size) != 0:
            err = ctypes.get_errno()
            if err != errno.EOPNOTSUPP:
                raise OSError(err, f"fallocate(PUNCH_HOLE) on the arena failed: {os.strerror(err)}")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for r in self.all_regions():
            r.close()
        self.fd = -1
        self.writer = None

    def resident(self) -> int:
        """Bytes of memory the memfds hold (pages written and not punched)."""
        return sum(os.fstat(r.fd).st_blocks * 512 for r in self.all_regions() if r.fd >= 0)

    # --- fork ---------------------------------------------------------------

    def fork_prepare(self) -> None:
        """Before ``os.fork()``, in the parent: take the lock (until
        ``fork_parent`` / ``fork_child``) and copy every region's contents
        into a new memfd for the child."""
        self.lock.acquire()
        self._fork_depth += 1
        if self._fork_depth > 1 or self._closed:
            return
        self._fork_pending = True
        self._snapshots = None
        try:
            self._flush()
            forks = forkcopy.table()
            self._snapshots = self._snapshot_for(forks) if forks is not None else self._snapshot()
        except Exception:
            # the child copies for itself (see fork_child); nothing can stop the fork
            pass

    def _snapshot_for(self, forks: forkcopy.ForkTable) -> list[int] | None:
        """Empty snapshot memfds, mapped here, and the fork table's entries
        that fill them (glibc's last prepare handler) and map them over the
        arena in the child (its first child handler): see forkcopy.py."""
        regions = self.all_regions()
        runs = [[(m.start(), m.end(), r.kinds[m.start()]) for m in _RUNS.finditer(r.kinds)] for r in regions]
        if not forks.fits(sum(1 for rr in runs for *_, k in rr if k), sum(len(rr) + 1 for rr in runs)):
            return self._snapshot()
        fds: list[int] = []
        try:
            for r, rr in zip(regions, runs):
                fd = os.memfd_create("hotlink-arena", os.MFD_CLOEXEC)
                fds.append(fd)
                os.ftruncate(fd, r.size)
                view = _mmap(None, r.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
                if view is None or view == MAP_FAILED:
                    raise _os_error("cannot map a snapshot of the arena")
                self._native_copy.append((view, r.size))
                for i, j, k in rr:
                    if k:
                        forks.copies.append((view + i * CHUNK, r.write_base + i * CHUNK, (j - i) * CHUNK))
                    forks.maps.append((r.base + i * CHUNK, (j - i) * CHUNK, _POOL_PROT[k - 1] if k else PROT_NONE,
                                       MAP_SHARED | MAP_FIXED, fd, i * CHUNK))
                forks.maps.append((r.write_base, r.size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0))
        except BaseException:
            for fd in fds:
                os.close(fd)
            self._drop_native_copy()
            raise
        return fds

    def _drop_native_copy(self) -> None:
        for view, size in self._native_copy:
            _munmap(view, size)
        self._native_copy = []

    def fork_parent(self) -> None:
        """After ``os.fork()``, in the parent: drop the child's copies, release the lock."""
        if self._fork_depth <= 0:
            return
        try:
            if self._fork_depth == 1:
                self._fork_pending = False
                snaps, self._snapshots = self._snapshots, None
                for fd in snaps or ():
                    os.close(fd)
                self._drop_native_copy()
        finally:
            self._fork_depth -= 1
            self.lock.release()

    def fork_child(self) -> None:
        """After ``os.fork()``, in the child: map the copies over every
        region's views, so the child's arena is its own from here on.  The
        lock is a new one (the parent's other threads do not exist here)."""
        if self._fork_depth <= 0:       # not forking (or a second registration): nothing to do
            return
        pending, self._fork_pending = self._fork_pending, False
        snaps, self._snapshots = self._snapshots, None
        self._fork_depth = 0
        self.lock = threading.RLock()
        if not pending or self._closed:
            return
        native, self._native_copy = self._native_copy, []
        forks = forkcopy.table()
        try:
            if snaps is None:
                # fork_prepare could not copy: copy now (the parent may already
                # have moved on; better than sharing its memory)
                snaps = self._snapshot()
            if native and forks is not None and not forks.failed():
                self._adopted(snaps)        # the native child handler mapped them already
            else:
                self._adopt(snaps)
            for view, size in native:
                _munmap(view, size)
        except BaseException:
            # never write into the parent's memory from here on
            for r in self.all_regions():
                if r.writer is not None:
                    r.writer.release()
                    r.writer = None
                if r.fd >= 0:
                    os.close(r.fd)
                    r.fd = -1
            self.writer = None
            self.fd = -1
            raise

    def _snapshot(self) -> list[int]:
        """A new memfd per region with a copy of its data (holes stay holes)."""
        fds: list[int] = []
        try:
            for r in self.all_regions():
                fd = os.memfd_create("hotlink-arena", os.MFD_CLOEXEC)
                fds.append(fd)
                os.ftruncate(fd, r.size)
                off = 0
                while off < r.size:
                    try:
                        data = os.lseek(r.fd, off, os.SEEK_DATA)
                    except OSError as e:
                        if e.errno == errno.ENXIO:   # no data after off
                            break
                        raise
                    hole = min(os.lseek(r.fd, data, os.SEEK_HOLE), r.size)
                    self._copy(r, fd, data, hole)
                    off = hole
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return fds

    @staticmethod
    def _copy(r: _Region, dst: int, start: int, end: int) -> None:
        off = start
        while off < end:
            try:
                n = os.copy_file_range(r.fd, dst, end - off, off, off)
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                n = 0
            if n <= 0:   # no copy_file_range here: write from the write view
                assert r.writer is not None
                n = os.pwrite(dst, r.writer[off:end], off)
            off += n

    def _adopt(self, snaps: list[int]) -> None:
        regions = self.all_regions()        # in _snapshot's order
        for r, fd in zip(regions, snaps):
            # each run of chunks is replaced in one mmap at its own protection:
            # the run view is never unmapped, even for a moment
            for m in _RUNS.finditer(r.kinds):
                i, j = m.start(), m.end()
                k = r.kinds[i]
                prot = _POOL_PROT[k - 1] if k else PROT_NONE
                addr = r.base + i * CHUNK
                got = _mmap(addr, (j - i) * CHUNK, prot, MAP_SHARED | MAP_FIXED, fd, i * CHUNK)
                if got != addr:
                    raise _os_error(f"cannot map the arena's copy at {addr:#x} in the child")
            got = _mmap(r.write_base, r.size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0)
            if got != r.write_base:
                raise _os_error("cannot map the arena's copy (write view) in the child")
        self._adopted(snaps)

    def _adopted(self, snaps: list[int]) -> None:
        """The copies are mapped over the views: they are the arena's memfds now."""
        regions = self.all_regions()
        for r, fd in zip(regions, snaps):
            os.close(r.fd)
            r.fd = fd
        self.fd = self.regions[0].fd
