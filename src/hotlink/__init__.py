"""hotlink: JIT-link native code into the running Python process, and take it out again."""
from .call import Function
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
from .library import Library, Unit
from .session import MemoryStats, Session

__all__ = [
    "Session", "Library", "Unit", "Function", "MemoryStats",
    "LinkError", "MalformedObjectError", "UndefinedSymbolError", "DuplicateSymbolError",
    "UnsupportedRelocationError", "DependencyError", "CompileError", "SymbolNotFoundError",
    "SessionClosedError", "InitializerError", "AmbiguousSymbolError",
    "bind_to_host", "BoundIR", "Source", "HostSymbols", "HostSymbol",
]
__version__ = "0.1.0"
