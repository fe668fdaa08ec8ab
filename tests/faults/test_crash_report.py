"""Crash reports (issue 10): a process that dies of a signal inside JIT code
names the JIT function, its library and unit, and the signal on stderr, then
dies exactly as it would have without the report (same status; Python's
faulthandler output still there).  Each scenario runs in its own interpreter
(PYTHONFAULTHANDLER=1, as every fault scenario)."""
from __future__ import annotations

import re
import signal

import pytest

KERNELS = r"""
#include <stdlib.h>
#include <signal.h>
int crash_here(int *p) { return *p + 1; }
int divide(int a, volatile int b) { return a / b; }
void trap(void) { __builtin_trap(); }
void do_abort(void) { abort(); }
int read_at(volatile char *p) { return p[0]; }
"""
OUTER = r"""
int crash_here(int *p);
int divide(int a, int b);
void trap(void);
void do_abort(void);
int read_at(volatile char *p);
int outer(int which, void *p) {
    int r;
    switch (which) {
    case 0: r = crash_here(p); break;
    case 1: r = divide(7, 0); break;
    case 2: trap(); r = 0; break;
    case 3: do_abort(); r = 0; break;
    default: r = read_at(p); break;
    }
    return r * 3 + 1;       /* not a tail call: outer stays on the stack */
}
"""
# which crash, the signal, the function that takes it, how the scenario gets the argument
CASES = {
    "SIGSEGV": (0, signal.SIGSEGV, "crash_here", "None"),
    "SIGFPE": (1, signal.SIGFPE, "divide", "None"),
    "SIGILL": (2, signal.SIGILL, "trap", "None"),
    "SIGABRT": (3, signal.SIGABRT, "do_abort", "None"),
    "SIGBUS": (4, signal.SIGBUS, "read_at", "beyond_eof()"),
}
PROGRAM = """
import ctypes, mmap, os, sys, tempfile, hotlink
def beyond_eof():
    # a shared mapping of a file truncated under it: touching it raises SIGBUS
    f = tempfile.TemporaryFile()
    f.truncate(mmap.PAGESIZE)
    m = mmap.mmap(f.fileno(), mmap.PAGESIZE)
    f.truncate(0)
    globals()["keep"] = (f, m)
    return ctypes.addressof(ctypes.c_char.from_buffer(m))
s = hotlink.Session()
kernels = s.library("kernels")
kernels.add({kernels!r})
app = s.library("app", link_order=[kernels])
app.add({outer!r})
{enable}
outer = app.function("outer", ctypes.c_int, [ctypes.c_int, ctypes.c_void_p])
print("calling", flush=True)
outer({which}, {arg})
print("survived", flush=True)
"""
REPORT = re.compile(r"^hotlink: fatal signal (\w+) \((\d+)\)( at address 0x[0-9a-f]+)?; JIT frames:$", re.M)


@pytest.fixture
def objects(compile_c):
    return compile_c(KERNELS, name="kernels"), compile_c(OUTER, name="outer")


def program(objects, which: int, arg: str, enable: str) -> str:
    kernels, outer = objects
    return PROGRAM.format(kernels=str(kernels), outer=str(outer), which=which, arg=arg, enable=enable)


@pytest.mark.parametrize("case", list(CASES))
def test_report_names_the_jit_frames_and_keeps_the_exit_status(scenario, objects, case):
    which, sig, fn, arg = CASES[case]
    plain = scenario.run(program(objects, which, arg, ""))
    reported = scenario.run(program(objects, which, arg, "hotlink.enable_crash_report()"))
    assert plain.returncode == -sig, plain.stderr
    assert reported.returncode == plain.returncode, reported.stderr       # as without the report
    assert "hotlink: fatal" not in plain.stderr
    assert "calling" in reported.stdout and "survived" not in reported.stdout

    err = reported.stderr
    m = REPORT.search(err)
    assert m, err
    assert m.group(1) == case and int(m.group(2)) == sig
    frames = err[m.end() + 1:].splitlines()
    if case == "SIGABRT":       # raised in libc's abort(): the JIT frames are its callers
        assert re.match(r"  #0 0x[0-9a-f]+ \(not JIT code\)$", frames[0]), err
        assert m.group(3) is None
    else:                        # a fault in the JIT function itself
        assert re.match(rf"  #0 0x[0-9a-f]+ kernels:{fn}\+0x[0-9a-f]+ \(kernels\.o\)$", frames[0]), err
        assert m.group(3) is not None
    jit = [f for f in frames if re.match(r"  #\d+ ", f)]
    assert any(re.search(rf" kernels:{fn}\+0x[0-9a-f]+ \(kernels\.o\)$", f) for f in jit) or case != "SIGABRT", err
    assert any(re.search(r" app:outer\+0x[0-9a-f]+ \(outer\.o\)$", f) for f in jit), err
    # faulthandler still runs after the report
    assert "Fatal Python error" in err and err.index("Fatal Python error") > m.start(), err
    assert "Fatal Python error" in plain.stderr


def test_report_by_environment_variable(scenario, objects):
    proc = scenario.run(program(objects, 0, "None", ""), env={"HOTLINK_CRASH_REPORT": "1"})
    assert proc.returncode == -signal.SIGSEGV
    assert re.search(r"^hotlink: fatal signal SIGSEGV \(11\) at address 0x0; JIT frames:\n"
                     r"  #0 0x[0-9a-f]+ kernels:crash_here\+0x[0-9a-f]+ \(kernels\.o\)\n"
                     r"  #1 0x[0-9a-f]+ app:outer\+0x[0-9a-f]+ \(outer\.o\)$", proc.stderr, re.M), proc.stderr


def test_no_report_for_a_crash_outside_jit_code(scenario, objects):
    """A crash in Python's own code (a read at address 8 through ctypes) with
    the report on and JIT code loaded: no hotlink report, the same death."""
    code = program(objects, 0, "None", "hotlink.enable_crash_report()").replace(
        'print("calling", flush=True)', 'ctypes.c_int.from_address(8).value')
    assert "from_address(8)" in code
    proc = scenario.run(code)
    assert proc.returncode == -signal.SIGSEGV
    assert "hotlink: fatal" not in proc.stderr and "Fatal Python error" in proc.stderr


def test_sessions_made_before_and_removed_code(scenario, objects):
    """Enabling after the code was linked reports it too (from its published
    symbols); a unit removed before the crash is not reported."""
    kernels, outer = objects
    code = f"""
        import ctypes, hotlink
        s = hotlink.Session()
        kernels = s.library("kernels")
        u = kernels.add({str(kernels)!r})
        app = s.library("app", link_order=[kernels])
        app.add({str(outer)!r})
        spare = s.library("spare")
        gone = spare.add({str(kernels)!r})
        hotlink.enable_crash_report()
        address = spare.address("crash_here")
        gone.remove()
        later = hotlink.Session()                 # a session made after: reported as well
        lib2 = later.library("later")
        lib2.add({str(kernels)!r})
        assert s.symbolize(address) is None
        ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)(lib2.address("crash_here"))(None)
    """
    proc = scenario.run(code)
    assert proc.returncode == -signal.SIGSEGV
    assert re.search(r"  #0 0x[0-9a-f]+ later:crash_here\+0x0 \(kernels\.o\)$", proc.stderr, re.M), proc.stderr
    assert "spare:" not in proc.stderr
