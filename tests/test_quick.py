"""The quick link (quick.py) links exactly what the general transaction
links, byte for byte, and hands everything else to it.

Each object is linked twice at the same addresses: once with the quick link
switched off, then, after removing it and waiting for its memory, with it
on.  The blocks (pool, address, size), their bytes, the published
definitions and the registered unwind tables must be identical; mutated
objects must give the same error or the same image.
"""
from __future__ import annotations

import ctypes
import functools
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.test_malformed import mutate, mutation

import hotlink
from hotlink import ehframe, platform, quick, quickcore
from hotlink.arena import CODE as CODE_POOL
from hotlink.arena import DATA as DATA_POOL
from hotlink.arena import RODATA as RODATA_POOL
from hotlink.arena import unpack_block

SELF_CONTAINED = {
    "tiny": "int f(int x){return x*3+1;}\n",
    "data": r"""
        int counter = 5;                      /* -fPIC: reached through REX_GOTPCRELX, relaxed */
        static int hidden_counter;
        __attribute__((visibility("hidden"))) int hid = 7;
        const char message[] = "hello";
        __attribute__((aligned(64))) double aligned[8];
        static int helper(int x) { return x * 3 + message[x & 3]; }
        int entry(int x) { hidden_counter += helper(x); counter += x; return counter + hidden_counter + hid; }
        __attribute__((weak)) int weak_one(void) { return 1; }
        double scale(double x) { return x * 2.5 + aligned[1]; }
    """,
    "switch": r"""
        int pick(int x) {
            switch (x) { case 0: return 7; case 1: return 9; case 2: return 11;
                         case 3: return 13; case 4: return 17; case 5: return 19; default: return -1; }
        }
        int (*pointer)(int) = pick;          /* an R64 in .data.rel */
        int call(int x) { return pointer(x); }
    """,
    "asm": r"""
        __asm__(".text\n.globl untyped\nuntyped:\n movl $42, %eax\n ret\n");
        int use_untyped(void);
    """,
}
CALLS_OUT = {
    "libc": r"""
        #include <string.h>
        #include <stdio.h>
        extern int maybe(void) __attribute__((weak));
        void *table[] = {(void *)maybe, (void *)strlen};   /* R64: a weak undefined is 0 */
        int n(const char *s) { return (int)strlen(s); }
        void *out(void) { return stdout; }           /* a GOT load of libc data, relaxed */
    """,
    "host": r"""
        int helper(int);                              /* another library's */
        extern int host_counter;                      /* a define */
        int twice(int x) { return helper(x) * 2 + host_counter; }
    """,
}
NOT_QUICK = {
    "init": "int v; __attribute__((constructor)) static void init(void){v = 3;} int get(void){return v;}\n",
    "tls": "__thread int t; int get(void){return t;}\n",
    "common": "int shared_common; int get(void){return shared_common;}\n",
}
FLAGS = (["-O2"], ["-O0", "-g"], ["-O3", "-fno-asynchronous-unwind-tables"], ["-Os", "-ffunction-sections"])


@functools.cache
def build(name: str, flags: tuple[str, ...]) -> bytes:
    src = {**SELF_CONTAINED, **CALLS_OUT, **NOT_QUICK}[name]
    d = Path(tempfile.mkdtemp(prefix="hotlink-quick-"))
    (d / "u.c").write_text(src)
    extra = ["-fcommon"] if name == "common" else []
    subprocess.run(["gcc", "-c", "-fPIC", *flags, *extra, str(d / "u.c"), "-o", str(d / "u.o")], check=True)
    return (d / "u.o").read_bytes()


@pytest.fixture(autouse=True)
def native_core():
    """The native core, compiled (quick.link compiles it only after CORE_AFTER links)."""
    assert quickcore.core() is not None


