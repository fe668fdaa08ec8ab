"""Callables for JIT functions that refuse to run code that was removed.

A ``Function`` *is* a ctypes function pointer: calling it runs ctypes' C
code, no Python frame.  It points at a trampoline of the call gate
(``gate.py``), which does the grace-period bookkeeping natively (the thread
counts as inside a call of its session until the function returns) and
calls the function through a target word.  When the defining unit is
removed (or the entry stub of a patchable function goes), ``disable``
zeroes that word, so a later call raises ``SessionClosedError`` (the gate
checks under the GIL, before the call) and never reaches freed memory.

The gate handles signatures without stack arguments (``fast_signature``).
Others, and sessions that got no lane of the gate, take the Python path:
``GuardedFunction`` does the bookkeeping in Python (``Reclaimer.enter``/
``exit``) around the same ctypes call and checks the unit is alive first.

With a C signature (``signature.py``) whose parameters are all scalars the
callable is exactly that call; pointer parameters make it a
``BufferFunction``, which turns buffers into addresses first
(``buffers.py``) and keeps them exported until the call returns.
"""
from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from . import gate
from .buffers import PointerArg, release_all
from .errors import SessionClosedError
from .qsbr import Reclaimer
from .signature import Signature

if TYPE_CHECKING:   # ctypes' base classes of function pointers and simple types, as typeshed names them
    from _ctypes import CFuncPtr
    from ctypes import _SimpleCData as SimpleCData
else:
    CFuncPtr = ctypes.CFUNCTYPE(None).__bases__[0]
    SimpleCData = ctypes.c_int.__bases__[0]

# ctypes' function pointer flags (Modules/_ctypes/ctypes.h, unchanged since 2.5)
FUNCFLAG_CDECL = 0x1
FUNCFLAG_PYTHONAPI = 0x4      # keep the GIL; raise the Python error the call set


class Guard(Protocol):
    """What a callable's life is bound to: the defining unit, or the entry
    stub of a patchable function (which survives replace)."""
    alive: bool


# argument kinds by ctypes simple type code: floating point in xmm registers
# ("f", "d"), long double in memory ("g"), every other one in an integer register
_FLOAT_CODES = frozenset("fd")
_MEMORY_CODES = frozenset("g")
_POINTER_TYPES: tuple[type, ...] = (ctypes.POINTER(ctypes.c_int).__bases__[0], CFuncPtr)   # ctypes._Pointer


def _register_class(t: Any) -> str | None:
    """"int", "float", or None (memory, or not a type the gate knows)."""
    if isinstance(t, type):
        if issubclass(t, _POINTER_TYPES):
            return "int"
        code = getattr(t, "_type_", None) if issubclass(t, SimpleCData) else None
        if isinstance(code, str) and code not in _MEMORY_CODES:
            return "float" if code in _FLOAT_CODES else "int"
    return None


def fast_signature(restype: Any, argtypes: Sequence[Any]) -> bool:
    """Can the gate's trampoline call this?  Only register arguments (at most
    6 integer and 8 floating-point ones), a scalar or no result."""
    ints = floats = 0
    for t in argtypes:
        kind = _register_class(t)
        if kind is None:
            return False
        if kind == "int":
            ints += 1
        else:
            floats += 1
    if ints > 6 or floats > 8:
        return False
    # a scalar result comes back in rax (rdx) or xmm0 (xmm1), which the gate
    # keeps; a long double (st0) would have to outlive PyEval_RestoreThread
    return restype is None or _register_class(restype) is not None


