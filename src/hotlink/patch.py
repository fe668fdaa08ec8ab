"""Stable entry points for patchable libraries.

Every function a patchable library defines is reached through an entry
stub, ``jmp *slot(%rip)``, whose 8-byte slot lives in a read-write page.
``Library.address``, ``Library.function`` and references from other units
all get the stub, so they stay valid when ``replace`` stores a new target in
the slot: one aligned 8-byte store, atomic for every thread, after the new
code is linked and initialized.  Calls already in the old code finish there;
the old code is freed after a grace period.  Calls within one unit stay
direct, and data symbols are not stubbed.
"""
from __future__ import annotations

import ctypes
import struct

from .arena import CODE, DATA, Arena

ENTRY_STUB_SIZE = 8      # ff 25 rel32 ; int3 int3
ENTRY_SLOT_SIZE = 8


class EntryStub:
    """One function's stable entry point."""

    __slots__ = ("name", "addr", "slot", "unit", "alive", "users", "__weakref__")

    def __init__(self, name: str, addr: int, slot: int):
        self.name = name
        self.addr = addr          # where callers jump
        self.slot = slot          # where the current target is stored
        self.unit = None          # the unit whose code the slot points at
        self.alive = True
        self.users: set | None = None   # units that reference the stub

    def live_users(self) -> list:
        return [u for u in self.users or () if u.alive]


def allocate(arena: Arena, name: str, low: bool = False) -> EntryStub:
    """An entry stub and its slot, below 2 GiB if ``low`` (for non-PIC code,
    which reaches them with absolute 32-bit addresses)."""
    pools = arena.zone(low)
    with arena.lock:
        addr = pools[CODE].alloc(ENTRY_STUB_SIZE, 8)
        try:
            slot = pools[DATA].alloc(ENTRY_SLOT_SIZE, 8)
        except BaseException:       # no room (below 2 GiB): take nothing
            pools[CODE].free(addr, ENTRY_STUB_SIZE)
            raise
    # the slot is written (with the real target) before the stub is published
    arena.write(addr, b"\xff\x25" + struct.pack("<i", slot - (addr + 6)) + b"\xcc\xcc")
    return EntryStub(name, addr, slot)


def blocks(entry: EntryStub) -> list[tuple[int, int, int]]:
    """The arena blocks an entry occupies, for freeing."""
    return [(CODE, entry.addr, ENTRY_STUB_SIZE), (DATA, entry.slot, ENTRY_SLOT_SIZE)]


def point(entry: EntryStub, target: int) -> None:
    """Swing the entry to ``target`` with one 8-byte store (the slot is 8-aligned)."""
    ctypes.c_uint64.from_address(entry.slot).value = target


def target(entry: EntryStub) -> int:
    """Where the entry currently jumps."""
    return ctypes.c_uint64.from_address(entry.slot).value
