"""Front ends: turn LLVM IR and C/C++ into ELF objects for the linker.

Every source is described once by ``source.classify`` (its bytes, read once,
its origin and its kind); objects and archives pass through, the rest
becomes a ``CompileJob``. ``load_source`` handles one source (compiled in
this process, unless ``isolate=True``); ``load_many`` loads or compiles many,
compiling IR in worker processes. Compiled objects are cached on disk
(``cache.py``).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .bind import BoundIR, bind_to_host
from .build import Loaded, load_source, load_sources, raise_first
from .jobs import CompileJob, Source
from .source import ClassifiedSource, SourceKind, classify

if TYPE_CHECKING:
    from ..session import Session

__all__ = ["load_source", "load_many", "classify", "ClassifiedSource", "SourceKind", "CompileJob",
           "bind_to_host", "BoundIR", "Source"]


def load_many(session: Session, sources: Sequence[object], options: Mapping[str, Any]) -> list[Loaded]:
    """Objects for ``sources`` (``Library.add_many``); IR is compiled in parallel
    worker processes, C by parallel compiler processes. Raises the first
    CompileError once every other source is compiled (and cached)."""
    return raise_first(load_sources(session, sources, options, parallel=False))