@pytest.fixture
def counted(monkeypatch):
    """The quick links made: "native" (the core) or "python"."""
    made: list[str] = []
    natively, commit = quick._link_natively, quick._commit

    def counting(path, fn):
        def call(*args):
            unit = fn(*args)
            if unit is not None:
                made.append(path)
            return unit
        return call
    monkeypatch.setattr(quick, "_link_natively", counting("native", natively))
    monkeypatch.setattr(quick, "_commit", counting("python", commit))
    return made


MODES = {"general": (False, False), "python": (True, False), "native": (True, True)}


def image(s: hotlink.Session, data: bytes, mode: str, monkeypatch) -> tuple:
    """What linking ``data`` into a fresh library the ``mode`` way leaves: the
    error, or the blocks with their bytes, the definitions and the unwind
    tables; the unit is removed and its memory freed afterwards."""
    monkeypatch.setattr(quick, "enabled", MODES[mode][0])
    monkeypatch.setattr(quick, "native", MODES[mode][1])
    frames = platform.registered_frames
    lib = s.library("image")
    try:
        try:
            unit = lib.add(data, name="obj")
        except hotlink.LinkError as e:
            return ("error", type(e).__name__, str(e), s.memory().used)
        blocks = [unpack_block(b) for b in unit.blocks]
        contents = [ctypes.string_at(a, n) for _, a, n, _ in blocks]
        defs = {name: (d.address, d.flags, d.size) for name, d in lib.definitions.items()}
        return ("linked", blocks, contents, defs, unit.names, platform.registered_frames - frames)
    finally:
        lib.remove()
        assert s.synchronize(5)


def all_ways(s: hotlink.Session, data: bytes, monkeypatch) -> tuple:
    """The general transaction's image (which also makes the object's
    .eh_frame records known), and the same from both quick links."""
    general = image(s, data, "general", monkeypatch)
    assert image(s, data, "python", monkeypatch) == general
    assert image(s, data, "native", monkeypatch) == general
    return general


@pytest.mark.parametrize("flags", FLAGS, ids=" ".join)
@pytest.mark.parametrize("name", sorted(SELF_CONTAINED))
def test_self_contained_objects_link_the_same_all_ways(name, flags, counted, monkeypatch):
    data = build(name, tuple(flags))
    has_frames = b".eh_frame" in data
    with hotlink.Session() as s:
        ehframe._cie_cache.clear()
        ehframe._fde_cache.clear()
        first = image(s, data, "python", monkeypatch)     # records never seen: handed to the general way
        assert first[0] == "linked"
        assert counted == ([] if has_frames else ["python"])
        ehframe._cie_cache.clear()
        ehframe._fde_cache.clear()
        del counted[:]
        assert image(s, data, "native", monkeypatch) == first    # the core checks the records itself
        assert all_ways(s, data, monkeypatch) == first
        assert counted == ["native", "python", "native"], "a quick link declined a self-contained object"
        del counted[:]
        lib = s.library("run")
        lib.add(data)
        if name == "tiny":
            assert lib.function("f", ctypes.c_int, [ctypes.c_int])(5) == 16
        elif name == "data":
            assert lib.function("entry", ctypes.c_int, [ctypes.c_int])(1) > 0
            assert lib.function("scale", ctypes.c_double, [ctypes.c_double])(2.0) == 5.0
        elif name == "switch":
            assert [lib.function("call", ctypes.c_int, [ctypes.c_int])(i) for i in (0, 5, 9)] == [7, 19, -1]
        else:
            assert lib.function("untyped", ctypes.c_int)() == 42
        assert len(counted) == 1


