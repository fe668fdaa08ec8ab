#!/usr/bin/env python3
"""Link latency of one big object: all of Debian's libsqlite3.a merged by ``ld -r``.

The object is built here, in a temporary directory, from the installed
archive (``libsqlite3-dev``): ``ar x libsqlite3.a`` then ``ld -r -o sqlite.o
*.o``, about 2 MB with some 24,000 relocations, 4,600 symbols and 2,700
``.eh_frame`` records.  Every method is timed from "here are the object's
bytes" (in memory) to "here are the addresses of the API functions":

  hotlink   Session() once; per iteration ``lib = s.library(name)`` (untimed),
            then timed ``lib.add(obj)`` + ``lib.address(sym)`` for each of
            ``SYMBOLS``; ``lib.remove()`` afterwards, untimed.
  lljit     llvmlite's LLJIT: timed ``JITLibraryBuilder().add_object_img(obj)
            .add_current_process()``, every symbol exported, ``.link(lljit,
            name)`` and ``rt[sym]`` each; ``rt.close()`` afterwards, untimed.
  mcjit     llvmlite's MCJIT: a fresh engine per iteration (untimed: MCJIT
            cannot remove an object, and two copies of sqlite in one engine
            would clash), then timed ``add_object_file`` + ``finalize_object``
            + ``get_function_address(sym)`` each.

After each link, untimed, the linked sqlite must really work: its version
number equals the system's ``libsqlite3.so.0`` and, for hotlink, it opens an
in-memory database, creates a table, inserts and counts a row, and shuts
down.  LLJIT and MCJIT link this object without an error, but the code they
produce crashes in ``sqlite3_open`` (a ``movdqa`` from a misaligned address;
``ld -r`` keeps each member's local ``.LC31``, a dozen symbols of one name in
different sections, and the reference seems to reach another one).  So for them the query runs once per run in a
child process (``--probe METHOD``), untimed, and its fate is recorded as
``full_check`` beside their timings; the timed loop checks the version only.

Methods are interleaved (one iteration of each, in rotating order, then the
next); garbage is collected between iterations, untimed.  Reported: the
median (and min, p90) per method in milliseconds and every ratio between
them; the headline figure is hotlink/LLJIT.

Usage: big_object.py [--quick] [--iterations N] [--warmup N]
                     [--methods hotlink,lljit,mcjit] [--json PATH]
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

ROOT = Path(__file__).resolve().parent.parent
if (ROOT / "src" / "hotlink").is_dir() and str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))    # benchmark this checkout

ARCHIVE = Path("/usr/lib/x86_64-linux-gnu/libsqlite3.a")     # Debian's libsqlite3-dev
SYMBOLS = ("sqlite3_libversion_number", "sqlite3_open", "sqlite3_exec", "sqlite3_close", "sqlite3_shutdown")
ALL_METHODS = ("hotlink", "lljit", "mcjit")

Lookup = Callable[[str], int]
Step = Callable[[int], int]


def build(workdir: Path) -> bytes:
    """The archive's members merged into one relocatable object."""
    if not ARCHIVE.is_file():
        raise SystemExit(f"big_object: {ARCHIVE} is not installed (apt-get install libsqlite3-dev)")
    members = workdir / "members"
    members.mkdir()
    subprocess.run(["ar", "x", str(ARCHIVE)], cwd=members, check=True)
    objects = sorted(p.name for p in members.glob("*.o"))
    out = workdir / "sqlite.o"
    subprocess.run(["ld", "-r", "-o", str(out), *objects], cwd=members, check=True)
    return out.read_bytes()


def describe(obj: bytes) -> dict:
    """What the object holds: sizes and counts a linker works through."""
    from hotlink import elf
    o = elf.ObjectFile(obj, "sqlite.o")
    alloc = [i for i in range(o.shnum) if o.sh_flags[i] & elf.SHF_ALLOC]
    relocs = sum(o.sh_size[r] // elf.RELA.size for r in range(o.shnum)
                 if o.sh_type[r] == elf.SHT_RELA and o.sh_info[r] in alloc)
    eh = [i for i in alloc if o.section_name(i) == ".eh_frame"]
    return {"bytes": len(obj), "sections": o.shnum, "symbols": len(o.sym_info),
            "global_symbols": len(o.sym_info) - o.first_global, "relocations": relocs,
            "eh_frame_bytes": sum(o.sh_size[i] for i in eh)}


_system: ctypes.CDLL | None = None


def check_version(addr: Lookup, method: str) -> None:
    """The linked sqlite answers with the system's version number."""
    global _system
    if _system is None:
        _system = ctypes.CDLL("libsqlite3.so.0")
    version = ctypes.CFUNCTYPE(ctypes.c_int)(addr("sqlite3_libversion_number"))()
    if version != _system.sqlite3_libversion_number():
        raise SystemExit(f"{method}: sqlite3_libversion_number() = {version}, "
                         f"the system's is {_system.sqlite3_libversion_number()}")


