"""Prepared replacement (issue 11): link and initialize off the hot path,
swap in later with ``commit()``; a commit on a session that moved on in a
way that matters fails cleanly and leaves it as it was."""
from __future__ import annotations

import ctypes
import threading

import pytest

import hotlink

VERSION = r"""
static long *log_;
void set_log(long *p) { log_ = p; }
__attribute__((constructor)) static void hello(void) { if (log_) *log_ += %(ctor)d; }
long answer(long x) { return x * %(mul)d; }
"""


@pytest.fixture
def versions(compile_c):
    return [compile_c(VERSION % {"ctor": 10 ** i, "mul": i + 2}, "-fPIC", name=f"v{i}") for i in range(4)]


def test_prepare_then_commit(session, versions):
    lib = session.library("p", patchable=True)
    u0 = lib.add(versions[0])
    answer = lib.function("answer", ctypes.c_long, [ctypes.c_long])
    assert answer(10) == 20
    pending = lib.prepare_replace(u0, versions[1])
    assert pending.pending and isinstance(pending, hotlink.PendingReplace)
    assert answer(10) == 20                      # prepared, not visible
    assert u0.alive and lib.units == [u0]
    u1 = pending.commit()
    assert answer(10) == 30 and not pending.pending
    assert not u0.alive and lib.units == [u1]
    with pytest.raises(hotlink.LinkError, match="already committed or aborted"):
        pending.commit()
    assert session.synchronize(10)


def test_initializers_run_at_prepare_and_abort_undoes_everything(session, versions, compile_c):
    lib = session.library("p", patchable=True)
    u0 = lib.add(versions[0])
    used = session.memory().used
    pending = lib.prepare_replace(u0, versions[2])
    assert session.memory().used > used          # linked and placed already
    pending.abort()
    pending.abort()                              # idempotent
    assert session.memory().used == used and lib.units == [u0]
    assert lib.function("answer", ctypes.c_long, [ctypes.c_long])(10) == 20
    with pytest.raises(hotlink.LinkError, match="already committed or aborted"):
        pending.commit()


@pytest.mark.parametrize("change", ["old removed", "library changed", "dependency removed"])
def test_a_stale_preparation_fails_cleanly(session, versions, compile_c, change):
    lib = session.library("p", patchable=True)
    u0 = lib.add(versions[0])
    helper_lib = session.library("helpers")
    helper = helper_lib.add(compile_c("long helper(long x) { return x + 1; }", "-fPIC", name="helper"))
    user = compile_c("extern long helper(long); long answer(long x) { return helper(x) * 100; }",
                     "-fPIC", name="user")
    lib2 = session.library("q", link_order=[helper_lib], patchable=True)
    v0 = lib2.add(versions[3])
    pending = lib.prepare_replace(u0, versions[1]) if change != "dependency removed" \
        else lib2.prepare_replace(v0, user)
    if change == "old removed":
        u0.remove()
        match = "was removed"
    elif change == "library changed":
        lib.add(compile_c("long other(void) { return 1; }", "-fPIC", name="other"))
        match = "library 'p' changed"
    else:
        helper.remove()
        match = "unit 'helper.o', which it binds to, was removed"
    assert session.synchronize(10)
    used = session.memory().used
    with pytest.raises(hotlink.LinkError, match=match):
        pending.commit()
    assert not pending.pending
    assert session.memory().used < used            # the prepared unit was freed


def test_commit_while_threads_call(session, versions):
    lib = session.library("p", patchable=True)
    unit = lib.add(versions[0])
    answer = lib.function("answer", ctypes.c_long, [ctypes.c_long])
    stop = threading.Event()
    seen: set[int] = set()
    bad: list[int] = []

    def call() -> None:
        while not stop.is_set():
            r = answer(1)
            seen.add(r)
            if r not in (2, 3, 4):
                bad.append(r)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(60):
        unit = lib.prepare_replace(unit, versions[1 + i % 2]).commit()
    stop.set()
    for t in threads:
        t.join()
    assert not bad and {3, 4} <= seen
    assert session.synchronize(10)


def test_a_dropped_or_unclosed_preparation_is_aborted(versions):
    import gc
    import warnings
    s = hotlink.Session()
    lib = s.library("p", patchable=True)
    u0 = lib.add(versions[0])
    used = s.memory().used
    pending = lib.prepare_replace(u0, versions[1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del pending
        gc.collect()
    assert any("dropped without commit() or abort()" in str(w.message) for w in caught)
    assert s.memory().used == used
    kept = lib.prepare_replace(u0, versions[1])
    s.close()                                   # aborts what is still pending
    assert not kept.pending
