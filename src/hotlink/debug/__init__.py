"""Seeing JIT code from outside: debuggers, profilers and crash reports.

Everything here is fed by two events and nothing else: the linker's commit
tells a session's *observers* which objects it placed (``linked``), and
unlinking tells them which unit is going (``unlinked``, after its
finalizers ran, before its memory is retired).  A session with no debug
feature switched on has no observers, so the features cost nothing then.

* ``gdb.py``   the GDB JIT interface: an in-memory ELF image per object
  (``Session(debug_info=True)`` / ``HOTLINK_DEBUG_INFO=1``);
* ``perf.py``  ``/tmp/perf-<pid>.map`` and perf's ``jit-<pid>.dump``
  (``perf_map`` / ``HOTLINK_PERF_MAP``, ``jitdump`` / ``HOTLINK_JITDUMP``);
* ``crash.py`` a native signal handler naming the JIT frames of a crash
  (``hotlink.enable_crash_report()`` / ``HOTLINK_CRASH_REPORT=1``);
* here: which functions an object placed (``functions``), and
  ``symbolize`` (behind ``Session.symbolize``).
"""
from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, NamedTuple

from .. import elf, patch
from ..arena import unpack_block
from ..graph import STUB

if TYPE_CHECKING:
    from ..graph import LinkObject
    from ..library import Library, Unit
    from ..session import Session

__all__ = ["FunctionSymbol", "Observer", "Symbolized", "functions", "observers_for", "switch", "symbolize"]


class Observer:
    """What a session tells its debug features (each overrides what it needs)."""

    def linked(self, objects: Sequence[LinkObject]) -> None:
        """A link committed: these objects are placed and their code is live."""

    def unlinked(self, unit: Unit) -> None:
        """``unit`` is being removed (its finalizers have run; its memory is
        retired next and freed after a grace period)."""

    def memory(self) -> int:
        """Bytes this feature holds for the session (``MemoryStats.debug``)."""
        return 0


class FunctionSymbol(NamedTuple):
    address: int
    size: int
    name: str


class Symbolized(NamedTuple):
    """Where an address of live JIT code is: ``library`` (its name), ``unit``
    (the ``Unit``), ``symbol`` (None when no symbol covers it) and ``offset``
    from the symbol's start (from the unit's first byte without a symbol)."""
    library: str
    unit: Unit
    symbol: str | None
    offset: int


def switch(value: bool | None, variable: str) -> bool:
    """An explicit argument wins; None defers to the environment variable
    (anything but empty, ``0``, ``false``, ``no`` or ``off`` switches it on)."""
    if value is not None:
        return bool(value)
    return os.environ.get(variable, "").strip().lower() not in ("", "0", "false", "no", "off")


# Sessions that asked for observers: a feature switched on later (the crash
# report) joins them.  Hooks called with each new session's observer list.
_sessions: weakref.WeakSet[Session] = weakref.WeakSet()
session_hooks: list[Callable[[Session, list[Observer]], None]] = []


def observers_for(session: Session, *, debug_info: bool | None, perf_map: bool | None,
                  jitdump: bool | None) -> list[Observer]:
    """The observers a new session starts with (an empty list when every
    feature is off: then linking and unlinking pay nothing for them)."""
    observers: list[Observer] = []
    if switch(debug_info, "HOTLINK_DEBUG_INFO"):
        from .gdb import GdbObserver
        observers.append(GdbObserver(session))
    want_map, want_dump = switch(perf_map, "HOTLINK_PERF_MAP"), switch(jitdump, "HOTLINK_JITDUMP")
    if want_map or want_dump:
        from .perf import PerfObserver
        observers.append(PerfObserver(perf_map=want_map, jitdump=want_dump))
    if switch(None, "HOTLINK_CRASH_REPORT"):
        from .crash import enable_crash_report
        enable_crash_report()
    for hook in session_hooks:
        hook(session, observers)
    _sessions.add(session)
    return observers


def open_sessions() -> list[Session]:
    return [s for s in list(_sessions) if not s.closed]


# --- what an object placed -----------------------------------------------------

def functions(lo: LinkObject) -> list[FunctionSymbol]:
    """The functions (locals included) ``lo`` placed, at their run addresses.
    A symbol without a size (assembly) reaches to the next symbol or the end
    of its section."""
    obj = lo.obj
    shndx, value, size, addr, dropped = obj.sym_shndx, obj.sym_value, obj.sym_size, lo.addr, lo.dropped
    found: list[tuple[int, int, int, str]] = []     # (section, offset, size, name)
    for si in range(len(obj.sym_info)):
        x = shndx[si]
        if not 0 < x < min(obj.shnum, elf.SHN_LORESERVE) or not addr[x] or x in dropped \
                or not obj.is_code_symbol(si):
            continue
        name = obj.symbol_name(si)
        if name:
            found.append((x, value[si], size[si], name))
    if any(n == 0 for _, _, n, _ in found):
        found.sort()
        for k, (x, v, n, name) in enumerate(found):
            if n == 0:
                nxt = next((w for y, w, _, _ in found[k + 1:] if y == x and w > v), obj.sh_size[x])
                found[k] = (x, v, nxt - v, name)
    return [FunctionSymbol(addr[x] + v, n, name) for x, v, n, name in found]


def published(unit: Unit) -> list[FunctionSymbol]:
    """The unit's published definitions, at their code addresses (an entry
    stub's target, for patchable functions): what is known of a unit linked
    before a feature that keeps its own table was switched on."""
    lib = unit.library
    out = []
    for name in unit.names:
        d = lib.definitions.get(name)
        if d is None or d.unit is not unit:
            continue
        address = d.address
        if d.flags & STUB:
            entry = lib.entry_stubs.get(name)
            if entry is None:
                continue
            address = patch.target(entry)
        out.append(FunctionSymbol(address, d.size, name))
    return out


# --- symbolize -------------------------------------------------------------------

def _entry_stub_at(libraries: Iterable[Library], address: int) -> Symbolized | None:
    for lib in libraries:
        for entry in lib.entry_stubs.values():
            if entry.addr <= address < entry.addr + patch.ENTRY_STUB_SIZE and entry.unit is not None:
                return Symbolized(lib.name, entry.unit, entry.name, address - entry.addr)
    return None


def symbolize(session: Session, address: int, unit: Unit | None) -> Symbolized | None:
    """What ``Session.symbolize`` answers; ``unit`` is the live unit whose
    blocks hold ``address`` (None if none does).  Symbols are the unit's
    published definitions: an address in a static function, which the unit
    does not publish, gives ``symbol`` None and its offset in the unit."""
    if unit is None:
        return _entry_stub_at(session.libraries.values(), address)
    symbols = published(unit)
    containing = [f for f in symbols if f.address <= address < f.address + f.size]
    if not containing:      # a symbol of unknown size may still cover it
        containing = [f for f in symbols if f.size == 0 and f.address <= address]
    if containing:
        best = max(containing, key=lambda f: f.address)
        return Symbolized(unit.library.name, unit, best.name, address - best.address)
    start = min((unpack_block(b)[1] for b in unit.blocks), default=address)
    return Symbolized(unit.library.name, unit, None, address - start)
