"""Callables for JIT functions that refuse to run code that was removed."""
from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any, Protocol

from .errors import SessionClosedError
from .qsbr import Reclaimer


class Guard(Protocol):
    """What a callable checks before each call: the defining unit, or the
    entry stub of a patchable function (which survives replace)."""
    alive: bool


class Function:
    """A ctypes function pointer bound to the unit that defines it.

    Calling it after the unit is removed raises instead of jumping into freed
    memory, and a unit removed while a call runs is freed only after the call
    returns.  The GIL is released during the call, like any ctypes call.
    """

    __slots__ = ("name", "address", "_unit", "_fn", "_reclaimer", "__weakref__")

    def __init__(self, name: str, address: int, unit: Guard | None, restype: Any, argtypes: Sequence[Any],
                 reclaimer: Reclaimer):
        self.name = name
        self.address = address
        self._unit = unit
        self._fn = ctypes.CFUNCTYPE(restype, *argtypes)(address)
        self._reclaimer = reclaimer

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

    def __repr__(self) -> str:
        return f"<hotlink.Function {self.name} at {self.address:#x}>"
