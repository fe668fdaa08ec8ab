"""Thread-local storage (issue 13, point 2): variables defined in JIT
objects in each of the four models (and TLS descriptors), read and written
from threads started before and after the add; references to the TLS of
shared objects (libc's errno); per-thread blocks freed on removal.

Each test runs in a fresh interpreter: static TLS is a process-wide reserve
and a bad TLS offset is a crash."""
from __future__ import annotations

import subprocess

import pytest

TLS_SOURCE = r"""
#include <errno.h>
__thread long counter = 7;            /* .tdata */
__thread char buf[64];                /* .tbss */
static __thread int hidden = 3;       /* local symbol */
long bump(long d) { counter += d; hidden += 1; buf[5] += 1; return counter; }
long get(void) { return counter * 1000 + hidden * 10 + buf[5]; }
long where(void) { return (long)&counter; }
long errno_where(void) { return (long)&errno; }
int errno_get(void) { return errno; }
"""

MODELS = {"global-dynamic": ["-ftls-model=global-dynamic"], "local-dynamic": ["-ftls-model=local-dynamic"],
          "initial-exec": ["-ftls-model=initial-exec"], "local-exec": ["-ftls-model=local-exec"],
          "descriptors": ["-mtls-dialect=gnu2"]}
EXPECTED_KINDS = {"global-dynamic": {"R_X86_64_TLSGD"}, "local-dynamic": {"R_X86_64_TLSLD", "R_X86_64_DTPOFF32"},
                  "initial-exec": {"R_X86_64_GOTTPOFF"}, "local-exec": {"R_X86_64_TPOFF32"},
                  "descriptors": {"R_X86_64_GOTPC32_TLSDESC", "R_X86_64_TLSDESC_CALL"}}


def _compile(tmp_path, source, name, flags):
    src = tmp_path / f"{name}.c"
    src.write_text(source)
    obj = tmp_path / f"{name}.o"
    subprocess.run(["gcc", "-O2", "-fPIC", "-c", str(src), "-o", str(obj), *flags], check=True)
    return obj


@pytest.mark.parametrize("model", sorted(MODELS))
def test_thread_locals_in_each_model_are_per_thread(scenario, tmp_path, model):
    from tests.conftest import reloc_types
    obj = _compile(tmp_path, TLS_SOURCE, model, MODELS[model])
    assert EXPECTED_KINDS[model] <= reloc_types(obj)
    proc = scenario.expect_ok(f"""
        import ctypes, threading, hotlink
        libc = ctypes.CDLL(None)
        libc.__errno_location.restype = ctypes.c_void_p
        s = hotlink.Session()
        lib = s.library("t")
        go = threading.Event()
        alive = threading.Barrier(8)      # all eight threads exist at once (no reused blocks)
        results = {{}}
        def worker(k):
            go.wait()
            bump = lib.function("bump", ctypes.c_long, [ctypes.c_long])
            get = lib.function("get", ctypes.c_long)
            where = lib.function("where", ctypes.c_long)
            errno_where = lib.function("errno_where", ctypes.c_long)
            first = get()
            bump(k)
            results[k] = (first, get(), where(), errno_where() == libc.__errno_location())
            alive.wait()
        early = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in early:
            t.start()
        used = s.memory().used
        u = lib.add({str(obj)!r})
        go.set()
        late = [threading.Thread(target=worker, args=(k,)) for k in range(4, 8)]
        for t in late:
            t.start()
        for t in early + late:
            t.join()
        # initial values from .tdata (7), the local (3) and .tbss (0), in every thread
        assert all(r[0] == 7030 for r in results.values()), results
        # each thread's writes stayed its own
        assert all(results[k][1] == (7 + k) * 1000 + 41 for k in range(8)), results
        assert len({{r[2] for r in results.values()}}) == 8          # one block per thread
        assert all(r[3] for r in results.values())                   # errno is libc's, per thread
        get = lib.function("get", ctypes.c_long)
        assert get() == 7030                                          # the main thread untouched
        errno_get = lib.function("errno_get", ctypes.c_int)
        ctypes.c_int.from_address(libc.__errno_location()).value = 42
        assert errno_get() == 42
        u.remove()
        assert s.synchronize(10)
        assert s.memory().used <= used + 64, (s.memory().used, used)
        maps = open("/proc/self/maps").read()
        assert "hotlink-tls:" not in maps, "the TLS module was not unloaded"
        print("ok")
    """)
    assert "ok" in proc.stdout


