"""Callables through the call gate (gate.py, call.py): a hotlink callable is a
ctypes function pointer whose grace-period bookkeeping and removed-code check
run natively.  Arguments and results pass through untouched, signatures the
gate cannot forward take the Python path, removed code raises, and a
thread's slot goes back when it exits.  (Crash-prone scenarios: fork,
concurrent removal, close while a call runs: tests/faults/test_call_gate.py.)"""
from __future__ import annotations

import ctypes
import gc
import threading
import time

import numpy as np
import pytest

import hotlink
from hotlink import gate
from hotlink.call import BufferFunction, Function, GuardedFunction, fast_signature

KERNELS = r"""
struct pair { long a, b; };
long add1(long x) { return x + 1; }
/* every register argument counts, each with its own weight */
double mix(long a, long b, long c, long d, long e, long f,
           double x0, double x1, double x2, double x3, double x4, double x5, double x6, double x7) {
    return a + 2 * b + 3 * c + 5 * d + 7 * e + 11 * f
         + 13 * x0 + 17 * x1 + 19 * x2 + 23 * x3 + 29 * x4 + 31 * x5 + 37 * x6 + 41 * x7;
}
float halve(float x) { return x / 2; }
long seven(long a, long b, long c, long d, long e, long f, long g) { return a + b + c + d + e + f + 7 * g; }
struct pair make_pair(long a) { struct pair p = {a, -a}; return p; }
long double ld_half(long double x) { return x / 2; }
double sum(const double *v, long n) { double s = 0; for (long i = 0; i < n; i++) s += v[i]; return s; }
int apply(int (*f)(int), int x) { return f(x) * 10; }
"""


class Pair(ctypes.Structure):
    _fields_ = [("a", ctypes.c_long), ("b", ctypes.c_long)]


@pytest.fixture
def kernels(session, compile_c):
    lib = session.library("kernels")
    unit = lib.add(compile_c(KERNELS))
    return lib, unit


def test_a_callable_is_a_ctypes_function_through_the_gate(kernels):
    lib, _ = kernels
    f = lib.function("add1", ctypes.c_long, [ctypes.c_long])
    assert type(f) is Function and isinstance(f, hotlink.Function)
    assert isinstance(f, ctypes.CFUNCTYPE(None).__bases__[0])          # ctypes' own __call__, no Python frame
    assert f.name == "add1" and f.address == lib.address("add1") and f.signature is None
    assert ctypes.cast(f, ctypes.c_void_p).value != f.address          # it points at its trampoline
    assert f(41) == 42 and f(-(2 ** 62)) == -(2 ** 62) + 1
    assert "add1" in repr(f) and f"{f.address:#x}" in repr(f)
    assert hash(f) == hash(f) and f in {f}                             # usable as a key, by identity
    d = lib.function("add1", "long add1(long x)")
    assert type(d) is Function and d(1) == 2 and str(d.signature) == "long(long x)"


def test_every_register_argument_and_result_passes_through(kernels):
    lib, _ = kernels
    L, D = ctypes.c_long, ctypes.c_double
    mix = lib.function("mix", D, [L] * 6 + [D] * 8)
    assert type(mix) is Function                                       # 6 integer + 8 vector registers: the gate
    ints, floats = [1, 2, 3, 4, 5, 6], [0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5]
    weights = [1, 2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41]
    assert mix(*ints, *floats) == sum(w * v for w, v in zip(weights, ints + floats))
    assert lib.function("halve", ctypes.c_float, [ctypes.c_float])(3.0) == 1.5
    # a callback through a ctypes function pointer argument: it runs with the GIL taken back
    CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)
    apply = lib.function("apply", ctypes.c_int, [CB, ctypes.c_int])
    assert type(apply) is Function and apply(CB(lambda x: x + 1), 4) == 50


