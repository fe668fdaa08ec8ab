#!/usr/bin/env python3
"""Link latency of one tiny function: hotlink vs dlopen vs llvmlite's JITs.

The object is ``int f(int x){return x*3+1;}`` compiled with ``gcc -O2 -c``
(and, for dlopen, ``gcc -O2 -shared -fPIC``). Every method is timed from
"here are the bytes / the file" to "here is the address of f":

  hotlink   Session() once; per iteration ``lib = s.library(name)`` (untimed),
            then timed ``lib.add(obj_bytes)`` + ``lib.address("f")``;
            ``lib.remove()`` afterwards, untimed.  This object is one the
            quick link (quick.py) takes.
  hotlink_general
            the same with the quick link switched off: the general link
            transaction, which every object the quick link does not take
            goes through.
  dlopen    ``dlopen(path, RTLD_NOW|RTLD_LOCAL)`` + ``dlsym(h, "f")`` of a .so
            on tmpfs (/dev/shm). dlopen caches by path, so each iteration
            opens its own copy (all copies are made before timing);
            ``dlclose`` afterwards, untimed.
  lljit     llvmlite's LLJIT: ``JITLibraryBuilder().add_object_img(obj)
            .export_symbol("f").link(lljit, name)`` + ``rt["f"]``; the
            resource tracker is dropped afterwards, untimed.
  mcjit     llvmlite's MCJIT: ``add_object_file`` + ``finalize_object`` +
            ``get_function_address("f")`` (MCJIT cannot remove objects).

Methods are interleaved (one iteration of each, in rotating order, then the
next), so drift in machine state affects all of them alike. Reported: the
median (and min, p90) per method in microseconds, and the ratio to dlopen;
the headline figure is hotlink/dlopen.

Usage: link_latency.py [--quick] [--iterations N] [--methods hotlink,dlopen,lljit,mcjit]
                       [--json PATH]
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

SOURCE = "int f(int x){return x*3+1;}\n"
FTYPE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)
RTLD_NOW = 0x2
RTLD_LOCAL = 0x0
ALL_METHODS = ("hotlink", "hotlink_general", "dlopen", "lljit", "mcjit")


def check(addr: int, method: str) -> None:
    """The linked f must really work: f(5) == 16."""
    got = FTYPE(addr)(5)
    if got != 16:
        raise SystemExit(f"{method}: f(5) returned {got}, expected 16")


def build(workdir: Path) -> tuple[bytes, Path]:
    src = workdir / "f.c"
    src.write_text(SOURCE)
    obj = workdir / "f.o"
    so = workdir / "f.so"
    subprocess.run(["gcc", "-O2", "-c", str(src), "-o", str(obj)], check=True)
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", str(src), "-o", str(so)], check=True)
    return obj.read_bytes(), so


# Each method is a factory: setup() -> (step(i) -> int ns, teardown()).
# step(i) does one untimed preparation, one timed link, one untimed cleanup
# and returns the timed duration in nanoseconds.

Step = Callable[[int], int]


def method_hotlink(obj: bytes, so: Path, n: int, shm: Path) -> tuple[Step, Callable[[], None]]:
    import hotlink

    s = hotlink.Session()
    clock = time.perf_counter_ns

    def step(i: int) -> int:
        lib = s.library(f"l{i}")
        t0 = clock()
        lib.add(obj)
        addr = lib.address("f")
        t1 = clock()
        check(addr, "hotlink")
        if hasattr(lib, "remove"):
            lib.remove()
        return t1 - t0

    return step, s.close


def method_hotlink_general(obj: bytes, so: Path, n: int, shm: Path) -> tuple[Step, Callable[[], None]]:
    """hotlink with its quick link switched off: the general link transaction,
    the path of objects the quick link does not take (archives, several
    objects, undefined symbols, initializers, TLS...)."""
    import hotlink
    from hotlink import quick

    s = hotlink.Session()
    clock = time.perf_counter_ns

    def step(i: int) -> int:
        lib = s.library(f"g{i}")
        quick.enabled = False
        try:
            t0 = clock()
            lib.add(obj)
            addr = lib.address("f")
            t1 = clock()
        finally:
            quick.enabled = True
        check(addr, "hotlink_general")
        lib.remove()
        return t1 - t0

    return step, s.close


def method_dlopen(obj: bytes, so: Path, n: int, shm: Path) -> tuple[Step, Callable[[], None]]:
    libc = ctypes.CDLL(None)
    dlopen = libc.dlopen
    dlopen.restype = ctypes.c_void_p
    dlopen.argtypes = [ctypes.c_char_p, ctypes.c_int]
    dlsym = libc.dlsym
    dlsym.restype = ctypes.c_void_p
    dlsym.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    dlclose = libc.dlclose
    dlclose.argtypes = [ctypes.c_void_p]
    dlerror = libc.dlerror
    dlerror.restype = ctypes.c_char_p

    # one distinct file per iteration, all made before timing
    copies = []
    for i in range(n):
        dst = shm / f"f_{i}.so"
        shutil.copyfile(so, dst)
        copies.append(os.fsencode(dst))
    clock = time.perf_counter_ns

    def step(i: int) -> int:
        path = copies[i]
        t0 = clock()
        h = dlopen(path, RTLD_NOW | RTLD_LOCAL)
        addr = dlsym(h, b"f")
        t1 = clock()
        if not h or not addr:
            raise SystemExit(f"dlopen: {dlerror()!r}")
        check(addr, "dlopen")
        dlclose(h)
        return t1 - t0

    return step, lambda: None


def method_lljit(obj: bytes, so: Path, n: int, shm: Path) -> tuple[Step, Callable[[], None]]:
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    lljit = llvm.create_lljit_compiler()
    builder_cls = llvm.JITLibraryBuilder
    clock = time.perf_counter_ns

    def step(i: int) -> int:
        t0 = clock()
        rt = builder_cls().add_object_img(obj).export_symbol("f").link(lljit, f"l{i}")
        addr = rt["f"]
        t1 = clock()
        check(addr, "lljit")
        del rt            # unloads the library (LLJIT keeps some memory)
        return t1 - t0

    return step, lambda: None


def method_mcjit(obj: bytes, so: Path, n: int, shm: Path) -> tuple[Step, Callable[[], None]]:
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    tm = llvm.Target.from_default_triple().create_target_machine()
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), tm)
    clock = time.perf_counter_ns

    def step(i: int) -> int:
        t0 = clock()
        engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
        engine.finalize_object()
        addr = engine.get_function_address("f")
        t1 = clock()
        check(addr, "mcjit")
        return t1 - t0

    return step, lambda: None


FACTORIES = {
    "hotlink": method_hotlink,
    "hotlink_general": method_hotlink_general,
    "dlopen": method_dlopen,
    "lljit": method_lljit,
    "mcjit": method_mcjit,
}


def percentile(xs: list[float], q: float) -> float:
    ys = sorted(xs)
    k = min(len(ys) - 1, max(0, round(q * (len(ys) - 1))))
    return ys[k]


def run(methods: list[str], iterations: int, warmup: int) -> dict:
    shm_root = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    workdir = Path(tempfile.mkdtemp(prefix="hotlink-bench-"))
    shm = Path(tempfile.mkdtemp(prefix="hotlink-bench-", dir=shm_root))
    try:
        obj, so = build(workdir)
        total = warmup + iterations
        steps: dict[str, Step] = {}
        teardowns: list[Callable[[], None]] = []
        for m in methods:
            step, teardown = FACTORIES[m](obj, so, total, shm)
            steps[m] = step
            teardowns.append(teardown)

        samples: dict[str, list[float]] = {m: [] for m in methods}
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for i in range(total):
                # rotate the order so no method always runs first / after another
                k = i % len(methods)
                for m in methods[k:] + methods[:k]:
                    ns = steps[m](i)
                    if i >= warmup:
                        samples[m].append(ns / 1000.0)
                if i % 256 == 255:
                    gc.collect()
        finally:
            if gc_was_enabled:
                gc.enable()
            for teardown in reversed(teardowns):
                teardown()
    finally:
        shutil.rmtree(shm, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)

    results = {}
    for m in methods:
        xs = samples[m]
        results[m] = {
            "median_us": statistics.median(xs),
            "min_us": min(xs),
            "p90_us": percentile(xs, 0.9),
            "mean_us": statistics.fmean(xs),
            "samples": len(xs),
        }
    base = results.get("dlopen", {}).get("median_us")
    for m in methods:
        results[m]["ratio_vs_dlopen"] = results[m]["median_us"] / base if base else None
    return results


def environment() -> dict:
    env = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    try:
        import llvmlite
        env["llvmlite"] = llvmlite.__version__
    except ImportError:
        pass
    try:
        env["gcc"] = subprocess.run(["gcc", "-dumpfullversion"], capture_output=True,
                                    text=True).stdout.strip()
    except OSError:
        pass
    return env


def table(results: dict) -> str:
    lines = ["| method | median µs | min µs | p90 µs | ratio vs dlopen |",
             "|---|---:|---:|---:|---:|"]
    for m, r in results.items():
        ratio = f"{r['ratio_vs_dlopen']:.2f}" if r["ratio_vs_dlopen"] is not None else "n/a"
        lines.append(f"| {m} | {r['median_us']:.1f} | {r['min_us']:.1f} | {r['p90_us']:.1f} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer iterations (smoke test)")
    ap.add_argument("--iterations", type=int, help="timed iterations per method")
    ap.add_argument("--warmup", type=int, help="untimed iterations per method first")
    ap.add_argument("--methods", default=",".join(ALL_METHODS),
                    help=f"comma-separated subset of {','.join(ALL_METHODS)}")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = ap.parse_args(argv)

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in FACTORIES]
    if unknown:
        ap.error(f"unknown method(s): {', '.join(unknown)}")
    iterations = args.iterations or (100 if args.quick else 2000)
    warmup = args.warmup if args.warmup is not None else (10 if args.quick else 50)

    results = run(methods, iterations, warmup)

    print(f"Link latency of a tiny object (f(x)=x*3+1): {iterations} interleaved iterations, "
          f"{warmup} warm-up, medians\n")
    print(table(results))
    headline = None
    if "hotlink" in results and "dlopen" in results:
        headline = results["hotlink"]["ratio_vs_dlopen"]
        print(f"\nhotlink/dlopen = {headline:.3f}  (target from issues 2 and 11: <= 0.5)")
    over_mcjit = None
    if "hotlink" in results and "mcjit" in results:
        over_mcjit = results["hotlink"]["median_us"] / results["mcjit"]["median_us"]
        print(f"hotlink/MCJIT = {over_mcjit:.3f}  (target from issue 11: <= 1.0)")

    if args.json:
        doc = {
            "benchmark": "link_latency",
            "iterations": iterations,
            "warmup": warmup,
            "object": SOURCE.strip(),
            "environment": environment(),
            "results": results,
            "hotlink_over_dlopen": headline,
            "hotlink_over_mcjit": over_mcjit,
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
