"""The call gate under fire, each scenario in its own interpreter (a grace
period broken would crash it): removal and replace under concurrent
callers, fork while a thread is inside a call, close while a call runs, and
more sessions than the gate has lanes."""
from __future__ import annotations

# .rodata the function reads on every iteration: freed or reused under a running
# call, it would read zeros (a punched page) or another version's values
WORK = """
static const long table[64] = {{{values}}};
long work(long n) {{
    long s = 0;
    for (long i = 0; i < n; i++) s += ((volatile const long *)table)[i & 63];
    return s;
}}
"""

BLOCKING = r"""
#include <stdatomic.h>
extern atomic_int host_flag, host_entered;
long block(void) { atomic_store(&host_entered, 1); while (atomic_load(&host_flag)) { } return 1; }
"""


def versions(compile_c, n: int = 3) -> list[str]:
    return [str(compile_c(WORK.format(values=", ".join([str(v)] * 64)), name=f"work{v}")) for v in range(1, n + 1)]


def test_removal_and_replace_under_concurrent_callers_never_free_running_code(scenario, compile_c):
    """Three threads hammer a patchable function that is replaced 1,000
    times and a plain one whose unit is removed and added again 1,000 times;
    every call returns its version's exact sum or raises SessionClosedError,
    and the retired memory is freed only once the calls are over."""
    scenario.expect_ok(r"""
        import ctypes, sys, threading, time, hotlink
        objs = [open(p, "rb").read() for p in sys.argv[1:4]]
        N = 2000
        s = hotlink.Session()
        pat = s.library("pat", patchable=True)
        pu = pat.add(objs[0])
        pf = pat.function("work", ctypes.c_long, [ctypes.c_long])
        assert type(pf).__name__ == "Function"
        plain = s.library("plain")
        current = [None]
        stop = threading.Event()
        bad, counts = [], {"patchable": 0, "plain": 0, "closed": 0}

        def hammer():
            try:
                while not stop.is_set():
                    r = pf(N)
                    if r not in (N, 2 * N, 3 * N):
                        bad.append(("patchable", r))
                    counts["patchable"] += 1
                    c = current[0]
                    if c is not None:
                        f, v = c
                        try:
                            r = f(N)
                        except hotlink.SessionClosedError:
                            counts["closed"] += 1
                            continue
                        if r != v * N:
                            bad.append(("plain", v, r))
                        counts["plain"] += 1
            except BaseException as e:
                bad.append(e)

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        waiting = 0
        try:
            for i in range(1000):
                pu = pat.replace(pu, objs[(i + 1) % 3])
                u = plain.add(objs[i % 3])
                current[0] = (plain.function("work", ctypes.c_long, [ctypes.c_long]), i % 3 + 1)
                time.sleep(0.0002)
                u.remove()                  # the current callable raises from here on
                waiting += s.memory().retired > 0
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert not bad, bad[:5]
        assert counts["patchable"] > 1000 and counts["plain"] > 100 and counts["closed"] > 0, counts
        assert waiting > 0, "nothing ever waited for a grace period"
        assert s.synchronize(10) and s.memory().retired == 0
        s.close()
        print("ok", counts, "waiting", waiting)
    """, args=versions(compile_c), timeout=240)


FORK = r"""
import ctypes, os, sys, threading, time, traceback, hotlink
flag, entered = ctypes.c_int(1), ctypes.c_int(0)
s = hotlink.Session()
s.define({"host_flag": ctypes.addressof(flag), "host_entered": ctypes.addressof(entered)})
lib = s.library("b")
blocking = lib.add(sys.argv[1])
other = s.library("o")
ou = other.add(sys.argv[2])
block = lib.function("block", ctypes.c_long)
work = other.function("work", ctypes.c_long, [ctypes.c_long])
assert work(64) == 64
res = []
t = threading.Thread(target=lambda: res.append(block()))
t.start()
while not entered.value:
    time.sleep(0.001)
assert s.reclaimer.busy()

def child(body):
    pid = os.fork()
    if pid == 0:
        try:
            body()
            code = 0
        except BaseException:
            traceback.print_exc()
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert status == 0, status

def in_child():
    # the blocked thread does not exist here: nothing holds a grace period
    assert not s.reclaimer.busy()
    assert work(64) == 64
    blocking.remove()
    assert s.synchronize(5) and s.memory().retired == 0
    r = []
    th = threading.Thread(target=lambda: r.append(work(128)))    # a new thread claims a slot
    th.start()
    th.join()
    assert r == [128]
    ou.remove()
    try:
        work(1)
    except hotlink.SessionClosedError:
        pass
    else:
        raise AssertionError("a removed function ran")
    s.close()

child(in_child)

# a callback that forks: in the child its own call is still in flight
cbl = s.library("cb")
cbl.add(sys.argv[3])
CB = ctypes.CFUNCTYPE(ctypes.c_int)
call_back = cbl.function("call_back", ctypes.c_int, [CB])

def forking_callback():
    def in_callback_child():
        assert s.reclaimer.busy()
        try:
            s.synchronize(0.1)
        except hotlink.LinkError as e:
            assert "inside a call into JIT code" in str(e)
        else:
            raise AssertionError("synchronize waited for its own call")
    child(in_callback_child)
    return 41

assert call_back(CB(forking_callback)) == 42

# the parent: untouched, its thread still inside
assert s.reclaimer.busy() and work(64) == 64
blocking.remove()
assert s.synchronize(0.3) is False and s.memory().retired > 0
flag.value = 0
t.join()
assert res == [1]
assert s.synchronize(5) and s.memory().retired == 0
s.close()
print("parent ok")
"""


