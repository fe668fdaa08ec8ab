"""fork(): a child gets a private copy of every session and can go on using
it; nothing it does (call, write JIT data, add, remove, synchronize, exit)
reaches the parent (issue 9, item 1)."""
from __future__ import annotations

import pytest

COUNTER = r"""
static long counter;
long bump(void) { return ++counter; }
long peek(void) { return counter; }
"""

KERNEL = "long kernel(long x) {{ return x * {k} + {c}; }}\n"

OS_FORK = r"""
import ctypes, os, sys, hotlink
s = hotlink.Session()
lib = s.library("c")

def fresh_unit():
    # every round starts from a fresh copy of the counter, bumped once
    global unit, bump, peek, before, addr
    unit = lib.add(sys.argv[1])
    bump = lib.function("bump", ctypes.c_long)
    peek = lib.function("peek", ctypes.c_long)
    assert bump() == 1
    s.synchronize()
    before = s.memory()
    addr = lib.address("bump")

fresh_unit()

for child_does in ("calls", "adds", "removes", "closes", "exits_without_close", "os_exit"):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                   # the child
        os.close(r)
        try:
            assert [bump() for _ in range(5)] == [2, 3, 4, 5, 6], "child sees wrong data"
            if child_does == "adds":
                k = s.library("k" + str(os.getpid()))
                k.add(sys.argv[2])
                assert k.function("kernel", ctypes.c_long, [ctypes.c_long])(3) == 3 * 7 + 1
                k.remove()
                assert s.synchronize(5)
            elif child_does == "removes":
                unit.remove()
                assert s.synchronize(5)
                s.memory()
            elif child_does == "closes":
                s.close()
            os.write(w, b"ok")
        except BaseException as e:
            os.write(w, repr(e).encode())
        if child_does == "os_exit":
            os._exit(0)
        sys.exit(0)                                # atexit closes the child's session
    os.close(w)
    msg = os.read(r, 1000)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert msg == b"ok" and status == 0, (child_does, msg, status)
    # the parent: its data, code and accounting are untouched
    assert peek() == 1, (child_does, peek())
    assert lib.address("bump") == addr and unit.alive
    s.synchronize()
    after = s.memory()
    assert (after.used, after.mapped, after.resident) == (before.used, before.mapped, before.resident), \
        (child_does, before, after)
    # and it keeps working: call, add, remove
    k = s.library("parent-k")
    k.add(sys.argv[2]).remove()
    k.remove()
    assert bump() == 2 and peek() == 2
    unit.remove()
    fresh_unit()
print("parent ok")
"""


@pytest.mark.slow
def test_os_fork_child_is_independent(scenario, compile_c):
    counter = compile_c(COUNTER)
    kernel = compile_c(KERNEL.format(k=7, c=1))
    proc = scenario.expect_ok(OS_FORK, args=[str(counter), str(kernel)])
    assert "parent ok" in proc.stdout


MULTIPROCESSING = r"""
import ctypes, multiprocessing as mp, sys, threading, time, hotlink
s = hotlink.Session()
lib = s.library("parent")
lib.add(sys.argv[1])
kernel = lib.function("kernel", ctypes.c_long, [ctypes.c_long])
assert kernel(10) == 10 * 7 + 1
s.synchronize()
before = s.memory()

def work(i):
    # each worker links its own code 200 times, calls it, removes it
    mine = s.library(f"worker{i}")
    addrs = set()
    for n in range(200):
        u = mine.add(sys.argv[2 + i % 2])
        f = mine.function("kernel", ctypes.c_long, [ctypes.c_long])
        k, c = (3, 5) if i % 2 == 0 else (11, 13)
        assert f(n) == n * k + c, (i, n, f(n))
        assert kernel(n) == n * 7 + 1          # the inherited code still works here
        addrs.add(mine.address("kernel"))
        u.remove()
    assert s.synchronize(5)
    return i, len(addrs), s.memory().used

stop = False
wrong = 0
calls = 0
def keep_calling():
    global wrong, calls
    while not stop:
        for n in range(100):
            if kernel(n) != n * 7 + 1:
                wrong += 1
            calls += 1

t = threading.Thread(target=keep_calling)
t.start()
ctx = mp.get_context("fork")
with ctx.Pool(4) as pool:
    results = pool.map(work, range(4))
stop = True
t.join()
assert sorted(r[0] for r in results) == [0, 1, 2, 3], results
assert wrong == 0 and calls > 0, (wrong, calls)
s.synchronize()
after = s.memory()
assert (after.used, after.mapped, after.resident) == (before.used, before.mapped, before.resident), (before, after)
assert "worker0" not in s.libraries
for n in range(1000):
    assert kernel(n) == n * 7 + 1
print("results", results, "parent calls", calls)
"""


@pytest.mark.slow
def test_multiprocessing_fork_workers(scenario, compile_c):
    """Acceptance 2: 4 fork-context workers each link, call and remove their
    own code 200 times while the parent keeps calling its own."""
    parent = compile_c(KERNEL.format(k=7, c=1), name="parent")
    even = compile_c(KERNEL.format(k=3, c=5), name="even")
    odd = compile_c(KERNEL.format(k=11, c=13), name="odd")
    proc = scenario.expect_ok(MULTIPROCESSING, args=[str(parent), str(even), str(odd)], timeout=300)
    assert "results" in proc.stdout
