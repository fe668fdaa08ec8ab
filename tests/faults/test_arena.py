"""The arena under pressure (issue 9): freed chunks serve every kind of
memory, sessions outgrow ``arena_size``, bad sizes and failed constructions
leave nothing behind, and a forked child gets its own copy of the arena.

Every scenario runs in its own subprocess (the ``scenario`` fixture, see
conftest.py), so a crash fails one test, never the run: these tests fork,
exhaust address space or run JIT code from freshly mapped regions.
"""
from __future__ import annotations

import pytest

import hotlink
from hotlink.arena import Arena

BIG_CODE_C = r"""
/* {size} bytes of .text: a function, then int3 filler */
__asm__(".text\n.globl {name}\n.type {name},@function\n{name}:\n"
        "  movl ${value}, %eax\n  ret\n  .fill {size},1,0xcc\n.size {name}, .-{name}\n");
"""

BIG_BSS_C = r"""
char big_bss[{size}];
int bss_poke(int i) {{ big_bss[i] += 3; return big_bss[i] + big_bss[0]; }}
"""

# unit i: {size} bytes of code and a call into unit i-1, which may live in another region
CHAIN_C = r"""
{extern}
__asm__(".text\n.globl pad_{i}\npad_{i}:\n  ret\n  .fill {size},1,0xcc\n");
static const int table_{i}[4] = {{ {i}, {i} * 10, {i} * 100, 7 }};
int f_{i}(int x) {{ return {prev} + table_{i}[x & 3]; }}
"""


def big_code(compile_c, name: str, value: int, size: int):
    return compile_c(BIG_CODE_C.format(name=name, value=value, size=size), name=name)


# --- (a) freed code serves data ----------------------------------------------

@pytest.mark.slow
def test_freed_code_chunks_hold_a_large_bss_unit(scenario, compile_c):
    code = big_code(compile_c, "big_code", 42, 6 << 20)
    bss = compile_c(BIG_BSS_C.format(size=6 << 20), name="bss")
    scenario.expect_ok(f"""
        import ctypes, hotlink
        s = hotlink.Session(arena_size=8 << 20)
        arena = s.arena
        lib = s.library("code")
        u = lib.add({str(code)!r})
        assert lib.function("big_code", ctypes.c_int)() == 42
        assert s.memory().mapped > 6 << 20
        u.remove()
        assert s.synchronize(10)
        m = s.memory()
        assert m.mapped < 1 << 20, m          # the code's chunks went back to the arena
        data = s.library("data")
        data.add({str(bss)!r})                # 6 MiB of .bss in an 8 MiB arena that held 6 MiB of code
        poke = data.function("bss_poke", ctypes.c_int, [ctypes.c_int])
        assert poke((6 << 20) - 1) == 3 and poke(0) == 6 and poke(12345) == 6
        addr = data.address("big_bss")
        assert len(arena.regions) == 1 and arena.base <= addr < arena.base + arena.size
        assert s.memory().resident < 1 << 20, s.memory()   # .bss is zero without being touched
        s.close()
    """)


# --- (b) growth past arena_size ---------------------------------------------

