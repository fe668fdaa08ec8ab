"""Definitions, dependencies and threads over a session's life (issue 9,
items 3, 7, 8, 9, 10, 11, 13, 14, 15)."""
from __future__ import annotations

import subprocess
import time

import pytest

import hotlink
from hotlink import linker

BIG_LOOP = r"""
#include <pthread.h>
#include <stdatomic.h>
extern int hotlink_thread_online(void);
extern void hotlink_quiescent(void);
static atomic_long work;
static pthread_t thread;
/* more than 64 KiB of code: the arena's chunk size */
#define S(i) x = x * 31 + (i); asm volatile("" : "+r"(x));
#define S10(i) S(i) S(i+1) S(i+2) S(i+3) S(i+4) S(i+5) S(i+6) S(i+7) S(i+8) S(i+9)
#define S100(i) S10(i) S10(i+10) S10(i+20) S10(i+30) S10(i+40) S10(i+50) S10(i+60) S10(i+70) S10(i+80) S10(i+90)
#define S1000(i) S100(i) S100(i+100) S100(i+200) S100(i+300) S100(i+400) S100(i+500) S100(i+600) S100(i+700) S100(i+800) S100(i+900)
long big(long x) { S1000(0) S1000(1000) S1000(2000) S1000(3000) S1000(4000) S1000(5000) S1000(6000) S1000(7000) return x; }
static void *loop(void *arg) {
    hotlink_thread_online();
    for (;;) { atomic_fetch_add(&work, 1 + (big(atomic_load(&work)) & 1)); hotlink_quiescent(); }
    return 0;
}
int start(void) { return pthread_create(&thread, 0, loop, 0); }
long progress(void) { return atomic_load(&work); }
"""


@pytest.mark.slow
def test_exit_with_an_online_thread_in_big_code(scenario, compile_c):
    """Item 3: interpreter exit never frees code an online native thread runs."""
    obj = compile_c(BIG_LOOP, "-O1 -pthread")
    assert obj.stat().st_size > 64 * 1024
    for how in ("exit", "close"):
        proc = scenario.run(f"""
            import ctypes, time, hotlink
            s = hotlink.Session()
            lib = s.library("loop")
            lib.add({str(obj)!r})
            assert lib.function("start", ctypes.c_int)() == 0
            progress = lib.function("progress", ctypes.c_long)
            time.sleep(0.1)
            assert progress() > 0
            if {how!r} == "close":
                s.close(timeout=0.2)          # warns, leaves the code mapped
                assert s.closed
                time.sleep(0.3)               # the thread keeps running its code
            print("exiting")
        """)
        assert proc.returncode == 0, (how, proc.returncode, proc.stderr)
        assert "exiting" in proc.stdout


@pytest.mark.slow
def test_thread_exiting_online_releases_its_slot(scenario, compile_c):
    """Item 10: a native thread that exits without going offline neither
    blocks reclamation nor delays interpreter exit."""
    obj = compile_c(r"""
        #include <pthread.h>
        extern int hotlink_thread_online(void);
        static void *go(void *arg) { hotlink_thread_online(); return 0; }
        int run_thread(void) { pthread_t t; if (pthread_create(&t, 0, go, 0)) return -1; return pthread_join(t, 0); }
        int answer(void) { return 42; }
    """, "-pthread")
    t0 = time.monotonic()
    scenario.expect_ok(f"""
        import ctypes, time, hotlink
        s = hotlink.Session()
        lib = s.library("t")
        u = lib.add({str(obj)!r})
        assert lib.function("run_thread", ctypes.c_int)() == 0
        other = s.library("other").add({str(obj)!r})
        other.remove()
        t = time.monotonic()
        assert s.synchronize(timeout=5), "a dead thread blocks reclamation"
        assert time.monotonic() - t < 1
    """)
    assert time.monotonic() - t0 < 8, "exit was delayed"


@pytest.mark.slow
def test_dropped_sessions_release_everything(scenario, compile_c):
    """Item 11: sessions dropped without close() give back their memfd and
    address space, so creating sessions forever keeps working."""
    obj = compile_c("int answer(void) { return 42; }\n")
    scenario.expect_ok(f"""
        import ctypes, gc, os, hotlink
        def fds(): return len(os.listdir("/proc/self/fd"))
        def maps(): return sum(1 for _ in open("/proc/self/maps"))
        def use_once():
            s = hotlink.Session()
            lib = s.library("x")
            lib.add({str(obj)!r})
            assert lib.function("answer", ctypes.c_int)() == 42
        use_once(); gc.collect()
        f0, m0 = fds(), maps()
        for i in range(40):          # 40 x 512 MiB of reservations: far more than fits near libc
            use_once()
            gc.collect()
        assert fds() == f0, (fds(), f0)
        assert maps() <= m0 + 2, (maps(), m0)
        for bad in (0, -1):
            try:
                hotlink.Session(arena_size=bad)
            except ValueError as e:
                print("ValueError:", e)
            else:
                raise SystemExit(f"arena_size={{bad}} accepted")
        assert fds() == f0
    """)


