#!/usr/bin/env python3
"""Run every benchmark in ``benchmarks/``, record the machine, write
``results.json`` and render the plots.

    python benchmarks/run.py [--quick] [--output DIR] [--only NAME,...]   (make bench)
    python benchmarks/run.py --table [RESULTS]   print the table of a results file
    python benchmarks/run.py --readme [RESULTS] [--check]
                                               rewrite (or check) README.md's figures
    python benchmarks/run.py --figures [RESULTS] list the figure names README.md can use

A script of the repository, not a command of the installed package: it
measures the hotlink of the checkout it sits in (``src/`` first on the path,
for itself and for every benchmark it runs).

Each benchmark script runs as its own subprocess with ``--json PATH`` (and
``--quick`` for a smoke run); each one compares hotlink with the
alternatives (``dlopen``, llvmlite's LLJIT and MCJIT) in the same run,
interleaving or alternating the methods, and reports medians or ratios.
This runner only collects: every figure in ``results.json`` comes from the
scripts' JSON of this run, nothing is typed in by hand.

One benchmark lives here rather than in ``benchmarks/`` because no script
measures it: link latency of a whole real archive (Debian's ``libz.a`` and
``liblua5.4.a``), hotlink vs LLJIT, interleaved.  It also runs as a
subprocess (``python benchmarks/run.py --archive-child --json PATH``).

The plots are drawn by ``benchmarks/plots.py`` (matplotlib) from the
results file, also in a subprocess, so the runner itself needs only ``rich``.

Every benchmark figure in README.md is generated: ``figures()`` formats each
fact of a results file once, under one name, and ``render_readme`` rewrites
the regions README.md marks (``<!-- fig:NAME -->...<!-- /fig -->`` inline,
``<!-- figures:BLOCK -->...<!-- /figures -->`` for the tables and plots).
A full run that writes into the benchmarks directory updates README.md too;
``--readme`` does it for an existing results file, and
``tests/test_readme_figures.py`` fails when README.md is stale.

Scripts that are expected but missing (``compile_parallel.py`` while it is
being written) are recorded as ``skipped`` with a note; a script that fails
is recorded as ``failed`` with the tail of its stderr, the other benchmarks
still run, and the exit status is 1.  A script killed by a signal (LLVM
aborts on a failed assertion) is run again, up to ``--retries`` times; the
crashes are kept in ``results.json`` (``crashed_attempts``) and printed.
"""
from __future__ import annotations

import argparse
import ctypes
import datetime as _dt
import gc
import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
SRC = BENCH_DIR.parent / "src"
if (SRC / "hotlink").is_dir() and str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))      # the checkout's hotlink, not an installed one

SCHEMA = 1

# The benchmarks the README's Performance section is built from, in the
# order they run.  Any other ``benchmarks/*.py`` (not starting with ``_``,
# not ``plots.py``) runs too, after these, and is recorded as it reports.
EXPECTED = ("link_latency", "archive_latency", "big_object", "churn", "footprint", "hotpatch", "call",
            "compile_parallel")
BUILTIN = {"archive_latency"}
NOT_BENCHMARKS = {"plots", "run"}

ARCHIVES = {
    "zlib": Path("/usr/lib/x86_64-linux-gnu/libz.a"),
    "lua": Path("/usr/lib/x86_64-linux-gnu/liblua5.4.a"),
}

PLOTS = {  # file -> the results sections it draws from
    "plot_link_latency.png": ("link_latency", "archive_latency"),
    "plot_big_object.png": ("big_object",),
    "plot_churn.png": ("churn",),
    "plot_footprint.png": ("footprint",),
    "plot_hotpatch.png": ("hotpatch",),
    "plot_compile.png": ("compile_parallel",),
}


# --- where things are -----------------------------------------------------------

def package_root() -> Path:
    """The directory that holds the ``hotlink`` package being run (``src``
    in a checkout): children get it first on PYTHONPATH, so every
    benchmark measures this very hotlink."""
    import hotlink
    return Path(hotlink.__file__).resolve().parent.parent


def find_benchmarks_dir(explicit: str | None) -> Path:
    if explicit:
        d = Path(explicit)
    else:
        d = BENCH_DIR                                   # this script's directory
    if not d.is_dir():
        raise SystemExit(f"benchmarks/run.py: no benchmarks directory at {d}")
    return d.resolve()


def discover(bdir: Path) -> list[str]:
    """Benchmark names to run: the expected ones (even if missing: they are
    then skipped with a note), then any other script in ``benchmarks/``."""
    found = sorted(p.stem for p in bdir.glob("*.py")
                   if not p.stem.startswith("_") and p.stem not in NOT_BENCHMARKS)
    return list(EXPECTED) + [n for n in found if n not in EXPECTED]


# --- the machine ------------------------------------------------------------------

def _cmd_out(cmd: list[str], cwd: Path | None = None) -> str | None:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return p.stdout.strip() if p.returncode == 0 else None


