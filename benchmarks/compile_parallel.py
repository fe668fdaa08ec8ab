#!/usr/bin/env python3
"""Compiling LLVM IR: worker processes vs one, threads vs processes, and the object cache.

64 generated IR modules of realistic size (about 260-300 instructions each:
loops over arrays, a 24-way switch, a Horner polynomial, a hash mix chain,
calls into libm), each distinct, compiled at -O2 for the host CPU with
hotlink's front end (``Session.compile_many``):

  1 worker     compile_many(mods, workers=1, cache=False)
  2 workers    compile_many(mods, workers=2, cache=False)
  2 threads    llvmlite in this process from 2 threads (for comparison: its
               global lock serializes them, so this is no faster than 1)
  contended    2 workers again while another process spins on one CPU
               (what the speedup is worth on a busy machine)
  cold cache   compile_many(mods, workers=2) into an empty cache directory
  warm cache   the same call again: every object comes from the cache

Worker processes are started and warmed up before timing (the pool is kept
for the session's lifetime). The 1- and 2-worker runs alternate, ``--reps``
times, and the medians are compared, so drift affects both alike. Targets:
2 workers at least 1.7x faster than 1; a warm cache at least 20x faster than
a cold one.

Usage: compile_parallel.py [--quick] [--reps N] [--modules N] [--json PATH] [--check]
(--quick: 32 modules, one repetition, no thread comparison: a smoke run)

The JSON has the medians of every method, the cold and warm cache times,
``speedup_2_vs_1``, ``cache_speedup`` and ``contended_speedup`` (1 worker's
median over the contended 2-worker median); ``benchmarks/run.py`` summarizes it
and README.md's compile figures are rendered from that summary.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

SPEEDUP_TARGET = 1.7
CACHE_TARGET = 20.0


def module_ir(i: int) -> str:
    """A distinct, realistic module: the constants depend on ``i``."""
    k = i * 7 + 3
    mix = []
    v = "%x"
    for j in range(60 + i % 32):              # a long dependent chain, like a hash finalizer
        op = ("xor", "mul", "add", "lshr")[j % 4]
        c = (k * 2654435761 + j * 40503) % 1000003 + 1 if op != "lshr" else (j % 29) + 3
        if op == "xor":
            mix.append(f"  %m{j} = xor i64 {v}, {c}")
        elif op == "lshr":
            mix.append(f"  %s{j} = lshr i64 {v}, {c}\n  %m{j} = xor i64 {v}, %s{j}")
        else:
            mix.append(f"  %m{j} = {op} i64 {v}, {c}")
        v = f"%m{j}"
    horner = []
    acc = "0"
    for j in range(32):
        horner.append(f"  %h{j} = mul i64 {acc}, %x\n  %p{j} = add i64 %h{j}, {(k + j * 13) % 97}")
        acc = f"%p{j}"
    cases = "\n".join(f"    i32 {c}, label %c{c}" for c in range(24))
    ops = ["add", "mul", "sub", "xor", "shl", "and", "or", "udiv"]
    blocks = "\n".join(
        f"c{c}:\n  %r{c} = {ops[c % 8]} i64 %x, {(k + c) % 31 + 1}\n  %q{c} = add i64 %r{c}, {c}\n  ret i64 %q{c}"
        for c in range(24))
    return f"""
declare double @sqrt(double)

define i64 @mix_{i}(i64 %x) {{
{chr(10).join(mix)}
  ret i64 {v}
}}

define i64 @poly_{i}(i64 %x) {{
{chr(10).join(horner)}
  ret i64 {acc}
}}

define i64 @dispatch_{i}(i32 %op, i64 %x) {{
entry:
  switch i32 %op, label %other [
{cases}
  ]
{blocks}
other:
  ret i64 -1
}}

define double @dot_{i}(ptr %a, ptr %b, i64 %n) {{
entry:
  %empty = icmp sle i64 %n, 0
  br i1 %empty, label %done, label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %i1, %loop ]
  %s = phi double [ 0.0, %entry ], [ %s1, %loop ]
  %pa = getelementptr double, ptr %a, i64 %i
  %pb = getelementptr double, ptr %b, i64 %i
  %va = load double, ptr %pa
  %vb = load double, ptr %pb
  %m = fmul fast double %va, %vb
  %s1 = fadd fast double %s, %m
  %i1 = add i64 %i, 1
  %c = icmp slt i64 %i1, %n
  br i1 %c, label %loop, label %done
done:
  %r = phi double [ 0.0, %entry ], [ %s1, %loop ]
  ret double %r
}}

define double @norm_{i}(ptr %v, i64 %n) {{
  %d = call double @dot_{i}(ptr %v, ptr %v, i64 %n)
  %r = call double @sqrt(double %d)
  ret double %r
}}

define void @saxpy_{i}(ptr %y, ptr %x, double %a, i64 %n) {{
entry:
  %empty = icmp sle i64 %n, 0
  br i1 %empty, label %done, label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %i1, %loop ]
  %px = getelementptr double, ptr %x, i64 %i
  %py = getelementptr double, ptr %y, i64 %i
  %vx = load double, ptr %px
  %vy = load double, ptr %py
  %ax = fmul double %vx, %a
  %s = fadd double %ax, %vy
  store double %s, ptr %py
  %i1 = add i64 %i, 1
  %c = icmp slt i64 %i1, %n
  br i1 %c, label %loop, label %done
done:
  ret void
}}

