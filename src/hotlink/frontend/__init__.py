"""Front ends: turn LLVM IR and C into ELF objects for the linker.

``compile_source`` handles one source; ``load_many`` loads or compiles many
(compiling in worker processes).  Objects and archives pass through.
"""
from __future__ import annotations

from typing import Any

from ..errors import LinkError


def compile_source(session: Any, source: Any, options: dict[str, Any]) -> tuple[bytes, str]:
    raise LinkError(f"{_describe(source)}: not an ELF object or an ar archive, and no front end accepts it")


def load_many(session: Any, sources: list[Any], options: dict[str, Any]) -> list[tuple[bytes, str]]:
    from ..library import load_source
    return [load_source(session, s, options) for s in sources]


def _describe(source: Any) -> str:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>"
    return str(source)[:60]