def check(addr: Lookup, method: str) -> None:
    """The linked sqlite works: same version as the system's, a real query."""
    check_version(addr, method)
    db = ctypes.c_void_p()
    open_ = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p))(addr("sqlite3_open"))
    callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_char_p),
                                ctypes.POINTER(ctypes.c_char_p))
    exec_ = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, callback, ctypes.c_void_p,
                             ctypes.c_void_p)(addr("sqlite3_exec"))
    close = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)(addr("sqlite3_close"))
    shutdown = ctypes.CFUNCTYPE(ctypes.c_int)(addr("sqlite3_shutdown"))
    rows: list[bytes] = []

    def row(_arg: int, n: int, values: ctypes.Array, _names: ctypes.Array) -> int:
        rows.append(values[0])
        return 0

    if open_(b":memory:", ctypes.byref(db)) != 0:
        raise SystemExit(f"{method}: sqlite3_open failed")
    sql = b"CREATE TABLE t(x); INSERT INTO t VALUES (6 * 7); SELECT count(*) || ':' || sum(x) FROM t;"
    rc = exec_(db, sql, callback(row), None, None)
    close(db)
    shutdown()          # the copy's own static state goes before its code does
    if rc != 0 or rows != [b"1:42"]:
        raise SystemExit(f"{method}: sqlite3_exec returned {rc} with rows {rows!r}")


# the methods whose linked code runs the query in the timed loop (--probe adds its method)
FULL_CHECK = {"hotlink"}


def checker(method: str) -> Callable[[Lookup, str], None]:
    return check if method in FULL_CHECK else check_version


def probe(method: str, obj: bytes) -> str:
    """Whether ``method``'s linked sqlite runs the query: in a child process,
    which may crash.  "ok", or what became of the child."""
    with tempfile.NamedTemporaryFile(suffix=".o") as f:
        f.write(obj)
        f.flush()
        p = subprocess.run([sys.executable, __file__, "--probe", method, "--object", f.name],
                           capture_output=True, text=True, timeout=300)
    if p.returncode == 0:
        return "ok"
    if p.returncode < 0:
        return f"crashed (signal {-p.returncode}) in the query"
    tail = (p.stderr.strip().splitlines() or ["?"])[-1]
    return f"failed (exit {p.returncode}): {tail}"


def probe_child(method: str, path: str) -> int:
    FULL_CHECK.add(method)
    step, teardown = FACTORIES[method](Path(path).read_bytes())
    step(0)
    teardown()
    return 0


# Each method is a factory: setup() -> (step(i) -> ns, teardown()).  step(i)
# does one untimed preparation, one timed link, the untimed check and cleanup,
# and returns the timed duration in nanoseconds.

def method_hotlink(obj: bytes) -> tuple[Step, Callable[[], None]]:
    import hotlink

    s = hotlink.Session()
    clock = time.perf_counter_ns

    def step(i: int) -> int:
        lib = s.library(f"sqlite{i}")
        t0 = clock()
        lib.add(obj)
        addrs = {sym: lib.address(sym) for sym in SYMBOLS}
        t1 = clock()
        checker("hotlink")(addrs.__getitem__, "hotlink")
        lib.remove()
        return t1 - t0

    return step, s.close


def method_lljit(obj: bytes) -> tuple[Step, Callable[[], None]]:
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    lljit = llvm.create_lljit_compiler()
    builder_cls = llvm.JITLibraryBuilder
    clock = time.perf_counter_ns

    def step(i: int) -> int:
        t0 = clock()
        b = builder_cls().add_object_img(obj).add_current_process()
        for sym in SYMBOLS:
            b.export_symbol(sym)
        rt = b.link(lljit, f"sqlite{i}")
        addrs = {sym: rt[sym] for sym in SYMBOLS}
        t1 = clock()
        checker("lljit")(addrs.__getitem__, "lljit")
        rt.close()
        return t1 - t0

    return step, lambda: None


def method_mcjit(obj: bytes) -> tuple[Step, Callable[[], None]]:
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    clock = time.perf_counter_ns

    def step(i: int) -> int:
        # the engine owns its target machine: a fresh one of each per iteration
        tm = llvm.Target.from_default_triple().create_target_machine()
        engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), tm)
        t0 = clock()
        engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
        engine.finalize_object()
        addrs = {sym: engine.get_function_address(sym) for sym in SYMBOLS}
        t1 = clock()
        checker("mcjit")(addrs.__getitem__, "mcjit")
        engine.close()
        return t1 - t0

    return step, lambda: None