def test_fork_child_keeps_working(scenario, compile_c):
    """A fork while another thread is inside a call: the child (where that
    thread does not exist) reclaims at once and calls on; a fork from a
    callback keeps the forking thread's own call counted in the child."""
    blocking = compile_c(BLOCKING, name="blocking")
    work = versions(compile_c, 1)[0]
    cb = compile_c("int call_back(int (*cb)(void)) { return cb() + 1; }", name="cb")
    proc = scenario.expect_ok(FORK, args=[str(blocking), work, str(cb)], timeout=120)
    assert "parent ok" in proc.stdout


def test_close_while_a_call_runs(scenario, compile_c):
    """close() waits for a call through the gate, then leaves the code mapped
    (with a warning) rather than free it under the call; the GIL is free
    meanwhile, and the call returns normally."""
    proc = scenario.expect_ok(r"""
        import ctypes, sys, threading, time, warnings, hotlink
        flag, entered = ctypes.c_int(1), ctypes.c_int(0)
        s = hotlink.Session()
        s.define({"host_flag": ctypes.addressof(flag), "host_entered": ctypes.addressof(entered)})
        lib = s.library("b")
        lib.add(sys.argv[1])
        block = lib.function("block", ctypes.c_long)
        res = []
        t = threading.Thread(target=lambda: res.append(block()))
        t.start()
        while not entered.value:
            time.sleep(0.001)
        t0 = time.monotonic()
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            s.close(timeout=0.3)                  # this thread runs Python meanwhile: the GIL is free
        assert time.monotonic() - t0 >= 0.3
        assert any("still running JIT code" in str(x.message) for x in w), [str(x.message) for x in w]
        assert s.closed
        flag.value = 0
        t.join()
        assert res == [1]
        print("ok")
    """, args=[str(compile_c(BLOCKING))], timeout=60)
    assert "ok" in proc.stdout


def test_more_sessions_than_lanes(scenario, compile_c):
    """15 sessions get lanes of the gate; a 16th gets the Python path (and
    works); a closed session's lane serves the next one."""
    scenario.expect_ok(r"""
        import ctypes, sys, hotlink
        from hotlink import gate
        obj = open(sys.argv[1], "rb").read()

        def make():
            s = hotlink.Session(arena_size=16 << 20)      # 16 of them fit within 2 GiB of libc
            lib = s.library("l")
            lib.add(obj)
            return s, lib.function("work", ctypes.c_long, [ctypes.c_long])

        made = [make() for _ in range(gate.LANES + 1)]
        kinds = [type(f).__name__ for _, f in made]
        assert kinds == ["Function"] * gate.LANES + ["GuardedFunction"], kinds
        assert all(f(64) == 64 for _, f in made)
        made[3][0].close()
        s, f = make()
        assert type(f).__name__ == "Function" and f(64) == 64
        try:
            made[3][1](64)
        except hotlink.SessionClosedError:
            pass
        else:
            raise AssertionError("a closed session's function ran")
        for t, _ in made:
            t.close()
        s.close()
        print("ok")
    """, args=versions(compile_c, 1), timeout=120)


def test_a_callable_handed_to_native_code_as_a_function_pointer(scenario, compile_c):
    """A callable is a ctypes pointer, so ctypes passes it where a ``void *``
    goes; native code calling it (without the GIL) is forwarded to the
    function, as its address would be, and gets 0 once it was removed."""
    scenario.expect_ok(r"""
        import ctypes, sys, threading, hotlink
        s = hotlink.Session()
        inc = s.library("inc")
        unit = inc.add(sys.argv[1])
        app = s.library("app")
        app.add(sys.argv[2])
        f = inc.function("inc", ctypes.c_long, [ctypes.c_long])
        apply = app.function("apply", ctypes.c_long, [ctypes.c_void_p, ctypes.c_long])
        assert type(f).__name__ == type(apply).__name__ == "Function"
        assert apply(f, 41) == 42                 # called back from JIT code, the GIL let go
        r = []
        t = threading.Thread(target=lambda: r.append(apply(f, 1)))
        t.start()
        t.join()
        assert r == [2]
        unit.remove()
        assert apply(f, 41) == 0                  # removed: native callers get 0, Python callers raise
        try:
            f(1)
        except hotlink.SessionClosedError:
            pass
        else:
            raise AssertionError("a removed function ran")
        s.close()
        print("ok")
    """, args=[str(compile_c("long inc(long x) { return x + 1; }", name="inc")),
               str(compile_c("long apply(long (*f)(long), long x) { return f(x); }", name="apply"))])
