"""Runs a real-world archive case (realworld.harness) in a fresh interpreter.

``run_case(case, objects=(), reference=None)`` fails the test with the
child's output when it does not finish cleanly, and returns the figures the
harness printed (members pulled, bytes used, seconds).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from realworld.harness import LIBDIR, MARKER, Case, real_archives

TESTS = Path(__file__).resolve().parent.parent
TIMEOUT = 120
RUNNER = "import sys; from realworld.harness import main; main(sys.argv[1:])"


def _run(case: Case, module: str, workdir: Path, objects: Sequence[Path] = (),
         reference: Path | None = None) -> dict[str, Any]:
    for a in case.archives:
        path = LIBDIR / a
        assert path.exists(), f"{path} missing: install {case.package} (.ci/run lists it)"
        assert all(p.exists() for p in real_archives(path))
    env = dict(os.environ)
    env.pop("HOTLINK_CACHE_DIR", None)
    env["PYTHONFAULTHANDLER"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), *filter(None, [env.get("PYTHONPATH")])])
    name = next(k for k, v in vars(sys.modules[module]).items() if v is case)
    cmd = [sys.executable, "-c", RUNNER, f"{module}:{name}"]
    for o in objects:
        cmd += ["--object", str(o)]
    if reference is not None:
        cmd += ["--reference", str(reference)]
    try:
        proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        out, err = (x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in (e.stdout, e.stderr))
        pytest.fail(f"{case.name}: hung for {TIMEOUT} s\n--- stdout ---\n{out}\n--- stderr ---\n{err}",
                    pytrace=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARKER)]
    if proc.returncode != 0 or not lines:
        sig = f" (signal {-proc.returncode})" if proc.returncode < 0 else ""
        pytest.fail(f"{case.name}: exited with {proc.returncode}{sig}\n"
                    f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-6000:]}", pytrace=False)
    figures: dict[str, Any] = json.loads(lines[-1][len(MARKER):])
    return figures


@pytest.fixture
def run_case(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., dict[str, Any]]:
    module = request.module.__name__

    def run(case: Case, objects: Sequence[Path] = (), reference: Path | None = None) -> dict[str, Any]:
        figures = _run(case, module, tmp_path, objects, reference)
        assert figures["case"] == case.name and figures["members"] > 0, figures
        return figures
    return run
