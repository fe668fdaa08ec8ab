"""Worker processes (parallel, reused, restarted, crash-isolated, stopped with
the session) and the on-disk object cache (hits, keys, corruption, LRU)."""
from __future__ import annotations

import os
import time
from ctypes import c_int
from pathlib import Path

import pytest

import hotlink
from hotlink.frontend import Source
from hotlink.frontend.cache import HEADER, ObjectCache


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("HOTLINK_CACHE_DIR", str(d))
    return d


def ir(name: str, k: int = 3) -> str:
    return f"define i32 @{name}(i32 %x) {{\n  %r = mul i32 %x, {k}\n  ret i32 %r\n}}\n"


def cache_files(d: Path) -> list[Path]:
    return sorted(p for p in d.rglob("*.o")) if d.exists() else []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it is gone for our purposes
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


# ------------------------------------------------------------- the pool

def test_compile_many_in_workers_reused_across_calls(session, cache_dir):
    objs = session.compile_many([ir(f"f{i}") for i in range(6)], workers=2, cache=False)
    assert len(objs) == 6 and all(o[:4] == b"\x7fELF" for o in objs)
    pool = session.compile_pool
    assert pool.started == 2 and sorted(pool.pids()) and len(pool.pids()) == 2
    pids = sorted(pool.pids())
    session.compile_many([ir(f"g{i}") for i in range(4)], workers=2, cache=False)
    assert pool.started == 2 and sorted(pool.pids()) == pids        # the same processes served again
    lib = session.library("linked")
    lib.add_many(objs)
    assert lib.function("f5", c_int, [c_int])(7) == 21


@pytest.mark.slow
def test_objects_pass_through_compile_many(session, compile_c, cache_dir):
    obj = compile_c("int plain(void) { return 1; }")
    out = session.compile_many([obj, ir("h")], workers=1)
    assert out[0] == obj.read_bytes() and out[1][:4] == b"\x7fELF"


@pytest.mark.parametrize("mode, signal_name", [("segv", "SIGSEGV"), ("abort", "SIGABRT")])
@pytest.mark.slow
def test_worker_crash_fails_only_that_source(session, cache_dir, mode, signal_name):
    sources = [ir("ok0"), Source(ir("boom"), _crash=mode), ir("ok1"), ir("ok2"), ir("ok3")]
    out = session.compile_many(sources, workers=2, return_exceptions=True, cache=False)
    err = out[1]
    assert isinstance(err, hotlink.CompileError)
    assert signal_name in str(err) and "other sources are not affected" in str(err)
    assert [isinstance(o, bytes) for o in out] == [True, False, True, True, True]
    lib = session.library("survivors")
    lib.add_many([out[0], out[2], out[3], out[4]])                  # the others are fine
    assert lib.function("ok3", c_int, [c_int])(5) == 15
    started = session.compile_pool.started
    again = session.compile_many([ir("after0"), ir("after1")], workers=2, cache=False)
    assert len(again) == 2 and session.compile_pool.started >= started      # restarted as needed


@pytest.mark.slow
def test_crash_in_add_many_raises_and_adds_nothing(session, cache_dir):
    lib = session.library("tx")
    with pytest.raises(hotlink.CompileError, match="died"):
        lib.add_many([Source(ir("a"), language="llvm"), Source(ir("b"), language="llvm", _crash="exit")])
    assert lib.units == []
    lib.add_many([Source(ir("a"), language="llvm"), Source(ir("b"), language="llvm")])
    assert lib.function("b", c_int, [c_int])(2) == 6


def test_crash_with_isolate_for_a_single_add(session, cache_dir):
    lib = session.library("one")
    with pytest.raises(hotlink.CompileError, match="SIGSEGV"):
        lib.add(ir("lonely"), language="llvm", _crash="segv", cache=False)
    lib.add(ir("lonely"), language="llvm", isolate=True)
    assert lib.function("lonely", c_int, [c_int])(3) == 9


@pytest.mark.slow
def test_hung_worker_is_killed_after_timeout(session, cache_dir):
    t = time.monotonic()
    out = session.compile_many([ir("quick"), Source(ir("stuck"), _crash="hang", timeout=0.5)],
                               workers=2, return_exceptions=True, cache=False)
    assert time.monotonic() - t < 20
    assert isinstance(out[0], bytes) and isinstance(out[1], hotlink.CompileError)
    assert "timeout" in str(out[1])


@pytest.mark.slow
def test_compile_error_in_worker_keeps_diagnostics(session, cache_dir):
    out = session.compile_many([ir("good"), "define i32 @bad( {"], workers=2, return_exceptions=True)
    assert isinstance(out[0], bytes)
    assert isinstance(out[1], hotlink.CompileError) and "expected type" in out[1].diagnostics
    with pytest.raises(hotlink.CompileError, match="invalid LLVM IR"):
        session.compile_many([ir("good"), "define i32 @bad( {"], workers=2)


@pytest.mark.slow
def test_workers_stop_with_the_session(cache_dir):
    s = hotlink.Session()
    s.compile_many([ir("x"), ir("y")], workers=2, cache=False)
    pids = s.compile_pool.pids()
    assert len(pids) == 2 and all(alive(p) for p in pids)
    s.close()
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in pids)
    with pytest.raises(hotlink.SessionClosedError):
        s.compile_many([ir("z"), ir("w")])


