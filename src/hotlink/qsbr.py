"""Grace periods: retired code is freed only after every thread that might
be running it has passed a quiescent state.

Two kinds of threads take part:

* Python threads calling through hotlink's callables *enter* the current
  epoch and *exit* it when the call returns.  The epoch advances only when no
  call of the previous epoch is still running; once it has advanced twice past
  an item's epoch, every call that could have seen the retired code has
  returned.  Continuous callers never starve reclamation: new calls count
  against the new epoch while the old one drains.
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
from typing import Callable

REAPER_PERIOD = 0.005


class Reclaimer:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.epoch = 0
        self._active = [0, 0]                   # running Python calls per epoch parity
        # (python epoch, native epoch, bytes, release)
        self._retired: list[tuple[int, int, int, Callable[[], None]]] = []
        self._releasing = 0                     # collected, not yet run
        self.retired_bytes = 0
        self.native = None                      # runtime.NativeThreads once the runtime is loaded
        self._reaper: threading.Thread | None = None
        self.closed = False

    # --- Python callers ---------------------------------------------------

    def enter(self) -> int:
        with self._lock:
            e = self.epoch & 1
            self._active[e] += 1
            return e

    def exit(self, e: int) -> None:
        with self._lock:
            self._active[e] -= 1
            ready = self._collect() if self._retired and not self._active[e] else None
        if ready:
            self._run(ready)

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

    def poll(self) -> bool:
        """Free what is safe now; True when nothing retired is left."""
        with self._lock:
            ready = self._collect()
        self._run(ready)
        with self._lock:
            return not self._retired and not self._releasing

    def synchronize(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.0001
        while not self.poll():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.005)
        return True

    def _collect(self) -> list[tuple[int, int, int, Callable[[], None]]]:
        for _ in range(2):   # advance while the previous epoch has drained
            if self._active[(self.epoch + 1) & 1]:
                break
            self.epoch += 1
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

    def _run(self, ready) -> None:
        for item in ready or ():
            try:
                item[3]()
            finally:
                with self._lock:
                    self._releasing -= 1
                    self.retired_bytes -= item[2]

    def _start_reaper(self) -> None:
        if self._reaper is None or not self._reaper.is_alive():
            self._reaper = threading.Thread(target=self._reap, name="hotlink-reaper", daemon=True)
            self._reaper.start()

    def _reap(self) -> None:
        while not self.closed:
            time.sleep(REAPER_PERIOD)
            with self._lock:
                if not self._retired:
                    self._reaper = None
                    return
            self.poll()