define i64 @collatz_{i}(i64 %x0) {{
entry:
  br label %loop
loop:
  %x = phi i64 [ %x0, %entry ], [ %next, %step ]
  %steps = phi i64 [ 0, %entry ], [ %steps1, %step ]
  %one = icmp ule i64 %x, 1
  br i1 %one, label %done, label %step
step:
  %odd = and i64 %x, 1
  %isodd = icmp ne i64 %odd, 0
  %t = mul i64 %x, 3
  %t1 = add i64 %t, 1
  %h = lshr i64 %x, 1
  %next = select i1 %isodd, i64 %t1, i64 %h
  %steps1 = add i64 %steps, 1
  br label %loop
done:
  ret i64 %steps
}}
"""


def instruction_count(text: str) -> int:
    import llvmlite.binding as llvm
    mod = llvm.parse_assembly(text)
    return sum(1 for f in mod.functions for b in f.blocks for _ in b.instructions)


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


@contextlib.contextmanager
def competing_process() -> Iterator[None]:
    """Another CPU-bound process (a Python busy loop) for the duration."""
    p = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)                       # let it get going
        yield
    finally:
        p.kill()
        p.wait()


def in_process_threads(mods: list[str], threads: int) -> None:
    from hotlink.frontend.jobs import Options, make_job
    from hotlink.frontend.llvm import compile_ir
    opts = Options(language="llvm", cache=False)
    jobs = [make_job(m, opts) for m in mods]
    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(compile_ir, jobs))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 32 modules, one repetition, no threads")
    ap.add_argument("--reps", type=int, default=3, help="alternating repetitions of 1 vs 2 workers")
    ap.add_argument("--modules", type=int, help="how many modules (default 64; 32 with --quick)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = ap.parse_args(argv)
    reps = 1 if args.quick else max(1, args.reps)

    import hotlink
    from hotlink.frontend.pool import get_pool

    mods = [module_ir(i) for i in range(args.modules or (32 if args.quick else 64))]
    sizes = [instruction_count(m) for m in mods]
    results: dict[str, list[float]] = {"1 worker": [], "2 workers": [], "2 threads (in-process)": []}
    contended: list[float] = []
    with hotlink.Session() as s, tempfile.TemporaryDirectory(prefix="hotlink-bench-cache-") as cache_dir:
        get_pool(s).warm(2)                   # worker start-up is not what we measure

        def compile_with(workers: int) -> float:
            return timed(lambda: s.compile_many(mods, workers=workers, cache=False))

        for r in range(reps):
            order = (1, 2) if r % 2 == 0 else (2, 1)
            for w in order:
                results["1 worker" if w == 1 else "2 workers"].append(compile_with(w))
            if not args.quick:
                results["2 threads (in-process)"].append(timed(lambda: in_process_threads(mods, 2)))
        with competing_process():
            contended = [compile_with(2) for _ in range(reps)]
        cold = timed(lambda: s.compile_many(mods, workers=2, cache_dir=cache_dir))
        warm = [timed(lambda: s.compile_many(mods, workers=2, cache_dir=cache_dir)) for _ in range(3)]
        # check that the warm path really gives the same, usable objects
        lib = s.library("check")
        lib.add_many(s.compile_many(mods[:4], workers=2, cache_dir=cache_dir))
        import ctypes
        assert lib.function("collatz_3", ctypes.c_int64, [ctypes.c_int64])(27) == 111

    med = {k: statistics.median(v) for k, v in results.items() if v}
    speedup = med["1 worker"] / med["2 workers"]
    warm_med = statistics.median(warm)
    cache_ratio = cold / warm_med
    n = len(mods)
    contended_med = statistics.median(contended)
    rows = [(k, v) for k, v in med.items()] + [("2 workers, another process busy", contended_med),
                                                ("cold cache (2 workers)", cold), ("warm cache", warm_med)]
    print(f"\n{n} IR modules, {min(sizes)}-{max(sizes)} instructions each (mean {statistics.mean(sizes):.0f}), "
          f"-O2, cpu=host; {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"median of {reps} run(s)\n")
    print("| method | total (ms) | per module (ms) | vs 1 worker |")
    print("|---|---:|---:|---:|")
    for name, t in rows:                     # the warm cache is compared with the cold one, as in the README
        ratio = f"{cold / t:.0f}x vs cold" if name == "warm cache" else f"{med['1 worker'] / t:.2f}x"
        print(f"| {name} | {t * 1e3:.0f} | {t * 1e3 / n:.2f} | {ratio} |")
    ok_speed = speedup >= SPEEDUP_TARGET
    ok_cache = cache_ratio >= CACHE_TARGET
    print(f"\n2 workers vs 1: {speedup:.2f}x (target >= {SPEEDUP_TARGET}x: {'met' if ok_speed else 'MISSED'}); "
          f"with another process busy: {med['1 worker'] / contended_med:.2f}x")
    print(f"warm cache vs cold: {cache_ratio:.0f}x faster (target >= {CACHE_TARGET:.0f}x: "
          f"{'met' if ok_cache else 'MISSED'})")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "modules": n, "instructions": sizes, "reps": reps, "cpus": os.cpu_count(),
            "seconds": {k: v for k, v in results.items() if v},
            "median_seconds": med, "cold_cache_seconds": cold, "warm_cache_seconds": warm,
            "speedup_2_vs_1": speedup, "cache_speedup": cache_ratio,
            "contended_seconds": contended, "contended_speedup": med["1 worker"] / contended_med,
            "targets_met": {"speedup": ok_speed, "cache": ok_cache},
        }, indent=2))
    return 0 if (ok_speed and ok_cache) or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
