#!/usr/bin/env python3
"""The cost of calling a tiny JIT function from Python, with 1 and 2 calling threads.

``int add1(int x) { return x + 1; }``, linked by hotlink, called in a Python
loop ``for i in range(n): f(i)`` through:

* ``hotlink``: ``lib.function("add1", c_int, [c_int])``, the callable with the
  grace-period bookkeeping (a ctypes function pointer into hotlink's call gate);
* ``hotlink (patchable)``: the same from a patchable library (the call also
  goes through the function's entry stub, so the callable survives ``replace``);
* ``ctypes``: a bare ``CFUNCTYPE(c_int, c_int)`` pointer to the same code (no
  bookkeeping: a call racing a removal would jump into freed memory), the
  floor hotlink is held to (goal: at most 1.2x);
* ``cffi (cast)``: ``ffi.cast("int (*)(int)", address)`` of the same code,
  cffi's ABI mode;
* ``cffi (dlopen)``: the same C built as a shared object with gcc and called
  through ``ffi.dlopen(path).add1``.

Two threads: both run the loop at once (started together at a barrier); the
figure is the wall time over the calls of one thread, i.e. what each caller
sees per call while the other calls too.  Every call lets the GIL go and takes
it back, as any ctypes or cffi call does, so the two threads contend for it.

Methods alternate in rotating order, ``--reps`` repetitions of ``--calls``
calls each (per thread); the figures are medians (and minimums) per call,
loop overhead included, and the ratios are of medians.

Usage: call.py [--quick] [--json PATH] [--calls N] [--reps N]
"""
from __future__ import annotations

import argparse
import ctypes
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

C = "int add1(int x) { return x + 1; }\n"
THREADS = (1, 2)


def loop(f: Callable[[int], object], n: int) -> Callable[[], None]:
    rng = range(n)

    def run() -> None:
        for i in rng:
            f(i)
    return run


def timed(run: Callable[[], None], threads: int) -> float:
    """Seconds for ``threads`` threads each running ``run`` once, started together."""
    if threads == 1:
        t0 = time.perf_counter()
        run()
        return time.perf_counter() - t0
    start = threading.Barrier(threads + 1)

    def worker() -> None:
        start.wait()
        run()
    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    return time.perf_counter() - t0


def measure(methods: dict[str, Callable[[int], object]], calls: int, reps: int) -> dict[str, dict[str, dict]]:
    samples = {n: {k: [] for k in methods} for n in THREADS}
    names = list(methods)
    runs = {k: loop(f, calls) for k, f in methods.items()}
    for r in range(reps):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in THREADS:
            for k in order:
                samples[n][k].append(timed(runs[k], n) / calls * 1e9)
    return {str(n): {k: {"median_ns": round(statistics.median(v), 1), "min_ns": round(min(v), 1)}
                     for k, v in by.items()} for n, by in samples.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--calls", type=int)
    ap.add_argument("--reps", type=int)
    args = ap.parse_args()
    calls = args.calls or (20_000 if args.quick else 200_000)
    reps = args.reps or (3 if args.quick else 15)

    import cffi

    import hotlink

    ffi = cffi.FFI()
    ffi.cdef("int add1(int x);")
    with hotlink.Session() as s, tempfile.TemporaryDirectory(prefix="hotlink-call-") as tmp:
        work = Path(tmp)
        (work / "add1.c").write_text(C)
        subprocess.run(["gcc", "-O2", "-c", str(work / "add1.c"), "-o", str(work / "add1.o")], check=True)
        subprocess.run(["gcc", "-O2", "-shared", "-fPIC", str(work / "add1.c"), "-o", str(work / "libadd1.so")],
                       check=True)
        obj = (work / "add1.o").read_bytes()
        lib = s.library("calls")
        lib.add(obj)
        patchable = s.library("calls_patchable", patchable=True)
        patchable.add(obj)
        so = ffi.dlopen(str(work / "libadd1.so"))
        methods: dict[str, Callable[[int], object]] = {
            "hotlink": lib.function("add1", ctypes.c_int, [ctypes.c_int]),
            "hotlink (patchable)": patchable.function("add1", ctypes.c_int, [ctypes.c_int]),
            "ctypes": ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lib.address("add1")),
            "cffi (cast)": ffi.cast("int (*)(int)", lib.address("add1")),
            "cffi (dlopen)": so.add1,
        }
        for k, f in methods.items():
            assert f(41) == 42, k
        ns = measure(methods, calls, reps)
        gate = type(methods["hotlink"]).__name__       # Function: through the call gate

    ratios = {}
    for n, by in ns.items():
        h, c = by["hotlink"]["median_ns"], by["ctypes"]["median_ns"]
        ratios[n] = {"hotlink_over_ctypes": round(h / c, 3),
                     "patchable_over_ctypes": round(by["hotlink (patchable)"]["median_ns"] / c, 3),
                     "hotlink_over_cffi": round(h / by["cffi (cast)"]["median_ns"], 3),
                     "hotlink_over_cffi_dlopen": round(h / by["cffi (dlopen)"]["median_ns"], 3)}
    doc = {"machine": platform.machine(), "python": sys.version.split()[0], "cffi": cffi.__version__,
           "calls_per_rep": calls, "reps": reps, "callable": gate, "ns_per_call": ns, "ratios": ratios}
    print(f"int add1(int) called from a Python loop: {calls:,} calls per thread and repetition, "
          f"{reps} interleaved repetitions, median ns per call (min)\n", file=sys.stderr)
    print("| method | " + " | ".join(f"{n} thread{'s' if n > 1 else ''}" for n in THREADS) + " |",
          file=sys.stderr)
    print("|---|" + "---:|" * len(THREADS), file=sys.stderr)
    for k in methods:
        cells = [f"{ns[str(n)][k]['median_ns']:.1f} ({ns[str(n)][k]['min_ns']:.1f})" for n in THREADS]
        print(f"| {k} | " + " | ".join(cells) + " |", file=sys.stderr)
    for n in THREADS:
        r = ratios[str(n)]
        print(f"\n{n} thread(s): hotlink/ctypes = {r['hotlink_over_ctypes']:.3f} (goal <= 1.2), "
              f"hotlink/cffi = {r['hotlink_over_cffi']:.3f}", file=sys.stderr, end="")
    print(file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
    else:
        print(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
