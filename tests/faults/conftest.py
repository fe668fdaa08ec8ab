"""Fault scenarios run in a fresh interpreter each, so a crash (a signal, an
abort in libgcc, a hang) is a failing test, never a dead test run.

``run_scenario(code)`` runs ``code`` (dedented) in ``python -c`` with the
test's ``tmp_path`` as working directory and returns the finished process;
``expect_ok`` also asserts it exited with status 0 and shows its output if not.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TIMEOUT = 120


class Scenario:
    def __init__(self, workdir: Path):
        self.workdir = workdir

    def run(self, code: str, *, timeout: float = TIMEOUT, env: dict[str, str] | None = None,
            args: list[str] | None = None) -> subprocess.CompletedProcess[str]:
        full_env = dict(os.environ)
        full_env.pop("HOTLINK_CACHE_DIR", None)
        full_env["PYTHONFAULTHANDLER"] = "1"
        full_env.update(env or {})
        try:
            return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *(args or [])],
                                  cwd=self.workdir, env=full_env, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"scenario hung for {timeout} s\n--- stdout ---\n{e.stdout}\n--- stderr ---\n{e.stderr}",
                        pytrace=False)

    def expect_ok(self, code: str, **kw) -> subprocess.CompletedProcess[str]:
        proc = self.run(code, **kw)
        if proc.returncode != 0:
            pytest.fail(f"scenario exited with {proc.returncode}"
                        f"{' (signal ' + str(-proc.returncode) + ')' if proc.returncode < 0 else ''}\n"
                        f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}", pytrace=False)
        return proc


@pytest.fixture
def scenario(tmp_path: Path) -> Scenario:
    return Scenario(tmp_path)
