"""Resident bytes per loaded tiny unit.

Loads N tiny units (default 10,000; ``int f_i(int x){return x*K_i+1;}``,
names f_00000..f_09999, each its own object) and keeps them all loaded.
Every unit's function is called once (code that is loaded gets run, and a
call faults in the code page, which dlopen would otherwise leave untouched);
the callable is then dropped, only the unit's handle is kept.
Per-unit cost = (RSS after N - RSS after the warm-up of 500) / (N - 500).

Methods, each in its own subprocess:

* hotlink: one Session, one library, N ``lib.add`` calls (N units).
* lljit:   llvmlite LLJIT, one JIT library per unit from the same object
           bytes, ResourceTrackers kept alive.
* dlopen:  the same code as N ``.so`` files on /dev/shm, ``dlopen(RTLD_NOW |
           RTLD_LOCAL)`` through libc, handles kept.  The .so files are
           made like the objects: one gcc build (``-Wl,--hash-style=sysv``),
           names and constants patched, SysV hash table rebuilt (_tiny.py);
           each is checked through dlsym and a call.  They are written
           before the baseline; their tmpfs page cache is not counted
           beyond the pages the process maps.

If hotlink costs more than 1 KiB per unit, a second hotlink run under
tracemalloc shows which lines hold the memory (also with ``--investigate``).

    python benchmarks/footprint.py [--quick] [--units N] [--json out.json]
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import os
import shutil
import sys
import tempfile
import time

import _tiny
from _tiny import expected, log, name, rss, rss_detail

METHODS = ("hotlink", "lljit", "dlopen")
WARMUP = 500
TARGET = 1024            # hotlink: resident bytes per unit
FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)


# --- child side ------------------------------------------------------------

def fill(load, n: int, warmup: int, probe=None) -> dict:
    """Call ``load(i)`` for i < n (each returns a handle that is kept);
    RSS at the start, after the warm-up and every 10%."""
    keep = [None] * n                   # preallocated: the harness adds no per-unit bytes
    marks = {round(n * k / 10) for k in range(1, 11)}
    gc.collect()
    start = rss()
    samples, extra = [(0, start)], {}
    for i in range(n):
        keep[i] = load(i)
        k = i + 1
        if k == warmup:
            gc.collect()
            samples.append((k, rss()))
            warm_detail = rss_detail()
            if probe:
                extra["probe_warmup"] = probe("warmup")
            t_warm = time.perf_counter()
        elif k in marks:
            samples.append((k, rss()))
    t_end = time.perf_counter()
    gc.collect()
    end = rss()
    end_detail = rss_detail()
    if probe:
        extra["probe_end"] = probe("end")
    warm = dict(samples)[warmup]
    per = {key: (end_detail[key] - warm_detail[key]) / (n - warmup) for key in end_detail}
    return {
        "units": n, "warmup": warmup, "rss_start": start, "rss_warmup": warm, "rss_end": end,
        "per_unit": (end - warm) / (n - warmup), "per_unit_detail": per,
        "us_per_load": (t_end - t_warm) / (n - warmup) * 1e6,
        "samples": sorted(samples), "detail_warmup": warm_detail, "detail_end": end_detail,
        **extra,
    }


def run_hotlink(n: int, warmup: int, trace: bool) -> dict:
    import hotlink
    objs = _tiny.variants(n)
    _tiny.self_check(objs)
    s = hotlink.Session()
    lib = s.library("footprint")

    def load(i):
        u = lib.add(objs[i])
        if lib.function(name(i), ctypes.c_int, [ctypes.c_int])(7) != expected(i):
            raise AssertionError(f"hotlink: {name(i)} returned a wrong value")
        return u

    snaps = {}

    def probe(label):
        st = s.memory()
        if trace:
            import tracemalloc
            snaps[label] = tracemalloc.take_snapshot()
        return {"arena_mapped": st.mapped, "arena_used": st.used, "arena_resident": st.resident,
                "pools": st.pools, "got_entries": st.got_entries, "stubs": st.stubs,
                "units": len(lib.units), "symbols": st.libraries["footprint"].symbols}

    if trace:
        import tracemalloc
        tracemalloc.start(1)
    r = fill(load, n, warmup, probe)
    if trace:
        r["trace"] = trace_diff(snaps["warmup"], snaps["end"], n - warmup)
    s.close()
    return r


def trace_diff(a, b, units: int, top: int = 15) -> dict:
    """Python heap held per unit, by allocating line."""
    import tracemalloc
    filt = [tracemalloc.Filter(False, f) for f in (tracemalloc.__file__, __file__, _tiny.__file__)]
    a, b = a.filter_traces(filt), b.filter_traces(filt)
    stats = b.compare_to(a, "lineno")
    return {"traced_per_unit": sum(st.size_diff for st in stats) / units,
            "by_line": [{"where": f"{st.traceback[0].filename}:{st.traceback[0].lineno}",
                         "bytes_per_unit": st.size_diff / units, "blocks_per_unit": st.count_diff / units}
                        for st in stats[:top] if abs(st.size_diff) >= units]}   # >= 1 B/unit


def run_lljit(n: int, warmup: int, trace: bool) -> dict:
    import llvmlite.binding as llvm
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    objs = _tiny.variants(n)
    lljit = llvm.create_lljit_compiler()

    def load(i):
        rt = llvm.JITLibraryBuilder().add_object_img(objs[i]).export_symbol(name(i)).link(lljit, f"lib{i}")
        if FN(rt[name(i)])(7) != expected(i):
            raise AssertionError(f"lljit: {name(i)} returned a wrong value")
        return rt

    return fill(load, n, warmup)


def run_dlopen(n: int, warmup: int, trace: bool) -> dict:
    libc = ctypes.CDLL(None)
    dlopen, dlsym = libc.dlopen, libc.dlsym
    dlopen.restype = dlsym.restype = ctypes.c_void_p
    dlopen.argtypes = (ctypes.c_char_p, ctypes.c_int)
    dlsym.argtypes = (ctypes.c_void_p, ctypes.c_char_p)
    tmp = tempfile.mkdtemp(prefix="hotlink-footprint-", dir="/dev/shm")
    try:
        paths = []
        for i, data in enumerate(_tiny.variants(n, shared=True)):
            p = os.path.join(tmp, f"{name(i)}.so").encode()
            with open(p, "wb") as f:
                f.write(data)
            paths.append(p)
        del data

        def load(i):
            h = dlopen(paths[i], os.RTLD_NOW | os.RTLD_LOCAL)
            if not h:
                raise OSError(f"dlopen {paths[i]!r} failed")
            addr = dlsym(h, name(i).encode())
            if not addr or FN(addr)(7) != expected(i):
                raise AssertionError(f"dlopen: {name(i)} missing or returned a wrong value")
            return h

        return fill(load, n, warmup)
    finally:
        shutil.rmtree(tmp)


def child(args) -> None:
    log(f"[{args.method}] loading {args.units} tiny units" + (" (tracemalloc on)" if args.trace else ""))
    run = {"hotlink": run_hotlink, "lljit": run_lljit, "dlopen": run_dlopen}[args.method]
    r = run(args.units, WARMUP, args.trace)
    r["method"] = args.method
    _tiny.emit(r)


# --- parent side --------------------------------------------------------------

def report(results: list[dict]) -> str:
    rows = []
    base = next((r["per_unit"] for r in results if r["method"] == "hotlink" and "error" not in r), None)
    for r in results:
        if "error" in r:
            rows.append([r["method"], "error: " + r["error"]] + [""] * 7)
            continue
        d = r["per_unit_detail"]
        rows.append([r["method"], f"{r['units']:,}", f"{r['rss_warmup'] / 2**20:.1f}",
                     f"{r['rss_end'] / 2**20:.1f}", f"{r['per_unit']:,.0f}",
                     f"{d['RssAnon']:,.0f} / {d['RssFile']:,.0f} / {d['RssShmem']:,.0f}",
                     f"{d['Pss']:,.0f}", f"{r['us_per_load']:.1f}",
                     f"{r['per_unit'] / base:.1f}x" if base and base > 0 else ""])
    return _tiny.markdown_table(["method", "units", "RSS after warm-up (MiB)", "RSS at end (MiB)",
                                 "bytes/unit", "anon / file / shmem", "PSS bytes/unit",
                                 "µs/load", "vs hotlink"], rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--units", type=int, default=10_000)
    ap.add_argument("--quick", action="store_true", help="2,000 units")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--investigate", action="store_true",
                    help="always run hotlink again under tracemalloc and show what holds the memory")
    ap.add_argument("--method", help=argparse.SUPPRESS)      # child mode
    ap.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.units = 2000
    if args.units <= WARMUP:
        ap.error(f"--units must exceed the warm-up ({WARMUP})")
    if args.method:
        return child(args)
    sys.stdout.reconfigure(line_buffering=True)    # keep our lines in order with the children's stderr

    passthru = ["--units", str(args.units)]
    results = [_tiny.run_child(__file__, m, passthru) for m in args.methods.split(",")]
    print(f"\nfootprint: {args.units:,} tiny units kept loaded; bytes/unit = "
          f"(RSS(end) - RSS(after {WARMUP})) / {args.units - WARMUP:,}\n")
    print(report(results))
    out = {"units": args.units, "results": results}
    hl = next((r for r in results if r["method"] == "hotlink" and "error" not in r), None)
    if hl:
        ok = hl["per_unit"] <= TARGET
        e, w = hl["probe_end"], hl["probe_warmup"]
        k = args.units - WARMUP
        print(f"\nhotlink target (<= 1 KiB resident per unit): {'met' if ok else 'MISSED'} "
              f"({hl['per_unit']:,.0f} B/unit)")
        print(f"hotlink arena per unit: used {(e['arena_used'] - w['arena_used']) / k:,.0f} B, "
              f"mapped {(e['arena_mapped'] - w['arena_mapped']) / k:,.0f} B, "
              f"memfd resident {(e['arena_resident'] - w['arena_resident']) / k:,.0f} B; "
              f"pools (mapped, used) at end: {e['pools']}")
        if not ok or args.investigate:
            out["investigation"] = _tiny.investigate(__file__, passthru, print_investigation)
    _tiny.write_json(args.json, out)


def print_investigation(tr: dict) -> None:
    if "error" in tr:
        print(f"\ninvestigation run failed: {tr['error']}")
        return
    t = tr["trace"]
    print(f"\nhotlink under tracemalloc: traced Python heap {t['traced_per_unit']:,.0f} B/unit "
          f"(of {tr['per_unit']:,.0f} B/unit RSS in this run)")
    print(_tiny.markdown_table(["allocated at", "bytes/unit", "blocks/unit"],
                               [[x["where"], f"{x['bytes_per_unit']:,.1f}", f"{x['blocks_per_unit']:.2f}"]
                                for x in t["by_line"]]))


if __name__ == "__main__":
    main()