def test_cross_unit_references_and_model_mismatch(scenario, tmp_path):
    """A unit reads another unit's thread-local (general dynamic and initial
    exec); an initial-exec reference to a unit whose thread-locals are
    dynamic is refused with the fix, and leaves the session unchanged."""
    dyn = _compile(tmp_path, "__thread long shared_tl = 5; long set_tl(long v) { return shared_tl = v; }",
                   "dyn", ["-ftls-model=global-dynamic"])
    ie_def = _compile(tmp_path, "__thread long shared_tl = 6; long set_tl(long v) { return shared_tl = v; }"
                      "long ie_anchor(void) { return shared_tl; }", "iedef", ["-ftls-model=initial-exec"])
    user_gd = _compile(tmp_path, "extern __thread long shared_tl; long read_tl(void) { return shared_tl; }",
                       "usergd", ["-ftls-model=global-dynamic"])
    user_ie = _compile(tmp_path, "extern __thread long shared_tl; long read_tl(void) { return shared_tl; }",
                       "userie", ["-ftls-model=initial-exec"])
    scenario.expect_ok(f"""
        import ctypes, threading, hotlink
        s = hotlink.Session()
        a = s.library("a")
        a.add({str(dyn)!r})
        a.add({str(user_gd)!r}, name="reader")
        read = a.function("read_tl", ctypes.c_long)
        assert read() == 5
        a.function("set_tl", ctypes.c_long, [ctypes.c_long])(11)
        assert read() == 11
        out = []
        t = threading.Thread(target=lambda: out.append(read()))
        t.start(); t.join()
        assert out == [5]
        used = s.memory().used
        c = s.library("c", link_order=[a])
        try:
            c.add({str(user_ie)!r}, name="ie")
        except hotlink.UnsupportedRelocationError as e:
            assert "shared_tl" in str(e) and "global-dynamic" in str(e), e
        else:
            raise AssertionError("initial-exec reference to dynamic TLS accepted")
        assert s.memory().used == used and c.units == []
        b = s.library("b")
        b.add({str(ie_def)!r})
        b.add({str(user_ie)!r}, name="ie")
        assert b.function("read_tl", ctypes.c_long)() == 6
        b.function("set_tl", ctypes.c_long, [ctypes.c_long])(9)
        assert b.function("read_tl", ctypes.c_long)() == 9
        print("ok")
    """)


def test_tdata_with_addresses_is_relocated(scenario, tmp_path):
    obj = _compile(tmp_path, """
        int target = 77;
        __thread int *tp = &target;
        int deref(void) { return *tp; }
    """, "reloc", [])
    scenario.expect_ok(f"""
        import ctypes, threading, hotlink
        s = hotlink.Session()
        lib = s.library("r")
        lib.add({str(obj)!r})
        deref = lib.function("deref", ctypes.c_int)
        out = []
        t = threading.Thread(target=lambda: out.append(deref()))
        t.start(); t.join()
        assert deref() == 77 and out == [77]
    """)


def test_full_static_tls_reserve_names_the_tunable(scenario, tmp_path):
    obj = _compile(tmp_path, "__thread char big[1 << 20]; char at(long i) { return big[i]; }", "big",
                   ["-ftls-model=initial-exec"])
    scenario.expect_ok(f"""
        import hotlink
        s = hotlink.Session()
        lib = s.library("big")
        used = s.memory().used
        try:
            lib.add({str(obj)!r})
        except hotlink.LinkError as e:
            assert "glibc.rtld.optional_static_tls" in str(e), e
        else:
            raise AssertionError("1 MiB of static TLS accepted")
        assert s.memory().used == used and lib.units == []
        assert "at" not in lib
    """)