@pytest.mark.slow
def test_session_outgrows_its_arena(scenario, compile_c):
    n = 6
    chain = []
    for i in range(n):
        extern = f"extern int f_{i - 1}(int);" if i else ""
        prev = f"f_{i - 1}(x)" if i else "x"
        chain.append(compile_c(CHAIN_C.format(i=i, extern=extern, prev=prev, size=500_000), name=f"chain{i}"))
    huge = big_code(compile_c, "huge", 77, 3 << 20)          # one block larger than arena_size
    bss = compile_c(BIG_BSS_C.format(size=2 << 20), name="bss")
    scenario.expect_ok(f"""
        import ctypes, hotlink
        chain = {[str(p) for p in chain]!r}
        s = hotlink.Session(arena_size=1 << 20)
        arena = s.arena
        lib = s.library("chain")
        units = [lib.add(p) for p in chain]
        def expect(i, x):
            return x + sum((k, 10 * k, 100 * k, 7)[x & 3] for k in range(i + 1))
        for i in range({n}):
            f = lib.function(f"f_{{i}}", ctypes.c_int, [ctypes.c_int])
            for x in range(8):
                assert f(x) == expect(i, x), (i, x, f(x), expect(i, x))
        assert len(arena.regions) >= 2, arena.regions
        big = s.library("big")
        hu = big.add({str(huge)!r})
        assert big.function("huge", ctypes.c_int)() == 77
        data = s.library("data")
        du = data.add({str(bss)!r})
        assert data.function("bss_poke", ctypes.c_int, [ctypes.c_int])((2 << 20) - 1) == 3
        assert s.memory().used > 6 << 20
        lo = min(r.base for r in arena.regions); hi = max(r.end for r in arena.regions)
        assert hi - lo < 1 << 31
        # everything goes away, in every region
        hu.remove(); du.remove()
        for u in reversed(units):
            u.remove()
        assert s.synchronize(10)
        m = s.memory()
        assert m.used == 0 and m.resident == 0 and m.mapped <= 3 * 2 * 65536, m
        # and the regions are reused
        regions = len(arena.regions)
        units = [lib.add(p) for p in chain]
        assert lib.function("f_5", ctypes.c_int, [ctypes.c_int])(1) == expect(5, 1)
        assert len(arena.regions) == regions
        s.close()
        assert all(r.fd == -1 for r in arena.regions)
    """)


def test_exhaustion_is_a_link_error(scenario):
    scenario.expect_ok("""
        import hotlink
        from hotlink.arena import Arena, CODE, DATA
        a = Arena(1 << 20)
        try:
            a.pools[CODE].alloc(3 << 30, 16)      # can never fit within 2 GiB of libc
        except hotlink.LinkError as e:
            assert "arena exhausted" in str(e), e
        else:
            raise AssertionError("no LinkError")
        # address space runs out: the arena grows as long as it can, then says so
        blocks = []
        try:
            while True:
                blocks.append(a.pools[DATA].alloc(256 << 20, 16))
        except hotlink.LinkError as e:
            assert "arena exhausted" in str(e), e
        assert len(blocks) >= 2 and len(a.regions) >= 2
        lo = min(r.base for r in a.regions); hi = max(r.end for r in a.regions)
        assert hi - lo < 1 << 31
        x = a.pools[DATA].alloc(4096, 16)         # small ones still fit in what is left
        a.write(x, b"ok")
        for b in blocks:
            a.pools[DATA].free(b, 256 << 20)
        a.close()
    """)


# --- (c) bad sizes, no leaks ---------------------------------------------------

@pytest.mark.parametrize("size", [0, -1, -(1 << 20), (1 << 20) + 1, 12345, 1 << 40, 1 << 62])
def test_bad_sizes_are_value_errors(size):
    with pytest.raises(ValueError, match="arena_size"):
        Arena(size)
    with pytest.raises(ValueError, match="arena_size"):
        hotlink.Session(arena_size=size)


