"""numpy for the big tables of big objects, optional and imported on first use.

A tiny object's link has to fit in tens of microseconds, which numpy's fixed
cost per call (a microsecond or so) would eat, so the columns of small
tables stay Python tuples and lists.  A table of at least ``MIN_ROWS`` rows
(symbols, an ``.eh_frame``'s relocations; ``MIN_FIXUP_ROWS`` for the
relocations a section's fixups apply) is worked on as numpy arrays, when
numpy is installed: one vector operation per step instead of one Python
iteration per row.  Without numpy every path still works, row by row.
"""
from __future__ import annotations

from types import ModuleType

# Rows from which the vector paths pay off: below, numpy's fixed cost per
# operation (a microsecond or so, some 30 operations per table) is more than
# the Python loop it replaces.  Measured on real objects (gcc -O2, this
# machine's median of runs): a symbol table reads faster as columns from
# about 100 symbols (100: 45 µs by struct, 42 µs by numpy; 1,000: 379 vs
# 202 µs); an ``.eh_frame`` checks faster from about 40 records, 100 with
# the cache of FDE tails warm (100 records: 135 µs by rows, 148 µs as
# columns; 400: 566 vs 227 µs); a section's relocations are fixed up
# faster from about 150 (rows cost 0.2 µs each, columns 30 µs in all, plus
# the object's symbol values as an array once, about 20 µs per 1,000).
MIN_ROWS = 100
MIN_FIXUP_ROWS = 200

_numpy: ModuleType | None = None
_tried = False


def numpy() -> ModuleType | None:
    """The numpy module, or None if it is not installed (imported once)."""
    global _numpy, _tried
    if not _tried:
        _tried = True
        try:
            import numpy
        except ImportError:
            return None
        _numpy = numpy
    return _numpy
