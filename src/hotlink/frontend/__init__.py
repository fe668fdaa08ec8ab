"""Front ends: turn LLVM IR and C into ELF objects for the linker.

``compile_source`` handles one source (in this process, unless
``isolate=True``); ``load_many`` loads or compiles many, compiling IR in
worker processes. Objects and archives pass through. Compiled objects are
cached on disk (``cache.py``).
"""
from __future__ import annotations

from typing import Any

from ..errors import CompileError
from .bind import BoundIR, bind_to_host
from .build import compile_sources, raise_first
from .jobs import Source

__all__ = ["compile_source", "load_many", "bind_to_host", "BoundIR", "Source"]


def compile_source(session: Any, source: Any, options: dict[str, Any]) -> tuple[bytes, str]:
    """The object for one source and its origin (a path, or ``<bytes>``)."""
    out = compile_sources(session, [source], options, parallel=False)[0]
    if isinstance(out, CompileError):
        raise out
    return out


def load_many(session: Any, sources: list[Any], options: dict[str, Any]) -> list[tuple[bytes, str]]:
    """Objects for ``sources`` (``Library.add_many``); IR is compiled in parallel
    worker processes, C by parallel compiler processes. Raises the first
    CompileError once every other source is compiled (and cached)."""
    out = compile_sources(session, sources, options, parallel=False)
    raise_first(out)
    return out
