"""perf sees JIT code (issue 10): ``perf record -k mono`` of a program that
spends its time in a JIT loop, with the perf map and jitdump on, then
``perf inject --jit``: ``perf report`` gives the JIT function's name to at
least half of the samples.  Needs perf (Debian package linux-perf, installed
by .ci/run).  Where perf events are forbidden the test fails and says so."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SPIN_C = """\
long spin_in_jit(long n) {
    volatile long s = 0;
    for (long i = 0; i < n; i++)
        s += i;
    return s;
}
"""
PROGRAM = """\
import ctypes, os, sys, time, hotlink
s = hotlink.Session()
lib = s.library("hot")
lib.add(sys.argv[1])
spin = lib.function("spin_in_jit", ctypes.c_long, [ctypes.c_long])
print(os.getpid(), flush=True)
end = time.monotonic() + 1.5
while time.monotonic() < end:
    spin(20_000_000)
"""


def perf() -> str:
    path = shutil.which("perf")
    assert path, "perf is not installed (Debian package linux-perf; .ci/run installs it)"
    return path


def run(cmd: list[str], what: str, **kw) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, **kw)
    if proc.returncode != 0:
        paranoid = Path("/proc/sys/kernel/perf_event_paranoid")
        level = paranoid.read_text().strip() if paranoid.exists() else "?"
        pytest.fail(f"{what} failed (exit {proc.returncode}; kernel.perf_event_paranoid={level}, uid {os.getuid()}):"
                    f" perf events may be forbidden on this machine\n$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}",
                    pytrace=False)
    return proc


def test_perf_report_names_the_jit_function(tmp_path, compile_c):
    obj = compile_c(SPIN_C, "-O1", name="spin")
    prog = tmp_path / "spin.py"
    prog.write_text(PROGRAM)
    data, injected = tmp_path / "perf.data", tmp_path / "perf.jit.data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINK_")}
    env.update(HOTLINK_PERF_MAP="1", HOTLINK_JITDUMP="1", JITDUMPDIR=str(tmp_path))
    rec = run([perf(), "record", "-k", "mono", "-o", str(data), "--", sys.executable, str(prog), str(obj)],
              "perf record", env=env, cwd=tmp_path)
    pid = int(rec.stdout.split()[0])
    perf_map = Path(f"/tmp/perf-{pid}.map")
    try:
        assert re.search(r"^[0-9a-f]+ [0-9a-f]+ spin_in_jit$", perf_map.read_text(), re.M)
    finally:
        perf_map.unlink(missing_ok=True)
    dumps = list((tmp_path / "jit").glob(f"*/jit-{pid}.dump"))
    assert len(dumps) == 1, list(tmp_path.rglob("*"))
    run([perf(), "inject", "--jit", "-i", str(data), "-o", str(injected)], "perf inject --jit", cwd=tmp_path)
    report = run([perf(), "report", "-i", str(injected), "--stdio", "--sort", "sym"], "perf report",
                 cwd=tmp_path).stdout
    shares = {m.group(2): float(m.group(1)) for m in re.finditer(r"^\s+([\d.]+)%\s+\[\.\]\s+(\S+)\s*$", report, re.M)}
    assert shares.get("spin_in_jit", 0.0) >= 50.0, report
    (tmp_path / "report.txt").write_text(report)
    print("\n".join(report.splitlines()[:16]))
