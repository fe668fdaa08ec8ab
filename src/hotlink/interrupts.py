"""Keeping Python signal handlers (Ctrl-C's KeyboardInterrupt above all) out
of the steps of a link or an unlink that must not be split.

CPython runs a signal's Python handler in the main thread between two
bytecodes, so a ``KeyboardInterrupt`` can surface anywhere: between
registering unwind info and recording that it was registered, halfway
through publishing a unit's symbols, inside the ``except`` block that rolls a
failed link back.  Blocking the signal with ``pthread_sigmask`` does not help:
the kernel then delivers it to another thread, whose C handler still makes the
main thread run the Python handler at its next bytecode.

So a transaction runs inside ``Deferred``: in the main thread, the Python
handlers of the usual asynchronous signals are swapped for one that only
notes the signal.  The transaction polls ``checkpoint()`` between stages that
it can still roll back (so Ctrl-C during a long link cancels it), and when
it ends, whatever was noted and not yet delivered is passed to the original
handlers.  Other threads never run Python signal handlers, so there the gate
costs nothing.
"""
from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from itertools import compress
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:   # typeshed has no stubs for _signal; its functions are signal's without the enums
    from signal import getsignal as _getsignal
    from signal import signal as _setsignal
else:               # the C functions: signal.signal/getsignal convert to enums, 10x slower
    from _signal import getsignal as _getsignal
    from _signal import signal as _setsignal

# Signals whose Python handlers are deferred (synchronous ones such as SIGSEGV
# have no Python handler worth deferring).
_DEFERRED = tuple(int(getattr(signal, n)) for n in
                  ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGALRM", "SIGUSR1", "SIGUSR2",
                   "SIGVTALRM", "SIGPROF", "SIGCHLD", "SIGWINCH") if hasattr(signal, n))

_main = threading.main_thread().ident   # Python runs signal handlers in this thread only
_get_ident = threading.get_ident
_Handler = Callable[[int, "FrameType | None"], Any]


class Deferred:
    """A re-entrant gate: ``with gate:`` defers Python signal handlers until
    the outermost ``with`` ends; ``gate.checkpoint()`` delivers them early, at
    a point where the caller can still undo what it did."""

    def __init__(self) -> None:
        self._depth = 0
        self._saved: list[tuple[int, _Handler]] = []
        self._pending: list[int] = []
        # the handlers seen at the last outermost enter, and which of them were swapped
        self._seen: list[Any] = []
        self._swapped: list[tuple[int, _Handler]] = []
        self._noter = self._note

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self._pending.append(signum)

    def __enter__(self) -> Deferred:
        if _get_ident() != _main:
            return self
        self._depth += 1
        if self._depth == 1:
            # the signals with a Python handler (usually SIGINT alone), found in C
            handlers: list[Any] = list(map(_getsignal, _DEFERRED))
            if handlers != self._seen:
                self._seen = handlers
                self._swapped = list(compress(zip(_DEFERRED, handlers), map(callable, handlers)))
            saved = self._saved = self._swapped
            note = self._noter
            for signum, _ in saved:
                _setsignal(signum, note)
        return self

    def checkpoint(self) -> None:
        """Run the handlers of signals noted so far (which may raise)."""
        if self._pending and _get_ident() == _main:
            self._deliver()

    def _deliver(self) -> None:
        pending, self._pending = self._pending, []
        handlers = dict(self._saved)
        for signum in dict.fromkeys(pending):
            handler = handlers.get(signum)
            if handler is not None:
                handler(signum, None)

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if _get_ident() != _main:
            return
        self._depth -= 1
        if self._depth:
            return
        saved, self._saved = self._saved, []
        try:
            for signum, handler in saved:
                _setsignal(signum, handler)
        finally:
            if self._pending:
                self._saved = saved
                try:
                    self._deliver()
                finally:
                    self._saved = []


GATE = Deferred()   # one per process: signal handlers are process-wide