def test_add_remove_cycles_with_live_threads_do_not_grow(scenario, tmp_path):
    gd = _compile(tmp_path, TLS_SOURCE, "gd", ["-ftls-model=global-dynamic"])
    ie = _compile(tmp_path, TLS_SOURCE, "ie", ["-ftls-model=initial-exec"])
    proc = scenario.expect_ok(f"""
        import ctypes, os, threading, hotlink
        s = hotlink.Session()
        stable = s.library("stable")
        stable.add({str(gd)!r})
        bump = stable.function("bump", ctypes.c_long, [ctypes.c_long])
        stop = threading.Event()
        calls = [0] * 8
        def spin(k):
            while not stop.is_set():
                bump(1)
                calls[k] += 1
        threads = [threading.Thread(target=spin, args=(k,), daemon=True) for k in range(8)]
        for t in threads:
            t.start()
        lib = s.library("churn")
        def state():
            s.synchronize(10)
            return (s.memory().used, len(os.listdir("/proc/self/fd")),
                    sum("hotlink-tls" in line for line in open("/proc/self/maps")))
        for i in range(1000):
            u = lib.add({str(gd)!r} if i % 2 else {str(ie)!r})
            assert lib.function("get", ctypes.c_long)() == 7030
            u.remove()
            if i == 99:
                before = state()
        after = state()
        stop.set()
        for t in threads:
            t.join()
        assert after == before, (before, after)
        assert min(calls) > 0
        print("cycles ok", before, after)
    """, timeout=300)
    assert "cycles ok" in proc.stdout


CXX_THREAD_LOCAL = r"""
#include <string>
static long *sink;
struct Obj {
    std::string s;
    Obj() : s("a thread's own object") { __atomic_add_fetch(sink, 1, __ATOMIC_SEQ_CST); }
    ~Obj() { __atomic_add_fetch(sink, 100, __ATOMIC_SEQ_CST); }
};
thread_local Obj tobj;
extern "C" void set_sink(long *p) { sink = p; }
extern "C" long touch(void) { return (long)tobj.s.size(); }
"""


def test_cxx_thread_local_destructors_keep_their_unit_alive(scenario, compile_cxx):
    """``thread_local`` objects with destructors (``__cxa_thread_atexit``):
    each runs at its thread's exit, and a removed unit is not freed while a
    thread still holds such an object (its destructor is the unit's code)."""
    obj = compile_cxx(CXX_THREAD_LOCAL, "-fPIC")
    scenario.expect_ok(f"""
        import ctypes, threading, time, hotlink
        s = hotlink.Session()
        s.load_shared("libstdc++.so.6")
        lib = s.library("t")
        u = lib.add({str(obj)!r})
        sink = ctypes.c_long(0)
        lib.function("set_sink", None, [ctypes.c_void_p])(ctypes.addressof(sink))
        touch = lib.function("touch", ctypes.c_long)
        release = threading.Event()
        def worker():
            assert touch() == 21
            release.wait()
        threads = [threading.Thread(target=worker) for _ in range(3)]
        for t in threads:
            t.start()
        while sink.value != 3:      # three objects constructed, one per thread
            pass
        u.remove()
        # the threads' destructors are the unit's code: it must stay
        assert not s.synchronize(0.3)
        assert s.memory().retired > 0 and sink.value == 3, (s.memory(), sink.value)
        release.set()
        for t in threads:
            t.join()
        # join() returns when the Python thread is done; the native thread
        # runs its thread_local destructors just after
        deadline = time.monotonic() + 10
        while sink.value != 303 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert sink.value == 303    # every destructor ran, at its thread's exit
        assert s.synchronize(10)
        assert s.memory().retired == 0
        assert "t" not in s.memory().libraries or s.memory().libraries["t"].used == 0, s.memory()
        print("ok")
    """)


def test_the_address_of_a_thread_local_is_refused(session, compile_c):
    obj = compile_c("__thread long tl = 1; long get(void) { return tl; }", "-fPIC")
    lib = session.library("a")
    lib.add(obj)
    import hotlink
    with pytest.raises(hotlink.LinkError, match=r"'tl' is thread-local"):
        lib.address("tl")
    assert lib.function("get", __import__("ctypes").c_long)() == 1
