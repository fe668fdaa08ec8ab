"""IFUNCs (issue 13, point 1): the resolver runs once at link time, as ld.so
does for ``R_X86_64_IRELATIVE``; every reference binds to what it picked,
and ``address``/``function`` give the implementation, never the resolver."""
from __future__ import annotations

import ctypes
import math
import struct

import pytest

import hotlink

LIBM = "/usr/lib/x86_64-linux-gnu/libm-2.36.a"   # libm.a is a linker script naming it

RESOLVER_BY_CPU = r"""
static int pick_avx2(void) { return 2; }
static int pick_generic(void) { return 1; }
static int (*resolve_which(void))(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") ? pick_avx2 : pick_generic;
}
int which(void) __attribute__((ifunc("resolve_which")));
int calls = 0;
static int (*resolve_twice(void))(int);
static int twice_impl(int x) { return 2 * x; }
static int (*resolve_twice(void))(int) { calls++; return twice_impl; }
int twice(int x) __attribute__((ifunc("resolve_twice")));
int call_which(void) { return which() * 10; }
int (*which_pointer)(void) = which;
int resolver_calls(void) { return calls; }
"""

CALLER = r"""
extern int which(void);
extern int twice(int);
int via_other_unit(int x) { return which() * 100 + twice(x); }
"""


def _cpu_has_avx2() -> bool:
    flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    return "avx2" in flags


def test_libm_ifuncs_give_the_right_results(session):
    lib = session.library("m")
    lib.add(LIBM)
    for name in ("floor", "ceil", "trunc"):
        f = lib.function(name, ctypes.c_double, [ctypes.c_double])
        for x in (2.7, -2.7, 0.5, -0.5, 1e300, 3.0):
            assert f(x) == getattr(math, name)(x), (name, x)
    rint = lib.function("rint", ctypes.c_double, [ctypes.c_double])
    assert [rint(x) for x in (2.5, 3.5, -2.5, 2.7)] == [2.0, 4.0, -2.0, 3.0]   # ties to even
    fma = lib.function("fma", ctypes.c_double, [ctypes.c_double] * 3)
    assert fma(2.0, 3.0, 1.0) == 7.0
    # fused: one rounding, which the two-step product loses
    a = 1.0 + 2.0 ** -30
    assert fma(a, a, -1.0) == 2.0 ** -29 + 2.0 ** -60
    # the address is the implementation's, not the resolver's: the resolver returns
    # a pointer, so calling it as double(double) would give back garbage, and
    # the implementation's first bytes are not the resolver's
    floor_addr = lib.address("floor")
    assert ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_double)(floor_addr)(2.7) == 2.0


def test_a_hand_written_ifunc_picks_by_cpu_feature(session, compile_c):
    obj = compile_c(RESOLVER_BY_CPU, "-fPIC")
    caller = compile_c(CALLER, "-fPIC", name="caller")
    lib = session.library("i")
    lib.add(obj)
    expected = 2 if _cpu_has_avx2() else 1
    assert lib.function("which", ctypes.c_int)() == expected              # from Python
    assert lib.function("call_which", ctypes.c_int)() == expected * 10     # same unit
    ptr = ctypes.c_void_p.from_address(lib.address("which_pointer")).value
    assert ctypes.CFUNCTYPE(ctypes.c_int)(ptr)() == expected               # address taken in data
    other = session.library("o", link_order=[lib])
    other.add(caller)
    assert other.function("via_other_unit", ctypes.c_int, [ctypes.c_int])(21) == expected * 100 + 42
    # each resolver ran once, at link time (the later unit bound to the result)
    assert lib.function("resolver_calls", ctypes.c_int)() == 1


def test_ifunc_in_a_patchable_library_is_replaced(session, compile_c):
    v1 = compile_c(RESOLVER_BY_CPU, "-fPIC", name="v1")
    v2 = compile_c(RESOLVER_BY_CPU.replace("return 2; }", "return 20; }").replace("return 1; }", "return 10; }"),
                   "-fPIC", name="v2")
    lib = session.library("p", patchable=True)
    u = lib.add(v1)
    which = lib.function("which", ctypes.c_int)
    expected = 2 if _cpu_has_avx2() else 1
    assert which() == expected
    lib.replace(u, v2)
    assert which() == expected * 10
    assert session.synchronize(10)


def test_a_resolver_returning_null_is_an_error_and_leaves_nothing(session, compile_c):
    obj = compile_c("""
        static void *nothing(void) { return 0; }
        int broken(void) __attribute__((ifunc("nothing")));
    """, "-fPIC")
    lib = session.library("n")
    used = session.memory().used
    with pytest.raises(hotlink.LinkError, match=r"IFUNC resolver of 'broken' returned NULL"):
        lib.add(obj)
    assert lib.units == [] and "broken" not in lib and session.memory().used == used


def test_implicit_helpers_resolve_without_naming_them(session, compile_c):
    """What a static link adds implicitly: libgcc's helpers (``__udivti3``,
    ``__popcountdi2``) and libc_nonshared's (``atexit``, ``at_quick_exit``,
    ``pthread_atfork``, ``__stack_chk_fail_local``)."""
    obj = compile_c(r"""
        unsigned __int128 divide(unsigned __int128 a, unsigned __int128 b) { return a / b; }
        int pop(unsigned long x) { return __builtin_popcountl(x); }
        extern void __stack_chk_fail_local(void);
        void *chk(void) { return (void *)__stack_chk_fail_local; }
    """, ["-fPIC", "-mno-popcnt"])
    lib = session.library("g")
    lib.add(obj)
    assert lib.function("pop", ctypes.c_int, [ctypes.c_ulong])(0xF0F0) == 8
    # an __int128 argument is two registers; the low half of the result comes back in rax
    lo, hi = struct.unpack("<QQ", (10 ** 30).to_bytes(16, "little"))
    f = lib.function("divide", ctypes.c_uint64, [ctypes.c_uint64] * 4)
    assert f(lo, hi, 7, 0) == (10 ** 30 // 7) & (2 ** 64 - 1)
    stack_chk_fail = ctypes.cast(ctypes.CDLL(None).__stack_chk_fail, ctypes.c_void_p).value
    assert lib.function("chk", ctypes.c_void_p)() == stack_chk_fail