@pytest.mark.parametrize("name", ["tiny", "data"])
def test_the_core_takes_blocks_at_the_tops_or_where_alloc_blocks_puts_them(name, counted, monkeypatch):
    """Most links: the core takes the blocks at the pools' tops itself
    (Arena.tops/set_tops); with a hole to take first, after alloc_blocks.
    Both give the general transaction's image, and each pool's bytes in use."""
    data = build(name, ("-O2",))
    with hotlink.Session() as s:
        general = image(s, data, "general", monkeypatch)
        used = s.memory().used
        arena = type(s.arena)
        bumped: list[tuple[int, ...]] = []
        set_tops = arena.set_tops
        monkeypatch.setattr(arena, "set_tops", lambda self, *tops: (bumped.append(tops), set_tops(self, *tops))[1])
        monkeypatch.setattr(quick, "enabled", True)
        monkeypatch.setattr(quick, "native", True)
        lib = s.library("bump")
        unit = lib.add(data)
        assert counted == ["native"] and len(bumped) == 1
        blocks = [unpack_block(b) for b in unit.blocks]
        tops = {CODE_POOL: bumped[0][0], RODATA_POOL: bumped[0][1], DATA_POOL: bumped[0][2]}
        assert all(a + ((n + 15) & -16) <= tops[p] for p, a, n, _ in blocks)
        assert s.memory().used == used + sum((n + 15) & -16 for _, _, n, _ in blocks)
        lib.remove()
        assert s.synchronize(5) and s.memory().used == used
        assert image(s, data, "native", monkeypatch) == general
        monkeypatch.setattr(s.arena, "tops", lambda: None)      # as if a pool had a hole
        del bumped[:], counted[:]
        assert image(s, data, "native", monkeypatch) == general
        assert counted == ["native"] and not bumped


@pytest.mark.parametrize("name", sorted(NOT_QUICK))
def test_other_objects_go_the_general_way(name, counted, monkeypatch):
    data = build(name, ("-O2",))
    with hotlink.Session() as s:
        image(s, data, "native", monkeypatch)
        result = all_ways(s, data, monkeypatch)
        assert result[0] == "linked"
        assert not counted


def test_objects_calling_out_bind_as_the_general_way_does(counted, monkeypatch):
    with hotlink.Session() as s:
        s.define({"host_counter": HOST_DATA})          # within reach of the arena, as libc is
        base = s.library("base")
        used = base.add(HELPER_SOURCE, language="c")
        data = build("host", ("-O2",))
        del counted[:]
        monkeypatch.setattr(quick, "enabled", False)
        general = s.library("g", link_order=[base])
        general.add(data, name="obj")
        monkeypatch.setattr(quick, "enabled", True)
        lib = s.library("q", link_order=[base])
        unit = lib.add(data, name="obj")
        assert counted == ["native"]
        assert lib.function("twice", ctypes.c_int, [ctypes.c_int])(5) == 2 * 6 + ctypes.c_int.from_address(HOST_DATA).value
        assert unit.deps == general.units[0].deps == {used} and unit in used.users
        with pytest.raises(hotlink.DependencyError):
            used.remove()
        lib.remove()
        general.remove()
        used.remove()
        # libc: a function, a GOT load of its data, a weak undefined
        libc = s.library("libc")
        libc.add(build("libc", ("-O2",)))
        assert counted == ["native", "native"]
        assert libc.function("n", ctypes.c_int, [ctypes.c_char_p])(b"four") == 4
        assert libc.function("out", ctypes.c_void_p)() == ctypes.c_void_p.in_dll(ctypes.CDLL(None), "stdout").value
        assert libc.definitions["n"].unit.deps is None
        table = (ctypes.c_void_p * 2).from_address(libc.address("table"))
        assert table[0] is None and table[1] == ctypes.cast(_LIBC.strlen, ctypes.c_void_p).value


HELPER_SOURCE = "int helper(int x) { return x + 1; }\n"
_LIBC = ctypes.CDLL(None)
HOST_DATA = ctypes.addressof(ctypes.c_void_p.in_dll(_LIBC, "stdout"))
HOST_FUNCTION = ctypes.cast(_LIBC.abs, ctypes.c_void_p).value


@pytest.mark.parametrize("flags", FLAGS[:2], ids=" ".join)
@pytest.mark.parametrize("name", sorted(CALLS_OUT))
def test_objects_calling_out_link_the_same_all_ways(name, flags, counted, monkeypatch):
    data = build(name, tuple(flags))
    with hotlink.Session() as s:
        s.define({"host_counter": HOST_DATA, "helper": HOST_FUNCTION})
        assert all_ways(s, data, monkeypatch)[0] == "linked"
        assert counted == ["python", "native"]


