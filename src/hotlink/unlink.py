"""Taking units out: the mirror of linker.py, in stages.

    finalize → unpublish → restore shadowed → drop dependencies → retire

* **finalize** runs the unit's ``.fini_array``/``.dtors`` and the exit
  handlers filed under it, newest first (a C++ exception one of them throws
  is caught natively and reported as a warning; the others still run);
* **unpublish** takes its symbols, lazy archive members and COMDAT claims
  out of its library, and **restores** what they shadowed: a weak definition
  of another unit, or an archive member not pulled yet;
* **drop dependencies** forgets which units it used;
* **retire** hands its memory, entry stubs, unwind info and GOT/stub entries
  to the reclaimer, which frees them once no thread can be running them.

The caller holds the session lock and has checked dependents.  The whole
batch runs with Python signal handlers deferred, so an interrupt never
leaves a unit half removed.
"""
from __future__ import annotations

import ctypes
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import call, patch, platform
from .arena import pack_block, unpack_block
from .interrupts import GATE
from .tables import release_all

if TYPE_CHECKING:
    from .library import Unit
    from .session import Session
    from .tls import TlsModule


def unlink(session: Session, units: list[Unit], defer: bool = False) -> None:
    """Remove ``units`` in the given order (newest first); ``defer``: leave
    freeing to a later poll or the reaper thread even if it is safe now."""
    with GATE:
        for unit in units:
            if unit.alive:
                _unlink_one(session, unit, defer)
        session.code_changed()


def _unlink_one(session: Session, unit: Unit, defer: bool) -> None:
    unit.alive = False
    entries = unit.own_entry_stubs()          # patchable functions nobody took over
    call.disable(session.reclaimer, [unit, *entries])    # hotlink's callables of them raise from now on
    lib = unit.library
    lib.changes += 1
    x = unit.extra
    # finalize
    if x is not None and x.handlers:
        errors = platform.run_finalizers(x.handlers, session.guarded_call())
        for error in errors:
            warnings.warn(f"hotlink: a finalizer of unit {unit.name!r} ({lib.name}) threw {error}",
                          RuntimeWarning, stacklevel=4)
    dso = x.platform.get("__dso_handle") if x is not None else None
    if dso:
        platform.forget_dso(dso)
    # unpublish, restoring what the unit's definitions shadowed
    lib.unpublish(unit)
    lib.release_comdats(unit)
    lib.forget_unit(unit)
    # drop dependencies
    for dep in unit.deps or ():
        if dep.users is not None:
            dep.users.discard(unit)
    # retire
    for o in session.observers:    # debuggers and profilers (debug/) forget its code
        o.unlinked(unit)
    blocks = unit.blocks
    for entry in entries:
        entry.alive = False
        del lib.entry_stubs[entry.name]
        blocks += [pack_block(p, a, n) for p, a, n in patch.blocks(entry)]
    got, stubs = (x.got, x.stubs) if x is not None else ((), ())
    modules = x.tls if x is not None else None
    counter = x.platform.get("thread_dtors") if x is not None else None
    unit.deps = unit.extra = None
    unit.blocks, unit.names = [], ()
    nbytes = sum(b >> 50 for b in blocks)

    def release_when_unused() -> None:
        if counter and ctypes.c_int64.from_address(counter).value > 0:
            # threads still hold its thread_local objects: their destructors
            # (its code) run at those threads' exit
            session.reclaimer.defer(nbytes, release_when_unused)
            return
        release(session, blocks, got, stubs, modules)

    (session.reclaimer.defer if defer else session.reclaimer.retire)(nbytes, release_when_unused)


def release(session: Session, blocks: list[int], got: Sequence[int], stubs: Sequence[int],
            modules: Sequence[TlsModule] | None = None) -> None:
    """Free what a unit left behind; runs in whichever thread ends its grace
    period, so it takes only the arena's lock, never the session's.  Its TLS
    modules are unloaded, which frees every thread's block of them."""
    for module in modules or ():
        module.close()
    unpacked = [unpack_block(b) for b in blocks]
    for _, addr, _, frame in unpacked:
        if frame:
            platform.deregister_frames(addr)
    arena = session.arena
    with arena.lock:
        if got or stubs:
            release_all(session.tables, got, stubs)
        for pool, addr, size, _ in unpacked:
            arena.pools[pool].free(addr, size)