def machine_info(repo: Path | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {}
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info["cpu_model"] = cpu or platform.processor() or "unknown"
    info["cpu_count"] = os.cpu_count()
    try:
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        info["cpus_usable"] = os.cpu_count()
    info["machine"] = platform.machine()
    info["kernel"] = platform.release()
    info["os"] = platform.platform()
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    info["distribution"] = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            info["memory_total_bytes"] = int(f.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    info["page_size"] = os.sysconf("SC_PAGE_SIZE")
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            info["vm_max_map_count"] = int(f.read())
    except (OSError, ValueError):
        pass
    info["virtualization"] = _cmd_out(["systemd-detect-virt"]) or None
    info["python"] = platform.python_version()
    info["python_implementation"] = platform.python_implementation()
    info["python_executable"] = sys.executable
    libc = platform.libc_ver()
    info["libc"] = " ".join(x for x in libc if x) or None
    try:
        import llvmlite
        import llvmlite.binding as llvm
        info["llvmlite"] = llvmlite.__version__
        info["llvm"] = ".".join(map(str, llvm.llvm_version_info))
    except Exception as e:      # recorded, not fatal here
        info["llvmlite"] = f"unavailable: {e}"
    info["gcc"] = _cmd_out(["gcc", "-dumpfullversion"])
    first = (_cmd_out(["gcc", "--version"]) or "").splitlines()
    info["gcc_banner"] = first[0] if first else None
    from importlib.metadata import PackageNotFoundError, version
    for dist in ("rich", "matplotlib"):
        try:
            info[dist] = version(dist)
        except PackageNotFoundError:
            info[dist] = None
    from hotlink import __version__ as hl_version
    info["hotlink"] = hl_version
    if repo is not None:
        commit = _cmd_out(["git", "rev-parse", "HEAD"], cwd=repo)
        if commit:
            info["git_commit"] = commit
            status = _cmd_out(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo)
            info["git_dirty"] = bool(status)
    return info


# --- the built-in benchmark: link latency of a whole archive -------------------

def _archive_members(data: bytes, path: str) -> tuple[list[bytes], list[str]]:
    """The archive's members (ELF objects) and the global symbols its index names."""
    from hotlink.archive import Archive
    a = Archive(data, path)
    members = [data[m.data_start:m.data_start + m.size] for m in a.members.values()]
    members = [m for m in members if m[:4] == b"\x7fELF"]
    return members, sorted(a.index)


def _archive_checks() -> dict[str, Callable[[Callable[[str], int]], None]]:
    """Per archive: call into the linked code through an address lookup,
    so a baseline that links but produces broken code cannot pass."""
    import zlib

    def zlib_check(addr: Callable[[str], int]) -> None:
        crc32 = ctypes.CFUNCTYPE(ctypes.c_ulong, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_uint)(addr("crc32"))
        if crc32(0, b"hotlink", 7) != zlib.crc32(b"hotlink"):
            raise AssertionError("zlib: crc32 gave a wrong result")

    def lua_check(addr: Callable[[str], int]) -> None:
        version = ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_void_p)(addr("lua_version"))
        if version(None) != 504.0:
            raise AssertionError("lua: lua_version() is not 504")
        newstate = ctypes.CFUNCTYPE(ctypes.c_void_p)(addr("luaL_newstate"))
        close = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(addr("lua_close"))
        L = newstate()
        if not L:
            raise AssertionError("lua: luaL_newstate returned NULL")
        close(L)

    return {"zlib": zlib_check, "lua": lua_check}


def _archive_methods(session: Any, lljit: Any, arch: str, data: bytes, members: list[bytes], syms: list[str],
                     check: Callable[[Callable[[str], int]], None]) -> dict[str, Callable[[], int]]:
    """The two timed ways of linking one archive; each returns nanoseconds."""
    import llvmlite.binding as llvm
    clock = time.perf_counter_ns
    counter = [0]

    def run_hotlink() -> int:
        counter[0] += 1
        lib = session.library(f"{arch}{counter[0]}")
        t0 = clock()
        lib.add(data)
        addrs = {s: lib.address(s) for s in syms}
        t1 = clock()
        check(addrs.__getitem__)
        lib.remove()
        return t1 - t0

    def run_lljit() -> int:
        counter[0] += 1
        t0 = clock()
        b = llvm.JITLibraryBuilder()
        for m in members:
            b.add_object_img(m)
        b.add_current_process()
        for s in syms:
            b.export_symbol(s)
        rt = b.link(lljit, f"{arch}{counter[0]}")
        t1 = clock()
        check(rt.__getitem__)
        rt.close()
        return t1 - t0

    return {"hotlink": run_hotlink, "lljit": run_lljit}


def archive_latency(iterations: int, warmup: int) -> dict[str, Any]:
    """Median time from the archive's bytes (already in memory) to the
    addresses of every symbol its index names, hotlink vs LLJIT, interleaved.

    hotlink: one Session; per iteration a fresh library, timed
    ``lib.add(archive_bytes)`` + ``lib.address(sym)`` for every indexed
    symbol (this pulls every member that defines one: the whole archive),
    then, untimed, a call check and ``lib.remove()``.

    LLJIT: llvmlite's LLJIT cannot take an archive, so every ELF member is
    added with ``add_object_img`` (the members are split out before timing),
    plus ``add_current_process()`` for libc/libm, every indexed symbol
    exported; timed ``JITLibraryBuilder(...).link()`` (which returns all the
    addresses); untimed, a call check and ``ResourceTracker.close()``.
    """
    import llvmlite.binding as llvm

    import hotlink

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    lljit = llvm.create_lljit_compiler()
    checks = _archive_checks()
    out: dict[str, Any] = {"iterations": iterations, "warmup": warmup, "archives": {}}
    session = hotlink.Session()
    try:
        for arch, path in ARCHIVES.items():
            if not path.is_file():
                out["archives"][arch] = {"path": str(path), "error": "not installed"}
                continue
            data = path.read_bytes()
            members, syms = _archive_members(data, str(path))
            check = checks[arch]
            methods = _archive_methods(session, lljit, arch, data, members, syms, check)
            names = list(methods)
            samples: dict[str, list[float]] = {m: [] for m in names}
            gc_on = gc.isenabled()
            gc.disable()
            try:
                for i in range(warmup + iterations):
                    k = i % len(names)
                    for m in names[k:] + names[:k]:        # rotate who goes first
                        ns = methods[m]()
                        if i >= warmup:
                            samples[m].append(ns / 1e6)
                    gc.collect()
            finally:
                if gc_on:
                    gc.enable()
            res: dict[str, Any] = {"path": str(path), "bytes": len(data), "members": len(members),
                                   "symbols": len(syms), "methods": {}}
            for m in names:
                xs = sorted(samples[m])
                res["methods"][m] = {"median_ms": statistics.median(xs), "min_ms": xs[0],
                                     "p90_ms": xs[min(len(xs) - 1, round(0.9 * (len(xs) - 1)))],
                                     "samples": len(xs)}
            res["lljit_over_hotlink"] = res["methods"]["lljit"]["median_ms"] / res["methods"]["hotlink"]["median_ms"]
            out["archives"][arch] = res
            print(f"{arch}: {len(members)} members, {len(syms)} symbols; median hotlink "
                  f"{res['methods']['hotlink']['median_ms']:.2f} ms, LLJIT "
                  f"{res['methods']['lljit']['median_ms']:.2f} ms "
                  f"(LLJIT/hotlink = {res['lljit_over_hotlink']:.2f})", flush=True)
    finally:
        session.close()
    return out


def archive_child(args: argparse.Namespace) -> int:
    iterations = 10 if args.quick else 100
    warmup = 2 if args.quick else 5
    print(f"[archive_latency] {iterations} interleaved iterations per archive, {warmup} warm-up",
          file=sys.stderr, flush=True)
    doc = archive_latency(iterations, warmup)
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
    return 0


# --- running one benchmark ------------------------------------------------------

def child_env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(package_root())
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("MPLBACKEND", "Agg")
    return env


def run_child(cmd: list[str], cwd: Path, timeout: float | None,
              on_line: Callable[[str], None]) -> tuple[int | None, str, str, float]:
    """Run ``cmd``; stream its stderr lines to ``on_line``; return
    (returncode or None on timeout, stdout, stderr, seconds)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, env=child_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, errors="replace")
    out_chunks: list[str] = []
    err_lines: list[str] = []

    def read_out() -> None:
        assert p.stdout is not None
        out_chunks.append(p.stdout.read())

    def read_err() -> None:
        assert p.stderr is not None
        for line in p.stderr:
            err_lines.append(line)
            if line.strip():
                on_line(line.strip())

    threads = [threading.Thread(target=read_out, daemon=True), threading.Thread(target=read_err, daemon=True)]
    for t in threads:
        t.start()
    try:
        rc: int | None = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        rc = None
    for t in threads:
        t.join()
    return rc, "".join(out_chunks), "".join(err_lines), time.perf_counter() - t0


def cpu_counters() -> tuple[float, float, float]:
    """(CPU-seconds all processes spent busy, CPU-seconds the hypervisor
    stole, CPU-seconds this process and its waited-for descendants used)."""
    import resource
    tick = os.sysconf("SC_CLK_TCK")
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return math.nan, math.nan, math.nan
    busy = (v[0] + v[1] + v[2] + v[5] + v[6]) / tick       # user nice system irq softirq
    steal = v[7] / tick if len(v) > 7 else 0.0
    own = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        own += r.ru_utime + r.ru_stime
    return busy, steal, own


def cpu_report(before: tuple[float, float, float], after: tuple[float, float, float],
               seconds: float) -> dict[str, float]:
    """How much CPU other processes took while a benchmark ran: the
    machine's busy time minus ours (approximate: descendants count once
    they have been waited for)."""
    busy, steal, own = (a - b for a, b in zip(after, before))
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    other = max(0.0, busy - own)
    return {"own_cpu_s": round(own, 2), "other_cpu_s": round(other, 2), "steal_cpu_s": round(steal, 2),
            "other_share": round(other / (seconds * ncpu), 3) if seconds > 0 else 0.0}


def command_for(name: str, bdir: Path, quick: bool, json_path: Path) -> list[str] | None:
    if name in BUILTIN:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--archive-child"]
    else:
        script = bdir / f"{name}.py"
        if not script.is_file():
            return None
        cmd = [sys.executable, str(script)]
    if quick:
        cmd.append("--quick")
    return cmd + ["--json", str(json_path)]


# --- the summary: the figures the table and plots use ------------------------------

def summarize_link_latency(d: dict[str, Any]) -> dict[str, Any]:
    methods: dict[str, Any] = {}
    for m, v in d["results"].items():
        methods[m] = {"median_us": v["median_us"], "min_us": v["min_us"], "p90_us": v["p90_us"],
                      "ratio_vs_dlopen": v.get("ratio_vs_dlopen")}
    return {"iterations": d.get("iterations"), "methods": methods}


def summarize_archive_latency(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for arch, a in d["archives"].items():
        if "error" in a:
            out[arch] = {"error": a["error"]}
            continue
        out[arch] = {"members": a["members"], "symbols": a["symbols"],
                     "hotlink_ms": a["methods"]["hotlink"]["median_ms"],
                     "lljit_ms": a["methods"]["lljit"]["median_ms"],
                     "lljit_over_hotlink": a["lljit_over_hotlink"]}
    return out


def summarize_big_object(d: dict[str, Any]) -> dict[str, Any]:
    obj = d["object"]
    return {"iterations": d.get("iterations"), "bytes": obj["bytes"], "relocations": obj["relocations"],
            "symbols": obj["symbols"],
            "methods": {m: {"median_ms": v["median_ms"], "min_ms": v["min_ms"], "p90_ms": v["p90_ms"],
                            "full_check": v.get("full_check")} for m, v in d["results"].items()}}


def summarize_churn(d: dict[str, Any]) -> dict[str, Any]:
    # a child that died reports no "warmup" of its own: it is the same for all methods
    warmups = [r["warmup"] for r in d["results"] if isinstance(r.get("warmup"), int)]
    out: dict[str, Any] = {"cycles": d["cycles"], "warmup": warmups[0] if warmups else None,
                           "distinct": d.get("distinct"), "methods": {}}
    for r in d["results"]:
        m = r["method"]
        s = {"died": "error" in r, "error": r.get("error")}
        for k in ("last_cycle", "rss_warmup", "rss_last", "growth", "us_per_cycle", "mappings_last"):
            s[k] = r.get(k)
        warm = r.get("warmup", out["warmup"])
        if s["growth"] is not None and s["last_cycle"] and warm is not None:
            s["growth_per_cycle"] = s["growth"] / max(1, s["last_cycle"] - warm)
        s["samples"] = len(r.get("samples", []))
        out["methods"][m] = s
    return out


def summarize_footprint(d: dict[str, Any]) -> dict[str, Any]:
    warmups = [r["warmup"] for r in d["results"] if isinstance(r.get("warmup"), int)]
    out: dict[str, Any] = {"units": d["units"], "warmup": warmups[0] if warmups else None, "methods": {}}
    for r in d["results"]:
        m = r["method"]
        if "error" in r:
            out["methods"][m] = {"error": r["error"]}
            continue
        detail = r.get("per_unit_detail", {})
        out["methods"][m] = {"bytes_per_unit": r["per_unit"],
                             "pss_bytes_per_unit": detail.get("Pss"),
                             "shmem_bytes_per_unit": detail.get("RssShmem"),
                             "us_per_load": r.get("us_per_load")}
    return out


def summarize_hotpatch(d: dict[str, Any]) -> dict[str, Any]:
    st, rp = d["stub"], d["replace"]
    return {"ns_per_call": dict(st["ns_per_call"]), "stub_extra_ns": st["stub_extra_ns"],
            "calls_per_rep": st.get("calls_per_rep"), "reps": st.get("reps"),
            "hotlink_replace_us": rp["hotlink_replace_us"], "lljit_relink_us": rp["lljit_relink_us"],
            "hotlink_prepare_us": rp.get("hotlink_prepare_us"), "hotlink_commit_us": rp.get("hotlink_commit_us"),
            "replace_iterations": rp.get("iterations")}


def summarize_call(d: dict[str, Any]) -> dict[str, Any]:
    return {"calls_per_rep": d.get("calls_per_rep"), "reps": d.get("reps"),
            "ns_per_call": {n: {m: v["median_ns"] for m, v in by.items()} for n, by in d["ns_per_call"].items()},
            "ratios": d["ratios"]}


def summarize_compile_parallel(d: dict[str, Any]) -> dict[str, Any]:
    warm = d["warm_cache_seconds"]
    sizes = d.get("instructions") or []
    out = {"modules": d["modules"], "cpus": d.get("cpus"), "reps": d.get("reps"),
           "instructions_min": min(sizes) if sizes else None,
           "instructions_max": max(sizes) if sizes else None,
           "median_seconds": dict(d["median_seconds"]),
           "speedup_2_vs_1": d["speedup_2_vs_1"],
           "cold_cache_seconds": d["cold_cache_seconds"],
           "warm_cache_seconds": statistics.median(warm) if isinstance(warm, list) else warm,
           "cache_speedup": d["cache_speedup"]}
    if d.get("contended_speedup") is not None:      # recorded by compile_parallel.py since issue 14
        out["contended_seconds"] = statistics.median(d["contended_seconds"])
        out["contended_speedup"] = d["contended_speedup"]
    return out


SUMMARIZERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "link_latency": summarize_link_latency,
    "archive_latency": summarize_archive_latency,
    "big_object": summarize_big_object,
    "churn": summarize_churn,
    "footprint": summarize_footprint,
    "hotpatch": summarize_hotpatch,
    "call": summarize_call,
    "compile_parallel": summarize_compile_parallel,
}


def summaries(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The summary of every benchmark that ran, recomputed from its raw data
    (so a field added to a summarizer is there for an older results file
    too); a benchmark without a summarizer keeps the summary it recorded."""
    out: dict[str, dict[str, Any]] = {}
    for name, rec in results["benchmarks"].items():
        if rec.get("status") != "ok":
            continue
        if name in SUMMARIZERS and isinstance(rec.get("data"), dict):
            out[name] = SUMMARIZERS[name](rec["data"])
        elif isinstance(rec.get("summary"), dict):
            out[name] = rec["summary"]
    return out


