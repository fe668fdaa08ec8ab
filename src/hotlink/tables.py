"""GOT entries and far-call stubs, shared by all units and reference-counted.

An entry is keyed by its target address, so a hundred units that call
``memcpy`` through a stub share one stub.  A link's scan pass decides which
targets each unit needs (``x86_64.Scanner``); ``Acquired.acquire`` takes them
in one batch before any fixup, the unit records them at commit and
releases them when removed; an entry is freed when its count drops to 0.

Code placed below 2 GiB (objects compiled without ``-fPIC``) has tables of
its own there, within PC32 reach of it; a unit's list of acquired targets
marks those with ``LOW_TAG``, so removal releases each from its own table.
"""
from __future__ import annotations

from collections.abc import Iterable

from .arena import CODE, RODATA, Arena
from .x86_64 import FAR_STUB_ALIGN, FAR_STUB_SIZE, GOT_ENTRY_SIZE, far_stub_bytes, got_entry_bytes


class RefcountedTable:
    """Entries of one size in one pool, keyed by target address."""

    __slots__ = ("arena", "pool", "entries")
    size = align = 0

    def __init__(self, arena: Arena, pool: int, low: bool = False):
        self.arena = arena
        self.pool = arena.zone(low)[pool]
        self.entries: dict[int, list[int]] = {}   # target -> [entry address, refcount]

    @staticmethod
    def encode(target: int) -> bytes:
        raise NotImplementedError

    def acquire(self, target: int) -> int:
        """The entry for ``target``, made or shared; the caller holds the arena lock."""
        e = self.entries.get(target)
        if e is None:
            addr = self.pool.alloc(self.size, self.align)
            self.arena.write(addr, self.encode(target))
            self.entries[target] = [addr, 1]
            return addr
        e[1] += 1
        return e[0]

    def release(self, target: int) -> None:
        """Drop one reference; the caller holds the arena lock."""
        e = self.entries[target]
        e[1] -= 1
        if e[1] == 0:
            del self.entries[target]
            self.pool.free(e[0], self.size)


class GotTable(RefcountedTable):
    """GOT entries: the target's address, 8 bytes of read-only data."""
    __slots__ = ()
    size = align = GOT_ENTRY_SIZE
    encode = staticmethod(got_entry_bytes)


class FarStubTable(RefcountedTable):
    """Far-call stubs: ``jmp *0(%rip); .quad target``, for branches beyond +-2 GiB."""
    __slots__ = ()
    size, align = FAR_STUB_SIZE, FAR_STUB_ALIGN
    encode = staticmethod(far_stub_bytes)


LOW_TAG = 1 << 64   # added to a target (an address, < 2**64): its entry is in the low tables
_MASK64 = LOW_TAG - 1


class SharedTables:
    """The session's GOT and far-call stub tables, near libc and (made on
    first use) below 2 GiB."""

    __slots__ = ("arena", "got", "far_stubs", "_low")

    def __init__(self, arena: Arena):
        self.arena = arena
        self.got = GotTable(arena, RODATA)
        self.far_stubs = FarStubTable(arena, CODE)
        self._low: tuple[GotTable, FarStubTable] | None = None

    def zone(self, low: bool) -> tuple[GotTable, FarStubTable]:
        """The GOT and far-call stub tables near libc, or below 2 GiB."""
        if not low:
            return self.got, self.far_stubs
        if self._low is None:
            self._low = (GotTable(self.arena, RODATA, True), FarStubTable(self.arena, CODE, True))
        return self._low

    def counts(self) -> tuple[int, int]:
        """How many GOT entries and far-call stubs exist, in both zones."""
        low = self._low or ()
        return (len(self.got.entries) + sum(len(t.entries) for t in low[:1]),
                len(self.far_stubs.entries) + sum(len(t.entries) for t in low[1:]))


class Acquired:
    """What one unit acquired from the tables in one link: handed to the unit
    at commit, or released on abort.  ``low``: from the tables below 2 GiB."""

    __slots__ = ("tables", "low", "got_targets", "stub_targets", "got_address", "stub_address")

    def __init__(self, tables: SharedTables, low: bool = False):
        self.tables = tables
        self.low = low
        self.got_targets: list[int] = []          # what the unit will release (+ LOW_TAG if low)
        self.stub_targets: list[int] = []
        self.got_address: dict[int, int] = {}     # target -> its GOT entry, for the fixups
        self.stub_address: dict[int, int] = {}    # target -> its far-call stub

    def acquire(self, got_targets: Iterable[int], stub_targets: Iterable[int]) -> None:
        """Take a GOT entry for each of ``got_targets`` and a far-call stub
        for each of ``stub_targets`` that this has not taken yet, under one
        hold of the arena lock.  Each is recorded as soon as it is taken, so
        ``release`` undoes a batch that failed half way."""
        tables = self.tables
        got, stubs = tables.zone(self.low)
        tag = LOW_TAG if self.low else 0
        with tables.arena.lock:
            for address, targets, table, taken in (
                    (self.got_address, got_targets, got, self.got_targets),
                    (self.stub_address, stub_targets, stubs, self.stub_targets)):
                for target in targets:
                    if target not in address:
                        # an entry holds a 64-bit address (a malformed symbol value may pass 2**64)
                        key = target & _MASK64
                        address[target] = table.acquire(key)
                        taken.append(key + tag)

    def release(self) -> None:
        release_all(self.tables, self.got_targets, self.stub_targets)
        self.got_targets, self.stub_targets = [], []
        self.got_address.clear()
        self.stub_address.clear()


def release_all(tables: SharedTables, got_targets: Iterable[int], stub_targets: Iterable[int]) -> None:
    """Drop one reference to each entry (a unit's, on removal or abort)."""
    with tables.arena.lock:
        for t in got_targets:
            if t < LOW_TAG:
                tables.got.release(t)
            else:
                tables.zone(True)[0].release(t - LOW_TAG)
        for t in stub_targets:
            if t < LOW_TAG:
                tables.far_stubs.release(t)
            else:
                tables.zone(True)[1].release(t - LOW_TAG)
