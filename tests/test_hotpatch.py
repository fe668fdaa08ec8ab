"""Patchable libraries: stable entry stubs, atomic replace under concurrent
callers (native threads started by JIT code and Python threads), and grace
periods that never free code a thread is still running."""
from __future__ import annotations

import ctypes
import threading
import time

import pytest

import hotlink

VERSION = "int value(void) {{ return {v}; }}\nint helper(int x) {{ return x + {v}; }}\n"

DRIVER = r"""
#include <pthread.h>
#include <stdatomic.h>
extern int hotlink_thread_online(void);
extern void hotlink_quiescent(void);
extern void hotlink_thread_offline(void);
extern int value(void);
static atomic_int stop, bad;
static atomic_long calls[2], seen[2][4];
static pthread_t threads[2];
static void *loop(void *arg) {
    long k = (long)arg;
    hotlink_thread_online();
    while (!atomic_load(&stop)) {
        int v = value();
        if (v < 1 || v > 2) atomic_store(&bad, v); else atomic_fetch_add(&seen[k][v], 1);
        atomic_fetch_add(&calls[k], 1);
        hotlink_quiescent();
    }
    hotlink_thread_offline();
    return 0;
}
int start_threads(void) {
    for (long k = 0; k < 2; k++) if (pthread_create(&threads[k], 0, loop, (void *)k)) return -1;
    return 0;
}
int stop_threads(void) {
    atomic_store(&stop, 1);
    for (int k = 0; k < 2; k++) pthread_join(threads[k], 0);
    return atomic_load(&bad);
}
long calls_of(int k) { return atomic_load(&calls[k]); }
long seen_of(int k, int v) { return atomic_load(&seen[k][v]); }
"""


@pytest.mark.slow
def test_stress_replace_under_native_and_python_callers(session, compile_c):
    v1 = compile_c(VERSION.format(v=1)).read_bytes()
    v2 = compile_c(VERSION.format(v=2)).read_bytes()
    p = session.library("kernel", patchable=True)
    u = p.add(v1)
    stub = p.address("value")
    drv = session.library("driver", link_order=[p])
    drv.add(compile_c(DRIVER, "-pthread"))
    assert drv.function("start_threads", ctypes.c_int)() == 0
    calls_of = drv.function("calls_of", ctypes.c_long, [ctypes.c_int])
    stop = threading.Event()
    py_seen: list[set] = [set(), set()]
    py_errors: list[BaseException] = []

    def py_caller(k: int) -> None:
        f = p.function("value", ctypes.c_int)      # one handle for the whole run: stubs are stable
        try:
            while not stop.is_set():
                py_seen[k].add(f())
        except BaseException as e:
            py_errors.append(e)

    py = [threading.Thread(target=py_caller, args=(k,)) for k in range(2)]
    for t in py:
        t.start()
    peak = 0
    try:
        for i in range(2000):
            u = p.replace(u, v2 if i % 2 == 0 else v1)
            assert p.address("value") == stub
            if i % 200 == 0:
                peak = max(peak, session.memory().resident)
                time.sleep(0.001)       # let the callers run on this 2-core machine
    finally:
        stop.set()
        for t in py:
            t.join()
        bad = drv.function("stop_threads", ctypes.c_int)()
    assert bad == 0
    assert not py_errors, py_errors[:2]
    assert all(s <= {1, 2} and s for s in py_seen)
    assert calls_of(0) > 0 and calls_of(1) > 0
    seen_of = drv.function("seen_of", ctypes.c_long, [ctypes.c_int, ctypes.c_int])
    assert sum(seen_of(k, 2) for k in range(2)) > 0, "native threads never saw a patched version"
    assert session.synchronize(10)
    mem = session.memory()
    assert mem.retired == 0
    assert mem.libraries["kernel"].units == 1
    # the 2,000 retired versions are gone: what stays resident is a few pages
    assert mem.resident <= 16 * 4096, mem


BLOCKING = r"""
#include <stdatomic.h>
extern atomic_int host_flag, host_entered;
int value(void) { atomic_store(&host_entered, 1); while (atomic_load(&host_flag)) { } return 1; }
"""

