"""Grace periods: retired code is freed only after every thread that might
be running it has passed a quiescent state.

Two kinds of threads take part:

* Threads calling through hotlink's callables *enter* the current epoch and
  *exit* it when the call returns: natively, in the call gate's trampoline
  (gate.py: per-thread counters in the session's *lane*, one per epoch
  parity), or in Python (``enter``/``exit``) for signatures the gate cannot
  forward.  Both count per parity and are read alike.  The epoch advances
  only when no call of the previous epoch is still running; once it has
  advanced twice past an item's epoch, every call that could have seen the
  retired code has returned.  Continuous callers never starve reclamation:
  new calls count against the new epoch while the old one drains.
* Native threads registered with ``hotlink_thread_online()`` report with
  ``hotlink_quiescent()`` (see runtime.py).  Retiring bumps the native epoch;
  the item waits until every online thread has reported the new value.

An item is released when both agree.  Releases happen in whichever thread
notices (a returning call, ``retire``, ``synchronize``) and in a small reaper
thread that polls while anything is waiting, so memory comes back even when
nobody asks.
"""
from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable
from threading import get_ident
from typing import TYPE_CHECKING, Any

from .errors import LinkError
from .gate import Lane, process_gate
from .interrupts import GATE

if TYPE_CHECKING:
    from .runtime import NativeThreads

REAPER_PERIOD = 0.005


