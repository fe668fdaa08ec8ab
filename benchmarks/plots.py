#!/usr/bin/env python3
"""Render the benchmark plots (PNG) from a results file written by
``python benchmarks/run.py``.

    python benchmarks/plots.py [RESULTS] [--output DIR]

RESULTS defaults to benchmarks/results.json; the PNGs go next to it unless
--output says otherwise.  A plot whose benchmark did not run (or failed) is
left out with a note.  Prints ``wrote PATH`` for every file written (the
runner reads these lines).  Every number drawn comes from RESULTS.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLOURS = {"hotlink": "#1f6fb4", "hotlink_general": "#9cc3e6", "dlopen": "#7f7f7f", "lljit": "#e6780e",
           "mcjit": "#2a9d3a"}
LABELS = {"hotlink": "hotlink", "hotlink_general": "hotlink\n(general link)", "dlopen": "dlopen", "lljit": "LLJIT",
          "mcjit": "MCJIT"}
DPI = 110


def ok(results: dict, name: str) -> dict | None:
    b = results.get("benchmarks", {}).get(name)
    return b if b and b.get("status") == "ok" else None


def footer(fig, results: dict) -> None:
    m = results.get("machine", {})
    text = (f"{m.get('cpu_model')}, {m.get('cpus_usable')} cores, Linux {m.get('kernel')}, "
            f"Python {m.get('python')}, llvmlite {m.get('llvmlite')} (LLVM {m.get('llvm')}), gcc {m.get('gcc')}"
            f"  ·  {results.get('started', '')[:10]}")
    if results.get("quick"):
        text = "QUICK SMOKE RUN (few iterations) · " + text
    fig.text(0.5, 0.01, text, ha="center", va="bottom", fontsize=7.5, color="#555555")


def label_bars(ax, bars, texts, pad=0.02) -> None:
    top = ax.get_ylim()[1]
    for b, t in zip(bars, texts):
        ax.text(b.get_x() + b.get_width() / 2, b.get_height() + top * pad, t,
                ha="center", va="bottom", fontsize=9)


def style(ax) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)


def human_bytes(x: float) -> str:
    if abs(x) >= 2**20:
        return f"{x / 2**20:.1f} MiB"
    if abs(x) >= 10 * 1024:
        return f"{x / 1024:.0f} KiB"
    if abs(x) >= 1024:
        return f"{x / 1024:.1f} KiB"
    return f"{x:.0f} B"


# --- the plots --------------------------------------------------------------------

def plot_link_latency(results: dict, out: Path) -> Path | None:
    tiny, arch = ok(results, "link_latency"), ok(results, "archive_latency")
    if not tiny and not arch:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), gridspec_kw={"width_ratios": [1.1, 1]})
    ax = axes[0]
    if tiny:
        r = tiny["data"]["results"]
        ms = [m for m in ("hotlink", "hotlink_general", "dlopen", "lljit", "mcjit") if m in r]
        med = [r[m]["median_us"] for m in ms]
        lo = [r[m]["median_us"] - r[m]["min_us"] for m in ms]
        hi = [r[m]["p90_us"] - r[m]["median_us"] for m in ms]
        bars = ax.bar([LABELS[m] for m in ms], med, color=[COLOURS[m] for m in ms], width=0.6,
                      yerr=[lo, hi], capsize=4, error_kw={"elinewidth": 0.8, "ecolor": "#333333"})
        ax.set_ylim(0, max(v + h for v, h in zip(med, hi)) * 1.2)
        base = r.get("dlopen", {}).get("median_us")
        for b, v, h in zip(bars, med, hi):
            ax.text(b.get_x() + b.get_width() / 2, v + h, f"{v:.0f} µs" + (f"\n{v / base:.2f}× dlopen" if base else ""),
                    ha="center", va="bottom", fontsize=9)
        ax.set_ylabel("µs from object bytes to a callable address")
        n = tiny["data"].get("iterations")
        ax.set_title(f"Tiny object (one function): median of {n:,} interleaved links\n"
                     "whiskers: min and 90th percentile", fontsize=10)
    else:
        ax.text(0.5, 0.5, "link_latency did not run", ha="center", transform=ax.transAxes)
    style(ax)

    ax = axes[1]
    if arch:
        a = {k: v for k, v in arch["data"]["archives"].items() if "methods" in v}
        names = list(a)
        width = 0.36
        for j, m in enumerate(("hotlink", "lljit")):
            xs = [i + (j - 0.5) * width for i in range(len(names))]
            med = [a[n]["methods"][m]["median_ms"] for n in names]
            lo = [a[n]["methods"][m]["median_ms"] - a[n]["methods"][m]["min_ms"] for n in names]
            hi = [a[n]["methods"][m]["p90_ms"] - a[n]["methods"][m]["median_ms"] for n in names]
            bars = ax.bar(xs, med, width=width, color=COLOURS[m], label=LABELS[m], yerr=[lo, hi], capsize=3,
                          error_kw={"elinewidth": 0.8, "ecolor": "#333333"})
            for b, v, h in zip(bars, med, hi):
                ax.text(b.get_x() + b.get_width() / 2, v + h, f"{v:.1f}", ha="center", va="bottom", fontsize=9)
        ax.set_xticks(range(len(names)),
                      [f"{n}\n{a[n]['members']} members, {a[n]['symbols']} symbols" for n in names])
        ax.set_ylabel("ms: link all members, look up all symbols")
        ax.legend(frameon=False)
        it = arch["data"].get("iterations")
        ax.set_title(f"Whole Debian archive (.a): median of {it} interleaved links\n"
                     "whiskers: min and 90th percentile", fontsize=10)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.08)
    else:
        ax.text(0.5, 0.5, "archive_latency did not run", ha="center", transform=ax.transAxes)
    style(ax)
    fig.suptitle("Link latency (lower is better)", fontweight="bold")
    footer(fig, results)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return save(fig, out / "plot_link_latency.png")


def plot_big_object(results: dict, out: Path) -> Path | None:
    big = ok(results, "big_object")
    if not big:
        return None
    d = big["data"]
    r = d["results"]
    ms = [m for m in ("hotlink", "lljit", "mcjit") if m in r]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    med = [r[m]["median_ms"] for m in ms]
    lo = [r[m]["median_ms"] - r[m]["min_ms"] for m in ms]
    hi = [r[m]["p90_ms"] - r[m]["median_ms"] for m in ms]
    bars = ax.bar([LABELS[m] for m in ms], med, color=[COLOURS[m] for m in ms], width=0.6,
                  yerr=[lo, hi], capsize=4, error_kw={"elinewidth": 0.8, "ecolor": "#333333"})
    base = r.get("lljit", {}).get("median_ms")
    for b, v, h in zip(bars, med, hi):
        ax.text(b.get_x() + b.get_width() / 2, v + h, f"{v:.1f} ms" + (f"\n{v / base:.2f}× LLJIT" if base else ""),
                ha="center", va="bottom", fontsize=9)
    for b, m in zip(bars, ms):
        if not str(r[m].get("full_check", "ok")).startswith("ok"):     # linked, but the code does not work
            ax.text(b.get_x() + b.get_width() / 2, b.get_height() / 2, "its sqlite\ncrashes\nin a query",
                    ha="center", va="center", fontsize=8, color="white")
    ax.set_ylim(0, max(v + h for v, h in zip(med, hi)) * 1.25)
    ax.set_ylabel("ms from object bytes to the API's addresses")
    o = d["object"]
    ax.set_title(f"libsqlite3.a merged by ld -r: {o['bytes'] / 2**20:.1f} MiB, {o['relocations']:,} relocations\n"
                 f"median of {d.get('iterations')} interleaved links; whiskers: min and 90th percentile", fontsize=10)
    style(ax)
    fig.suptitle("Link latency of one big object (lower is better)", fontweight="bold")
    footer(fig, results)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return save(fig, out / "plot_big_object.png")


def plot_churn(results: dict, out: Path) -> Path | None:
    ch = ok(results, "churn")
    if not ch:
        return None
    d = ch["data"]
    fig, ax = plt.subplots(figsize=(10, 4.8))
    warm = None
    for r in d["results"]:
        m = r["method"]
        smp = r.get("samples") or []
        if not smp:
            continue
        warm = r.get("warmup", warm)
        xs = [s[0] for s in smp]
        ys = [s[1] / 2**20 for s in smp]
        label = LABELS.get(m, m)
        if r.get("growth") is not None:
            g = r["growth"]
            label += f": {'+' if g >= 0 else '−'}{human_bytes(abs(g))} after warm-up"
            if "error" in r:
                why = r["error"].split(": ", 1)[-1][:60]
                maps = f", at {smp[-1][3]:,} memory mappings" if len(smp[-1]) > 3 else ""
                label += f",\nthen died after cycle {xs[-1]:,}{maps}\n({why})"
        ax.plot(xs, ys, color=COLOURS.get(m), linewidth=2, label=label)
        if "error" in r:
            ax.plot(xs[-1], ys[-1], "x", color=COLOURS.get(m), markersize=11, markeredgewidth=2.5)
            ax.annotate("died", (xs[-1], ys[-1]), textcoords="offset points", xytext=(0, 9), fontsize=8.5,
                        color=COLOURS.get(m), ha="center", va="bottom")
    ax.set_xlim(0, d["cycles"] * 1.01)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.05)
    if warm:
        ax.axvline(warm, color="#999999", linestyle=":", linewidth=1)
        ax.text(warm, ax.get_ylim()[1] * 0.02, " end of warm-up", fontsize=8, color="#777777", va="bottom")
    ax.set_xlabel("add / call / remove cycles (a distinct tiny object each time)")
    ax.set_ylabel("process resident memory (MiB)")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.legend(frameon=False, loc="upper left")
    ax.set_title(f"Resident memory over {d['cycles']:,} add/remove cycles "
                 f"({d.get('distinct', 0):,} distinct objects, each method in its own process)", fontsize=10)
    style(ax)
    ax.grid(axis="x", color="#eeeeee", linewidth=0.6)
    fig.suptitle("Churn: does memory come back? (flat is better)", fontweight="bold")
    footer(fig, results)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return save(fig, out / "plot_churn.png")


def plot_footprint(results: dict, out: Path) -> Path | None:
    fp = ok(results, "footprint")
    if not fp:
        return None
    d = fp["data"]
    rs = [r for r in d["results"] if "per_unit" in r]
    order = {"hotlink": 0, "dlopen": 1, "lljit": 2}
    rs.sort(key=lambda r: order.get(r["method"], 9))
    fig, ax = plt.subplots(figsize=(8, 4.6))
    vals = [r["per_unit"] for r in rs]
    bars = ax.bar([LABELS.get(r["method"], r["method"]) for r in rs], vals,
                  color=[COLOURS.get(r["method"]) for r in rs], width=0.55)
    ax.set_ylim(0, max(vals) * 1.2)
    base = next((r["per_unit"] for r in rs if r["method"] == "hotlink"), None)
    label_bars(ax, bars, [human_bytes(v) + (f"\n{v / base:.0f}× hotlink" if base and r["method"] != "hotlink"
                                            else "") for r, v in zip(rs, vals)])
    kib = max(vals) / 1024
    step = next(x for x in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10**4) if kib / x <= 7)
    ax.yaxis.set_major_locator(matplotlib.ticker.MultipleLocator(step * 1024))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1024:,.0f} KiB"))
    ax.set_ylabel("resident bytes per loaded unit")
    ax.set_title(f"{d['units']:,} one-function units kept loaded, each called once\n"
                 "(RSS(end) − RSS(warm-up)) / units, each method in its own process", fontsize=10)
    style(ax)
    fig.suptitle("Footprint per loaded tiny unit (lower is better)", fontweight="bold")
    footer(fig, results)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return save(fig, out / "plot_footprint.png")


def plot_hotpatch(results: dict, out: Path) -> Path | None:
    hp = ok(results, "hotpatch")
    if not hp:
        return None
    d = hp["data"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    ax = axes[0]
    ns = d["stub"]["ns_per_call"]
    keys = [k for k in ("direct", "stub", "dlopen (PLT)") if k in ns] + [k for k in ns if k not in
                                                                        ("direct", "stub", "dlopen (PLT)")]
    names = {"direct": "hotlink\ndirect call", "stub": "hotlink patchable\n(call stub; jmp *slot)",
             "dlopen (PLT)": "dlopen'd .so\n(call via PLT)"}
    cols = {"direct": COLOURS["hotlink"], "stub": "#6aa6dd", "dlopen (PLT)": COLOURS["dlopen"]}
    bars = ax.bar([names.get(k, k) for k in keys], [ns[k] for k in keys],
                  color=[cols.get(k, "#aaaaaa") for k in keys], width=0.55)
    ax.set_ylim(0, max(ns.values()) * 1.25)
    label_bars(ax, bars, [f"{ns[k]:.2f} ns" for k in keys])
    ax.set_ylabel("ns per call (loop of calls to f(x)=x+1)")
    ax.set_title(f"Call overhead: median of {d['stub'].get('reps')} interleaved runs of "
                 f"{d['stub'].get('calls_per_rep', 0):,} calls\n"
                 f"stub extra cost: {d['stub']['stub_extra_ns']:+.2f} ns per call", fontsize=10)
    style(ax)

    ax = axes[1]
    rp = d["replace"]
    vals = [rp["hotlink_replace_us"], rp["lljit_relink_us"]]
    bars = ax.bar(["hotlink\nLibrary.replace", "LLJIT\nlink new library + lookup\n+ drop old"], vals,
                  color=[COLOURS["hotlink"], COLOURS["lljit"]], width=0.5)
    ax.set_ylim(0, max(vals) * 1.2)
    label_bars(ax, bars, [f"{v:.0f} µs" for v in vals])
    ax.set_ylabel("µs per replace (tiny unit, compiled beforehand)")
    ax.set_title(f"Replace latency: median of {rp.get('iterations', 0):,} alternating replaces", fontsize=10)
    style(ax)
    fig.suptitle("Hot-patching costs (lower is better)", fontweight="bold")
    footer(fig, results)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return save(fig, out / "plot_hotpatch.png")


def plot_compile(results: dict, out: Path) -> Path | None:
    cp = ok(results, "compile_parallel")
    if not cp:
        return None
    d = cp["data"]
    med = d.get("median_seconds") or {}
    if not med or "cold_cache_seconds" not in d:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    ax = axes[0]
    keys = [k for k in ("1 worker", "2 workers", "2 threads (in-process)") if k in med]
    cols = {"1 worker": "#9cc3e6", "2 workers": COLOURS["hotlink"], "2 threads (in-process)": "#bbbbbb"}
    names = {"1 worker": "1 worker\nprocess", "2 workers": "2 worker\nprocesses",
             "2 threads (in-process)": "2 threads\n(llvmlite in-process)"}
    vals = [med[k] for k in keys]
    bars = ax.bar([names[k] for k in keys], vals, color=[cols[k] for k in keys], width=0.55)
    ax.set_ylim(0, max(vals) * 1.25)
    one = med.get("1 worker")
    label_bars(ax, bars, [f"{v:.2f} s" + (f"\n{one / v:.2f}× vs 1 worker" if one and k != "1 worker" else "")
                          for k, v in zip(keys, vals)])
    ax.set_ylabel(f"seconds to compile {d.get('modules')} IR modules (-O2)")
    ax.set_title(f"Parallel compile: median of {d.get('reps')} alternating run(s), {d.get('cpus')} CPUs\n"
                 f"speedup 2 workers vs 1: {d['speedup_2_vs_1']:.2f}×", fontsize=10)
    style(ax)

    ax = axes[1]
    warm = d["warm_cache_seconds"]
    warm_med = sorted(warm)[len(warm) // 2] if isinstance(warm, list) else warm
    vals = [d["cold_cache_seconds"] * 1e3, warm_med * 1e3]
    bars = ax.bar(["cold cache\n(compile + store)", "warm cache\n(every object from disk)"], vals,
                  color=["#9cc3e6", COLOURS["hotlink"]], width=0.5)
    ax.set_yscale("log")
    ax.set_ylim(min(vals) / 3, max(vals) * 6)
    for b, v in zip(bars, vals):
        ax.text(b.get_x() + b.get_width() / 2, v * 1.15, f"{v:,.1f} ms", ha="center", va="bottom", fontsize=9)
    ax.set_ylabel("ms for the same compile_many call (log scale)")
    ax.set_title(f"Object cache: warm is {d['cache_speedup']:,.0f}× faster than cold", fontsize=10)
    style(ax)
    fig.suptitle("Compiling LLVM IR: worker processes and the object cache", fontweight="bold")
    footer(fig, results)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return save(fig, out / "plot_compile.png")


def save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


PLOTTERS = [plot_link_latency, plot_big_object, plot_churn, plot_footprint, plot_hotpatch, plot_compile]


def render(results: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for f in PLOTTERS:
        p = f(results, out)
        if p is None:
            print(f"note: {f.__name__[5:]}: its benchmark did not run or failed; no plot", file=sys.stderr)
        else:
            written.append(p)
    return written


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="?", default=str(Path(__file__).resolve().parent / "results.json"))
    ap.add_argument("--output", metavar="DIR", help="default: the results file's directory")
    args = ap.parse_args()
    rpath = Path(args.results)
    results = json.loads(rpath.read_text())
    out = Path(args.output) if args.output else rpath.parent
    for p in render(results, out):
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
