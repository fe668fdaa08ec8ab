"""Property tests of the arena's allocator, in process (no JIT code runs):
blocks never overlap, respect their alignment and stay inside chunks of
their pool and inside one region; ``used``/``mapped`` are exact; whole
chunks freed go back to the arena (``PROT_NONE``) for any pool; everything
freed returns ``used`` to zero; the run view is never writable and
executable at once."""
from __future__ import annotations

import ctypes
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hotlink.arena import CHUNK, CODE, DATA, GRANULE, PAGE, RODATA, Arena

PROTS = {CODE: "r-x", RODATA: "r--", DATA: "rw-"}


def rounded(size: int) -> int:
    return (size + GRANULE - 1) & -GRANULE


def maps() -> list[tuple[int, int, str]]:
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            rng, perms = line.split()[:2]
            lo, hi = (int(x, 16) for x in rng.split("-"))
            out.append((lo, hi, perms[:3]))
    return out


def prot_at(table: list[tuple[int, int, str]], addr: int) -> str | None:
    for lo, hi, p in table:
        if lo <= addr < hi:
            return p
    return None


def check(arena: Arena, live: dict[int, tuple[int, int, int, bytes]]) -> None:
    """Every invariant, with ``live`` = addr -> (pool, size, align, content)."""
    spans = sorted((a, a + rounded(s), p) for a, (p, s, _, _) in live.items())
    for (_a, e, _), (b, _, _) in zip(spans, spans[1:]):
        assert e <= b, f"blocks overlap at {b:#x}"
    owned = [0, 0, 0]
    for r in arena.regions:
        for k in r.kinds:
            if k:
                owned[k - 1] += CHUNK
    for kind, pool in enumerate(arena.pools):
        assert pool.used == sum(rounded(s) for p, s, _, _ in live.values() if p == kind)
        assert pool.mapped == owned[kind], (kind, pool.mapped, owned[kind])
        assert pool.top <= pool.top_end
        for s, e in zip(pool.starts, pool.ends):
            assert s < e
            assert arena.owner(s) is pool and arena.owner(e - 1) is pool
        assert pool.starts == sorted(pool.starts)
        assert sorted(pool.by_size) == sorted((e - s, s) for s, e in zip(pool.starts, pool.ends))
    for addr, (p, size, align, content) in live.items():
        pool = arena.pools[p]
        assert addr % max(align, GRANULE) == 0
        end = addr + max(size, 1) - 1
        assert arena.owner(addr) is pool and arena.owner(end) is pool
        region = arena._region_of(addr)
        assert region is not None and region is arena._region_of(end)
        assert ctypes.string_at(addr, len(content)) == content, f"block at {addr:#x} was overwritten"


def check_protections(arena: Arena) -> None:
    table = maps()
    for r in arena.regions:
        for i, k in enumerate(r.kinds):
            want = PROTS[k - 1] if k else "---"
            assert prot_at(table, r.base + i * CHUNK) == want, (hex(r.base + i * CHUNK), want)
        assert prot_at(table, r.write_base) == "rw-"
    for lo, _hi, p in table:
        assert not (p[1] == "w" and p[2] == "x" and any(r.base <= lo < r.end for r in arena.regions))


ops = st.lists(st.one_of(
    st.tuples(st.just("alloc"), st.sampled_from([CODE, RODATA, DATA]),
              st.one_of(st.integers(1, 300), st.integers(1, 3 * CHUNK), st.integers(CHUNK, 5 * CHUNK)),
              st.sampled_from([1, 8, 16, 64, PAGE])),
    st.tuples(st.just("free"), st.integers(0, 1 << 30)),
    st.tuples(st.just("flush"),),
), max_size=60)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_allocator_invariants(operations):
    arena = Arena(4 * CHUNK)    # small: the ops grow it into more regions
    live: dict[int, tuple[int, int, int, bytes]] = {}
    n = 0
    try:
        for op in operations:
            if op[0] == "alloc":
                _, p, size, align = op
                addr = arena.pools[p].alloc(size, align)
                assert addr not in live
                n += 1
                content = bytes([n & 0xFF]) * min(size, 64) + bytes([~n & 0xFF]) * min(max(size - 64, 0), 16)
                arena.write(addr, content)
                live[addr] = (p, size, align, content)
            elif op[0] == "free" and live:
                addr = sorted(live)[op[1] % len(live)]
                p, size, _, _ = live.pop(addr)
                arena.pools[p].free(addr, size)
            elif op[0] == "flush":
                arena.flush()
            check(arena, live)
        check_protections(arena)
        for addr, (p, size, _, _) in list(live.items()):
            arena.pools[p].free(addr, size)
            del live[addr]
        check(arena, live)
        check_protections(arena)
        arena.flush()
        for pool in arena.pools:
            assert pool.used == 0 and pool.mapped <= 2 * CHUNK
        assert arena.resident() == 0
    finally:
        arena.close()