def test_synchronize_and_close_from_a_callback_do_not_wait_for_themselves(scenario, compile_c):
    """Item 14."""
    obj = compile_c("int call_back(int (*cb)(void)) { return cb() + 1; }\n")
    scenario.expect_ok(f"""
        import ctypes, time, hotlink
        s = hotlink.Session()
        lib = s.library("cb")
        lib.add({str(obj)!r})
        CB = ctypes.CFUNCTYPE(ctypes.c_int)
        call_back = lib.function("call_back", ctypes.c_int, [CB])
        seen = []
        def cb():
            for what in (s.synchronize, s.close):
                t = time.monotonic()
                try:
                    what()
                except hotlink.LinkError as e:
                    seen.append((what.__name__, str(e), time.monotonic() - t))
            return 41
        assert call_back(CB(cb)) == 42
        assert [n for n, _, _ in seen] == ["synchronize", "close"], seen
        assert all("inside a call into JIT code" in m and dt < 0.5 for _, m, dt in seen), seen
        assert not s.closed
        assert s.synchronize(5)
        s.close()
    """, timeout=60)


@pytest.mark.slow
def test_cascade_removal_of_a_deep_chain_is_iterative(session):
    """Item 13: a 1,500-deep chain of units, each calling the previous one."""
    from llvmlite import binding as llvm

    from hotlink.frontend.llvm import target_machine
    tm = target_machine("generic", "", 0)
    lib = session.library("chain")
    units = []
    used = session.memory().used
    for i in range(1500):
        if i == 0:
            ir = "define i32 @f0() {\n  ret i32 0\n}\n"
        else:
            ir = (f"declare i32 @f{i - 1}()\ndefine i32 @f{i}() {{\n  %r = call i32 @f{i - 1}()\n"
                  f"  %s = add i32 %r, 1\n  ret i32 %s\n}}\n")
        units.append(lib.add(tm.emit_object(llvm.parse_assembly(ir)), name=f"u{i}"))
    import ctypes
    assert lib.function("f1499", ctypes.c_int)() == 1499
    with pytest.raises(hotlink.DependencyError):
        units[0].remove()
    units[0].remove(cascade=True)
    assert lib.units == [] and all(not u.alive for u in units)
    assert session.synchronize(10)
    assert session.memory().used == used


def test_patchable_replace_by_untyped_assembly_keeps_the_stub(session, compile_c, toolchain):
    """Item 7: an assembly ``f`` without ``.type`` is still code; callers keep
    reaching it through the entry stub.  A data ``f`` is refused."""
    asm = toolchain.workdir / "f.s"
    asm.write_text(".text\n.globl f\nf:\n  mov $2, %eax\n  ret\n")
    untyped = toolchain.workdir / "f_asm.o"
    subprocess.run(["as", str(asm), "-o", str(untyped)], check=True)
    data_f = compile_c("int f = 5;\n")
    import ctypes
    p = session.library("p", patchable=True)
    u = p.add(compile_c("int f(void) { return 1; }\n"))
    user = session.library("user", link_order=[p])
    user.add(compile_c("int f(void);\nint g(void) { return f() + 100; }\n"))
    g = user.function("g", ctypes.c_int)
    assert g() == 101
    with pytest.raises(hotlink.DependencyError, match="defines as data f"):
        p.replace(u, data_f)
    assert g() == 101
    u2 = p.replace(u, untyped)
    assert g() == 102
    assert p.function("f", ctypes.c_int)() == 2
    p.replace(u2, compile_c("int f(void) { return 3; }\n"))
    assert g() == 103


