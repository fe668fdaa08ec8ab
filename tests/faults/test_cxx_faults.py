"""C++ exceptions from static constructors and destructors never unwind into
ctypes (issue 9, item 5), and exit handlers registered outside initializers
belong to the unit whose code they run (item 6)."""
from __future__ import annotations

import pytest

THROWING_CTOR = r"""
#include <cstdio>
#include <stdexcept>
struct Noisy { int id; Noisy(int i) : id(i) { std::printf("ctor %d\n", id); std::fflush(stdout); }
               ~Noisy() { std::printf("dtor %d\n", id); std::fflush(stdout); } };
struct Bomb { Bomb() { throw std::runtime_error("constructor exploded"); } };
static Noisy first(1);
static Noisy second(2);
static Bomb bomb;
extern "C" int never_published(void) { return 1; }
"""

THROWER = r"""
#include <stdexcept>
extern "C" int throw_catch(int x) {
    try { if (x >= 0) throw std::logic_error("fine"); } catch (const std::exception &) { return x + 42; }
    return -1;
}
"""


@pytest.mark.slow
def test_throwing_static_constructor_is_a_link_error(scenario, compile_cxx):
    bad = compile_cxx(THROWING_CTOR, "-fPIC")
    good = compile_cxx(THROWER, "-fPIC")
    proc = scenario.expect_ok(f"""
        import ctypes, hotlink
        from hotlink import platform
        s = hotlink.Session()
        s.load_shared("libstdc++.so.6")
        ok = s.library("ok")
        ok.add({str(good)!r})
        f = ok.function("throw_catch", ctypes.c_int, [ctypes.c_int])
        assert f(1) == 43
        bad = s.library("bad")
        for attempt in range(2):   # the first also links the runtime's C++ part (guarded calls)
            s.synchronize()
            used, frames = s.memory().used, platform.registered_frames
            try:
                bad.add({str(bad)!r}, name="bomb.o")
            except hotlink.InitializerError as e:
                print("ERROR:", e)
            else:
                raise SystemExit("add succeeded")
            assert bad.units == [] and "never_published" not in bad
            s.synchronize()
            assert platform.registered_frames == frames or attempt == 0
            assert f(2) == 44          # C++ exceptions still work
        assert s.memory().used == used, (s.memory().used, used)
        s.close()
        print("closed")
    """)
    out = proc.stdout
    assert "ERROR:" in out and "bomb.o" in out and "constructor exploded" in out and "runtime_error" in out
    # what was constructed was destroyed, newest first, before add returned
    first = out[:out.index("ERROR:")]
    assert first.index("ctor 1") < first.index("ctor 2") < first.index("dtor 2") < first.index("dtor 1")
    assert out.count("dtor") == 4 and out.count("ERROR:") == 2


@pytest.mark.slow
def test_throwing_destructor_is_caught_at_remove(scenario, compile_cxx):
    obj = compile_cxx(r"""
        #include <stdexcept>
        #include <cstdio>
        struct Bad { ~Bad() noexcept(false) { throw std::runtime_error("destructor exploded"); } };
        struct Fine { ~Fine() { std::puts("fine destroyed"); std::fflush(stdout); } };
        static Fine fine;
        static Bad bad;
        extern "C" int alive(void) { return 1; }
    """, "-fPIC")
    proc = scenario.expect_ok(f"""
        import ctypes, warnings, hotlink
        s = hotlink.Session()
        s.load_shared("libstdc++.so.6")
        lib = s.library("x")
        u = lib.add({str(obj)!r})
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            u.remove()
        assert any("destructor exploded" in str(x.message) for x in w), [str(x.message) for x in w]
        s.close()
        print("survived")
    """)
    assert "fine destroyed" in proc.stdout and "survived" in proc.stdout


ATEXIT_USER = r"""
#include <stdio.h>
#include <stdlib.h>
extern void *__dso_handle;
int __cxa_atexit(void (*fn)(void *), void *arg, void *dso);
static void by_atexit(void) { puts("atexit handler"); fflush(stdout); }
static void by_cxa_null(void *arg) { printf("cxa null handler %ld\n", (long)arg); fflush(stdout); }
static void by_cxa_value(void *arg) { printf("cxa value handler %ld\n", (long)arg); fflush(stdout); }
void *dso_value(void) { return __dso_handle; }
void *dso_address(void) { return &__dso_handle; }
int register_all(void) {
    return atexit(by_atexit) | __cxa_atexit(by_cxa_null, (void *)7, 0)
         | __cxa_atexit(by_cxa_value, (void *)8, __dso_handle);
}
"""


def test_exit_handlers_registered_by_ordinary_functions_run_at_removal(scenario, compile_c):
    obj = compile_c(ATEXIT_USER, "-fPIC")
    proc = scenario.expect_ok(f"""
        import ctypes, hotlink
        s = hotlink.Session()
        lib = s.library("x")
        u = lib.add({str(obj)!r})
        # like crtbeginS.o: __dso_handle holds its own address
        assert lib.function("dso_value", ctypes.c_void_p)() == lib.function("dso_address", ctypes.c_void_p)()
        assert lib.function("register_all", ctypes.c_int)() == 0
        print("removing")
        u.remove()
        s.synchronize()
        print("removed")
        # the session stays open: at exit nothing of the removed unit may run
    """)
    out = proc.stdout
    body = out[out.index("removing"):out.index("removed")]
    for handler in ("atexit handler", "cxa null handler 7", "cxa value handler 8"):
        assert handler in body, out
        assert out.count(handler) == 1, out
    # registered last, run first
    assert body.index("cxa value") < body.index("cxa null") < body.index("atexit handler")
