"""hotlink: JIT-link native code into the running Python process, and take it out again."""
from typing import Any

from .call import Function
from .debug import Symbolized
from .debug.crash import disable_crash_report, enable_crash_report
from .errors import (
                     CompileError,
                     DependencyError,
                     DuplicateSymbolError,
                     InitializerError,
                     LinkError,
                     MalformedObjectError,
                     SessionClosedError,
                     SymbolNotFoundError,
                     UndefinedSymbolError,
                     UnsupportedRelocationError,
)
from .frontend import BoundIR, Source, bind_to_host
from .host import AmbiguousSymbolError, HostSymbol, HostSymbols
from .library import Library, PendingReplace, Unit
from .session import MemoryStats, Session
from .signature import Signature, SignatureError

__all__ = [
    "Session", "Library", "Unit", "PendingReplace", "Function", "MemoryStats",
    "LinkError", "MalformedObjectError", "UndefinedSymbolError", "DuplicateSymbolError",
    "UnsupportedRelocationError", "DependencyError", "CompileError", "SymbolNotFoundError",
    "SessionClosedError", "InitializerError", "AmbiguousSymbolError",
    "bind_to_host", "BoundIR", "Source", "HostSymbols", "HostSymbol",
    "enable_crash_report", "disable_crash_report", "Symbolized",
    "Signature", "SignatureError",
]
__version__ = "0.1.0"


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext hotlink``: the ``%%hotlink`` cell magic (ipython.py)."""
    from .ipython import load_ipython_extension as load
    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from .ipython import unload_ipython_extension as unload
    unload(ipython)