def test_bad_sizes():
    for bad in (0, -1, -CHUNK, CHUNK + 1, 1000, 1 << 40, 1 << 31):
        with pytest.raises(ValueError, match="arena_size"):
            Arena(bad)
    with pytest.raises(TypeError, match="arena_size"):
        Arena(1.5)   # type: ignore[arg-type]


def test_freed_code_chunks_serve_data():
    arena = Arena(8 * CHUNK)
    try:
        code = arena.pools[CODE].alloc(6 * CHUNK, 16)
        arena.write(code, b"\xc3" * (6 * CHUNK))
        arena.pools[CODE].free(code, 6 * CHUNK)
        assert arena.pools[CODE].mapped <= 2 * CHUNK
        data = arena.pools[DATA].alloc(5 * CHUNK, 16)     # no second region needed
        assert len(arena.regions) == 1 and arena.base <= data < arena.base + arena.size
        arena.write(data, b"d" * (5 * CHUNK))
        check_protections(arena)
        arena.pools[DATA].free(data, 5 * CHUNK)
        arena.flush()
        assert arena.resident() == 0
    finally:
        arena.close()


def test_growth_into_more_regions_and_exhaustion():
    arena = Arena(2 * CHUNK)
    try:
        blocks = [arena.pools[DATA].alloc(3 * CHUNK, 16) for _ in range(4)]
        assert len(arena.regions) >= 2
        for i, b in enumerate(blocks):
            arena.write(b, bytes([i + 1]) * (3 * CHUNK))
        for i, b in enumerate(blocks):
            assert ctypes.string_at(b, 3 * CHUNK) == bytes([i + 1]) * (3 * CHUNK)
        lo = min(r.base for r in arena.regions)
        hi = max(r.end for r in arena.regions)
        assert hi - lo < 1 << 31, "regions must stay within 2 GiB of each other"
        assert arena.resident() == 4 * 3 * CHUNK
        for b in blocks:
            arena.pools[DATA].free(b, 3 * CHUNK)
        arena.flush()
        assert arena.resident() == 0
        with pytest.raises(Exception, match="arena exhausted"):
            arena.pools[CODE].alloc(4 << 30, 16)
    finally:
        arena.close()


def test_tiny_churn_never_changes_chunks():
    """A tiny unit's add/remove, even at a chunk boundary, neither takes nor
    gives back chunks (no mprotect, no punch per cycle)."""
    arena = Arena(16 * CHUNK)
    try:
        pool = arena.pools[CODE]
        filler = pool.alloc(CHUNK - 48, 16)            # the next block crosses into the next chunk
        calls = []
        take, give = arena.take_chunk, arena.release_chunks
        arena.take_chunk = lambda *a: calls.append("take") or take(*a)            # type: ignore[method-assign]
        arena.claim_at = (lambda f: lambda *a: calls.append("claim") or f(*a))(arena.claim_at)  # type: ignore
        arena.release_chunks = lambda *a: calls.append("give") or give(*a)       # type: ignore[method-assign]
        for _ in range(3):                              # settle
            pool.free(pool.alloc(96, 16), 96)
        calls.clear()
        for _ in range(100):
            pool.free(pool.alloc(96, 16), 96)
        assert calls == []
        pool.free(filler, CHUNK - 48)
    finally:
        arena.close()


def test_close_releases_everything():
    def counts():
        with open("/proc/self/maps") as f:
            return len(os.listdir("/proc/self/fd")), len(f.read().splitlines())
    Arena(CHUNK).close()
    before = counts()
    for _ in range(5):
        a = Arena(2 * CHUNK)
        a.pools[DATA].alloc(5 * CHUNK, 16)              # a second region
        assert len(a.regions) == 2
        a.close()
        a.close()                                       # idempotent
    assert counts() == before
