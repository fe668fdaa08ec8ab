"""Plain-text stand-ins for the few ``rich`` pieces the demo uses, for
installs without the ``display`` extra (``pip install hotlink[display]``
brings rich's live table)."""
from __future__ import annotations

import re
import sys
from typing import Any

_MARKUP = re.compile(r"\[/?[a-z ]*\]")


class Console:
    def print(self, text: object = "") -> None:
        print(_MARKUP.sub("", str(text)), flush=True)


class Table:
    def __init__(self, title: str = ""):
        self.title = title
        self.caption = ""
        self.columns: list[tuple[str, str]] = []
        self.rows: list[tuple[str, ...]] = []

    def add_column(self, name: str, justify: str = "left") -> None:
        self.columns.append((name, justify))

    def add_row(self, *cells: str) -> None:
        self.rows.append(tuple(_MARKUP.sub("", c) for c in cells))

    def __str__(self) -> str:
        rows = [tuple(n for n, _ in self.columns), *self.rows]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.columns))]

        def line(r: tuple[str, ...]) -> str:
            return "  ".join(c.rjust(w) if j == "right" else c.ljust(w)
                             for c, w, (_, j) in zip(r, widths, self.columns)).rstrip()
        out = [self.title, line(rows[0]), "  ".join("-" * w for w in widths), *map(line, rows[1:])]
        return "\n".join([*out, self.caption] if self.caption else out)


class Live:
    """Prints each finished row once, and the whole table at the end (no redrawing)."""

    def __init__(self, renderable: Table, console: Any = None, refresh_per_second: float = 0):
        self.table = renderable
        self.printed = 0

    def update(self, renderable: Table) -> None:
        self.table = renderable
        done = renderable.rows[:-1]               # the last row is the variant still running
        for row in done[self.printed:]:
            print("  " + "  ".join(row), file=sys.stdout, flush=True)
        self.printed = max(self.printed, len(done))

    def __enter__(self) -> Live:
        return self

    def __exit__(self, *exc: object) -> None:
        print(self.table, flush=True)