FACTORIES = {"hotlink": method_hotlink, "lljit": method_lljit, "mcjit": method_mcjit}


def percentile(xs: list[float], q: float) -> float:
    ys = sorted(xs)
    return ys[min(len(ys) - 1, max(0, round(q * (len(ys) - 1))))]


def run(obj: bytes, methods: list[str], iterations: int, warmup: int) -> dict:
    steps: dict[str, Step] = {}
    teardowns: list[Callable[[], None]] = []
    for m in methods:
        step, teardown = FACTORIES[m](obj)
        steps[m] = step
        teardowns.append(teardown)
    samples: dict[str, list[float]] = {m: [] for m in methods}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(warmup + iterations):
            k = i % len(methods)
            for m in methods[k:] + methods[:k]:          # rotate who goes first
                ms = steps[m](i) / 1e6
                if i >= warmup:
                    samples[m].append(ms)
                gc.collect()
            print(f"iteration {i + 1}/{warmup + iterations}: "
                  + ", ".join(f"{m} {samples[m][-1]:.1f} ms" for m in methods if samples[m]),
                  file=sys.stderr, flush=True)
    finally:
        if gc_was_enabled:
            gc.enable()
        for teardown in reversed(teardowns):
            teardown()
    results: dict[str, dict] = {}
    for m in methods:
        xs = samples[m]
        results[m] = {"median_ms": statistics.median(xs), "min_ms": min(xs), "p90_ms": percentile(xs, 0.9),
                      "mean_ms": statistics.fmean(xs), "samples": len(xs)}
    for m in methods:
        for peer in methods:
            if peer != m:
                results[m][f"ratio_vs_{peer}"] = results[m]["median_ms"] / results[peer]["median_ms"]
    return results


def environment() -> dict:
    env = {"python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.machine(),
           "cpu_count": os.cpu_count()}
    try:
        import llvmlite
        env["llvmlite"] = llvmlite.__version__
    except ImportError:
        pass
    try:
        import numpy
        env["numpy"] = numpy.__version__
    except ImportError:
        env["numpy"] = None
    return env


def table(results: dict) -> str:
    peers = [m for m in ("lljit", "mcjit") if m in results]
    lines = ["| method | median ms | min ms | p90 ms | " + " | ".join(f"ratio vs {p}" for p in peers) + " |",
             "|---|---:|---:|---:|" + "---:|" * len(peers)]
    for m, r in results.items():
        ratios = [f"{r[f'ratio_vs_{p}']:.2f}" if p != m else "1.00" for p in peers]
        lines.append(f"| {m} | {r['median_ms']:.2f} | {r['min_ms']:.2f} | {r['p90_ms']:.2f} | "
                     + " | ".join(ratios) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer iterations (smoke test)")
    ap.add_argument("--iterations", type=int, help="timed iterations per method")
    ap.add_argument("--warmup", type=int, help="untimed iterations per method first")
    ap.add_argument("--methods", default=",".join(ALL_METHODS),
                    help=f"comma-separated subset of {','.join(ALL_METHODS)}")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--probe", metavar="METHOD", help=argparse.SUPPRESS)
    ap.add_argument("--object", metavar="PATH", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.probe:
        return probe_child(args.probe, args.object)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in FACTORIES]
    if unknown:
        ap.error(f"unknown method(s): {', '.join(unknown)}")
    iterations = args.iterations or (5 if args.quick else 40)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)

    workdir = Path(tempfile.mkdtemp(prefix="hotlink-big-"))
    try:
        obj = build(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    info = describe(obj)
    results = run(obj, methods, iterations, warmup)
    for m in methods:
        results[m]["full_check"] = "ok (every iteration)" if m in FULL_CHECK else probe(m, obj)

    print(f"Link latency of one big object (libsqlite3.a merged by ld -r: {info['bytes']:,} bytes, "
          f"{info['relocations']:,} relocations, {info['symbols']:,} symbols): {iterations} interleaved "
          f"iterations, {warmup} warm-up, medians\n")
    print(table(results))
    for m, r in results.items():
        print(f"{m}: the linked sqlite runs a query: {r['full_check']}")
    headline = results["hotlink"].get("ratio_vs_lljit") if "hotlink" in results else None
    if headline is not None:
        print(f"\nhotlink/LLJIT = {headline:.3f}  (target from issue 11: <= 0.5)")
    if args.json:
        doc = {"benchmark": "big_object", "iterations": iterations, "warmup": warmup,
               "object": {"archive": str(ARCHIVE), "built_with": "ar x; ld -r", **info},
               "symbols_looked_up": list(SYMBOLS), "environment": environment(), "results": results,
               "hotlink_over_lljit": headline,
               "hotlink_over_mcjit": results["hotlink"].get("ratio_vs_mcjit") if "hotlink" in results else None}
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