# --- the figures: every number the README shows, formatted once -------------------
#
# ``figures(results)`` maps a name (``link.tiny.hotlink_over_dlopen``) to the
# text of that figure (``1.13×``).  The tables, the console ratios and every
# marked figure in README.md take their text from this one mapping, so one
# fact has one text wherever it appears.  ``render_readme`` rewrites the
# marked regions of README.md:
#
#     <!-- fig:NAME -->TEXT<!-- /fig -->        an inline figure (never at the start of a line)
#     <!-- figures:BLOCK -->                    a generated block: performance_table,
#     ...                                       compile_table or plots
#     <!-- /figures -->
#
# ``python benchmarks/run.py --figures`` lists every name with its text.

class FigureError(ValueError):
    """README.md names a figure the results file cannot give, or its markers are malformed."""


def _fmt(x: float | None, unit: str = "", digits: int = 1) -> str:
    if x is None:
        return "—"
    if abs(x) >= 10000:
        s = f"{x:,.0f}"
    else:
        s = f"{x:,.{digits}f}"
    return f"{s} {unit}".rstrip()


def _count(n: int) -> str:
    """1,000; a large exact power of ten as 10⁸."""
    if n >= 10**6 and str(n).rstrip("0") == "1":
        return "10" + str(len(str(n)) - 1).translate(str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹"))
    return f"{n:,}"


def _size(b: float) -> str:
    """A memory size in B, KiB or MiB (a negative size keeps its sign)."""
    if abs(b) >= 2**20:
        return f"{b / 2**20:,.1f} MiB"
    return f"{b / 1024:,.0f} KiB" if abs(b) >= 1024 else f"{b:,.0f} B"


def _duration(seconds: float) -> str:
    """2.58 s, 1,409 ms, 2.1 ms, 32 µs."""
    if seconds >= 1:
        return f"{seconds:.2f} s"
    ms = seconds * 1e3
    if ms >= 100:
        return f"{ms:,.0f} ms"
    if ms >= 1:
        return f"{ms:.1f} ms"
    us = ms * 1e3
    return f"{us:.0f} µs" if us >= 10 else f"{us:.1f} µs"


def _ratio(r: float, digits: int = 2) -> str:
    return f"{r:,.{digits}f}×"


def _range(values: list[Any], fmt: Callable[[Any], str]) -> str:
    """``1.24–1.36×`` (the unit once), or one figure if they print the same."""
    lo, hi = fmt(min(values)), fmt(max(values))
    if lo == hi:
        return lo
    num = lo.rstrip("×").split(" ")[0]
    return f"{num}–{hi}"


def software_line(m: dict[str, Any]) -> str:
    """Debian 12, Linux 6.18, Python 3.11.7, llvmlite 0.50.0 with LLVM 22.1.0, gcc 12.2.0, glibc 2.36."""
    bits = []
    if m.get("distribution"):
        bits.append(re.sub(r"\s*\(.*\)$", "", m["distribution"]).replace(" GNU/Linux", ""))
    if m.get("kernel"):
        bits.append("Linux " + ".".join(re.split(r"[.-]", m["kernel"])[:2]))
    bits.append(f"Python {m.get('python')}")
    bits.append(f"llvmlite {m.get('llvmlite')} with LLVM {m.get('llvm')}")
    if m.get("gcc"):
        bits.append(f"gcc {m['gcc']}")
    if m.get("libc"):
        bits.append(m["libc"])
    return ", ".join(bits)


# the compile methods' names in results.json -> figure names (time; speed-up over 1 worker)
COMPILE_METHODS = {"1 worker": ("compile.one_worker", None),
                   "2 workers": ("compile.two_workers", "compile.speedup"),
                   "2 threads (in-process)": ("compile.two_threads", "compile.two_threads_speedup")}


def figures(results: dict[str, Any]) -> dict[str, str]:
    """Every figure of a results file, by name, as the README shows it."""
    S = summaries(results)
    B = results["benchmarks"]
    F: dict[str, str] = {}

    m = results.get("machine", {})
    if m.get("cpus_usable"):
        F["machine.cpus"] = str(m["cpus_usable"])
    if m.get("cpu_model"):
        F["machine.cpu"] = m["cpu_model"]
    F["machine.software"] = software_line(m)
    if m.get("vm_max_map_count"):
        F["machine.vm_max_map_count"] = _count(m["vm_max_map_count"])
    if results.get("seconds"):
        F["run.minutes"] = str(max(1, round(results["seconds"] / 60)))
    shares = [r["cpu"]["other_share"] for r in B.values()
              if r.get("status") == "ok" and isinstance(r.get("cpu", {}).get("other_share"), (int, float))]
    if shares:
        worst = max(shares)
        F["run.other_cpu_share"] = "under 1%" if worst < 0.01 else f"up to {worst:.0%}"

    ll = S.get("link_latency")
    if ll:
        if ll.get("iterations"):
            F["link.tiny.iterations"] = _count(ll["iterations"])
        med = {k: v["median_us"] for k, v in ll["methods"].items()}
        for k, v in med.items():
            F[f"link.tiny.{k}"] = _fmt(v, "µs")
        h = med.get("hotlink")
        for k in ("dlopen", "lljit", "mcjit"):
            if h and med.get(k):
                F[f"link.tiny.hotlink_over_{k}"] = _ratio(h / med[k])

    al = S.get("archive_latency")
    if al:
        its = B["archive_latency"].get("data", {}).get("iterations")
        if its:
            F["link.archive.iterations"] = _count(its)
        ok = {arch: a for arch, a in al.items() if "error" not in a}
        for arch, a in ok.items():
            F[f"link.{arch}.members"] = _count(a["members"])
            F[f"link.{arch}.symbols"] = _count(a["symbols"])
            F[f"link.{arch}.hotlink"] = _fmt(a["hotlink_ms"], "ms", 2)
            F[f"link.{arch}.lljit"] = _fmt(a["lljit_ms"], "ms", 2)
            F[f"link.{arch}.lljit_over_hotlink"] = _ratio(a["lljit_over_hotlink"])
        if ok:
            F["link.archives.lljit_over_hotlink"] = _range([a["lljit_over_hotlink"] for a in ok.values()], _ratio)

    bo = S.get("big_object")
    if bo:
        if bo.get("iterations"):
            F["link.big.iterations"] = _count(bo["iterations"])
        F["link.big.size"] = _size(bo["bytes"])
        F["link.big.relocations"] = _count(bo["relocations"])
        F["link.big.symbols"] = _count(bo["symbols"])
        med = {k: v["median_ms"] for k, v in bo["methods"].items()}
        for k, v in med.items():
            F[f"link.big.{k}"] = _fmt(v, "ms", 2)
        h = med.get("hotlink")
        for k in ("lljit", "mcjit"):
            if h and med.get(k):
                F[f"link.big.hotlink_over_{k}"] = _ratio(h / med[k])

    ch = S.get("churn")
    if ch:
        F["churn.cycles"] = _count(ch["cycles"])
        if ch.get("warmup") is not None:
            F["churn.warmup"] = _count(ch["warmup"])
        if ch.get("distinct"):
            F["churn.distinct"] = _count(ch["distinct"])
        for k, v in ch["methods"].items():
            if v.get("growth") is not None:
                F[f"churn.{k}.growth"] = _size(v["growth"])
            per = v.get("growth_per_cycle")
            if per is not None:
                F[f"churn.{k}.growth_per_cycle"] = f"{per:,.1f} B" if abs(per) < 10 else f"{per:,.0f} B"
            if v.get("last_cycle"):
                F[f"churn.{k}.last_cycle"] = _count(v["last_cycle"])
            if v.get("mappings_last"):
                F[f"churn.{k}.mappings_last"] = _count(v["mappings_last"])

    fp = S.get("footprint")
    if fp:
        F["footprint.units"] = _count(fp["units"])
        if fp.get("warmup") is not None:
            F["footprint.warmup"] = _count(fp["warmup"])
            F["footprint.measured_units"] = _count(fp["units"] - fp["warmup"])
        fm = {k: v for k, v in fp["methods"].items() if "error" not in v}
        for k, v in fm.items():
            F[f"footprint.{k}.bytes"] = _fmt(v["bytes_per_unit"], "B", 0)
            if v.get("pss_bytes_per_unit") is not None:
                F[f"footprint.{k}.pss_bytes"] = _fmt(v["pss_bytes_per_unit"], "B", 0)
            if v.get("shmem_bytes_per_unit") is not None:
                F[f"footprint.{k}.shmem_bytes"] = _size(v["shmem_bytes_per_unit"])
            if v.get("us_per_load") is not None:
                F[f"footprint.{k}.load"] = _fmt(v["us_per_load"], "µs", 0)
        h = fm.get("hotlink", {}).get("bytes_per_unit")
        for k in ("dlopen", "lljit"):
            o = fm.get(k, {}).get("bytes_per_unit")
            if h and o:
                F[f"footprint.{k}_over_hotlink"] = _ratio(o / h, 0)

    hp = S.get("hotpatch")
    if hp:
        ns = hp["ns_per_call"]
        for k, name in (("direct", "direct"), ("stub", "stub"), ("dlopen (PLT)", "plt")):
            if ns.get(k) is not None:
                F[f"hotpatch.call.{name}"] = _fmt(ns[k], "ns", 2)
        if ns.get("direct") is not None:
            F["hotpatch.call.about"] = f"{ns['direct']:.0f} ns"     # "medians of about 1 ns"
        F["hotpatch.stub_extra"] = _fmt(hp["stub_extra_ns"], "ns", 2)
        if hp.get("calls_per_rep"):
            F["hotpatch.calls_per_rep"] = _count(hp["calls_per_rep"])
        if hp.get("reps"):
            F["hotpatch.reps"] = _count(hp["reps"])
        F["hotpatch.replace.hotlink"] = _fmt(hp["hotlink_replace_us"], "µs")
        F["hotpatch.replace.lljit"] = _fmt(hp["lljit_relink_us"], "µs")
        if hp.get("replace_iterations"):
            F["hotpatch.replace.iterations"] = _count(hp["replace_iterations"])
        if hp.get("hotlink_commit_us") is not None:
            F["hotpatch.replace.prepare"] = _fmt(hp["hotlink_prepare_us"], "µs")
            F["hotpatch.replace.commit"] = _fmt(hp["hotlink_commit_us"], "µs")

    ca = S.get("call")
    if ca:      # call.<method>.<threads>; method names as in results.json, spaces and parentheses dropped
        for n, by in ca["ns_per_call"].items():
            for m, v in by.items():
                F[f"call.{re.sub(r'[^a-z0-9]+', '_', m).strip('_')}.{n}"] = _fmt(v, "ns", 0)
        for n, r in ca["ratios"].items():
            for k, v in r.items():
                F[f"call.{k}.{n}"] = _ratio(v)
        if ca.get("calls_per_rep"):
            F["call.calls_per_rep"] = _count(ca["calls_per_rep"])
        if ca.get("reps"):
            F["call.reps"] = _count(ca["reps"])

    cp = S.get("compile_parallel")
    if cp:
        F["compile.modules"] = _count(cp["modules"])
        if cp.get("reps"):
            F["compile.reps"] = _count(cp["reps"])
        if cp.get("instructions_min") is not None:
            F["compile.instructions"] = _range([cp["instructions_min"], cp["instructions_max"]], _count)
        med = cp["median_seconds"]
        one = med.get("1 worker")
        for k, (name, speedup) in COMPILE_METHODS.items():
            if med.get(k) is not None:
                F[name] = _duration(med[k])
                if one and speedup:
                    F[speedup] = _ratio(one / med[k])
        F["compile.cold_cache"] = _duration(cp["cold_cache_seconds"])
        F["compile.warm_cache"] = _duration(cp["warm_cache_seconds"])
        if one:
            F["compile.cold_cache_speedup"] = _ratio(one / cp["cold_cache_seconds"])
        F["compile.cache_speedup"] = _ratio(cp["cache_speedup"], 0)
        if cp.get("contended_speedup") is not None:
            F["compile.contended"] = _duration(cp["contended_seconds"])
            F["compile.contended_speedup"] = _ratio(cp["contended_speedup"])
    return F


# --- the tables -------------------------------------------------------------------

def _markdown_table(head: list[str], align: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def table(results: dict[str, Any], F: dict[str, str] | None = None) -> str:
    """The README's Performance table: one row per figure, one column per method."""
    F = figures(results) if F is None else F
    S = summaries(results)
    g = F.get
    rows: list[list[str]] = []
    if "link_latency" in S:
        rows.append(["link a tiny object (median)"]
                    + [g(f"link.tiny.{k}", "—") for k in ("hotlink", "dlopen", "lljit", "mcjit")])
    for arch, a in (S.get("archive_latency") or {}).items():
        if "error" not in a:
            rows.append([f"link all of {arch} ({F[f'link.{arch}.members']} members, "
                         f"{F[f'link.{arch}.symbols']} symbols; median)",
                         F[f"link.{arch}.hotlink"], "—", F[f"link.{arch}.lljit"], "—"])
    if "big_object" in S:
        rows.append([f"link one {F['link.big.size']} object (all of sqlite merged by ld -r, "
                     f"{F['link.big.relocations']} relocations; median)",
                     g("link.big.hotlink", "—"), "—", g("link.big.lljit", "—"), g("link.big.mcjit", "—")])
    ch = S.get("churn")
    if ch:
        def growth(k: str) -> str:
            v = ch["methods"].get(k)
            if not v or v.get("growth") is None:
                return "—"
            s = ("+" if v["growth"] >= 0 else "") + F[f"churn.{k}.growth"]
            if f"churn.{k}.growth_per_cycle" in F:
                s += f" ({F[f'churn.{k}.growth_per_cycle']}/cycle)"
            if v.get("died"):
                s += f"; died after cycle {F[f'churn.{k}.last_cycle']}"
            return s
        rows.append([f"RSS growth over {F['churn.cycles']} add/call/remove cycles, "
                     f"after {g('churn.warmup', '0')} warm-up",
                     growth("hotlink"), "—", growth("lljit"), growth("mcjit")])
    if "footprint" in S:
        rows.append([f"resident bytes per loaded tiny unit ({F['footprint.units']} units)"]
                    + [g(f"footprint.{k}.bytes", "—") for k in ("hotlink", "dlopen", "lljit")] + ["—"])
    if "hotpatch" in S:
        rows.append(["call from JIT code: direct / through a patchable stub / via PLT (median)",
                     f"{g('hotpatch.call.direct', '—')} / {g('hotpatch.call.stub', '—')}",
                     g("hotpatch.call.plt", "—"), "—", "—"])
        rows.append(["replace a tiny function (median; LLJIT: link new library + drop old)",
                     F["hotpatch.replace.hotlink"], "—", F["hotpatch.replace.lljit"], "—"])
        if "hotpatch.replace.commit" in F:
            rows.append(["prepared replace: `prepare_replace` (off the hot path) / `commit` (the swap)",
                         f"{F['hotpatch.replace.prepare']} / {F['hotpatch.replace.commit']}", "—", "—", "—"])
    if "call" in S:
        rows.append(["call `int add1(int)` from Python, 1 / 2 threads (median; raw ctypes "
                     f"{F['call.ctypes.1']} / {F['call.ctypes.2']}, cffi {F['call.cffi_cast.1']} / "
                     f"{F['call.cffi_cast.2']})",
                     f"{F['call.hotlink.1']} / {F['call.hotlink.2']} ({F['call.hotlink_over_ctypes.1']} / "
                     f"{F['call.hotlink_over_ctypes.2']} ctypes)", "—", "—", "—"])
    if "compile_parallel" in S:
        rows.append([f"compile {F['compile.modules']} IR modules: 1 → 2 worker processes (median)",
                     f"{F['compile.one_worker']} → {F['compile.two_workers']} ({F['compile.speedup']})",
                     "—", "—", "—"])
        rows.append(["same compile: cold → warm object cache",
                     f"{F['compile.cold_cache']} → {F['compile.warm_cache']} ({F['compile.cache_speedup']})",
                     "—", "—", "—"])
    return _markdown_table(["figure", "hotlink", "dlopen", "LLJIT", "MCJIT"], ["---"] + ["---:"] * 4, rows)


def compile_table(results: dict[str, Any], F: dict[str, str] | None = None) -> str:
    """The README's Compile performance table: every way of compiling the same modules."""
    F = figures(results) if F is None else F
    cp = summaries(results).get("compile_parallel")
    if not cp:
        return ""
    n = cp["modules"]
    med = cp["median_seconds"]
    rows: list[list[str]] = []
    for k, (name, speedup) in COMPILE_METHODS.items():
        if med.get(k) is not None:
            rows.append([k, F[name], _duration(med[k] / n), F[speedup] if speedup else _ratio(1.0)])
    if cp.get("contended_speedup") is not None:
        rows.append(["2 workers, another CPU-bound process running", F["compile.contended"],
                     _duration(cp["contended_seconds"] / n), F["compile.contended_speedup"]])
    rows.append(["cold cache (2 workers)", F["compile.cold_cache"], _duration(cp["cold_cache_seconds"] / n),
                 F.get("compile.cold_cache_speedup", "—")])
    rows.append(["warm cache", F["compile.warm_cache"], _duration(cp["warm_cache_seconds"] / n),
                 f"{F['compile.cache_speedup']} vs the cold cache"])
    return _markdown_table(["method", "total", "per module", "speed-up vs 1 worker"],
                           ["---", "---:", "---:", "---:"], rows)


PLOT_TITLES = {
    "plot_link_latency.png": "Link latency: tiny object and whole archives",
    "plot_big_object.png": "Link latency: one big object (all of sqlite, ld -r)",
    "plot_churn.png": "Resident memory over {churn.cycles} add/remove cycles",
    "plot_footprint.png": "Resident bytes per loaded tiny unit",
    "plot_hotpatch.png": "Stub call overhead and replace latency",
    "plot_compile.png": "Parallel compile and object cache speedups",
}


def plots_markdown(results: dict[str, Any], F: dict[str, str] | None = None) -> str:
    """The README's plot images: the plots this run drew, in PLOTS order."""
    F = figures(results) if F is None else F
    drawn = results.get("plots") or {}
    lines = []
    for name in [p for p in PLOTS if p in drawn] + [p for p in drawn if p not in PLOTS]:
        title = re.sub(r"\{([\w.]+)\}", lambda m: F.get(m[1], "many"), PLOT_TITLES.get(name, str(name)))
        lines.append(f"![{title}](benchmarks/{name})")
    return "\n\n".join(lines)


BLOCKS: dict[str, Callable[[dict[str, Any], dict[str, str]], str]] = {
    "performance_table": table,
    "compile_table": compile_table,
    "plots": plots_markdown,
}


def ratios(results: dict[str, Any]) -> list[str]:
    """Headline ratios, as sentences (printed after a run)."""
    F = figures(results)
    out = []
    for k, label in (("dlopen", "dlopen"), ("lljit", "LLJIT"), ("mcjit", "MCJIT")):
        if f"link.tiny.hotlink_over_{k}" in F:
            out.append(f"tiny-object link: hotlink/{label} = {F[f'link.tiny.hotlink_over_{k}']}")
    for k, label in (("lljit", "LLJIT"), ("mcjit", "MCJIT")):
        if f"link.big.hotlink_over_{k}" in F:
            out.append(f"big object link (sqlite, ld -r): hotlink/{label} = {F[f'link.big.hotlink_over_{k}']}")
    for arch in ARCHIVES:
        if f"link.{arch}.lljit_over_hotlink" in F:
            out.append(f"{arch} archive link: LLJIT/hotlink = {F[f'link.{arch}.lljit_over_hotlink']}")
    for k, label in (("dlopen", "dlopen"), ("lljit", "LLJIT")):
        if f"footprint.{k}_over_hotlink" in F:
            out.append(f"resident bytes per unit: {label}/hotlink = {F[f'footprint.{k}_over_hotlink']}")
    if "hotpatch.stub_extra" in F:
        out.append(f"stub call overhead: {F['hotpatch.stub_extra']} per call; replace: hotlink "
                   f"{F['hotpatch.replace.hotlink']}, LLJIT relink {F['hotpatch.replace.lljit']}")
    if "call.hotlink_over_ctypes.1" in F:
        out.append(f"call from Python: hotlink/ctypes = {F['call.hotlink_over_ctypes.1']} (1 thread), "
                   f"{F['call.hotlink_over_ctypes.2']} (2 threads); hotlink/cffi = "
                   f"{F['call.hotlink_over_cffi.1']}, {F['call.hotlink_over_cffi.2']}")
    if "compile.speedup" in F:
        out.append(f"compile: 2 workers vs 1 = {F['compile.speedup']}; "
                   f"warm cache vs cold = {F['compile.cache_speedup']}")
    return out


def machine_line(m: dict[str, Any]) -> str:
    bits = [f"{m.get('cpu_model')}, {m.get('cpus_usable')} cores"]
    if m.get("virtualization"):
        bits[0] += f" (virtualized: {m['virtualization']})"
    bits.append(f"Linux {m.get('kernel')}")
    if m.get("distribution"):
        bits.append(m["distribution"])
    bits.append(f"Python {m.get('python')}")
    bits.append(f"llvmlite {m.get('llvmlite')} (LLVM {m.get('llvm')})")
    bits.append(f"gcc {m.get('gcc')}")
    if m.get("libc"):
        bits.append(m["libc"])
    return "; ".join(bits)


# --- the README -------------------------------------------------------------------

_INLINE = re.compile(r"<!-- fig:(?P<name>[^\s>]+) -->(?P<text>.*?)<!-- /fig -->")
_BLOCK = re.compile(r"<!-- figures:(?P<name>[^\s>]+) -->\n(?P<body>.*?)<!-- /figures -->", re.DOTALL)
_MARKER = re.compile(r"<!-- /?figs?(?:ures)?\b[^>]*-->")


def render_readme(text: str, results: dict[str, Any]) -> str:
    """``text`` (a README) with every marked figure and block rewritten from
    ``results``; everything outside the markers is kept as it is.  Raises
    FigureError for a name the results cannot give or a malformed marker."""
    F = figures(results)
    problems: list[str] = []

    def line_of(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    def block(m: re.Match[str]) -> str:
        name = m["name"]
        if name not in BLOCKS:
            problems.append(f"line {line_of(m.start())}: unknown block figures:{name} "
                            f"(known: {', '.join(BLOCKS)})")
            return m[0]
        try:
            body = BLOCKS[name](results, F).strip("\n")
        except KeyError as e:
            problems.append(f"line {line_of(m.start())}: block figures:{name} needs {e}, "
                            "which the results file lacks")
            return m[0]
        inner = f"\n{body}\n\n" if body else ""
        return f"<!-- figures:{name} -->\n{inner}<!-- /figures -->"

    def inline(m: re.Match[str]) -> str:
        name = m["name"]
        if name not in F:
            problems.append(f"line {line_of(m.start())}: no figure {name!r} in the results file")
            return m[0]
        return f"<!-- fig:{name} -->{F[name]}<!-- /fig -->"

    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("<!-- fig:"):
            problems.append(f"line {n}: an inline figure starts the line (Markdown would end the "
                            "paragraph there): move a word in front of it")
    leftover = _INLINE.sub("", _BLOCK.sub("", text))
    for m in _MARKER.finditer(leftover):
        problems.append(f"unmatched marker {m[0]!r} (an inline figure must open and close on one line; "
                        "a block closes with <!-- /figures -->)")
    # blocks first: their bodies are generated whole; then the inline figures of the prose
    out = _INLINE.sub(inline, _BLOCK.sub(block, text))
    if problems:
        raise FigureError("README figures:\n  " + "\n  ".join(problems))
    return out


def update_readme(readme: Path, results: dict[str, Any], check: bool = False) -> tuple[bool, str]:
    """Rewrite ``readme``'s figures from ``results`` (or, with ``check``, only
    compare).  Returns (up to date before the call, a message)."""
    old = readme.read_text()
    new = render_readme(old, results)
    if new == old:
        return True, f"{readme}: figures up to date"
    if check:
        import difflib
        diff = difflib.unified_diff(old.splitlines(), new.splitlines(), f"{readme} (committed)",
                                    f"{readme} (rendered from the results)", lineterm="", n=0)
        return False, "\n".join(diff)
    readme.write_text(new)
    return False, f"updated the figures in {readme}"


# --- the runner -----------------------------------------------------------------

class _Plain:
    """Progress for non-terminals: one line per event."""

    def __init__(self, total: int):
        self.total, self.done = total, 0

    def start(self, name: str) -> None:
        print(f"[{self.done + 1}/{self.total}] {name} ...", file=sys.stderr, flush=True)

    def line(self, name: str, text: str) -> None:
        pass

    def finish(self, name: str, status: str, seconds: float) -> None:
        self.done += 1
        print(f"[{self.done}/{self.total}] {name}: {status} ({seconds:.1f} s)", file=sys.stderr, flush=True)

    def __enter__(self) -> _Plain:
        return self

    def __exit__(self, *a: Any) -> None:
        pass


class _Rich:
    """A rich progress bar: one bar for the suite, the running benchmark's
    latest stderr line beside it."""

    def __init__(self, total: int):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        self.console = Console(stderr=True)
        self.progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.fields[bench]:<16}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.description}"),
                                 console=self.console, transient=False)
        self.task = self.progress.add_task("", total=total, bench="")

    def start(self, name: str) -> None:
        self.progress.update(self.task, bench=name, description="running")

    def line(self, name: str, text: str) -> None:
        self.progress.update(self.task, description=text[:70])

    def finish(self, name: str, status: str, seconds: float) -> None:
        colour = {"ok": "green", "skipped": "yellow"}.get(status.split(":")[0], "red")
        self.progress.console.print(f"  [{colour}]{name}: {status}[/] ({seconds:.1f} s)")
        self.progress.update(self.task, advance=1, description="")

    def __enter__(self) -> _Rich:
        self.progress.__enter__()
        return self

    def __exit__(self, *a: Any) -> None:
        self.progress.update(self.task, bench="done", description="")
        self.progress.__exit__(*a)


