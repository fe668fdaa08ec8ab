"""Callables for JIT functions that refuse to run code that was removed.

A ``Function`` is a ctypes call inside the grace-period bookkeeping. With a
C signature (``signature.py``) whose parameters are all scalars it is exactly
that call; only signatures with pointer parameters get a ``BufferFunction``,
which turns buffers into addresses first (``buffers.py``) and keeps them
exported until the call returns.
"""
from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any, Protocol

from .buffers import PointerArg, release_all
from .errors import SessionClosedError
from .qsbr import Reclaimer
from .signature import Signature


class Guard(Protocol):
    """What a callable checks before each call: the defining unit, or the
    entry stub of a patchable function (which survives replace)."""
    alive: bool


class Function:
    """A ctypes function pointer bound to the unit that defines it.

    Calling it after the unit is removed raises instead of jumping into freed
    memory, and a unit removed while a call runs is freed only after the call
    returns.  The GIL is released during the call, like any ctypes call.
    ``signature`` is the C signature it was made with (None for the ctypes form).
    """

    __slots__ = ("name", "address", "signature", "_unit", "_fn", "_reclaimer", "__weakref__")

    def __init__(self, name: str, address: int, unit: Guard | None, restype: Any, argtypes: Sequence[Any],
                 reclaimer: Reclaimer, signature: Signature | None = None):
        self.name = name
        self.address = address
        self.signature = signature
        self._unit = unit
        self._fn = ctypes.CFUNCTYPE(restype, *argtypes)(address)
        self._reclaimer = reclaimer

    @staticmethod
    def with_signature(name: str, address: int, unit: Guard | None, signature: Signature,
                       reclaimer: Reclaimer) -> Function:
        """The callable for a C signature: a plain Function when no parameter
        is a pointer (the same call as the ctypes form), else a BufferFunction."""
        cls = Function if signature.plain else BufferFunction
        return cls(name, address, unit, signature.restype, signature.argtypes, reclaimer, signature)

    def __call__(self, *args: Any) -> Any:
        # enter the grace period before checking: code retired after this
        # point is not freed until the call returns
        reclaimer = self._reclaimer
        e = reclaimer.enter()
        try:
            guard = self._unit      # the defining unit, or the entry stub of a patchable function
            if guard is not None and not guard.alive:
                raise SessionClosedError(f"{self.name}: its code was removed")
            return self._fn(*args)
        finally:
            reclaimer.exit(e)

    def __repr__(self) -> str:      # shows the C prototype (f? in IPython)
        what = self.signature.declaration(self.name) if self.signature else self.name
        return f"<hotlink.Function {what} at {self.address:#x}>"


class BufferFunction(Function):
    """A Function whose pointer parameters take buffers (numpy arrays,
    bytearray, memoryview, ...) as well as addresses."""

    __slots__ = ("_pointers", "_nargs")

    def __init__(self, name: str, address: int, unit: Guard | None, restype: Any, argtypes: Sequence[Any],
                 reclaimer: Reclaimer, signature: Signature | None = None):
        super().__init__(name, address, unit, restype, argtypes, reclaimer, signature)
        assert signature is not None
        self._pointers = [(i, PointerArg(p, f"{name}() argument {i + 1}{f' ({p.name})' if p.name else ''}"))
                          for i, p in enumerate(signature.params) if p.type.pointer]
        self._nargs = len(signature.params)

    def __call__(self, *args: Any) -> Any:
        if len(args) != self._nargs:
            raise TypeError(f"{self.name}() takes {self._nargs} argument{'s' if self._nargs != 1 else ''} "
                            f"({len(args)} given)")
        keep: list[Any] = []         # holds each buffer exported until the call returns
        try:
            call = list(args)
            for i, convert in self._pointers:
                call[i] = convert(call[i], keep)
            reclaimer = self._reclaimer
            e = reclaimer.enter()
            try:
                guard = self._unit
                if guard is not None and not guard.alive:
                    raise SessionClosedError(f"{self.name}: its code was removed")
                return self._fn(*call)
            finally:
                reclaimer.exit(e)
        finally:
            release_all(keep)