def test_signatures_the_gate_cannot_forward_take_the_python_path(kernels):
    lib, unit = kernels
    L = ctypes.c_long
    seven = lib.function("seven", L, [L] * 7)                          # the 7th goes on the stack
    pair = lib.function("make_pair", Pair, [L])                         # a structure by value
    half = lib.function("ld_half", ctypes.c_longdouble, [ctypes.c_longdouble])
    for f in (seven, pair, half):
        assert type(f) is GuardedFunction and isinstance(f, Function)
    assert seven(1, 1, 1, 1, 1, 1, 2) == 20
    p = pair(5)
    assert (p.a, p.b) == (5, -5)
    assert half(3.0) == 1.5
    assert not fast_signature(None, [ctypes.c_double] * 9)
    assert fast_signature(None, [ctypes.c_double] * 8 + [ctypes.c_void_p] * 6)
    assert not fast_signature(Pair, [])
    unit.remove()
    for f, args in ((seven, (1,) * 7), (pair, (1,)), (half, (1.0,))):
        with pytest.raises(hotlink.SessionClosedError, match="removed"):
            f(*args)


def test_buffers_go_through_the_gate(kernels):
    lib, unit = kernels
    total = lib.function("sum", "double(const double *v, long n)")
    assert type(total) is BufferFunction
    assert total(np.arange(5.0), 5) == 10.0
    unit.remove()
    with pytest.raises(hotlink.SessionClosedError, match="sum: its code was removed"):
        total(np.arange(5.0), 5)


def test_removed_code_raises_never_runs(session, compile_c):
    lib = session.library("r")
    unit = lib.add(compile_c("long f(long x) { return x * 3; }"))
    f = lib.function("f", ctypes.c_long, [ctypes.c_long])
    g = lib.function("f", "long(long)")
    assert f(2) == g(2) == 6
    unit.remove()
    for h in (f, g):
        with pytest.raises(hotlink.SessionClosedError, match="f: its code was removed"):
            h(2)
    assert session.synchronize(5) and session.memory().retired == 0
    with pytest.raises(hotlink.SessionClosedError):        # still, with its memory long given back
        f(2)
    # a whole library, and the session itself
    other = session.library("o")
    other.add(compile_c("long k(void) { return 7; }"))
    k = other.function("k", ctypes.c_long)
    assert k() == 7
    other.remove()
    with pytest.raises(hotlink.SessionClosedError):
        k()


def test_callables_outlive_their_session(compile_c):
    s = hotlink.Session()
    lib = s.library("x")
    lib.add(compile_c("long f(long x) { return x + 5; }"))
    f = lib.function("f", ctypes.c_long, [ctypes.c_long])
    assert f(1) == 6
    s.close()                      # the arena is unmapped; the trampoline is the gate's, so still safe
    with pytest.raises(hotlink.SessionClosedError):
        f(1)


def test_patchable_callables_survive_replace_and_raise_after_removal(session, compile_c):
    p = session.library("p", patchable=True)
    u = p.add(compile_c("long v(void) { return 1; }"))
    f = p.function("v", ctypes.c_long)
    assert type(f) is Function and f() == 1
    for k in range(2, 6):
        u = p.replace(u, compile_c(f"long v(void) {{ return {k}; }}"))
        assert f() == k
    pending = p.prepare_replace(u, compile_c("long v(void) { return 99; }"))
    assert f() == 5
    u = pending.commit()
    assert f() == 99
    u.remove()
    with pytest.raises(hotlink.SessionClosedError):
        f()


