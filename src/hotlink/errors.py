"""The exception hierarchy. Every error names what caused it."""
from __future__ import annotations


class LinkError(Exception):
    """Base class of every error hotlink raises about code it links."""


class MalformedObjectError(LinkError):
    """The input is not a well-formed ELF x86-64 relocatable object or archive."""


class UndefinedSymbolError(LinkError):
    """Symbols that no definition, library, shared object or the process provides.

    ``missing`` maps each undefined name to the units/objects that need it.
    """

    def __init__(self, missing: dict[str, list[str]]):
        self.missing = missing
        parts = [f"{name} (needed by {', '.join(sorted(set(users)))})"
                 for name, users in sorted(missing.items())]
        super().__init__("undefined symbol" + ("s" if len(parts) > 1 else "") + ": " + "; ".join(parts))


class DuplicateSymbolError(LinkError):
    """Two strong definitions of one name in one library."""

    def __init__(self, name: str, existing: str, new: str):
        self.symbol = name
        super().__init__(f"duplicate symbol {name!r}: defined by {existing} and by {new}")


class UnsupportedRelocationError(LinkError):
    """A relocation hotlink cannot apply (unknown kind, TLS, or target out of range)."""


class DependencyError(LinkError):
    """Removing or replacing code that live units still reference."""


class CompileError(LinkError):
    """A front end (C compiler, LLVM) rejected the source; ``diagnostics`` holds its output."""

    def __init__(self, message: str, diagnostics: str = ""):
        self.diagnostics = diagnostics
        super().__init__(message + (("\n" + diagnostics) if diagnostics else ""))


class SymbolNotFoundError(LinkError, KeyError):
    """A lookup of a name that the library does not define."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class SessionClosedError(LinkError):
    """The session (or the library, or the unit) is closed or removed."""


class InitializerError(LinkError):
    """A unit's static initializer threw (a C++ exception); the link was undone."""
