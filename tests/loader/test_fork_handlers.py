"""Fork handlers (issue 13, point 3): ``pthread_atfork`` / ``__register_atfork``
called by JIT code are owned by the unit and unregistered when it is
removed; a ``fork()`` after removal must not call into freed code."""
from __future__ import annotations

ATFORK = r"""
#include <pthread.h>
#include <unistd.h>
extern void *__dso_handle;
extern int __register_atfork(void (*)(void), void (*)(void), void (*)(void), void *);
static int out = -1;
static void prepare(void) { write(out, "P", 1); }
static void parent(void) { write(out, "A", 1); }
static void child(void) { write(out, "C", 1); }
static void direct_child(void) { write(out, "D", 1); }
int install(int fd) {
    out = fd;
    return pthread_atfork(prepare, parent, child)
         | __register_atfork(0, 0, direct_child, __dso_handle);
}
"""


def test_fork_handlers_belong_to_their_unit(scenario, compile_c):
    """The handlers report through a pipe: they run while the unit lives,
    and never after it is removed."""
    obj = compile_c(ATFORK, "-fPIC")
    proc = scenario.expect_ok(f"""
        import ctypes, os, hotlink
        r, w = os.pipe()
        def fork_and_collect():
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0, status
            os.write(w, b".")
            seen = b""
            while not seen.endswith(b"."):
                seen += os.read(r, 100)
            return "".join(sorted(seen[:-1].decode()))
        s = hotlink.Session()
        lib = s.library("f")
        u = lib.add({str(obj)!r})
        assert lib.function("install", ctypes.c_int, [ctypes.c_int])(w) == 0
        assert fork_and_collect() == "ACDP"        # prepare and parent here, both child handlers there
        u.remove()
        assert s.synchronize(10)
        # the handlers went with the unit, whose memory is freed: a fork that
        # still called them would crash in the parent or the child
        for _ in range(3):
            assert fork_and_collect() == ""
        u2 = lib.add({str(obj)!r})               # a new copy registers its own again
        lib.function("install", ctypes.c_int, [ctypes.c_int])(w)
        assert fork_and_collect() == "ACDP"
        s.close()                                  # closing the session drops them too
        assert fork_and_collect() == ""
        print("ok")
    """)
    assert "ok" in proc.stdout


JIT_DATA_HANDLERS = r"""
#include <pthread.h>
static int prepared, in_parent, in_child;
static void prepare(void) { prepared++; }
static void parent(void) { in_parent++; }
static void child(void) { in_child++; }
int install(void) { return pthread_atfork(prepare, parent, child); }
int counts(void) { return prepared * 100 + in_parent * 10 + in_child; }
"""


def test_fork_handlers_writing_jit_data_see_the_right_copy(scenario, compile_c):
    """A prepare handler's writes are in the child's copy of the arena, and a
    child handler's writes stay in the child (the copy is made and mapped by
    native handlers that glibc runs around the JIT code's own, forkcopy.py)."""
    obj = compile_c(JIT_DATA_HANDLERS, "-fPIC")
    scenario.expect_ok(f"""
        import ctypes, os, hotlink
        s = hotlink.Session()
        lib = s.library("f")
        lib.add({str(obj)!r})
        assert lib.function("install", ctypes.c_int)() == 0
        counts = lib.function("counts", ctypes.c_int)
        for round in range(1, 4):
            pid = os.fork()
            if pid == 0:
                # prepared in the parent before the fork, then the child handler ran here
                os._exit(0 if counts() == round * 100 + (round - 1) * 10 + 1 else 3)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0, (round, status)
            # the child's writes did not reach the parent
            assert counts() == round * 110, counts()
        print("ok")
    """)


def test_quick_exit_handlers_are_dropped_with_their_unit(scenario, compile_c):
    obj = compile_c(r"""
        #include <stdlib.h>
        #include <stdio.h>
        static void bye(void) { puts("quick exit handler ran"); fflush(stdout); }
        int install(void) { return at_quick_exit(bye); }
    """, "-fPIC")
    code = f"""
        import ctypes, sys, hotlink
        s = hotlink.Session()
        lib = s.library("q")
        u = lib.add({str(obj)!r})
        assert lib.function("install", ctypes.c_int)() == 0
        if sys.argv[1] == "remove":
            u.remove()
            assert s.synchronize(10)
        sys.stdout.flush()
        ctypes.CDLL(None).quick_exit(0)
    """
    kept = scenario.run(code, args=["keep"])
    assert kept.returncode == 0 and "quick exit handler ran" in kept.stdout
    removed = scenario.run(code, args=["remove"])
    assert removed.returncode == 0, removed.stderr
    assert "quick exit handler ran" not in removed.stdout