@pytest.mark.slow
def test_worker_killed_while_idle_is_replaced(session, cache_dir):
    session.compile_many([ir("p"), ir("q")], workers=2, cache=False)
    victim = session.compile_pool.pids()[0]
    os.kill(victim, 9)
    time.sleep(0.1)
    out = session.compile_many([ir("r"), ir("s")], workers=2, cache=False)
    assert all(isinstance(o, bytes) for o in out)
    assert victim not in session.compile_pool.pids()


# ------------------------------------------------------------- the cache

def test_cache_hit_skips_compilation(session, cache_dir):
    lib = session.library("c1")
    lib.add(ir("cached"), language="llvm")
    assert len(cache_files(cache_dir)) == 1
    # A crash would happen if anything were compiled: the hit must not compile.
    lib2 = session.library("c2")
    lib2.add(ir("cached"), language="llvm", _crash="abort")
    assert lib2.function("cached", c_int, [c_int])(4) == 12
    out = session.compile_many([Source(ir("cached"), _crash="abort")], workers=1)
    assert out[0][:4] == b"\x7fELF"


def test_cache_key_covers_source_and_options(session, cache_dir):
    session.compile_many([ir("k"), ir("k", 5)], workers=1)
    assert len(cache_files(cache_dir)) == 2                          # source differs
    session.compile_many([ir("k")], workers=1, opt=0)
    session.compile_many([ir("k")], workers=1, cpu="x86-64")
    assert len(cache_files(cache_dir)) == 4                          # options differ


def test_c_cache_sees_header_changes(session, tmp_path, cache_dir):
    (tmp_path / "value.h").write_text("#define VALUE 1\n")
    src = tmp_path / "uses_header.c"
    src.write_text('#include "value.h"\nint value(void) { return VALUE; }\n')
    lib = session.library("h1")
    lib.add(src)
    assert lib.function("value", c_int)() == 1
    (tmp_path / "value.h").write_text("#define VALUE 2\n")           # same .c, new header
    lib2 = session.library("h2")
    lib2.add(src)
    assert lib2.function("value", c_int)() == 2
    assert len(cache_files(cache_dir)) == 2


@pytest.mark.parametrize("damage", ["flip", "truncate", "header"])
@pytest.mark.slow
def test_corrupted_entry_is_recompiled_not_loaded(session, cache_dir, damage):
    good = session.compile_many([ir("fragile")], workers=1)[0]
    (entry,) = cache_files(cache_dir)
    blob = bytearray(entry.read_bytes())
    if damage == "flip":
        blob[HEADER.size + 100] ^= 0xFF                              # inside the object
    elif damage == "truncate":
        blob = blob[: len(blob) // 2]
    else:
        blob[0:4] = b"JUNK"
    entry.write_bytes(bytes(blob))
    again = session.compile_many([ir("fragile")], workers=1)[0]
    assert again == good                                             # recompiled, not the damaged bytes
    assert entry.read_bytes()[HEADER.size:] == good                  # and the entry was rewritten


def test_cache_detects_corruption_directly(tmp_path):
    cache = ObjectCache(str(tmp_path), 1 << 20)
    cache.put("ab" * 16, b"\x7fELF object bytes")
    assert cache.get("ab" * 16) == b"\x7fELF object bytes"
    path = Path(cache.path("ab" * 16))
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    assert cache.get("ab" * 16) is None and cache.corrupt == 1 and not path.exists()


def test_cache_lru_eviction(tmp_path):
    cache = ObjectCache(str(tmp_path), max_bytes=5 * (HEADER.size + 1000))
    keys = [f"{i:02x}" * 16 for i in range(5)]
    for n, k in enumerate(keys):
        cache.put(k, b"x" * 1000)
        os.utime(cache.path(k), ns=(n * 10**9, n * 10**9))          # explicit ages: 0 oldest
    assert cache.trim() == 0                                         # at the bound: nothing to do
    assert cache.get(keys[0]) is not None                            # a hit makes 0 the youngest
    cache.put("ff" * 16, b"y" * 1000)
    assert cache.trim() > 0
    left = {k for k in keys + ["ff" * 16] if os.path.exists(cache.path(k))}
    assert keys[0] in left and "ff" * 16 in left
    assert keys[1] not in left and keys[2] not in left               # the least recently used went first


@pytest.mark.slow
def test_cache_location_options(session, tmp_path, monkeypatch):
    monkeypatch.delenv("HOTLINK_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    session.compile_many([ir("loc")], workers=1)
    assert len(cache_files(tmp_path / "xdg" / "hotlink")) == 1
    session.compile_many([ir("loc2")], workers=1, cache_dir=tmp_path / "mine")
    assert len(cache_files(tmp_path / "mine")) == 1
    session.compile_many([ir("loc3")], workers=1, cache=False)
    monkeypatch.setenv("HOTLINK_CACHE", "0")
    session.compile_many([ir("loc4")], workers=1)
    assert len(cache_files(tmp_path / "xdg" / "hotlink")) == 1


@pytest.mark.slow
def test_concurrent_compile_many_from_threads(session, cache_dir):
    import threading
    results: dict[int, list[bytes]] = {}

    def go(t: int) -> None:
        results[t] = session.compile_many([ir(f"t{t}_{i}") for i in range(3)], workers=2, cache=False)

    threads = [threading.Thread(target=go, args=(t,)) for t in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(results) == [0, 1] and all(len(r) == 3 for r in results.values())
    assert session.compile_pool.idle <= session.compile_pool.max_idle          # extra workers were stopped
