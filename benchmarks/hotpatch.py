#!/usr/bin/env python3
"""Hot-patching costs: a call through an entry stub, and ``replace``.

1. Stub overhead: a native loop (JIT code) calls ``f(x) = x + 1`` defined in
   another unit, 10^8 times per repetition; once with ``f`` in an ordinary
   library (a direct ``call``) and once in a patchable library (``call`` to the
   stub, ``jmp *slot``).  Repetitions interleave; the figure is the difference
   of the medians per call.  For reference, the same loop and ``f`` built as
   two shared objects (the call goes through the PLT) and loaded with dlopen.
2. ``replace`` latency: median time of ``Library.replace`` (and of the two
   halves of a prepared replace: ``prepare_replace`` and ``commit``) on a tiny unit in a
   patchable library, objects compiled beforehand, alternating two versions;
   for reference, what llvmlite's LLJIT needs for the nearest equivalent
   (link the new object into a fresh JITDylib, look it up, drop the old one).

Usage: hotpatch.py [--quick] [--json PATH]
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
import time
from pathlib import Path

KERNEL = "__attribute__((noinline)) int f(int x) { return x + 1; }\n"
LOOP = "extern int f(int); long run(long n) { long s = 0; for (long i = 0; i < n; i++) s += f((int)i); return s; }\n"
VERSION = "int value(void) {{ return {v}; }}\n"


def cc(src: str, out: Path, *flags: str) -> Path:
    c = out.with_suffix(".c")
    c.write_text(src)
    subprocess.run(["gcc", "-O2", *flags, str(c), "-o", str(out)], check=True)
    return out


def stub_overhead(work: Path, calls: int, reps: int) -> dict:
    import hotlink

    kernel_o = cc(KERNEL, work / "kernel.o", "-c", "-fPIC").read_bytes()
    loop_o = cc(LOOP, work / "loop.o", "-c", "-fPIC").read_bytes()
    kernel_so = cc(KERNEL, work / "libkernel.so", "-shared", "-fPIC")
    loop_so = cc(LOOP, work / "libloop.so", "-shared", "-fPIC", f"-L{work}", "-lkernel",
                 f"-Wl,-rpath,{work}")
    runs = {}
    with hotlink.Session() as s:
        direct = s.library("direct")
        direct.add(kernel_o)
        runs["direct"] = s.library("loop_direct", link_order=[direct])
        runs["direct"].add(loop_o)
        patch = s.library("patch", patchable=True)
        patch.add(kernel_o)
        runs["stub"] = s.library("loop_stub", link_order=[patch])
        runs["stub"].add(loop_o)
        fns = {k: lib.function("run", ctypes.c_long, [ctypes.c_long]) for k, lib in runs.items()}
        ctypes.CDLL(str(kernel_so), mode=ctypes.RTLD_GLOBAL)
        fns["dlopen (PLT)"] = ctypes.CDLL(str(loop_so)).run
        fns["dlopen (PLT)"].restype = ctypes.c_long
        fns["dlopen (PLT)"].argtypes = [ctypes.c_long]
        expected = sum(i + 1 for i in range(1000))
        for name, fn in fns.items():
            assert fn(1000) == expected, name
        times: dict[str, list[float]] = {k: [] for k in fns}
        for r in range(reps):
            order = list(fns.items())
            order = order[r % len(order):] + order[:r % len(order)]
            for name, fn in order:
                t0 = time.perf_counter_ns()
                fn(calls)
                times[name].append((time.perf_counter_ns() - t0) / calls)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"ns_per_call": med, "stub_extra_ns": med["stub"] - med["direct"],
            "calls_per_rep": calls, "reps": reps}


def replace_latency(work: Path, n: int) -> dict:
    import llvmlite.binding as llvm

    import hotlink

    objs = [cc(VERSION.format(v=v), work / f"v{v}.o", "-c", "-fPIC").read_bytes() for v in (1, 2)]
    hl, lj, prep, commit = [], [], [], []
    with hotlink.Session() as s:
        lib = s.library("p", patchable=True)
        u = lib.add(objs[0])
        value = lib.function("value", ctypes.c_int)
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        lljit = llvm.create_lljit_compiler()
        rt = llvm.JITLibraryBuilder().add_object_img(objs[0]).export_symbol("value").link(lljit, "v0")
        for i in range(n):
            obj = objs[(i + 1) % 2]
            t0 = time.perf_counter_ns()
            u = lib.replace(u, obj)
            hl.append(time.perf_counter_ns() - t0)
            assert value() == (i + 1) % 2 + 1
            # the same swap, prepared off the hot path: only commit() is on it
            t0 = time.perf_counter_ns()
            pending = lib.prepare_replace(u, objs[i % 2])
            t1 = time.perf_counter_ns()
            u = pending.commit()
            commit.append(time.perf_counter_ns() - t1)
            prep.append(t1 - t0)
            assert value() == i % 2 + 1
            u = lib.replace(u, obj)
            t0 = time.perf_counter_ns()
            new = llvm.JITLibraryBuilder().add_object_img(obj).export_symbol("value").link(lljit, f"v{i + 1}")
            addr = new["value"]
            old, rt = rt, new
            del old                                # drop the old library, as replace does
            lj.append(time.perf_counter_ns() - t0)
            assert ctypes.CFUNCTYPE(ctypes.c_int)(addr)() == (i + 1) % 2 + 1
        s.synchronize()
        assert s.memory().retired == 0
    return {"hotlink_replace_us": statistics.median(hl) / 1000,
            "hotlink_prepare_us": statistics.median(prep) / 1000,
            "hotlink_commit_us": statistics.median(commit) / 1000,
            "lljit_relink_us": statistics.median(lj) / 1000, "iterations": n}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    calls, reps, n = (10_000_000, 3, 200) if args.quick else (100_000_000, 7, 2000)
    with tempfile.TemporaryDirectory(prefix="hotlink-hotpatch-") as d:
        work = Path(d)
        stub = stub_overhead(work, calls, reps)
        rep = replace_latency(work, n)
    print(f"Call through an entry stub: {calls:,} calls per repetition, {reps} interleaved repetitions, medians\n")
    print("| loop calling f(x)=x+1 | ns per call |")
    print("|---|---:|")
    for k, v in stub["ns_per_call"].items():
        print(f"| {k} | {v:.3f} |")
    print(f"\nextra cost of the stub: {stub['stub_extra_ns']:.3f} ns per call (target <= 1 ns)\n")
    print(f"Replace latency, tiny unit, {n} replaces, medians (compilation excluded)\n")
    print("| operation | median µs |")
    print("|---|---:|")
    print(f"| hotlink `Library.replace` (patchable) | {rep['hotlink_replace_us']:.1f} |")
    print(f"| hotlink `prepare_replace` (off the hot path) | {rep['hotlink_prepare_us']:.1f} |")
    print(f"| hotlink `PendingReplace.commit` (the swap) | {rep['hotlink_commit_us']:.1f} |")
    print(f"| llvmlite LLJIT: link new JITDylib + lookup + drop old | {rep['lljit_relink_us']:.1f} |")
    print("\n(target for hotlink's commit: <= 20 µs)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "machine": platform.machine(), "python": sys.version.split()[0],
            "stub": stub, "replace": rep}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