def test_failed_construction_leaks_nothing(scenario):
    scenario.expect_ok("""
        import os
        import hotlink
        from hotlink import arena as A

        def counts():
            with open("/proc/self/maps") as f:
                return len(os.listdir("/proc/self/fd")), len(f.read().splitlines())

        real_mmap, real_truncate = A._mmap, os.ftruncate

        def no_write_view(addr, size, prot, flags, fd, off):
            if prot == A.PROT_READ | A.PROT_WRITE:
                return A.MAP_FAILED
            return real_mmap(addr, size, prot, flags, fd, off)

        def no_reservation(addr, size, prot, flags, fd, off):
            if prot == A.PROT_NONE:
                return A.MAP_FAILED
            return real_mmap(addr, size, prot, flags, fd, off)

        def no_truncate(fd, size):
            raise OSError(28, "no space (forced)")

        def fail(kind, patch, expected):
            if kind == "mmap":
                A._mmap = patch
            else:
                os.ftruncate = patch
            try:
                A.Arena(1 << 20)
            except expected:
                pass
            else:
                raise AssertionError(f"{patch.__name__}: no {expected}")
            finally:
                A._mmap, os.ftruncate = real_mmap, real_truncate

        cases = [("mmap", no_write_view, OSError), ("mmap", no_reservation, hotlink.LinkError),
                 ("truncate", no_truncate, OSError)]
        for case in cases:                       # warm up (imports, caches)
            fail(*case)
        A.Arena(1 << 20).close()
        before = counts()
        for _ in range(10):
            for case in cases:
                fail(*case)
        after = counts()
        assert after == before, (before, after)

        # a failure while growing (second region) leaks nothing either
        a = A.Arena(1 << 20)
        before = counts()
        for _ in range(10):
            A._mmap = no_write_view
            try:
                a.pools[A.DATA].alloc(2 << 20, 16)
            except OSError:
                pass
            finally:
                A._mmap = real_mmap
        assert counts() == before and len(a.regions) == 1
        a.pools[A.DATA].alloc(2 << 20, 16)       # and growing works afterwards
        assert len(a.regions) == 2
        a.close()
    """)


# --- (d) fork -----------------------------------------------------------------

FORK_ARENA = r"""
import ctypes, os, sys, traceback
from hotlink.arena import Arena, CODE, RODATA, DATA, PAGE, CHUNK

TWO = {two}
a = Arena(1 << 20)
for _ in range({registrations}):   # a session and its user may both register: harmless
    os.register_at_fork(before=a.fork_prepare, after_in_parent=a.fork_parent, after_in_child=a.fork_child)
read = ctypes.string_at                       # through the run view
FN = ctypes.CFUNCTYPE(ctypes.c_int)

def ret(v):                                   # mov eax, v; ret
    return b"\xb8" + v.to_bytes(4, "little") + b"\xc3"

d = a.pools[DATA].alloc(4 * PAGE, PAGE); a.write(d, b"P" * (4 * PAGE))
f = a.pools[DATA].alloc(8 * PAGE, PAGE); a.write(f, b"F" * (8 * PAGE))     # the child frees it
g = a.pools[RODATA].alloc(8 * PAGE, PAGE); a.write(g, b"G" * (8 * PAGE))   # the parent frees it
c = a.pools[CODE].alloc(64, 16); a.write(c, ret(42))
fn = FN(c)
blocks = [(d, b"P" * (4 * PAGE)), (f, b"F" * (8 * PAGE)), (g, b"G" * (8 * PAGE))]
if TWO:
    big = a.pools[DATA].alloc(1536 << 10, 16)                  # does not fit: a second region
    a.write(big, b"B" * (1536 << 10))
    bc = a.pools[CODE].alloc(1280 << 10, 16)                   # code in yet another run of chunks
    a.write(bc, ret(99))
    assert len(a.regions) >= 2, a.regions
    bfn = FN(bc)
    blocks.append((big, b"B" * (1536 << 10)))
assert fn() == 42
res0 = a.resident()
to_parent, from_child = os.pipe()
to_child, from_parent = os.pipe()
pid = os.fork()
if pid == 0:
    try:
        for addr, content in blocks:                          # the fork instant, copied
            assert read(addr, len(content)) == content
        assert fn() == 42 and (not TWO or bfn() == 99)
        assert a.resident() == res0, (a.resident(), res0)
        # the child writes, frees, punches
        a.write(d, b"C" * (4 * PAGE))
        a.write(c, ret(7))
        a.pools[DATA].free(f, 8 * PAGE)
        if TWO:
            a.write(big, b"c" * 100)
            a.write(bc, ret(8))
            a.pools[DATA].free(big, 1536 << 10)
        a.flush()
        assert fn() == 7 and (not TWO or bfn() == 8)
        assert a.resident() < res0, (a.resident(), res0)
        n = a.pools[DATA].alloc(PAGE, 16); a.write(n, b"N" * 64)
        os.write(from_child, b"1")
        assert os.read(to_child, 1) == b"1"                   # the parent has done the same
        assert read(d, 4 * PAGE) == b"C" * (4 * PAGE)
        assert read(g, 8 * PAGE) == b"G" * (8 * PAGE)         # freed and punched in the parent only
        assert read(n, 64) == b"N" * 64
        assert fn() == 7 and (not TWO or bfn() == 8)
        os._exit(0)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
assert os.read(to_parent, 1) == b"1"
for addr, content in blocks:                                  # nothing the child did shows here
    assert read(addr, len(content)) == content
assert fn() == 42 and (not TWO or bfn() == 99)
assert a.resident() == res0, (a.resident(), res0)
a.write(d, b"Q" * (4 * PAGE))
a.write(c, ret(5))
a.pools[RODATA].free(g, 8 * PAGE)
if TWO:
    a.write(big, b"q" * 100)
a.flush()
m = a.pools[DATA].alloc(PAGE, 16); a.write(m, b"M" * 64)
os.write(from_parent, b"1")
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
assert read(d, 4 * PAGE) == b"Q" * (4 * PAGE) and read(f, 8 * PAGE) == b"F" * (8 * PAGE)
assert read(m, 64) == b"M" * 64 and fn() == 5
if TWO:
    assert read(big, 100) == b"q" * 100 and bfn() == 99
a.close()
"""


