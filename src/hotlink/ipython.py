"""``%load_ext hotlink``: native code in notebook cells that reloads in place.

    %%hotlink [c|c++|llvm] [--library NAME] [-O0..3] [compiler flags]
    double dot(double *a, const double *b, long n) { ... }

compiles the cell, adds it to a patchable library (``cells`` unless
``--library`` names another), and binds each function it defines in the
user's namespace as a typed callable (the signature is inferred: C and LLVM
IR; for C++ use ``%hotlink lib`` and ``function(sym, "C declaration")``).
Running the cell again, edited, *replaces* its unit: every function's entry
stub swings to the new code at once, callables saved before the edit call the
new code too, and the old code is freed once no call is running it. Which
unit a cell replaces: the one this cell made before (Jupyter sends cell ids),
else the one that defines the same functions. A cell that does not compile or
link shows the compiler's message with the cell's line numbers and leaves the
previous version running.

    %hotlink memory     the session's memory() as a table
    %hotlink session    the Session (to synchronize(), symbolize(), ...)
    %hotlink lib [NAME] a Library of the magic ("cells" by default)

The state lives in one ``CellLinker`` per IPython shell; ``%unload_ext
hotlink`` closes its session.
"""
from __future__ import annotations

import html
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .call import Function
from .elf import ObjectFile
from .errors import CompileError, LinkError
from .frontend import load_source
from .frontend.source import normalize_language
from .library import Library, Unit
from .session import MemoryStats, Session
from .signature import SignatureError

DEFAULT_LIBRARY = "cells"
_DIAG_LOCATION = re.compile(r"<(?:stdin|string)>(?::(\d+))?")


class CellError(LinkError):
    """A cell that did not compile or link; the previous version stays loaded.
    IPython shows just the message (``_render_traceback_``), no Python traceback."""

    def _render_traceback_(self) -> list[str]:
        return str(self).splitlines()


class CellCompileError(CellError, CompileError):
    """The compiler rejected the cell; ``diagnostics`` carry the cell's line numbers."""

    def __init__(self, message: str, diagnostics: str):
        CompileError.__init__(self, message, diagnostics)


def cell_diagnostics(diagnostics: str, first_line: int = 2) -> str:
    """The compiler's messages with line numbers of the cell: the source's
    line 1 is the cell's line ``first_line`` (the ``%%hotlink`` line is 1)."""
    def at(m: re.Match[str]) -> str:
        return "<cell>" + (f":{int(m.group(1)) + first_line - 1}" if m.group(1) else "")
    return _DIAG_LOCATION.sub(at, diagnostics)


@dataclass
class CellOptions:
    language: str = "c"
    library: str = DEFAULT_LIBRARY
    opt: int | None = None
    flags: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, line: str) -> CellOptions:
        """``[c|c++|llvm] [--library NAME] [-O0..3] [flags]``; ValueError for nonsense."""
        o = cls()
        words = shlex.split(line)
        if words and not words[0].startswith("-"):
            o.language = normalize_language(words.pop(0)) or "c"
        it = iter(words)
        for w in it:
            if w in ("--library", "-l"):
                o.library = next(it, "") or _usage("--library needs a NAME")
            elif w.startswith("--library="):
                o.library = w.split("=", 1)[1] or _usage("--library needs a NAME")
            elif re.fullmatch(r"-O[0-3]", w):
                o.opt = int(w[2])
            elif w.startswith("-"):
                o.flags.append(w)
            else:
                _usage(f"unexpected {w!r} (the language goes first: c, c++ or llvm)")
        if o.language == "llvm" and o.flags:
            _usage(f"compiler flags {' '.join(o.flags)} do not apply to LLVM IR (only -O0..3 does)")
        return o

    def front_end(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"language": self.language}
        if self.opt is not None:
            opts["opt"] = self.opt
        if self.flags:
            opts["flags"] = list(self.flags)
        return opts


def _usage(message: str) -> str:
    raise ValueError(f"%%hotlink: {message}; usage: %%hotlink [c|c++|llvm] [--library NAME] [-O0..3] [flags]")


@dataclass
class CellResult:
    unit: Unit
    replaced: Unit | None                 # the unit this cell's previous version was
    functions: dict[str, Function]        # bound in the user's namespace
    unbound: dict[str, str]               # functions without an inferable signature, and why

    def summary(self) -> str:
        lib = self.unit.library.name
        what = "replaced" if self.replaced is not None else "added"
        lines = [f"hotlink: {what} {lib}:{self.unit.name}"
                 + (" (calls in flight finish in the old code; it is freed after the grace period)"
                    if self.replaced is not None else "")]
        lines += [f"  {f.signature.declaration(n) if f.signature else n}" for n, f in self.functions.items()]
        lines += [f"  {n}: not bound ({why})" for n, why in self.unbound.items()]
        return "\n".join(lines)


