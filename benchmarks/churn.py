"""Memory under endless add/remove: does a process that loads and unloads a
distinct small function forever stay flat?

Each cycle loads one tiny unit (``int f_i(int x){return x*K_i+1;}``), calls
it once through a ctypes callable and checks the result, then unloads it.
The distinct objects (2,000 by default, cycled through) are built before
any timing (see _tiny.py: one gcc build, variants by byte patching).

Methods, each in its own subprocess so RSS is separate:

* hotlink: one Session, one library; ``lib.add`` / ``lib.function`` / ``Unit.remove``.
* lljit:   llvmlite LLJIT, one JIT library per unit from the same object bytes
           (``JITLibraryBuilder().add_object_img().link()``), dropped with
           ``ResourceTracker.close()``.  Library names cannot be reused.
* mcjit:   llvmlite MCJIT takes modules, not objects: the same function as IR,
           ``add_module`` / ``finalize_object`` / ``remove_module``.  Its
           time includes compiling IR, so only its memory compares directly.

RSS is sampled after the warm-up (1,000 cycles) and every 1%; the growth is
RSS(end) - RSS(warm-up).  µs/cycle is measured after the warm-up, and over
the last 10% alone to show a slowdown.  A child that dies (LLVM aborts when
it cannot map more memory) is reported up to its last sample.  If hotlink
grows by more than 1 MiB, a second hotlink run under tracemalloc shows where
(also on demand with ``--investigate``).

    python benchmarks/churn.py [--quick] [--cycles N] [--json out.json]
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import json.encoder
import sys
import time
from collections import Counter

import _tiny
from _tiny import expected, log, name, rss, rss_detail

METHODS = ("hotlink", "lljit", "mcjit")
WARMUP = 1000
TARGET = 1 << 20          # hotlink: growth after warm-up within 1 MiB
FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)


# --- child side ------------------------------------------------------------

def churn(cycle, cycles: int, warmup: int, probe=None) -> dict:
    """Run ``cycle(i)`` for i < cycles.  (cycle, RSS, seconds since the
    warm-up, memory mappings) is sampled after the warm-up and every 1%, and emitted at once
    (see _tiny.emit).  ``probe(label)`` adds figures at warm-up and end."""
    marks = {round(cycles * k / 100) for k in range(1, 101)}
    samples, extra = [], {}
    t_warm = time.perf_counter()

    def sample(n):
        samples.append((n, rss(), time.perf_counter() - t_warm, _tiny.mappings()))
        _tiny.emit({"sample": samples[-1]})

    for i in range(cycles):
        cycle(i)
        n = i + 1
        if n == warmup:
            gc.collect()
            warm_detail = rss_detail()
            if probe:
                extra["probe_warmup"] = probe("warmup")
            t_warm = time.perf_counter()
            sample(n)
        elif n in marks:
            sample(n)
    gc.collect()
    end = rss()                         # after a collection: the figure the growth uses
    if probe:
        extra["probe_end"] = probe("end")
    return {"cycles": cycles, "warmup": warmup, "rss_end": end,
            "samples": samples, "detail_warmup": warm_detail, "detail_end": rss_detail(), **extra}


def summarize(r: dict, warmup: int) -> dict:
    """Figures from the samples; for a child that died, up to its last sample."""
    smp = [x for x in r.get("samples", []) if x[0] >= warmup]
    if not smp:
        return {}
    (n0, rss0, _, _), (n1, rss1, t1, maps1) = smp[0], smp[-1]
    rss1 = r.get("rss_end", rss1)
    tail = [x for x in smp if x[0] <= n1 - (n1 - n0) // 10] or smp[:1]
    return {"last_cycle": n1, "mappings_last": maps1, "rss_warmup": rss0, "rss_last": rss1, "growth": rss1 - rss0,
            "us_per_cycle": t1 / max(1, n1 - n0) * 1e6,
            "us_per_cycle_last10": (t1 - tail[-1][2]) / max(1, n1 - tail[-1][0]) * 1e6}


def run_hotlink(objs: list[bytes], cycles: int, warmup: int, trace: bool) -> dict:
    import hotlink
    s = hotlink.Session()
    lib = s.library("churn")
    m = len(objs)

    def cycle(i):
        j = i % m
        u = lib.add(objs[j])
        f = lib.function(name(j), ctypes.c_int, [ctypes.c_int])
        if f(7) != expected(j):
            raise AssertionError(f"hotlink: {name(j)} returned a wrong value")
        u.remove()

    snaps = {}

    def probe(label):
        st = s.memory()
        out = {"arena_mapped": st.mapped, "arena_used": st.used, "arena_resident": st.resident,
               "got_entries": st.got_entries, "stubs": st.stubs, "units": len(lib.units),
               "python_objects": len(gc.get_objects())}
        if trace:
            import tracemalloc
            # The warm-up snapshot itself holds thousands of tuples: count object
            # types after taking it, but before taking the one at the end.
            snap = tracemalloc.take_snapshot() if label == "warmup" else None
            counts: dict[str, int] = {}        # allocated here, so filtered out of the diff
            for o in gc.get_objects():
                t = type(o).__name__
                counts[t] = counts.get(t, 0) + 1
            snaps[label] = (snap or tracemalloc.take_snapshot(), counts)
        return out

    if trace:
        import tracemalloc
        tracemalloc.start(4)
    result = churn(cycle, cycles, warmup, probe)
    if trace:
        result["trace"] = trace_diff(snaps["warmup"], snaps["end"])
    s.close()
    return result


def trace_diff(a, b, top: int = 15) -> dict:
    """Where Python memory grew between two (snapshot, type counter) pairs."""
    import tracemalloc
    # leave out the harness's own allocations (most recent frame in these files)
    filt = [tracemalloc.Filter(False, f)
            for f in (tracemalloc.__file__, json.encoder.__file__, __file__, _tiny.__file__)]
    sa, sb = a[0].filter_traces(filt), b[0].filter_traces(filt)
    lines = [{"where": f"{st.traceback[0].filename}:{st.traceback[0].lineno}",
              "size_diff": st.size_diff, "count_diff": st.count_diff}
             for st in sb.compare_to(sa, "lineno")[:top] if st.size_diff]
    grown = Counter({k: v - a[1].get(k, 0) for k, v in b[1].items() if v > a[1].get(k, 0)})
    types = dict(grown.most_common(top))
    total = sum(st.size_diff for st in sb.compare_to(sa, "filename"))
    return {"traced_growth": total, "by_line": lines, "object_types_grown": types}


def run_lljit(objs: list[bytes], cycles: int, warmup: int, trace: bool) -> dict:
    import llvmlite.binding as llvm
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    lljit = llvm.create_lljit_compiler()
    m = len(objs)

    def cycle(i):
        j = i % m
        rt = (llvm.JITLibraryBuilder().add_object_img(objs[j]).export_symbol(name(j))
              .link(lljit, f"lib{i}"))
        if FN(rt[name(j)])(7) != expected(j):
            raise AssertionError(f"lljit: {name(j)} returned a wrong value")
        rt.close()                     # disposes the tracker: unloads the library

    return churn(cycle, cycles, warmup)


def run_mcjit(objs: list[bytes], cycles: int, warmup: int, trace: bool) -> dict:
    import llvmlite.binding as llvm
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    tm = llvm.Target.from_default_triple().create_target_machine()
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), tm)
    triple = llvm.get_process_triple()
    irs = [_tiny.ir_source(j, triple) for j in range(len(objs))]
    m = len(objs)

    def cycle(i):
        j = i % m
        mod = llvm.parse_assembly(irs[j])
        engine.add_module(mod)
        engine.finalize_object()
        if FN(engine.get_function_address(name(j)))(7) != expected(j):
            raise AssertionError(f"mcjit: {name(j)} returned a wrong value")
        engine.remove_module(mod)
        mod.close()

    return churn(cycle, cycles, warmup)


def child(args) -> None:
    objs = _tiny.variants(args.distinct)
    _tiny.self_check(objs)
    log(f"[{args.method}] {args.cycles} cycles over {len(objs)} distinct objects"
        + (" (tracemalloc on)" if args.trace else ""))
    run = {"hotlink": run_hotlink, "lljit": run_lljit, "mcjit": run_mcjit}[args.method]
    result = run(objs, args.cycles, WARMUP, args.trace)
    result.update(summarize(result, WARMUP), method=args.method, distinct=len(objs))
    _tiny.emit(result)


# --- parent side --------------------------------------------------------------

def report(results: list[dict], cycles: int) -> str:
    rows = []
    for r in results:
        if "growth" not in r:
            rows.append([r["method"], "failed"] + [""] * 6)
            continue
        n = r["last_cycle"]
        done = f"{n:,}" if "error" not in r else f"{n:,} of {cycles:,} (died)"
        rows.append([r["method"], done, f"{r['rss_warmup'] / 2**20:.1f}", f"{r['rss_last'] / 2**20:.1f}",
                     f"{r['growth'] / 1024:,.0f}", f"{r['growth'] / (n - WARMUP):,.1f}",
                     f"{r['us_per_cycle']:.1f}", f"{r['us_per_cycle_last10']:.1f}"])
    return _tiny.markdown_table(["method", "cycles", "RSS after warm-up (MiB)", "RSS at end (MiB)",
                                 "growth (KiB)", "growth (B/cycle)", "µs/cycle",
                                 "µs/cycle, last 10%"], rows)


def curve(r: dict) -> str:
    """RSS at the warm-up and at every 10% of the cycles done."""
    smp = r["samples"]
    last = smp[-1][0]
    pick = []
    for target in sorted({WARMUP, *(last * k / 10 for k in range(1, 11))}):
        x = next(x for x in smp if x[0] >= target)
        if x not in pick:
            pick.append(x)
    return "  ".join(f"{x[0]:,}:{x[1] / 2**20:.1f}" for x in pick)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=100_000)
    ap.add_argument("--quick", action="store_true", help="5,000 cycles")
    ap.add_argument("--distinct", type=int, default=2000, help="distinct objects to cycle through")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--investigate", action="store_true",
                    help="always run hotlink again under tracemalloc and show where memory grew")
    ap.add_argument("--method", help=argparse.SUPPRESS)      # child mode
    ap.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.cycles = 5000
    if args.cycles <= WARMUP:
        ap.error(f"--cycles must exceed the warm-up ({WARMUP})")
    if args.method:
        return child(args)
    sys.stdout.reconfigure(line_buffering=True)    # keep our lines in order with the children's stderr

    passthru = ["--cycles", str(args.cycles), "--distinct", str(args.distinct)]
    results = []
    for m in args.methods.split(","):
        r = _tiny.run_child(__file__, m, passthru)
        if "error" in r:                # died: keep what its samples show
            r.update(summarize(r, WARMUP))
        results.append(r)
    print(f"\nchurn: add, call once, remove; {args.cycles:,} cycles over {args.distinct:,} distinct "
          f"tiny objects; growth = RSS(end) - RSS(after {WARMUP:,} cycles)\n")
    print(report(results, args.cycles))
    for r in results:
        if "error" in r:
            print(f"\n{r['method']} died: {r['error']}")
            if "last_cycle" in r:
                print(f"  at its last sample (cycle {r['last_cycle']:,}) it had {r['mappings_last']:,} "
                      f"memory mappings (vm.max_map_count = {_tiny.max_map_count():,})")
    print("\nRSS curve (cycle:MiB)")
    for r in results:
        if r.get("samples"):
            print(f"  {r['method']:8} {curve(r)}")
    hl = next((r for r in results if r["method"] == "hotlink" and "error" not in r), None)
    out = {"cycles": args.cycles, "distinct": args.distinct, "results": results}
    if hl:
        ok = hl["growth"] <= TARGET
        print(f"\nhotlink target (growth <= 1 MiB after warm-up): {'met' if ok else 'MISSED'}"
              f" ({hl['growth'] / 1024:,.0f} KiB); arena at end: "
              f"mapped {hl['probe_end']['arena_mapped']:,} B, used {hl['probe_end']['arena_used']:,} B, "
              f"memfd resident {hl['probe_end']['arena_resident']:,} B; gc-tracked objects "
              f"{hl['probe_warmup']['python_objects']:,} -> {hl['probe_end']['python_objects']:,}")
        if not ok or args.investigate:
            out["investigation"] = _tiny.investigate(__file__, passthru, print_investigation)
    _tiny.write_json(args.json, out)


def print_investigation(tr: dict) -> None:
    if "error" in tr:
        print(f"\ninvestigation run failed: {tr['error']}")
        return
    t = tr["trace"]
    print(f"\nhotlink under tracemalloc: RSS growth {tr['growth'] / 1024:,.0f} KiB, "
          f"traced Python heap growth {t['traced_growth'] / 1024:,.1f} KiB")
    print(_tiny.markdown_table(["allocated at", "size diff (B)", "blocks diff"],
                               [[x["where"], f"{x['size_diff']:,}", f"{x['count_diff']:,}"]
                                for x in t["by_line"]]))
    if t["object_types_grown"]:
        print("object types that grew: " + ", ".join(f"{k} +{v}" for k, v in t["object_types_grown"].items()))


if __name__ == "__main__":
    main()