@pytest.mark.parametrize("regions, registrations", [(1, 1), (2, 1), (2, 2)])
@pytest.mark.slow
def test_fork_gives_the_child_its_own_arena(scenario, regions, registrations):
    scenario.expect_ok(FORK_ARENA.format(two=regions == 2, registrations=registrations))


def test_fork_after_close_and_without_handlers_called(scenario):
    scenario.expect_ok("""
        import os
        from hotlink.arena import Arena, DATA
        a = Arena(1 << 20)
        a.fork_parent(); a.fork_child()      # without fork_prepare: nothing happens
        os.register_at_fork(before=a.fork_prepare, after_in_parent=a.fork_parent, after_in_child=a.fork_child)
        a.close()
        pid = os.fork()                      # a closed arena is left alone
        if pid == 0:
            os._exit(0)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        assert a.lock.acquire(blocking=False)
    """)


COUNTER_C = r"""
static int counter;
int bump(void) { return ++counter; }
"""


@pytest.mark.slow
def test_fork_with_a_session(scenario, compile_c):
    obj = compile_c(COUNTER_C, name="counter")
    other = big_code(compile_c, "other", 11, 2 << 20)
    scenario.expect_ok(f"""
        import ctypes, os, sys, traceback, hotlink
        s = hotlink.Session(arena_size=1 << 20)
        arena = s.arena
        # the session may register these itself; registering twice is harmless
        os.register_at_fork(before=arena.fork_prepare, after_in_parent=arena.fork_parent,
                            after_in_child=arena.fork_child)
        lib = s.library("c")
        u = lib.add({str(obj)!r})
        bump = lib.function("bump", ctypes.c_int)
        big = s.library("big")
        bu = big.add({str(other)!r})                  # grows the arena to 2 regions
        assert len(arena.regions) == 2
        assert [bump() for _ in range(3)] == [1, 2, 3]
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                assert bump() == 4 and bump() == 5
                assert big.function("other", ctypes.c_int)() == 11
                bu.remove()                           # frees and punches in the child only
                assert s.synchronize(10)
                c2 = s.library("c2")
                c2.add({str(obj)!r})
                assert c2.function("bump", ctypes.c_int)() == 1
                os.write(w, b"1")
                os._exit(0)
            except BaseException:
                traceback.print_exc(); sys.stderr.flush(); os._exit(1)
        assert os.read(r, 1) == b"1"
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert bump() == 4                            # the child's calls did not count here
        assert big.function("other", ctypes.c_int)() == 11
        s.close()
    """)