def test_removal_restores_shadowed_definitions(session, compile_c, make_archive):
    """Item 8: a weak definition, or an archive's member, comes back when the
    unit whose strong definition overrode it is removed."""
    import ctypes
    lib = session.library("lib")
    weak = lib.add(compile_c("__attribute__((weak)) int v(void) { return 1; }\n"))
    strong = lib.add(compile_c("int v(void) { return 2; }\n"))
    assert lib.function("v", ctypes.c_int)() == 2
    strong.remove()
    assert lib.function("v", ctypes.c_int)() == 1
    # and a unit linked now binds to it, as in a fresh session
    user = lib.add(compile_c("int v(void);\nint use(void) { return v() * 10; }\n"))
    assert lib.function("use", ctypes.c_int)() == 10
    user.remove()
    weak.remove()
    assert "v" not in lib

    # a weak definition added after the strong one is shadowed too
    strong = lib.add(compile_c("int w(void) { return 2; }\n"))
    late_weak = lib.add(compile_c("__attribute__((weak)) int w(void) { return 1; }\n"))
    assert lib.function("w", ctypes.c_int)() == 2
    strong.remove()
    assert lib.function("w", ctypes.c_int)() == 1
    late_weak.remove()

    # an archive member shadowed by an object's definition
    ar = make_archive([compile_c("int m(void) { return 7; }\n", name="member")])
    arch = lib.add(ar)
    over = lib.add(compile_c("int m(void) { return 8; }\n"))
    assert lib.function("m", ctypes.c_int)() == 8
    over.remove()
    assert lib.function("m", ctypes.c_int)() == 7
    assert "m" in arch.symbols

    # in a patchable library: the shadowed weak definition comes back as its own code
    p = session.library("p", patchable=True)
    p_weak = p.add(compile_c("__attribute__((weak)) int pv(void) { return 1; }\n"))
    p_strong = p.add(compile_c("int pv(void) { return 2; }\n"))
    assert p.function("pv", ctypes.c_int)() == 2
    p_strong.remove()
    assert p.function("pv", ctypes.c_int)() == 1
    assert p_weak.symbols == ["pv"]


def test_load_shared_after_a_process_lookup(session, compile_c, toolchain):
    """Item 9: a later load_shared takes effect for names already resolved in
    the process, as in a fresh session (shared objects come first)."""
    import ctypes
    import os
    fake = toolchain.shared([compile_c("int getppid(void) { return -77; }\n", "-fPIC")])
    caller = "int getppid(void);\nint parent(void) { return getppid(); }\n"
    lib = session.library("a")
    lib.add(compile_c(caller))
    assert lib.function("parent", ctypes.c_int)() == os.getppid()
    session.load_shared(str(fake))
    lib2 = session.library("b")
    lib2.add(compile_c(caller))
    assert lib2.function("parent", ctypes.c_int)() == -77


@pytest.mark.slow
def test_initializers_do_not_make_linking_quadratic(session, monkeypatch):
    """Item 15: function starts are computed once per link, however many
    objects with constructors it has."""
    from llvmlite import binding as llvm

    from hotlink.frontend.llvm import target_machine
    tm = target_machine("generic", "", 0)
    objs = []
    for i in range(400):
        ir = (f"@c{i} = global i32 0\n"
              f"@llvm.global_ctors = appending global [1 x {{ i32, ptr, ptr }}] "
              f"[{{ i32, ptr, ptr }} {{ i32 65535, ptr @init{i}, ptr null }}]\n"
              f"define internal void @init{i}() {{\n  store i32 {i + 1}, ptr @c{i}\n  ret void\n}}\n"
              f"define i32 @get{i}() {{\n  %v = load i32, ptr @c{i}\n  ret i32 %v\n}}\n")
        objs.append(tm.emit_object(llvm.parse_assembly(ir)))
    calls = []
    original = linker.LinkTransaction._function_starts

    def counted(self):
        calls.append(1)
        return original(self)
    monkeypatch.setattr(linker.LinkTransaction, "_function_starts", counted)
    lib = session.library("many")
    lib.add_many(objs)
    assert len(calls) == 1
    import ctypes
    assert lib.function("get399", ctypes.c_int)() == 400


def test_global_in_a_section_that_is_not_loaded_is_refused(session, toolchain):
    """Item 17: a global defined in a non-allocated section has no run-time
    address; it must not be published at 0."""
    asm = toolchain.workdir / "note.s"
    asm.write_text('.section .mynote,"",@progbits\n.globl g\ng:\n  .long 5\n'
                   '.text\n.globl f\nf:\n  ret\n')
    obj = toolchain.workdir / "note.o"
    subprocess.run(["as", str(asm), "-o", str(obj)], check=True)
    lib = session.library("n")
    used = session.memory().used
    with pytest.raises(hotlink.MalformedObjectError, match=r"'g'.*'\.mynote'.*not loaded"):
        lib.add(obj)
    assert lib.units == [] and "g" not in lib and "f" not in lib
    assert session.memory().used == used
