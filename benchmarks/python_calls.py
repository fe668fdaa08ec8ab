#!/usr/bin/env python3
"""The cost of one call from Python into JIT code, by signature form.

Scalars: ``int add1(int)`` called through a callable made with the ctypes form
(``function("add1", c_int, [c_int])``), with a C declaration
(``function("add1", "int(int)")``) and with the signature inferred
(``function("add1")``); a bare ctypes function pointer (no grace-period
bookkeeping) is the floor. A signature of scalars must cost what the ctypes
form costs: it is the same call.

Buffers: ``double dot(const double *, const double *, long)`` on two numpy
arrays of 16 doubles: the C declaration (each array checked and its address
taken per call) against the ctypes form given addresses taken once beforehand
(the fastest by hand) and taken per call (``arr.ctypes.data``).

Methods alternate in rotating order, ``--reps`` repetitions of ``--calls``
calls each; the figures are medians (and minimums) per call.

Usage: python_calls.py [--quick] [--json PATH]
"""
from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

C = r"""
int add1(int x) { return x + 1; }
double dot(const double *a, const double *b, long n) {
    double s = 0;
    for (long i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}
"""


def per_call(fn: Callable[[], object], calls: int) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) / calls * 1e9


def measure(methods: dict[str, Callable[[], object]], calls: int, reps: int) -> dict[str, dict[str, float]]:
    samples: dict[str, list[float]] = {k: [] for k in methods}
    names = list(methods)
    for r in range(reps):
        order = names[r % len(names):] + names[:r % len(names)]
        for k in order:
            samples[k].append(per_call(methods[k], calls))
    return {k: {"median_ns": round(statistics.median(v), 1), "min_ns": round(min(v), 1)} for k, v in samples.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--calls", type=int)
    ap.add_argument("--reps", type=int)
    args = ap.parse_args()
    calls = args.calls or (2_000 if args.quick else 100_000)
    reps = args.reps or (3 if args.quick else 15)

    import numpy as np

    import hotlink

    with hotlink.Session() as s, tempfile.TemporaryDirectory() as tmp:
        lib = s.library("calls")
        lib.add(C, language="c", cache_dir=str(Path(tmp) / "cache"))
        by_ctypes = lib.function("add1", ctypes.c_int, [ctypes.c_int])
        by_decl = lib.function("add1", "int(int)")
        inferred = lib.function("add1")
        bare = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lib.address("add1"))
        rng = range(calls)

        def loop(f: Callable[[int], object]) -> Callable[[], object]:
            def run() -> None:
                for i in rng:
                    f(i)
            return run

        scalars = measure({"ctypes form": loop(by_ctypes), "C declaration": loop(by_decl),
                           "inferred": loop(inferred), "bare ctypes pointer": loop(bare)}, calls, reps)

        a = np.arange(16.0)
        b = np.ones(16)
        dot_decl = lib.function("dot", "double(const double *, const double *, long)")
        dot_ctypes = lib.function("dot", ctypes.c_double, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long])
        pa, pb = a.ctypes.data, b.ctypes.data
        assert dot_decl(a, b, 16) == dot_ctypes(pa, pb, 16) == 120.0

        def decl() -> None:
            for _ in rng:
                dot_decl(a, b, 16)

        def addresses_once() -> None:
            for _ in rng:
                dot_ctypes(pa, pb, 16)

        def addresses_per_call() -> None:
            for _ in rng:
                dot_ctypes(a.ctypes.data, b.ctypes.data, 16)

        buffers = measure({"C declaration, numpy arrays": decl,
                           "ctypes form, addresses taken once": addresses_once,
                           "ctypes form, arr.ctypes.data per call": addresses_per_call}, calls, reps)

    doc = {"calls_per_rep": calls, "reps": reps, "scalars": scalars, "buffers": buffers,
           "scalar_decl_over_ctypes": round(scalars["C declaration"]["median_ns"]
                                            / scalars["ctypes form"]["median_ns"], 3)}
    for title, rows in (("int add1(int)", scalars), ("dot on two numpy arrays of 16 doubles", buffers)):
        print(title, file=sys.stderr)
        for k, v in rows.items():
            print(f"  {k:40s} {v['median_ns']:9.1f} ns (min {v['min_ns']:.1f})", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
    else:
        print(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
