"""hotlink: JIT-link native code into the running Python process, and take it out again."""
from .errors import (CompileError, DependencyError, DuplicateSymbolError, LinkError,
                     MalformedObjectError, SessionClosedError, SymbolNotFoundError,
                     UndefinedSymbolError, UnsupportedRelocationError)
from .call import Function
from .library import Library, Unit
from .session import MemoryStats, Session

__all__ = [
    "Session", "Library", "Unit", "Function", "MemoryStats",
    "LinkError", "MalformedObjectError", "UndefinedSymbolError", "DuplicateSymbolError",
    "UnsupportedRelocationError", "DependencyError", "CompileError", "SymbolNotFoundError",
    "SessionClosedError",
]
__version__ = "0.1.0"