def test_an_undefined_name_or_an_archive_member_goes_the_general_way(counted, make_archive, compile_c):
    data = build("host", ("-O2",))
    with hotlink.Session() as s:
        lib = s.library("u")
        with pytest.raises(hotlink.UndefinedSymbolError, match="helper"):
            lib.add(data)
        archive = make_archive([compile_c(HELPER_SOURCE)])
        lib.add(archive)
        s.define({"host_counter": 8})
        unit = lib.add(data)            # pulls helper from the archive: the general way
        assert not counted and unit.deps


def test_a_name_the_library_defines_goes_the_general_way(counted):
    data = build("tiny", ("-O2",))
    with hotlink.Session() as s:
        lib = s.library("dup")
        lib.add(data)
        assert len(counted) == 1
        with pytest.raises(hotlink.DuplicateSymbolError, match="'f'"):
            lib.add(data)
        assert len(counted) == 1 and len(lib.units) == 1
        lib.remove()
        # patchable libraries and replacements: the general way
        p = s.library("p", patchable=True)
        u = p.add(data)
        p.replace(u, data)
        assert len(counted) == 1


def test_a_removed_quick_unit_gives_everything_back(counted):
    data = build("data", ("-O2",))
    with hotlink.Session() as s:
        s.library("warm").add(data)
        frames = platform.registered_frames
        before = s.memory().used
        for i in range(200):
            lib = s.library(f"l{i}")
            lib.add(data)
            assert lib.function("entry", ctypes.c_int, [ctypes.c_int])(0) > 0
            lib.remove()
        assert s.synchronize(5)
        assert s.memory().used == before and platform.registered_frames == frames
        assert len(counted) == 201


@functools.cache
def fuzz_corpus() -> list[bytes]:
    return [build(name, tuple(flags)) for name in ("data", "switch", "tiny", "libc") for flags in FLAGS[:2]]


@pytest.fixture(scope="module")
def fuzz_session():
    with hotlink.Session() as s:
        yield s


@settings(max_examples=1500, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(which=st.integers(0, 7), ops=st.lists(mutation, min_size=1, max_size=3))
@pytest.mark.slow
def test_mutated_objects_give_the_same_result_all_ways(fuzz_session, which, ops, monkeypatch):
    s = fuzz_session
    objects = fuzz_corpus()
    image(s, objects[which], "general", monkeypatch)        # the unmutated records are known
    all_ways(s, mutate(objects[which], ops), monkeypatch)


def test_a_symbol_value_past_2_64_wraps_and_gives_back_its_got_entry():
    """Found by the fuzz above: a symbol whose value passes 2**64 once its
    section's address is added took a GOT entry that removal, mistaking it
    for one of the low tables, could not find (a leak and a warning)."""
    data = mutate(fuzz_corpus()[0], [("word", 0.8740089507811382, (1 << 64) - 1, 8)])
    with hotlink.Session() as s:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for _ in range(3):
                lib = s.library("big")
                lib.add(data)
                assert s.memory().got_entries == 1
                assert all(d.address < 1 << 64 for d in lib.definitions.values())   # wrapped, as ld does
                lib.remove()
                assert s.synchronize(5)
                assert s.memory().used == 0 and s.memory().got_entries == 0


def test_the_core_is_compiled_only_once_many_objects_were_linked(tmp_path):
    """A short script never pays for compiling the core; a JIT that links
    many objects gets it after quick.CORE_AFTER of them."""
    obj = tmp_path / "tiny.o"
    obj.write_bytes(build("tiny", ("-O2",)))
    script = f"""
import hotlink
from hotlink import quick, quickcore
data = open({str(obj)!r}, "rb").read()
with hotlink.Session() as s:
    for i in range(quick.CORE_AFTER - 1):
        s.library(f"l{{i}}").add(data)
    assert quickcore.compiled is None
    s.library("last").add(data)
    assert quickcore.compiled is not None
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