class Reclaimer:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.epoch = 0
        self._active = [0, 0]                   # running Python calls per epoch parity
        self._inside: dict[int, list[int]] = {}   # thread id -> epoch parity of each call it is inside
        # (python epoch, native epoch, bytes, release)
        self._retired: list[tuple[int, int, int, Callable[[], None]]] = []
        self._releasing = 0                     # collected, not yet run
        self.retired_bytes = 0
        self.native: NativeThreads | None = None   # once the runtime is loaded
        self.lane: Lane | None = None           # the call gate's counters of this session (fast_lane)
        # what call.py disables when a unit or entry stub goes: guard -> (trampoline, generation) pairs
        self.watched: dict[Any, list[tuple[int, int]]] = {}
        self.registered = 0                     # callables watched since the last sweep of dead ones
        self._reaper: threading.Thread | None = None
        self.closed = False

    # --- Python callers ---------------------------------------------------

    def enter(self) -> int:
        t = get_ident()
        with self._lock:
            e = self.epoch & 1
            self._active[e] += 1
            calls = self._inside.get(t)
            if calls is None:
                self._inside[t] = [e]
            else:
                calls.append(e)
            return e

    def exit(self, e: int) -> None:
        t = get_ident()
        with self._lock:
            self._active[e] -= 1
            calls = self._inside[t]
            calls.pop()
            if not calls:
                del self._inside[t]
            ready = self._collect() if self._retired and not self._active[e] else None
        if ready:
            self._run(ready)

    def fast_lane(self) -> Lane | None:
        """The call gate's lane that this session's callables count in,
        claimed on first use; None if the gate has no lane free (or cannot
        be set up): callables then take the Python path."""
        lane = self.lane
        if lane is None and not self.closed:
            g = process_gate()
            with self._lock:
                if self.lane is None and g is not None:
                    self.lane = g.claim_lane()
                    if self.lane is not None:
                        self.lane.set_epoch(self.epoch)
                lane = self.lane
        return lane

    # --- retiring and freeing --------------------------------------------

    def retire(self, nbytes: int, release: Callable[[], None]) -> None:
        with self._lock:
            target = self.native.bump() if self.native is not None else 0
            self._retired.append((self.epoch, target, nbytes, release))
            self.retired_bytes += nbytes
            ready = self._collect()
            if self._retired:
                self._start_reaper()
        self._run(ready)

    def defer(self, nbytes: int, release: Callable[[], None]) -> None:
        """``retire``, but never release anything in this call: for a release
        that found its memory still in use (a thread's C++ thread_local
        objects), and for the swap of a prepared replacement, which should not
        pay for freeing (a later poll or the reaper does)."""
        with self._lock:
            target = self.native.bump() if self.native is not None else 0
            self._retired.append((self.epoch, target, nbytes, release))
            self.retired_bytes += nbytes
            self._start_reaper()

    def poll(self) -> bool:
        """Free what is safe now; True when nothing retired is left."""
        with self._lock:
            ready = self._collect()
        self._run(ready)
        with self._lock:
            return not self._retired and not self._releasing

    def busy(self) -> bool:
        """Is any thread inside JIT code (a call through a callable, or an online native thread)?"""
        return bool(self._active[0] or self._active[1] or (self.lane is not None and self.lane.busy())
                    or (self.native is not None and self.native.online()))

    def check_not_waiting_for_self(self, what: str) -> None:
        """Waiting for a grace period from inside a call into JIT code (a
        callback) would wait for that very call: refuse at once."""
        if get_ident() in self._inside or (self.lane is not None and self.lane.inside()):
            raise LinkError(f"{what} called from inside a call into JIT code (a callback): "
                            f"it would wait for that call to return")
        if self.native is not None and self.native.own_slot():
            raise LinkError(f"{what} called from a thread registered with hotlink_thread_online(): "
                            f"it would wait for this thread; call hotlink_thread_offline() first")

    def after_fork(self) -> None:
        """In a forked child only the forking thread exists: only its calls
        (a callback that forked) are still in flight."""
        self._lock = threading.Lock()
        mine = self._inside.get(get_ident(), [])
        self._active = [mine.count(0), mine.count(1)]
        self._inside = {get_ident(): mine} if mine else {}
        self._reaper = None
        if self.native is not None:
            self.native.after_fork()
        if self._retired:
            self._start_reaper()

    def synchronize(self, timeout: float | None = None) -> bool:
        self.check_not_waiting_for_self("synchronize()")
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.0001
        while not self.poll():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.005)
        return True

    def close(self) -> None:
        """The session is closed and drained: give back its native thread
        key and its lane (no call runs through it, none can start)."""
        if self.native is not None:
            self.native.close()
        with self._lock:
            lane, self.lane = self.lane, None
        if lane is not None and not lane.busy():
            lane.release()

    def _collect(self) -> list[tuple[int, int, int, Callable[[], None]]]:
        lane = self.lane
        for _ in range(2):   # advance while the previous epoch has drained
            parity = (self.epoch + 1) & 1
            if self._active[parity] or (lane is not None and lane.active(parity)):
                break
            self.epoch += 1
            if lane is not None:
                lane.set_epoch(self.epoch)
        safe = self.epoch - 2
        retired = self._retired
        if not retired or retired[0][0] > safe:
            return []
        floor = self.native.oldest_seen() if self.native is not None else 1 << 63
        ready = [r for r in retired if r[0] <= safe and r[1] <= floor]
        if ready:
            self._retired = [r for r in retired if not (r[0] <= safe and r[1] <= floor)]
            self._releasing += len(ready)
        return ready

    def _run(self, ready: list[tuple[int, int, int, Callable[[], None]]]) -> None:
        if not ready:
            return
        with GATE:      # an interrupt must not stop a release halfway
            for item in ready:
                try:
                    item[3]()
                except Exception as e:   # one failed release must not strand the others
                    warnings.warn(f"hotlink: releasing retired memory failed: {e!r}", RuntimeWarning,
                                  stacklevel=2)
                finally:
                    with self._lock:
                        self._releasing -= 1
                        self.retired_bytes -= item[2]

    def _start_reaper(self) -> None:
        # (the caller holds the lock; the reaper clears ``_reaper`` under it as it ends)
        if self._reaper is None:
            self._reaper = threading.Thread(target=self._reap, name="hotlink-reaper", daemon=True)
            self._reaper.start()

    def _reap(self) -> None:
        try:
            while not self.closed:
                time.sleep(REAPER_PERIOD)
                with self._lock:
                    if not self._retired:
                        self._reaper = None
                        return
                self.poll()
        finally:
            with self._lock:
                if self._reaper is threading.current_thread():
                    self._reaper = None