class Function(CFuncPtr):
    """A ctypes function pointer bound to the unit that defines it.

    Calling it after the unit is removed raises ``SessionClosedError``
    instead of jumping into freed memory, and a unit removed while a call
    runs is freed only after the call returns.  The GIL is released during
    the call, like any ctypes call.  ``name``, ``address`` (the function's,
    not the trampoline's) and ``signature`` (the C signature it was made
    with; None for the ctypes form) describe it.
    """

    # the gate keeps the GIL until the call and lets ctypes raise what it sets (gate.py)
    _flags_ = FUNCFLAG_CDECL | FUNCFLAG_PYTHONAPI
    _restype_ = ctypes.c_int
    __slots__ = ("name", "address", "signature", "_trampoline", "_generation", "_gate", "_message",
                 "__weakref__")
    __hash__ = object.__hash__      # ctypes data is unhashable; a callable is an identity

    name: str
    address: int
    signature: Signature | None

    def _describe(self, name: str, address: int, restype: Any, argtypes: Sequence[Any],
                  signature: Signature | None) -> None:
        self.name = name
        self.address = address
        self.signature = signature
        self.restype = restype
        self.argtypes = tuple(argtypes)
        self._trampoline = self._generation = 0
        self._gate: gate.Gate | None = None
        self._message = ctypes.create_string_buffer(f"{name}: its code was removed".encode("utf-8", "replace"))

    def _through(self, lane: gate.Lane, target: int) -> None:
        """Point it at a new trampoline of ``lane`` that calls ``target``."""
        self._trampoline, self._generation = lane.trampoline(target, ctypes.addressof(self._message))
        self._gate = lane.gate
        ctypes.c_void_p.from_address(ctypes.addressof(self)).value = self._trampoline

    def _disable(self) -> None:
        """Its code is gone: calls raise SessionClosedError from now on."""
        g = self._gate
        if g is not None:
            g.disable(self._trampoline, self._generation)

    def _watch(self, reclaimer: Reclaimer, guard: Guard) -> None:
        """Be disabled when ``guard`` goes (``disable``)."""
        g = self._gate
        assert g is not None
        watched = reclaimer.watched
        with _watched_lock:
            watched.setdefault(guard, []).append((self._trampoline, self._generation))
            reclaimer.registered += 1
            if reclaimer.registered >= SWEEP:
                reclaimer.registered = 0
                for key, entries in list(watched.items()):
                    live = [e for e in entries if g.current(*e)]
                    if live:
                        watched[key] = live
                    else:
                        del watched[key]

    def __del__(self) -> None:
        g = getattr(self, "_gate", None)
        if g is not None:       # nothing calls through the trampoline any more: reuse it
            self._gate = None
            try:
                g.discard(self._trampoline)
            except Exception:   # at interpreter exit ctypes may be gone: the process ends anyway
                pass

    def __repr__(self) -> str:      # shows the C prototype (f? in IPython)
        what = self.signature.declaration(self.name) if self.signature else self.name
        return f"<hotlink.Function {what} at {self.address:#x}>"


class BufferFunction(Function):
    """A Function whose pointer parameters take buffers (numpy arrays,
    bytearray, memoryview, ...) as well as addresses."""

    _flags_ = FUNCFLAG_CDECL | FUNCFLAG_PYTHONAPI
    __slots__ = ("_pointers", "_nargs")

    def _buffers(self, signature: Signature) -> None:
        name = self.name
        self._pointers = [(i, PointerArg(p, f"{name}() argument {i + 1}{f' ({p.name})' if p.name else ''}"))
                          for i, p in enumerate(signature.params) if p.type.pointer]
        self._nargs = len(signature.params)

    def _convert(self, args: tuple[Any, ...], keep: list[Any]) -> list[Any]:
        if len(args) != self._nargs:
            raise TypeError(f"{self.name}() takes {self._nargs} argument{'s' if self._nargs != 1 else ''} "
                            f"({len(args)} given)")
        call = list(args)
        for i, convert in self._pointers:
            call[i] = convert(call[i], keep)
        return call

    def __call__(self, *args: Any) -> Any:
        keep: list[Any] = []         # holds each buffer exported until the call returns
        try:
            return Function.__call__(self, *self._convert(args, keep))
        finally:
            release_all(keep)