class CellLinker:
    """The cells of one shell: a session, patchable libraries, and which unit each cell made."""

    def __init__(self) -> None:
        self._session: Session | None = None
        self.libraries: dict[str, Library] = {}
        self.by_cell: dict[str, Unit] = {}         # Jupyter cell id -> the unit it made
        self._count = 0

    @property
    def session(self) -> Session:
        if self._session is None:
            self._session = Session()
        return self._session

    def library(self, name: str = DEFAULT_LIBRARY) -> Library:
        lib = self.libraries.get(name)
        if lib is None or not lib.alive:
            lib = self.libraries[name] = self.session.library(name, patchable=True)
        return lib

    def run_cell(self, line: str, cell: str, cell_id: str | None = None) -> CellResult:
        """Compile ``cell``, then add it or replace its previous version. CellError
        (the previous version still running) if it does not compile or link."""
        opts = CellOptions.parse(line)
        lib = self.library(opts.library)
        try:
            obj, _ = load_source(self.session, cell, opts.front_end())
        except CompileError as e:
            lang = opts.language.upper()
            raise CellCompileError(f"hotlink: the {lang} compiler rejected the cell (line numbers count the "
                                   f"%%hotlink line as line 1); the previous version is still loaded",
                                   cell_diagnostics(e.diagnostics or str(e))) from None
        defined, names = _defined(obj)
        previous = self._previous(lib, cell_id, defined)
        try:
            if previous is None:
                self._count += 1
                unit = lib.add(obj, name=f"cell{self._count}")
            else:
                unit = lib.replace(previous, obj, name=previous.name)
        except LinkError as e:
            raise CellError(f"hotlink: the cell did not link: {e}\nthe previous version is still loaded") from None
        if cell_id:
            self.by_cell[cell_id] = unit
        functions, unbound = {}, {}
        for name in names:
            try:
                functions[name] = lib.function(name)
            except SignatureError as e:
                unbound[name] = str(e).split(": ", 1)[-1]
        return CellResult(unit, previous, functions, unbound)

    def _previous(self, lib: Library, cell_id: str | None, names: list[str]) -> Unit | None:
        """The unit this cell replaces: the one it made (by Jupyter cell id), else
        the one defining the same names; None for a new cell."""
        if cell_id:
            u = self.by_cell.get(cell_id)
            if u is not None and u.alive and u.library is lib:
                return u
        owners = {d.unit for n in names if (d := lib.definitions.get(n)) is not None and d.unit is not None}
        live = sorted((u for u in owners if u.alive), key=lambda u: u.seq)
        if len(live) > 1:
            raise CellError(f"hotlink: the cell defines names of several earlier cells "
                            f"({', '.join(u.name for u in live)}); merge those cells or rename the functions")
        return live[0] if live else None

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
        self.libraries.clear()
        self.by_cell.clear()


def _defined(obj: bytes) -> tuple[list[str], list[str]]:
    """The globals an object defines, and those of them that are functions."""
    o = ObjectFile(obj, "<cell>")
    names = o.defined_globals()
    return names, [n for n in names if (i := o.global_index(n)) is not None and o.is_code_symbol(i)]


class MemoryTable:
    """``Session.memory()`` shown as a table (HTML in notebooks, text in a terminal)."""

    def __init__(self, stats: MemoryStats):
        self.stats = stats

    def rows(self) -> Iterator[tuple[str, str, str, str]]:
        for name, m in sorted(self.stats.libraries.items()):
            yield name, str(m.units), _size(m.used), str(m.symbols)

    def totals(self) -> list[tuple[str, str]]:
        s = self.stats
        return [("mapped", _size(s.mapped)), ("used", _size(s.used)),
                ("retired (waiting for a grace period)", _size(s.retired)), ("resident", _size(s.resident))]

    def __repr__(self) -> str:
        head = ("library", "units", "used", "symbols")
        rows = [head, *self.rows()]
        w = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = ["  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r)) for r in rows]
        lines.insert(1, "  ".join("-" * x for x in w))
        lines.append("")
        lines += [f"{k}: {v}" for k, v in self.totals()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        cells = "".join(f"<tr><td>{html.escape(n)}</td><td>{u}</td><td>{used}</td><td>{s}</td></tr>"
                        for n, u, used, s in self.rows())
        totals = "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in self.totals())
        return (f"<table><tr><th>library</th><th>units</th><th>used</th><th>symbols</th></tr>{cells}</table>"
                f"<table>{totals}</table>")


def _size(n: int) -> str:
    return f"{n:,} B"


# --- IPython ---------------------------------------------------------------------------------

def load_ipython_extension(ipython: Any) -> None:
    from IPython.core.magic import Magics, line_cell_magic, magics_class

    linker = CellLinker()

    @magics_class
    class HotlinkMagics(Magics):
        cell_id: str | None = None

        @line_cell_magic
        def hotlink(self, line: str, cell: str | None = None) -> Any:
            if cell is None:
                return self._line(line)
            result = linker.run_cell(line, cell, self.cell_id)
            assert self.shell is not None
            self.shell.user_ns.update(result.functions)
            print(result.summary())
            return None

        def _line(self, line: str) -> Any:
            words = shlex.split(line)
            cmd = words[0] if words else ""
            if cmd == "memory":
                return MemoryTable(linker.session.memory())
            if cmd == "session":
                return linker.session
            if cmd in ("lib", "library"):
                return linker.library(words[1] if len(words) > 1 else DEFAULT_LIBRARY)
            raise ValueError(f"%hotlink {line}: expected 'memory', 'session' or 'lib [NAME]'")

    magics = HotlinkMagics(ipython)

    def remember_cell(info: Any) -> None:       # Jupyter front ends send each cell's id
        magics.cell_id = getattr(info, "cell_id", None)

    ipython.register_magics(magics)
    ipython.events.register("pre_run_cell", remember_cell)
    _loaded[id(ipython)] = (linker, remember_cell)


_loaded: dict[int, tuple[CellLinker, Any]] = {}


def unload_ipython_extension(ipython: Any) -> None:
    linker, hook = _loaded.pop(id(ipython), (None, None))
    if hook is not None:
        ipython.events.unregister("pre_run_cell", hook)
    if linker is not None:
        linker.close()
