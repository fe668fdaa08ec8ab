"""Grace periods: retired code is freed only after every call that might be
running it has returned.

Calls made through hotlink's callables *enter* the current epoch and *exit*
it when they return.  ``retire`` files a release action under the current
epoch.  The epoch advances only when no call of the previous epoch is still
running, so once it has advanced twice past an action's epoch, every call
that could have seen the retired code has returned, and the action runs.
Continuous callers never starve reclamation: new calls count against the
new epoch while the old one drains.
"""
from __future__ import annotations

import threading
import time
from typing import Callable


class Reclaimer:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.epoch = 0
        self._active = [0, 0]                                # running calls per epoch parity
        self._retired: list[tuple[int, int, Callable[[], None]]] = []   # (epoch, bytes, release)
        self.retired_bytes = 0

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
            _run(ready)

    def retire(self, nbytes: int, release: Callable[[], None]) -> None:
        with self._lock:
            self._retired.append((self.epoch, nbytes, release))
            self.retired_bytes += nbytes
            ready = self._collect()
        _run(ready)

    def poll(self) -> bool:
        """Free what is safe now; True when nothing retired is left."""
        with self._lock:
            ready = self._collect()
        _run(ready)
        return not self._retired

    def synchronize(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.0001
        while not self.poll():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.01)
        return True

    def _collect(self) -> list[Callable[[], None]]:
        # advance while the previous epoch has drained (at most twice is useful)
        for _ in range(2):
            if self._active[(self.epoch + 1) & 1]:
                break
            self.epoch += 1
        safe = self.epoch - 2
        if not self._retired or self._retired[0][0] > safe:
            return []
        ready = [r for r in self._retired if r[0] <= safe]
        self._retired = [r for r in self._retired if r[0] > safe]
        self.retired_bytes -= sum(r[1] for r in ready)
        return [r[2] for r in ready]


def _run(actions) -> None:
    for release in actions or ():
        release()
