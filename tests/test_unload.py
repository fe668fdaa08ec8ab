"""Unload, replace and reclaim (issue: fine-grained removal with memory
returned to the OS)."""
from __future__ import annotations

import ctypes
import gc
import struct
import sys
import threading
import tracemalloc
import weakref

import pytest

import hotlink
from hotlink import platform

MAGIC = 0x5EED1234   # an immediate we patch to make each tiny object distinct


@pytest.fixture(scope="module")
def tiny_template(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    (d / "t.c").write_text(f"int f_00000(int x) {{ return x * 3 + {MAGIC}; }}\n")
    import subprocess
    subprocess.run(["gcc", "-O2", "-c", str(d / "t.c"), "-o", str(d / "t.o")], check=True)
    return (d / "t.o").read_bytes()


def tiny(template: bytes, i: int) -> tuple[bytes, str, int]:
    """A distinct tiny object: function ``f_%05d`` returning x*3 + (MAGIC+i)."""
    name = f"f_{i:05d}"
    k = (MAGIC + i) & 0x7FFFFFFF
    data = template.replace(b"f_00000\0", name.encode() + b"\0")
    data = data.replace(struct.pack("<I", MAGIC), struct.pack("<I", k))
    return data, name, k


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_remove_one_unit_keeps_the_rest(session, tiny_template):
    lib = session.library("fine")
    units = []
    for i in range(1000):
        data, name, k = tiny(tiny_template, i)
        units.append((lib.add(data), name, k))
    used_all = session.memory().used
    for u, _, _ in units[::2]:
        u.remove()
    assert session.synchronize(5)
    used_half = session.memory().used
    assert used_half <= used_all // 2 + 4096, (used_all, used_half)
    for _u, name, k in units[1::2]:
        assert lib.function(name, ctypes.c_int, [ctypes.c_int])(5) == 15 + k
    for _u, name, _ in units[::2]:
        with pytest.raises(hotlink.SymbolNotFoundError):
            lib.address(name)
    # removing the rest of a whole range frees whole pages: the arena's resident memory drops
    resident = session.memory().resident
    for u, _, _ in units[1::2][:400]:
        u.remove()
    session.synchronize(5)
    mem = session.memory()
    assert mem.resident < resident - 8 * 4096, (resident, mem.resident)
    assert mem.libraries["fine"].units == 100
    for _u, name, k in units[1::2][400:]:
        assert lib.function(name, ctypes.c_int, [ctypes.c_int])(1) == 3 + k


@pytest.mark.slow
def test_churn_is_flat(session, tiny_template):
    """add/remove forever: resident memory and Python allocations stay flat."""
    lib = session.library("churn")
    objects = [tiny(tiny_template, i) for i in range(1000)]

    def cycle(n):
        for j in range(n):
            data, name, k = objects[j % len(objects)]
            u = lib.add(data)
            assert lib.function(name, ctypes.c_int, [ctypes.c_int])(1) == 3 + k
            u.remove()

    cycle(1000)
    gc.collect()
    tracemalloc.start()
    before_py = tracemalloc.get_traced_memory()[0]
    before = rss()
    cycle(20000)
    gc.collect()
    grown_py = tracemalloc.get_traced_memory()[0] - before_py
    tracemalloc.stop()
    assert rss() - before < 1 << 20
    assert grown_py < 64 * 1024, f"Python bookkeeping grew by {grown_py} bytes over 20,000 cycles"
    assert session.memory().used == 0 and lib.units == []


def test_removed_unit_metadata_is_freed(session, tiny_template):
    lib = session.library("meta")
    data, name, _ = tiny(tiny_template, 1)
    u = lib.add(data)
    ref = weakref.ref(u)
    u.remove()
    del u
    gc.collect()
    assert ref() is None, "something still holds the removed unit"


def test_handles_after_removal_raise(session, tiny_template):
    lib = session.library("h")
    data, name, k = tiny(tiny_template, 2)
    u = lib.add(data)
    f = lib.function(name, ctypes.c_int, [ctypes.c_int])
    assert f(0) == k
    u.remove()
    with pytest.raises(hotlink.SessionClosedError, match="removed"):
        f(0)
    with pytest.raises(hotlink.SessionClosedError):
        u.remove()


DTOR_C = r"""
extern int host_log[]; extern int host_log_len;
static void rec(int v) { host_log[host_log_len++] = v; }
__attribute__((constructor)) static void c1(void) { rec(1); }
__attribute__((destructor)) static void d1(void) { rec(-1); }
__attribute__((destructor)) static void d2(void) { rec(-2); }
int c_unit_alive(void) { return 1; }
"""

DTOR_CXX = r"""
#include <cstdlib>
extern "C" int host_log[]; extern "C" int host_log_len;
static void rec(int v) { host_log[host_log_len++] = v; }
struct S { int id; S(int i) : id(i) { rec(id); } ~S() { rec(-id); } };
static S a(10);
static void handler() { rec(-99); }
static int reg = (std::atexit(handler), 0);
static S b(20);
extern "C" int cxx_unit_alive() { return reg + 1; }
"""


def test_destructors_run_once_in_reverse_order(compile_c, compile_cxx):
    log = (ctypes.c_int * 64)()
    log_len = ctypes.c_int(0)
    c_obj = compile_c(DTOR_C)
    cxx_obj = compile_cxx(DTOR_CXX, "-fPIC")

    def entries():
        return list(log[:log_len.value])

    with hotlink.Session() as s:
        s.load_shared("libstdc++.so.6")
        s.define({"host_log": ctypes.addressof(log), "host_log_len": ctypes.addressof(log_len)})
        lib = s.library("d")
        uc = lib.add(c_obj)
        ux = lib.add(cxx_obj)
        assert entries() == [1, 10, 20]
        ux.remove()
        assert entries() == [1, 10, 20, -20, -99, -10]
        uc.remove()
        assert entries() == [1, 10, 20, -20, -99, -10, -2, -1]
        lib.add(c_obj)          # loaded again, then unloaded by close()
        assert entries()[-1] == 1
    assert entries() == [1, 10, 20, -20, -99, -10, -2, -1, 1, -2, -1]


THROWER = r"""
#include <stdexcept>
#include <string>
extern "C" int throw_and_catch(int n) {
    try { if (n >= 0) throw std::runtime_error("boom " + std::to_string(n)); }
    catch (const std::exception &e) { return (int)std::string(e.what()).size() + n; }
    return -1;
}
"""

STAYS = r"""
#include <stdexcept>
extern "C" int stays(int n) {
    try { throw std::out_of_range("stay"); } catch (const std::out_of_range &) { return n + 1; }
}
"""


@pytest.mark.slow
def test_unwind_info_registered_and_removed(compile_cxx):
    thrower = compile_cxx(THROWER, "-fPIC").read_bytes()
    stays = compile_cxx(STAYS, "-fPIC")
    find_fde = ctypes.CDLL("libgcc_s.so.1")._Unwind_Find_FDE
    find_fde.restype = ctypes.c_void_p
    find_fde.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    bases = (ctypes.c_void_p * 3)()
    start = platform.registered_frames
    with hotlink.Session() as s:
        s.load_shared("libstdc++.so.6")
        keep = s.library("keep")
        keep.add(stays)
        stay = keep.function("stays", ctypes.c_int, [ctypes.c_int])
        lib = s.library("churn")
        for i in range(2000):
            u = lib.add(thrower)
            pc = lib.address("throw_and_catch")
            assert lib.function("throw_and_catch", ctypes.c_int, [ctypes.c_int])(i) == len(f"boom {i}") + i
            assert find_fde(pc + 1, bases)
            u.remove()
            s.synchronize()
            assert stay(i) == i + 1                 # other units still unwind
            assert not find_fde(pc + 1, bases), "unwind info of a removed unit is still registered"
        assert platform.registered_frames == start + 1
    assert platform.registered_frames == start


@pytest.mark.slow
def test_replace_is_atomic_under_concurrent_lookups(session, compile_c):
    v1 = compile_c("int val(void) { return 1; } int other(void) { return 7; }").read_bytes()
    v2 = compile_c("int val(void) { return 2; } int other(void) { return 8; }").read_bytes()
    lib = session.library("r")
    u = lib.add(v1)
    stop = threading.Event()
    seen: set[int] = set()
    problems: list[BaseException] = []

    def reader():
        while not stop.is_set():
            try:
                addr = lib.address("val")
                assert addr
                f = lib.function("val", ctypes.c_int)
                try:
                    seen.add(f())
                except hotlink.SessionClosedError:
                    pass        # replaced between lookup and call: a clear error, never freed code
            except BaseException as e:   # a missing symbol would land here
                problems.append(e)
                return

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    threads = [threading.Thread(target=reader) for _ in range(2)]
    try:
        for t in threads:
            t.start()
        for i in range(1000):
            u = lib.replace(u, v2 if i % 2 == 0 else v1)
    finally:
        stop.set()
        for t in threads:
            t.join()
        sys.setswitchinterval(old)
    assert not problems, problems[:3]
    assert seen <= {1, 2} and seen
    assert lib.function("val", ctypes.c_int)() == 1 and len(lib.units) == 1
    # a replacement that cannot link changes nothing
    bad = compile_c("extern int nowhere(void); int val(void) { return nowhere(); }").read_bytes()
    with pytest.raises(hotlink.UndefinedSymbolError, match="nowhere"):
        lib.replace(u, bad)
    assert u.alive and lib.function("val", ctypes.c_int)() == 1
    assert session.synchronize(5) and session.memory().retired == 0


def test_dependencies_and_cascade(session, compile_c):
    base = compile_c("int base(int x) { return x + 100; }")
    user = compile_c("int base(int); int user(int x) { return base(x) * 2; }")
    lib = session.library("dep")
    ub = lib.add(base, name="base")
    uu = lib.add(user, name="user")
    assert ub.dependents == [uu]
    with pytest.raises(hotlink.DependencyError, match="user"):
        ub.remove()
    assert lib.function("user", ctypes.c_int, [ctypes.c_int])(1) == 202
    with pytest.raises(hotlink.DependencyError):
        lib.replace(ub, base)
    ub.remove(cascade=True)
    assert not uu.alive and lib.units == []
    # across libraries, and library names are reusable after removal
    l1 = session.library("first")
    l1.add(base)
    l2 = session.library("second", link_order=[l1])
    l2.add(user)
    assert l2.function("user", ctypes.c_int, [ctypes.c_int])(0) == 200
    with pytest.raises(hotlink.LinkError):
        l1.remove()
    l2.remove()
    l1.remove()
    again = session.library("first")
    again.add(base)
    assert again.function("base", ctypes.c_int, [ctypes.c_int])(1) == 101


def test_close_unloads_and_refuses_more_work(tiny_template):
    s = hotlink.Session()
    lib = s.library("x")
    data, name, _ = tiny(tiny_template, 3)
    lib.add(data)
    s.close()
    assert s.closed
    with pytest.raises(hotlink.SessionClosedError):
        s.library("y")
    with pytest.raises(hotlink.SessionClosedError):
        lib.add(data)
    s.close()   # idempotent


def test_memory_report(session, tiny_template):
    lib = session.library("m")
    data, name, _ = tiny(tiny_template, 4)
    u = lib.add(data)
    mem = session.memory()
    assert mem.used > 0 and mem.mapped >= mem.used and mem.libraries["m"].units == 1
    assert mem.libraries["m"].used == mem.used
    u.remove()
    session.synchronize()
    mem = session.memory()
    assert mem.used == 0 and mem.retired == 0 and mem.resident == 0
