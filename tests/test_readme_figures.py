"""Every benchmark figure in README.md is rendered from ``benchmarks/results.json``.

``python benchmarks/run.py --readme`` rewrites the marked regions of README.md
(``<!-- fig:NAME -->...<!-- /fig -->`` inline, ``<!-- figures:BLOCK -->`` ...
``<!-- /figures -->`` for the tables and plots) from the results file; these
tests fail when the committed README.md differs from that rendering (a
figure typed or edited by hand, or results.json rerun without the README),
and show that they can fail.  No benchmark runs here.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RESULTS = ROOT / "benchmarks" / "results.json"

# the runner is a script of the repository (benchmarks/run.py), not a module of the package
_spec = importlib.util.spec_from_file_location("hotlink_bench_run", ROOT / "benchmarks" / "run.py")
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bench
_spec.loader.exec_module(bench)


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    return json.loads(RESULTS.read_text())


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text()


def test_committed_readme_is_rendered_from_committed_results(readme: str, results: dict[str, Any]) -> None:
    rendered = bench.render_readme(readme, results)
    if rendered != readme:
        import difflib
        diff = "\n".join(difflib.unified_diff(readme.splitlines(), rendered.splitlines(), "README.md",
                                              "rendered from benchmarks/results.json", lineterm="", n=0))
        pytest.fail("README.md's figures differ from benchmarks/results.json; run "
                    f"`python benchmarks/run.py --readme` (never edit a marked figure by hand):\n{diff}")


def test_readme_marks_its_figures(readme: str) -> None:
    blocks = set(re.findall(r"<!-- figures:(\S+) -->", readme))
    assert blocks == set(bench.BLOCKS), f"README.md blocks {sorted(blocks)}, expected {sorted(bench.BLOCKS)}"
    names = re.findall(r"<!-- fig:(\S+) -->", readme)
    assert len(names) >= 40, f"only {len(names)} inline figures marked"
    # the figures the cache speed-up issue was about: one fact, one text, wherever it appears
    assert "compile.cache_speedup" in names and "link.tiny.hotlink_over_dlopen" in names


def test_one_text_per_figure_everywhere(readme: str, results: dict[str, Any]) -> None:
    """Each name shows the same text at every place it is marked, and the
    generated tables show the same texts as the prose."""
    F = bench.figures(results)
    for name, text in re.findall(r"<!-- fig:(\S+) -->(.*?)<!-- /fig -->", readme):
        assert text == F[name], f"{name}: README shows {text!r}, results give {F[name]!r}"
    perf = bench.table(results)
    for name in ("link.tiny.hotlink", "link.zlib.hotlink", "footprint.hotlink.bytes", "hotpatch.replace.hotlink",
                 "compile.speedup", "compile.cache_speedup", "compile.cold_cache", "compile.warm_cache"):
        assert F[name] in perf, f"{name} ({F[name]!r}) is not in the Performance table"
    comp = bench.compile_table(results)
    for name in ("compile.one_worker", "compile.two_workers", "compile.speedup", "compile.cold_cache",
                 "compile.warm_cache", "compile.cache_speedup"):
        assert F[name] in comp, f"{name} ({F[name]!r}) is not in the compile table"


def _changed(results: dict[str, Any]) -> dict[str, Any]:
    """A copy with one raw number changed: hotlink's tiny-link median."""
    other = copy.deepcopy(results)
    other["benchmarks"]["link_latency"]["data"]["results"]["hotlink"]["median_us"] *= 2
    return other


def test_a_changed_result_changes_every_place_it_appears(readme: str, results: dict[str, Any]) -> None:
    before = bench.figures(results)
    after = bench.figures(_changed(results))
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {"link.tiny.hotlink", "link.tiny.hotlink_over_dlopen", "link.tiny.hotlink_over_lljit",
                       "link.tiny.hotlink_over_mcjit"}
    new = bench.render_readme(readme, _changed(results))
    assert new != readme
    # the README's old text is gone from every marked place, the new one is there
    for name in changed:
        marked = f"<!-- fig:{name} -->"
        if marked in readme:
            assert f"{marked}{before[name]}<!-- /fig -->" not in new
            assert new.count(f"{marked}{after[name]}<!-- /fig -->") == readme.count(marked)
    assert f"| link a tiny object (median) | {after['link.tiny.hotlink']} |" in new
    # and the committed README no longer matches: the test above would fail
    assert bench.render_readme(new, results) == readme


def test_a_hand_edited_figure_is_caught(readme: str, results: dict[str, Any]) -> None:
    F = bench.figures(results)
    marked = f"<!-- fig:compile.cache_speedup -->{F['compile.cache_speedup']}<!-- /fig -->"
    assert marked in readme
    edited = readme.replace(marked, "<!-- fig:compile.cache_speedup -->540×<!-- /fig -->", 1)
    assert bench.render_readme(edited, results) == readme          # rendering puts the figure back
    assert bench.render_readme(edited, results) != edited          # so the committed-README test fails
    row = f"| link a tiny object (median) | {F['link.tiny.hotlink']} |"
    assert row in readme
    edited = readme.replace(row, "| link a tiny object (median) | 1.0 µs |")
    assert bench.render_readme(edited, results) == readme          # tables too


@pytest.mark.parametrize("text, problem", [
    ("x <!-- fig:no.such.figure -->1<!-- /fig --> y\n", "no figure 'no.such.figure'"),
    ("<!-- figures:no_such_block -->\n<!-- /figures -->\n", "unknown block"),
    ("a line\n<!-- fig:compile.speedup -->2×<!-- /fig --> starts here\n", "starts the line"),
    ("x <!-- fig:compile.speedup -->2×\n<!-- /fig --> y\n", "unmatched marker"),
    ("<!-- figures:plots -->\nno end\n", "unmatched marker"),
])
def test_bad_markers_are_refused(results: dict[str, Any], text: str, problem: str) -> None:
    with pytest.raises(bench.FigureError, match=re.escape(problem)):
        bench.render_readme(text, results)


def test_a_missing_benchmark_is_refused_not_left_stale(readme: str, results: dict[str, Any]) -> None:
    other = copy.deepcopy(results)
    other["benchmarks"]["compile_parallel"]["status"] = "failed"
    with pytest.raises(bench.FigureError, match="compile"):
        bench.render_readme(readme, other)


def test_check_mode_reports_a_stale_readme(tmp_path: Path, readme: str, results: dict[str, Any]) -> None:
    path = tmp_path / "README.md"
    path.write_text(readme)
    assert bench.update_readme(path, results, check=True) == (True, f"{path}: figures up to date")
    fresh, diff = bench.update_readme(path, _changed(results), check=True)
    assert not fresh and "link.tiny.hotlink" in diff
    assert path.read_text() == readme                               # --check writes nothing
    fresh, _ = bench.update_readme(path, _changed(results))
    assert not fresh and path.read_text() == bench.render_readme(readme, _changed(results))
