"""GOT entries and far-call stubs, shared by all units and reference-counted.

An entry is keyed by its target address, so a hundred units that call
``memcpy`` through a stub share one stub.  A unit records what it acquired
and releases it when removed; the entry is freed when its count drops to 0.
"""
from __future__ import annotations

from .arena import CODE, RODATA, Arena
from .x86_64 import GOT_ENTRY_SIZE, STUB_ALIGN, STUB_SIZE, got_entry_bytes, stub_bytes


class Table:
    __slots__ = ("arena", "pool", "size", "align", "encode", "entries")

    def __init__(self, arena: Arena, pool: int, size: int, align: int, encode):
        self.arena = arena
        self.pool = arena.pools[pool]
        self.size = size
        self.align = align
        self.encode = encode
        self.entries: dict[int, list[int]] = {}   # target -> [entry address, refcount]

    def acquire(self, target: int) -> int:
        with self.arena.lock:
            return self._acquire(target)

    def _acquire(self, target: int) -> int:
        e = self.entries.get(target)
        if e is None:
            addr = self.pool.alloc(self.size, self.align)
            self.arena.write(addr, self.encode(target))
            self.entries[target] = [addr, 1]
            return addr
        e[1] += 1
        return e[0]

    def release(self, target: int) -> None:
        with self.arena.lock:
            self._release(target)

    def _release(self, target: int) -> None:
        e = self.entries[target]
        e[1] -= 1
        if e[1] == 0:
            del self.entries[target]
            self.pool.free(e[0], self.size)


class Tables:
    """The session's GOT and stub tables."""

    def __init__(self, arena: Arena):
        self.got_table = Table(arena, RODATA, GOT_ENTRY_SIZE, GOT_ENTRY_SIZE, got_entry_bytes)
        self.stub_table = Table(arena, CODE, STUB_SIZE, STUB_ALIGN, stub_bytes)


class Acquired:
    """What one link acquired from the tables: handed to the units, or released on failure."""

    __slots__ = ("tables", "got_targets", "stub_targets", "_got_cache", "_stub_cache")

    def __init__(self, tables: Tables):
        self.tables = tables
        self.got_targets: list[int] = []
        self.stub_targets: list[int] = []
        self._got_cache: dict[int, int] = {}
        self._stub_cache: dict[int, int] = {}

    def got(self, target: int) -> int:
        addr = self._got_cache.get(target)
        if addr is None:
            addr = self._got_cache[target] = self.tables.got_table.acquire(target)
            self.got_targets.append(target)
        return addr

    def stub(self, target: int) -> int:
        addr = self._stub_cache.get(target)
        if addr is None:
            addr = self._stub_cache[target] = self.tables.stub_table.acquire(target)
            self.stub_targets.append(target)
        return addr

    def release(self) -> None:
        release_all(self.tables, self.got_targets, self.stub_targets)
        self.got_targets, self.stub_targets = [], []
        self._got_cache.clear()
        self._stub_cache.clear()


def release_all(tables: Tables, got_targets, stub_targets) -> None:
    for t in got_targets:
        tables.got_table.release(t)
    for t in stub_targets:
        tables.stub_table.release(t)