def make_progress(total: int, plain: bool) -> Any:
    if not plain:
        try:
            return _Rich(total)
        except ImportError:
            pass
    return _Plain(total)


def run_suite(names: list[str], bdir: Path, quick: bool, timeout: float | None,
              plain: bool, retries: int = 2) -> dict[str, dict]:
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="hotlink-bench-") as tmp, make_progress(len(names), plain) as prog:
        for name in names:
            jpath = Path(tmp) / f"{name}.json"
            cmd = command_for(name, bdir, quick, jpath)
            prog.start(name)
            rec: dict[str, Any] = {"script": "benchmarks/run.py (built in)" if name in BUILTIN
                                   else f"{bdir.name}/{name}.py"}
            if cmd is None:
                rec.update(status="skipped",
                           note=f"{bdir.name}/{name}.py does not exist (yet); nothing was measured")
                out[name] = rec
                prog.finish(name, "skipped: script not found", 0.0)
                continue
            rec["command"] = " ".join(shlex.quote(c) for c in [Path(cmd[0]).name, *cmd[1:-2]]) + " --json FILE"
            crashes: list[dict[str, Any]] = []
            while True:
                jpath.unlink(missing_ok=True)
                before = cpu_counters()
                rc, stdout, stderr, secs = run_child(cmd, bdir.parent, timeout, partial(prog.line, name))
                if rc is not None and rc < 0 and len(crashes) < retries:
                    # killed by a signal (an LLVM assertion aborts the process): keep
                    # the evidence, run it again from scratch
                    crashes.append({"error": f"killed by signal {-rc}", "seconds": round(secs, 2),
                                    "stderr_tail": stderr.strip().splitlines()[-8:]})
                    prog.line(name, f"crashed (signal {-rc}); running it again")
                    continue
                break
            if crashes:
                rec["crashed_attempts"] = crashes
            rec["seconds"] = round(secs, 2)
            rec["cpu"] = cpu_report(before, cpu_counters(), secs)
            rec["report"] = stdout.strip()
            problem = None
            if rc is None:
                problem = f"timed out after {timeout:.0f} s"
            elif rc != 0:
                problem = f"exit status {rc}" if rc > 0 else f"killed by signal {-rc}"
            elif not jpath.is_file():
                problem = "wrote no JSON"
            if problem is None:
                try:
                    rec["data"] = json.loads(jpath.read_text())
                except ValueError as e:
                    problem = f"unreadable JSON: {e}"
            if problem is None and name in SUMMARIZERS:
                try:
                    rec["summary"] = SUMMARIZERS[name](rec["data"])
                except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
                    problem = f"its JSON lacks what the summary needs: {type(e).__name__}: {e}"
            if problem is None:
                rec["status"] = "ok"
            else:
                rec["status"] = "failed"
                rec["error"] = problem
                rec["stderr_tail"] = stderr.strip().splitlines()[-30:]
            out[name] = rec
            status = rec["status"] if problem is None else f"failed: {problem}"
            if crashes:
                status += f" (after {len(crashes)} crashed attempt(s): {crashes[0]['error']})"
            if rec["cpu"]["other_share"] >= 0.05:
                status += f"; other processes used {rec['cpu']['other_share']:.0%} of the CPUs meanwhile"
            prog.finish(name, status, secs)
    return out


