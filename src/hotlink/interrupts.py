"""Keeping Python signal handlers (Ctrl-C's KeyboardInterrupt above all) out
of the steps of a link or an unlink that must not be split.

CPython runs a signal's Python handler in the main thread between two
bytecodes, so a ``KeyboardInterrupt`` can surface anywhere: between
registering unwind info and recording that it was registered, halfway
through publishing a unit's symbols, inside the ``except`` block that rolls a
failed link back.  Blocking the signal with ``pthread_sigmask`` does not help:
the kernel then delivers it to another thread, whose C handler still makes the
main thread run the Python handler at its next bytecode.

So a transaction runs inside ``Deferred``, in one of two ways:

* CPython runs Python handlers only in the thread ``_PyRuntime.main_thread``
  names (``_Py_ThreadCanHandleSignals``); a signal caught while no thread
  matches stays pending, and ``PyErr_CheckSignals`` runs its handler once one
  does.  So the gate sets that word to 0 on entry and back on exit, then
  runs what was caught.  Two stores: no system call, and the handlers users
  see (``signal.getsignal``, asyncio's check) never change.  The word is found
  once by its value and used only if ``_PyOS_IsMainThread`` then answers as
  it must with the word cleared and restored.
* Elsewhere (another Python, a word not found), the Python handlers of the
  usual asynchronous signals are swapped for one that only notes the
  signal, and swapped back on exit (two ``sigaction`` calls).

The transaction polls ``checkpoint()`` between stages that it can still roll
back (so Ctrl-C during a long link cancels it), and when it ends, whatever
was caught and not yet delivered is passed to the handlers.  Other threads
never run Python signal handlers, so there the gate costs nothing.
"""
from __future__ import annotations

import ctypes
import os
import signal
import threading
from collections.abc import Callable
from itertools import compress
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from .libc import dladdr1

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

_main = threading.main_thread().ident or 0     # Python runs signal handlers in this thread only
_get_ident = threading.get_ident
_Handler = Callable[[int, "FrameType | None"], Any]

# Python's C API (ctypes.pythonapi holds the GIL and raises the error a call leaves set):
# int PyErr_CheckSignals(void): runs the Python handlers of signals caught so far (in the
# handlers' thread), -1 if one raised
_check_signals = ctypes.pythonapi.PyErr_CheckSignals
_check_signals.argtypes, _check_signals.restype = (), ctypes.c_int


def _handler_thread_word() -> ctypes.c_ulong | None:
    """``_PyRuntime.main_thread`` as a ctypes word, if it is found and
    behaves as the gate needs; None otherwise.  Called in the main thread."""
    api = ctypes.pythonapi
    try:
        is_main = api["_PyOS_IsMainThread"]     # (a function object of its own: its prototype is set here)
        runtime = ctypes.addressof(ctypes.c_char.in_dll(api, "_PyRuntime"))
    except (AttributeError, ValueError):
        return None
    is_main.argtypes, is_main.restype = (), ctypes.c_int
    info = (ctypes.c_void_p * 4)()      # Dl_info
    sym = ctypes.c_void_p()             # its ElfW(Sym): the size is at offset 16
    if not dladdr1(runtime, ctypes.byref(info), ctypes.byref(sym), 1) or not sym.value:      # RTLD_DL_SYMENT
        return None
    words = ctypes.c_uint64.from_address(sym.value + 16).value // 8
    table = (ctypes.c_ulong * min(words, 1024)).from_address(runtime)
    found = [i for i, w in enumerate(table) if w == _main]
    if len(found) != 1 or _get_ident() != _main or is_main() != 1:
        return None
    word = ctypes.c_ulong.from_address(runtime + 8 * found[0])
    word.value = 0
    cleared = is_main()
    word.value = _main
    return word if cleared == 0 and is_main() == 1 else None


class Deferred:
    """A re-entrant gate: ``with gate:`` defers Python signal handlers until
    the outermost ``with`` ends; ``gate.checkpoint()`` delivers them early, at
    a point where the caller can still undo what it did."""

    def __init__(self) -> None:
        self._depth = 0
        self._word = _handler_thread_word() if _get_ident() == _main else None
        self._saved: list[tuple[int, _Handler]] = []
        self._pending: list[int] = []
        # the handlers seen at the last outermost enter, and which of them were swapped
        self._seen: list[Any] = []
        self._swapped: list[tuple[int, _Handler]] = []
        self._noter = self._note

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self._pending.append(signum)

    def __enter__(self) -> Deferred:
        if _get_ident() == _main:
            self._depth += 1
            if self._depth == 1:
                if self._word is not None:
                    self._word.value = 0
                else:
                    self._swap()
        return self

    def _swap(self) -> None:
        # the signals with a Python handler (usually SIGINT alone), found in C
        handlers: list[Any] = list(map(_getsignal, _DEFERRED))
        if handlers != self._seen:
            self._seen = handlers
            self._swapped = list(compress(zip(_DEFERRED, handlers), map(callable, handlers)))
        saved = self._saved = self._swapped
        note = self._noter
        for signum, _ in saved:
            _setsignal(signum, note)

    def checkpoint(self) -> None:
        """Run the handlers of signals noted so far (which may raise)."""
        if _get_ident() != _main:
            return
        word = self._word
        if word is not None:
            if self._depth:
                word.value = _main
                try:
                    _check_signals()
                finally:
                    word.value = 0
        elif self._pending:
            self._deliver()

    def _deliver(self) -> None:
        pending, self._pending = self._pending, []
        handlers = dict(self._saved)
        due = [signum for signum in dict.fromkeys(pending) if handlers.get(signum) is not None]
        for k, signum in enumerate(due):
            try:
                handlers[signum](signum, None)
            except BaseException:
                # as CPython does when a handler raises: the others run later
                for later in due[k + 1:]:
                    os.kill(os.getpid(), later)
                raise

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if _get_ident() != _main:
            return
        self._depth -= 1
        if self._depth:
            return
        if self._word is not None:
            self._word.value = _main
            _check_signals()
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


def _after_fork_in_child() -> None:
    global _main
    gate = GATE
    if _get_ident() == _main:
        # forked inside the gate by its own thread, which goes on in it in the
        # child; the interpreter has just written the thread's id to the word
        if gate._depth and gate._word is not None:
            gate._word.value = 0
        return
    # forked by another thread: it is the child's main thread, and the gate's
    # thread (with any gate it was in) does not exist there
    _main = _get_ident()
    if gate._depth:
        gate._depth = 1
        gate.__exit__(None, None, None)


os.register_at_fork(after_in_child=_after_fork_in_child)
