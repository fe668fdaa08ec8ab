"""gdb sees JIT code (issue 10): a Python program crashes in a JIT function
compiled with -g, called through another JIT function; ``gdb -batch -ex run
-ex bt`` names both, shows file:line, and unwinds on into libffi and ctypes.
Needs gdb (Debian package gdb, installed by .ci/run)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

GDB = "/usr/bin/gdb"
CRASH_C = """\
/* the crashing JIT function */
int crash_here(int *p) {
    return *p + 1;       /* p is NULL */
}
"""
CRASH_LINE = 3
OUTER_C = """\
int crash_here(int *p);
int outer(int *p) {
    int r = crash_here(p);
    return r * 2 + 1;   /* not a tail call: outer keeps its frame */
}
"""
OUTER_LINE = 3


def run_gdb(args: list[str], cwd: Path, commands: tuple[str, ...] = ("bt",)) -> str:
    assert os.path.exists(GDB), "gdb is not installed (Debian package gdb; .ci/run installs it)"
    cmd = [GDB, "-nx", "-batch", "-ex", "set debuginfod enabled off", "-ex", "set pagination off",
           "-ex", "set width 0", "-ex", "run"]
    for c in commands:
        cmd += ["-ex", c]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINK_")}
    proc = subprocess.run([*cmd, "--args", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    return proc.stdout + proc.stderr


def frames(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if re.match(r"#\d+ ", ln)]


def check_backtrace(out: str, crash_file: str = "crash.c") -> list[str]:
    bt = frames(out)
    assert "SIGSEGV" in out, out
    assert re.match(rf"#0 +(0x[0-9a-f]+ in )?crash_here \(p=0x0\) at \S*/{crash_file}:{CRASH_LINE}$", bt[0]), out
    assert re.match(rf"#1 +0x[0-9a-f]+ in outer \(.*\) at \S*/outer\.c:{OUTER_LINE}$", bt[1]), out
    rest = "\n".join(bt[2:])
    assert "ffi_call" in rest and "_ctypes" in rest, out       # unwound through JIT frames into ctypes
    assert "??" not in "\n".join(bt[:2])
    return bt


PROGRAM = """\
import ctypes, sys, hotlink
s = hotlink.Session(debug_info=True)
lib = s.library("crashlib")
lib.add(sys.argv[1])
app = s.library("app", link_order=[lib])
app.add(sys.argv[2])
outer = app.function("outer", ctypes.c_int, [ctypes.c_void_p])
print("calling outer", flush=True)
outer(None)
"""


def test_gdb_backtrace_through_jit_frames(tmp_path, compile_c):
    crash = compile_c(CRASH_C, "-g", name="crash")
    outer = compile_c(OUTER_C, "-g", name="outer")
    prog = tmp_path / "crash_in_jit.py"
    prog.write_text(PROGRAM)
    out = run_gdb([sys.executable, str(prog), str(crash), str(outer)], tmp_path)
    bt = check_backtrace(out)
    (tmp_path / "bt.txt").write_text("\n".join(bt))
    print("\n".join(bt[:8]))


REPLACE_PROGRAM = """\
import ctypes, sys, hotlink
v1, v2, gone, outer_o = sys.argv[1:5]
s = hotlink.Session(debug_info=True)
kernels = s.library("kernels", patchable=True)
u1 = kernels.add(v1)
doomed = kernels.add(gone)
app = s.library("app", link_order=[kernels])
app.add(outer_o)
outer = app.function("outer", ctypes.c_int, [ctypes.c_void_p])
x = ctypes.c_int(20)
assert outer(ctypes.byref(x)) == 2 * 21 + 1           # version 1 works
doomed.remove()
u2 = kernels.replace(u1, v2)
print("calling outer", flush=True)
outer(None)                                            # version 2 crashes
"""
V1_C = """\
int helper_v1(int x) { return x - 1; }
int crash_here(int *p) {
    return *p + 1;
}
"""
V2_C = """\
int helper_v2(int x) { return x - 2; }
int crash_here(int *p) {
    return helper_v2(*p);    /* p is NULL */
}
"""
GONE_C = "int gone_fn(int x) { return x * 7; }\n"


def test_gdb_after_remove_and_replace(tmp_path, compile_c):
    """The new code is named (v2.c), the old image (v1.c) and a removed unit are gone."""
    v1 = compile_c(V1_C, "-g", name="v1")
    v2 = compile_c(V2_C, "-g", name="v2")
    gone = compile_c(GONE_C, "-g", name="gone")
    outer = compile_c(OUTER_C, "-g", name="outer")
    prog = tmp_path / "replace.py"
    prog.write_text(REPLACE_PROGRAM)
    out = run_gdb([sys.executable, str(prog), str(v1), str(v2), str(gone), str(outer)], tmp_path,
                  ("bt", "info functions helper_", "info functions gone_fn", "info symbol helper_v2"))
    check_backtrace(out, "v2.c")
    assert "v1.c" not in out and "helper_v1" not in out, out
    assert 'regular expression "gone_fn":' in out, out
    assert "gone_fn" not in out.split('regular expression "gone_fn":', 1)[1], out     # the removed unit
    assert re.search(r"helper_v2 in section \.text", out), out       # gdb knows the new code
    assert "int helper_v2(int);" in out, out                         # with its debug info


def test_cli_debug_info(tmp_path):
    """``hotlink run --debug-info`` compiles C with -g and registers it: gdb shows main.c:LINE."""
    src = tmp_path / "main.c"
    src.write_text("int deref(int *p) {\n    return *p;\n}\n"
                   "int main(int argc, char **argv) {\n    return deref(argc > 100 ? &argc : 0) + 1;\n}\n")
    out = run_gdb([sys.executable, "-m", "hotlink", "run", "--debug-info", str(src)], tmp_path)
    bt = frames(out)
    assert re.search(r"^#0 .*deref \(p=0x0\) at \S*main\.c:2$", bt[0]), out
    assert re.search(r"^#1 .* in main \(.*\) at \S*main\.c:5$", bt[1]), out