def render_plots(results_path: Path, out_dir: Path, bdir: Path) -> tuple[list[str], str | None]:
    script = bdir / "plots.py"
    if not script.is_file():
        return [], f"{script} not found"
    rc, stdout, stderr, _ = run_child([sys.executable, str(script), str(results_path), "--output", str(out_dir)],
                                      bdir.parent, 300, lambda s: None)
    if rc != 0:
        return [], f"plots.py failed (exit {rc}): " + " | ".join(stderr.strip().splitlines()[-5:])
    written = [ln.split(" ", 1)[1].strip() for ln in stdout.splitlines() if ln.startswith("wrote ")]
    return [Path(w).name for w in written], None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__.split("\n\n")[0].replace("``", ""))
    ap.add_argument("--quick", action="store_true", help="smoke run: every benchmark in its --quick mode (< 1 min)")
    ap.add_argument("--output", metavar="DIR",
                    help="where results.json and the PNGs go (default: the benchmarks directory)")
    ap.add_argument("--benchmarks", metavar="DIR", help="the benchmarks directory (default: <repo>/benchmarks)")
    ap.add_argument("--only", metavar="NAMES", help="comma-separated subset of benchmarks to run")
    ap.add_argument("--no-plots", action="store_true", help="skip the matplotlib plots")
    ap.add_argument("--timeout", type=float, help="seconds per benchmark (default: 300 with --quick, none otherwise)")
    ap.add_argument("--retries", type=int, default=2, metavar="N",
                    help="run a benchmark again (up to N times) if it is killed by a signal, e.g. an LLVM "
                         "assertion; the crashes are recorded in results.json (default: 2)")
    ap.add_argument("--plain", action="store_true", help="plain progress lines instead of a progress bar")
    ap.add_argument("--table", nargs="?", const="", metavar="RESULTS",
                    help="print the Markdown table of a results file (default: <benchmarks>/results.json) and exit")
    ap.add_argument("--readme", nargs="?", const="", metavar="RESULTS",
                    help="rewrite the marked figures of README.md from a results file (default: "
                         "<benchmarks>/results.json) and exit")
    ap.add_argument("--check", action="store_true",
                    help="with --readme: change nothing, show what differs and exit 1 if README.md is stale")
    ap.add_argument("--figures", nargs="?", const="", metavar="RESULTS",
                    help="list every figure name a README marker can use, with its text, and exit")
    ap.add_argument("--archive-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.archive_child:
        return archive_child(args)

    bdir = find_benchmarks_dir(args.benchmarks)
    if args.table is not None:
        path = Path(args.table) if args.table else bdir / "results.json"
        res = json.loads(path.read_text())
        print(f"Machine: {machine_line(res['machine'])}\n")
        print(table(res))
        return 0
    if args.figures is not None:
        path = Path(args.figures) if args.figures else bdir / "results.json"
        for name, text in sorted(figures(json.loads(path.read_text())).items()):
            print(f"{name} = {text}")
        return 0
    if args.readme is not None:
        path = Path(args.readme) if args.readme else bdir / "results.json"
        try:
            fresh, message = update_readme(bdir.parent / "README.md", json.loads(path.read_text()), args.check)
        except FigureError as e:
            print(e, file=sys.stderr)
            return 1
        print(message)
        return 0 if fresh or not args.check else 1
    if args.check:
        ap.error("--check goes with --readme")

    out_dir = Path(args.output).resolve() if args.output else bdir
    out_dir.mkdir(parents=True, exist_ok=True)
    names = discover(bdir)
    if args.only:
        want = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in want if n not in names]
        if unknown:
            ap.error(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(names)}")
        names = [n for n in names if n in want]
    timeout = args.timeout if args.timeout is not None else (300.0 if args.quick else None)
    plain = args.plain or not sys.stderr.isatty()

    started = _dt.datetime.now(_dt.timezone.utc)
    t0 = time.perf_counter()
    machine = machine_info(bdir.parent)
    cmdline = "python benchmarks/run.py" + "".join(f" {shlex.quote(a)}"
                                                   for a in (sys.argv[1:] if argv is None else argv))
    print(f"benchmarks/run.py{' --quick' if args.quick else ''}: {len(names)} benchmarks from {bdir}\n"
          f"machine: {machine_line(machine)}", file=sys.stderr, flush=True)
    load_start = os.getloadavg()
    benches = run_suite(names, bdir, args.quick, timeout, plain, args.retries)
    # other processes competing for the CPUs distort the timings: say so
    machine["loadavg_1min_start_end"] = [round(load_start[0], 2), round(os.getloadavg()[0], 2)]
    results: dict[str, Any] = {
        "schema": SCHEMA,
        "started": started.isoformat(timespec="seconds"),
        "command": cmdline,
        "quick": args.quick,
        "machine": machine,
        "benchmarks": benches,
    }
    results["seconds"] = round(time.perf_counter() - t0, 1)
    results_path = out_dir / "results.json"
    results["table_markdown"] = table(results)
    results["ratios"] = ratios(results)
    results["plots"] = {}
    results_path.write_text(json.dumps(results, indent=1) + "\n")

    plot_problem = None
    if not args.no_plots:
        written, plot_problem = render_plots(results_path, out_dir, bdir)
        results["plots"] = {w: list(PLOTS.get(w, ())) for w in written}
        if plot_problem:
            results["plots_error"] = plot_problem
        results["seconds"] = round(time.perf_counter() - t0, 1)
        results_path.write_text(json.dumps(results, indent=1) + "\n")

    readme_note = None
    readme = bdir.parent / "README.md"
    if out_dir == bdir and readme.is_file() and not args.quick and not args.only:
        # the results the README cites were just replaced by a full run: its figures follow them
        # (a smoke run's figures never reach the README; tests/test_readme_figures.py then fails)
        try:
            readme_note = update_readme(readme, results)[1]
        except FigureError as e:
            readme_note = f"README.md figures NOT updated ({e})"

    print(f"\nMachine: {machine_line(machine)}\n")
    print(results["table_markdown"])
    if results["ratios"]:
        print("\n" + "\n".join(f"- {r}" for r in results["ratios"]))
    failed = {n: r for n, r in benches.items() if r["status"] == "failed"}
    for n, r in benches.items():
        if r["status"] == "skipped":
            print(f"\nskipped {n}: {r['note']}")
    for n, r in benches.items():
        for c in r.get("crashed_attempts", []):
            print(f"\nnote: {n} crashed once and was run again: {c['error']}\n  "
                  + "\n  ".join(c["stderr_tail"][-3:]))
    for n, r in failed.items():
        print(f"\nFAILED {n}: {r['error']}\n  " + "\n  ".join(r.get("stderr_tail", [])[-10:]))
    busy = {n: r["cpu"]["other_share"] for n, r in benches.items()
            if r.get("cpu", {}).get("other_share", 0) >= 0.05}
    if busy:
        print("\nnote: other processes competed for the CPUs during "
              + ", ".join(f"{n} ({v:.0%})" for n, v in busy.items()) + "; their timings are less reliable")
    if plot_problem:
        print(f"\nplots: {plot_problem}")
    if readme_note:
        print(f"\n{readme_note}")
    print(f"\nwrote {results_path}" + "".join(f"\nwrote {out_dir / w}" for w in results["plots"])
          + f"\n({results['seconds']:.0f} s in all)")
    return 1 if failed or plot_problem else 0


if __name__ == "__main__":
    sys.exit(main())
