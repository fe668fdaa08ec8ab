"""``benchmarks/run.py --quick`` runs every benchmark end to end and writes a
well-formed results file and valid PNG plots, so the benchmarks never rot.

The run goes to a temporary directory (``--output``): the committed
``benchmarks/results.json`` and plots are left alone.
"""
from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import matplotlib  # noqa: F401  (the plots need it; it is in the test extra)
import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
SRC = ROOT / "src"

REQUIRED = ("link_latency", "archive_latency", "churn", "footprint", "hotpatch", "call")
OPTIONAL = ("compile_parallel",)       # skipped (with a note) while its script does not exist
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# every test here reads one `benchmarks/run.py --quick` run in a subprocess (tens of seconds)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench")
    committed = BENCH / "results.json"
    before = committed.stat().st_mtime_ns if committed.exists() else None
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    # the repository's script, as `make bench` runs it
    p = subprocess.run([sys.executable, str(BENCH / "run.py"), "--quick", "--plain", "--output", str(out)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    after = committed.stat().st_mtime_ns if committed.exists() else None
    return {"proc": p, "out": out, "committed_untouched": before == after}


@pytest.fixture(scope="module")
def results(run: dict) -> dict:
    path = run["out"] / "results.json"
    assert path.is_file(), f"no results.json; stderr:\n{run['proc'].stderr[-3000:]}"
    return json.loads(path.read_text())


def positive(x: object, what: str) -> float:
    assert isinstance(x, (int, float)) and not isinstance(x, bool), f"{what} is not a number: {x!r}"
    assert math.isfinite(x) and x > 0, f"{what} = {x!r} is not finite and positive"
    return float(x)


def finite(x: object, what: str) -> float:
    assert isinstance(x, (int, float)) and not isinstance(x, bool), f"{what} is not a number: {x!r}"
    assert math.isfinite(x), f"{what} = {x!r} is not finite"
    return float(x)


def test_exits_cleanly_and_leaves_committed_results_alone(run: dict) -> None:
    p = run["proc"]
    assert p.returncode == 0, f"exit {p.returncode}\nstdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}"
    assert run["committed_untouched"], "--output was given, but benchmarks/results.json changed"
    assert "| figure |" in p.stdout                 # the table is printed


def test_machine_and_versions_recorded(results: dict) -> None:
    assert results["schema"] == 1 and results["quick"] is True
    m = results["machine"]
    for key in ("cpu_model", "kernel", "python", "llvmlite", "llvm", "gcc", "hotlink"):
        assert isinstance(m.get(key), str) and m[key], f"machine.{key} missing: {m.get(key)!r}"
    assert positive(m["cpu_count"], "cpu_count") >= 1
    assert m["python"] == ".".join(map(str, sys.version_info[:3]))
    positive(results["seconds"], "seconds")


def test_every_section_present(results: dict) -> None:
    b = results["benchmarks"]
    for name in REQUIRED:
        assert name in b, f"section {name} missing"
        assert b[name]["status"] == "ok", f"{name}: {b[name].get('error')}\n" + "\n".join(b[name].get("stderr_tail", []))
        assert isinstance(b[name]["data"], dict) and isinstance(b[name]["summary"], dict)
    for name in OPTIONAL:
        assert name in b
        if (BENCH / f"{name}.py").exists():
            assert b[name]["status"] == "ok", f"{name}: {b[name].get('error')}"
        else:
            assert b[name]["status"] == "skipped" and "does not exist" in b[name]["note"]


def test_link_latency_figures(results: dict) -> None:
    s = results["benchmarks"]["link_latency"]["summary"]["methods"]
    assert set(s) == {"hotlink", "hotlink_general", "dlopen", "lljit", "mcjit"}      # every method ran
    for m, v in s.items():
        for k in ("median_us", "min_us", "p90_us", "ratio_vs_dlopen"):
            positive(v[k], f"link_latency.{m}.{k}")
        assert v["min_us"] <= v["median_us"] <= v["p90_us"]


def test_archive_latency_figures(results: dict) -> None:
    s = results["benchmarks"]["archive_latency"]["summary"]
    for arch in ("zlib", "lua"):
        a = s[arch]
        assert "error" not in a, f"{arch}: {a.get('error')}"
        positive(a["members"], f"{arch}.members")
        positive(a["symbols"], f"{arch}.symbols")
        for k in ("hotlink_ms", "lljit_ms", "lljit_over_hotlink"):
            positive(a[k], f"archive_latency.{arch}.{k}")


def test_churn_figures(results: dict) -> None:
    d = results["benchmarks"]["churn"]
    s = d["summary"]["methods"]
    assert set(s) == {"hotlink", "lljit", "mcjit"}
    for m, v in s.items():
        positive(v["last_cycle"], f"churn.{m}.last_cycle")
        positive(v["rss_warmup"], f"churn.{m}.rss_warmup")
        positive(v["rss_last"], f"churn.{m}.rss_last")
        finite(v["growth"], f"churn.{m}.growth")             # may be 0 or negative for hotlink
        positive(v["us_per_cycle"], f"churn.{m}.us_per_cycle")
        assert v["samples"] >= 10, f"churn.{m}: too few RSS samples for the curve"
    assert not s["hotlink"]["died"]
    for r in d["data"]["results"]:                         # the curve the plot draws
        for cycle, rss, *_ in r["samples"]:
            positive(cycle, "churn sample cycle")
            positive(rss, "churn sample RSS")


def test_footprint_figures(results: dict) -> None:
    s = results["benchmarks"]["footprint"]["summary"]["methods"]
    assert set(s) == {"hotlink", "lljit", "dlopen"}
    for m, v in s.items():
        assert "error" not in v, f"footprint.{m}: {v['error']}"
        positive(v["bytes_per_unit"], f"footprint.{m}.bytes_per_unit")


def test_hotpatch_figures(results: dict) -> None:
    s = results["benchmarks"]["hotpatch"]["summary"]
    for k, v in s["ns_per_call"].items():
        positive(v, f"hotpatch.ns_per_call.{k}")
    assert {"direct", "stub"} <= set(s["ns_per_call"])
    finite(s["stub_extra_ns"], "hotpatch.stub_extra_ns")     # a difference of medians: noise can make it < 0
    positive(s["hotlink_replace_us"], "hotpatch.hotlink_replace_us")
    positive(s["lljit_relink_us"], "hotpatch.lljit_relink_us")


def test_call_figures(results: dict) -> None:
    s = results["benchmarks"]["call"]["summary"]
    for n in ("1", "2"):                                     # calling threads
        assert set(s["ns_per_call"][n]) == {"hotlink", "hotlink (patchable)", "ctypes", "cffi (cast)",
                                            "cffi (dlopen)"}
        for k, v in s["ns_per_call"][n].items():
            positive(v, f"call.ns_per_call.{n}.{k}")
        for k, v in s["ratios"][n].items():
            positive(v, f"call.ratios.{n}.{k}")
    assert results["benchmarks"]["call"]["data"]["callable"] == "Function"     # through the call gate


def test_compile_parallel_figures(results: dict) -> None:
    b = results["benchmarks"]["compile_parallel"]
    assert b["status"] != "skipped", b.get("note")
    s = b["summary"]
    for k in ("speedup_2_vs_1", "cache_speedup", "cold_cache_seconds", "warm_cache_seconds"):
        positive(s[k], f"compile_parallel.{k}")
    for k, v in s["median_seconds"].items():
        positive(v, f"compile_parallel.median_seconds.{k}")


def test_table_and_ratios(results: dict) -> None:
    t = results["table_markdown"]
    assert t.startswith("| figure | hotlink | dlopen | LLJIT | MCJIT |")
    for needle in ("link a tiny object", "link all of zlib", "link all of lua", "RSS growth",
                   "resident bytes per loaded tiny unit", "replace a tiny function", "from Python"):
        assert needle in t, f"table row {needle!r} missing"
    assert results["ratios"]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    assert data[-8:-4] == b"IEND", f"{path.name} is truncated"
    return struct.unpack(">II", data[16:24])


def test_plots_are_valid_pngs(run: dict, results: dict) -> None:
    plots = results["plots"]
    want = {"plot_link_latency.png", "plot_churn.png", "plot_footprint.png", "plot_hotpatch.png"}
    if results["benchmarks"]["compile_parallel"]["status"] == "ok":
        want.add("plot_compile.png")
    assert want <= set(plots), f"missing plots: {want - set(plots)}; {results.get('plots_error')}"
    for name in plots:
        w, h = png_size(run["out"] / name)
        assert w >= 400 and h >= 300, f"{name} is {w}x{h}"


def test_table_mode_reprints_a_results_file(run: dict) -> None:
    p = subprocess.run([sys.executable, str(BENCH / "run.py"), "--table", str(run["out"] / "results.json")],
                       cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(SRC)})
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("Machine: ") and "| link a tiny object" in p.stdout