ONE_CALL = r"""
#include <pthread.h>
extern int hotlink_thread_online(void);
extern void hotlink_quiescent(void);
extern void hotlink_thread_offline(void);
extern int value(void);
static pthread_t thread;
static int result;
static void *once(void *arg) {
    hotlink_thread_online();
    result = value();          /* blocks inside the old version */
    hotlink_quiescent();
    hotlink_thread_offline();
    return 0;
}
int start(void) { return pthread_create(&thread, 0, once, 0); }
int finish(void) { pthread_join(thread, 0); return result; }
"""


@pytest.mark.parametrize("caller", ["native", "python"])
def test_code_is_not_freed_while_a_thread_is_inside(session, compile_c, caller):
    flag = ctypes.c_int(1)
    entered = ctypes.c_int(0)
    session.define({"host_flag": ctypes.addressof(flag), "host_entered": ctypes.addressof(entered)})
    p = session.library("p", patchable=True)
    old = p.add(compile_c(BLOCKING))
    if caller == "native":
        drv = session.library("d", link_order=[p])
        drv.add(compile_c(ONE_CALL, "-pthread"))
        assert drv.function("start", ctypes.c_int)() == 0
    else:
        result = []
        f = p.function("value", ctypes.c_int)
        t = threading.Thread(target=lambda: result.append(f()))
        t.start()
    while not entered.value:
        time.sleep(0.001)
    p.replace(old, compile_c("int value(void) { return 2; }").read_bytes())
    assert p.function("value", ctypes.c_int)() == 2           # new callers get the new code
    assert session.memory().retired > 0
    assert session.synchronize(timeout=0.5) is False          # a thread is still in the old code
    assert session.memory().retired > 0
    flag.value = 0
    if caller == "native":
        assert drv.function("finish", ctypes.c_int)() == 1
    else:
        t.join()
        assert result == [1]
    assert session.synchronize(timeout=5) is True
    assert session.memory().retired == 0


def test_replace_must_keep_called_functions(session, compile_c):
    p = session.library("p", patchable=True)
    u = p.add(compile_c(VERSION.format(v=1)))
    user = session.library("user", link_order=[p])
    user.add(compile_c("int helper(int); int use(void) { return helper(40); }"))
    assert user.function("use", ctypes.c_int)() == 41
    with pytest.raises(hotlink.DependencyError, match="helper"):
        p.replace(u, compile_c("int value(void) { return 3; }"))
    u2 = p.replace(u, compile_c(VERSION.format(v=5)))
    assert user.function("use", ctypes.c_int)() == 45            # through the stub, now the new code
    with pytest.raises(hotlink.DependencyError):
        u2.remove()
    # a function nobody calls may disappear in a replace
    u3 = p.replace(u2, compile_c("int helper(int x) { return x; }"))
    with pytest.raises(hotlink.SymbolNotFoundError):
        p.address("value")
    assert user.function("use", ctypes.c_int)() == 40
    user.remove()
    u3.remove()
    assert session.synchronize(5) and session.memory().stubs == 0


def test_callables_survive_replace_and_data_is_not_stubbed(session, compile_c):
    p = session.library("p", patchable=True)
    u = p.add(compile_c("int counter = 7; int get(void) { return counter; }"))
    get = p.function("get", ctypes.c_int)
    data = p.address("counter")
    assert ctypes.c_int.from_address(data).value == 7 and get() == 7
    u = p.replace(u, compile_c("int counter = 9; int get(void) { return counter * 2; }"))
    assert get() == 18                  # the same callable, now running the new code
    assert p.address("counter") != data
    u.remove()
    with pytest.raises(hotlink.SessionClosedError):
        get()


def test_runtime_functions_from_python(session):
    online = session.runtime_function("hotlink_thread_online", ctypes.c_int)
    quiescent = session.runtime_function("hotlink_quiescent")
    offline = session.runtime_function("hotlink_thread_offline")
    native = session.reclaimer.native
    before = native.online()
    assert online() == 0
    assert native.online() == before + 1
    quiescent()
    offline()
    assert native.online() == before
    with pytest.raises(hotlink.SymbolNotFoundError):
        session.runtime_function("hotlink_nonsense")