class GuardedFunction(Function):
    """The Python path: bookkeeping in Python around a direct ctypes call,
    for signatures the gate cannot forward (stack arguments, structures by
    value) and sessions without a lane."""

    _flags_ = FUNCFLAG_CDECL
    __slots__ = ("_guard", "_reclaimer")

    def _guarded(self, guard: Guard | None, reclaimer: Reclaimer) -> None:
        self._guard = guard
        self._reclaimer = reclaimer

    def __call__(self, *args: Any) -> Any:
        # enter the grace period before checking: code retired after this
        # point is not freed until the call returns
        reclaimer = self._reclaimer
        e = reclaimer.enter()
        try:
            guard = self._guard     # the defining unit, or the entry stub of a patchable function
            if guard is not None and not guard.alive:
                raise SessionClosedError(f"{self.name}: its code was removed")
            return Function.__call__(self, *args)
        finally:
            reclaimer.exit(e)


class GuardedBufferFunction(BufferFunction):
    """``BufferFunction`` on the Python path."""

    _flags_ = FUNCFLAG_CDECL
    __slots__ = ("_guard", "_reclaimer")

    def _guarded(self, guard: Guard | None, reclaimer: Reclaimer) -> None:
        self._guard = guard
        self._reclaimer = reclaimer

    def __call__(self, *args: Any) -> Any:
        keep: list[Any] = []
        try:
            call = self._convert(args, keep)
            reclaimer = self._reclaimer
            e = reclaimer.enter()
            try:
                guard = self._guard
                if guard is not None and not guard.alive:
                    raise SessionClosedError(f"{self.name}: its code was removed")
                return Function.__call__(self, *call)
            finally:
                reclaimer.exit(e)
        finally:
            release_all(keep)


# Each session's reclaimer keeps ``watched``: guard -> the (trampoline,
# generation) of each gate callable bound to it, disabled when it goes.  It
# lives in the session's own object graph and holds plain numbers, so it
# neither keeps a dropped session alive nor loses anything before the
# session's __del__ unlinks its units (weak references would be cleared
# first: the collector clears those inside the garbage before finalizers
# run).  A collected callable's trampoline goes to another callable with a
# new generation; stale entries are swept every SWEEP registrations (never
# from __del__: a collection can run inside the locked region, in this very
# thread).
_watched_lock = threading.Lock()
SWEEP = 256


def function(name: str, address: int, guard: Guard | None, restype: Any, argtypes: Sequence[Any],
             reclaimer: Reclaimer, signature: Signature | None = None) -> Function:
    """The callable for the function at ``address``: through the gate when
    the signature allows and the session has a lane, else the Python path.
    ``signature`` (a C signature) with pointer parameters makes it take buffers."""
    buffers = signature is not None and not signature.plain
    lane = reclaimer.fast_lane() if fast_signature(restype, argtypes) else None
    fn: Function
    if lane is None:
        guarded = GuardedBufferFunction(address) if buffers else GuardedFunction(address)
        guarded._describe(name, address, restype, argtypes, signature)
        guarded._guarded(guard, reclaimer)
        fn = guarded
    else:
        fn = BufferFunction() if buffers else Function()
        fn._describe(name, address, restype, argtypes, signature)
        fn._through(lane, address)       # points it at its trampoline
    if isinstance(fn, BufferFunction):
        assert signature is not None
        fn._buffers(signature)
    if lane is not None and guard is not None:
        fn._watch(reclaimer, guard)
        if not guard.alive:         # removed meanwhile (disable ran before it was watched)
            fn._disable()
    return fn


def with_signature(name: str, address: int, guard: Guard | None, signature: Signature,
                   reclaimer: Reclaimer) -> Function:
    """The callable for a C signature (``function`` with its ctypes types)."""
    return function(name, address, guard, signature.restype, signature.argtypes, reclaimer, signature)


def disable(reclaimer: Reclaimer, guards: Sequence[Any]) -> None:
    """These guards (a unit being removed, its entry stubs) are going: their
    gate callables stop calling into their code, before it is retired."""
    watched = reclaimer.watched
    if not watched or watched.keys().isdisjoint(guards):
        return
    with _watched_lock:
        found = [watched.pop(g, None) for g in guards]
    g = gate.process_gate()
    for entries in found:
        for trampoline, generation in entries or ():
            assert g is not None        # there are gate callables
            g.disable(trampoline, generation)