def test_a_threads_slot_goes_back_when_it_exits(session, compile_c):
    lib = session.library("t")
    lib.add(compile_c("long f(long x) { return x + 1; }"))
    f = lib.function("f", ctypes.c_long, [ctypes.c_long])
    assert f(0) == 1                          # this thread has its slot now
    g = gate.process_gate()
    assert g is not None
    before = g.slots_in_use()
    results: list[int] = []
    barrier = threading.Barrier(24)

    def call() -> None:
        barrier.wait()                        # all alive at once: 24 slots claimed together
        results.append(f(1))
    threads = [threading.Thread(target=call) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [2] * 24
    # each exiting thread's key destructor frees its slot, a moment after join()
    # returns (Python lets go of a thread before the thread's exit is over)
    deadline = time.monotonic() + 5
    while g.slots_in_use() != before and time.monotonic() < deadline:
        time.sleep(0.001)
    assert g.slots_in_use() == before


def test_collected_callables_give_their_trampolines_back(session, compile_c):
    lib = session.library("c")
    lib.add(compile_c("long f(long x) { return x; }"))
    g = gate.process_gate()
    assert g is not None
    lib.function("f", ctypes.c_long, [ctypes.c_long])
    gc.collect()
    made = g.trampolines()
    for i in range(3000):
        assert lib.function("f", ctypes.c_long, [ctypes.c_long])(i) == i
    gc.collect()
    assert g.trampolines() <= made + gate.PER_CHUNK        # reused, not one per callable


def test_busy_and_callbacks_see_calls_through_the_gate(session, compile_c):
    lib = session.library("cb")
    lib.add(compile_c("int call_back(int (*cb)(void)) { return cb() + 1; }"))
    CB = ctypes.CFUNCTYPE(ctypes.c_int)
    call_back = lib.function("call_back", ctypes.c_int, [CB])
    assert type(call_back) is Function
    seen: list[object] = []

    def cb() -> int:
        seen.append(session.reclaimer.busy())
        try:
            session.synchronize()
        except hotlink.LinkError as e:
            seen.append(str(e))
        return 41
    assert call_back(CB(cb)) == 42
    assert seen[0] is True and "inside a call into JIT code" in str(seen[1])
    assert not session.reclaimer.busy() and session.synchronize(5)


def test_a_dropped_session_is_collected_and_its_callables_raise(compile_c):
    """Callables do not keep their session alive: dropped without close(), it
    is collected (and closed: its memory goes back), and they raise."""
    import weakref

    s = hotlink.Session()
    lib = s.library("d")
    lib.add(compile_c("long f(long x) { return x - 1; }"))
    f = lib.function("f", ctypes.c_long, [ctypes.c_long])
    assert type(f) is Function and f(1) == 0
    ref = weakref.ref(s)
    del s, lib
    gc.collect()
    assert ref() is None, "a callable kept its session alive"
    with pytest.raises(hotlink.SessionClosedError):
        f(1)


def test_a_reused_trampoline_is_not_disabled_by_its_old_unit(session, compile_c):
    """A collected callable's trampoline goes to the next callable made; the
    removal of the old callable's unit must leave the new one alone."""
    lib = session.library("reuse")
    old = lib.add(compile_c("long a(void) { return 1; }"))
    lib.add(compile_c("long b(void) { return 2; }"))
    gc.collect()
    fa = lib.function("a", ctypes.c_long)
    where = ctypes.cast(fa, ctypes.c_void_p).value
    assert fa() == 1
    del fa
    gc.collect()
    fb = lib.function("b", ctypes.c_long)
    assert ctypes.cast(fb, ctypes.c_void_p).value == where       # the same trampoline, handed out again
    old.remove()
    assert fb() == 2


def test_the_unwinder_walks_through_the_gate(session, compile_c):
    """libgcc's unwinder (``backtrace()``, exceptions, thread cancellation)
    goes on through the gate's frame into ctypes, as from a bare ctypes call:
    one frame more, not fewer."""
    lib = session.library("bt")
    lib.add(compile_c("#include <execinfo.h>\n"
                      "int depth(void) { void *frames[256]; return backtrace(frames, 256); }"))
    through_gate = lib.function("depth", ctypes.c_int)
    bare = ctypes.CFUNCTYPE(ctypes.c_int)(lib.address("depth"))
    assert type(through_gate) is Function
    assert through_gate() == bare() + 1 > 8
