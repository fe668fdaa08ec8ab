"""Malformed objects: every mutation of a real object either links or raises
a LinkError subclass; the interpreter never crashes and a failed add leaves
the session as it was.

Mutations target what a reader trusts: the ELF header, the section header
table, the symbol table and the relocation entries, plus truncation.
Derandomized, so CI runs the same 2,000+ cases every time.
"""
from __future__ import annotations

import functools
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hotlink
from hotlink.elf import ObjectFile

SOURCES = {
    "data": r"""
        #include <string.h>
        static int counter;
        int table[16] = {1, 2, 3};
        const char *greeting = "hello";
        __attribute__((aligned(64))) double aligned[8];
        static int helper(int x) { return x * 3 + table[x & 15]; }
        int entry(int x) { counter += helper(x); return counter + (int)strlen(greeting); }
        extern int maybe(void) __attribute__((weak));
        int has_maybe(void) { return maybe != 0; }
    """,
    "switch": r"""
        int pick(int x) {
            switch (x) { case 0: return 7; case 1: return 9; case 2: return 11;
                         case 3: return 13; case 4: return 17; case 5: return 19; default: return -1; }
        }
    """,
}


@functools.cache
def corpus() -> list[bytes]:
    out = []
    d = Path(tempfile.mkdtemp(prefix="hotlink-malformed-"))
    for name, src in SOURCES.items():
        c = d / f"{name}.c"
        c.write_text(src)
        for flags in (["-O2"], ["-O0", "-g"], ["-O2", "-mcmodel=large"]):
            o = d / f"{name}{len(out)}.o"
            subprocess.run(["gcc", "-c", "-fPIC", *flags, str(c), "-o", str(o)], check=True)
            out.append(o.read_bytes())
    return out


def _regions(data: bytes) -> list[tuple[int, int]]:
    """(start, length) of the ELF header, section headers, symtab and rela tables."""
    obj = ObjectFile(data)
    regions = [(0, 64), (struct.unpack_from("<Q", data, 0x28)[0], obj.shnum * 64)]
    for i in range(obj.shnum):
        if obj.sh_type[i] in (2, 4, 17):     # SYMTAB, RELA, GROUP
            regions.append((obj.sh_offset[i], obj.sh_size[i]))
    return [(s, n) for s, n in regions if n]


mutation = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1), st.integers(0, 0), st.integers(0, 0)),
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(0, 7), st.integers(0, 0)),
    st.tuples(st.just("word"), st.floats(0, 1),
              st.sampled_from([0, 1, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 40, (1 << 64) - 1]),
              st.sampled_from([1, 2, 4, 8])),
)


def mutate(data: bytes, ops) -> bytes:
    buf = bytearray(data)
    regions = _regions(data)
    for kind, where, a, b in ops:
        if kind == "truncate":
            buf = buf[: int(where * len(buf))]
            continue
        start, length = regions[int(where * len(regions)) % len(regions)]
        pos = start + int(where * 7919) % length
        if pos >= len(buf):
            continue
        if kind == "flip":
            buf[pos] ^= 1 << a
        else:
            width = b
            pos = min(pos, max(0, len(buf) - width))
            buf[pos:pos + width] = (a & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
    return bytes(buf)


@pytest.fixture(scope="module")
def session():
    with hotlink.Session() as s:
        yield s


@settings(max_examples=2200, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(which=st.integers(0, 5), ops=st.lists(mutation, min_size=1, max_size=4))
@pytest.mark.slow
def test_mutated_objects_link_or_raise_link_error(session, which, ops):
    objects = corpus()
    data = mutate(objects[which % len(objects)], ops)
    before = session.memory()
    lib = session.library("fuzz")
    try:
        try:
            lib.add(data)
        except hotlink.LinkError as e:
            assert str(e)                     # every error says what is wrong
            assert lib.definitions == {} and lib.units == []
            after = session.memory()
            assert after.used == before.used, "a failed add left memory behind"
            assert after.got_entries == before.got_entries and after.stubs == before.stubs
    finally:
        lib.remove()
    assert session.memory().used == before.used


def test_truncated_archive_and_garbage_raise():
    with hotlink.Session() as s:
        lib = s.library("x")
        for bad in (b"", b"\x7fELF", b"!<arch>\n" + b"x" * 70, b"!<arch>\nfoo.o/          0           0     0     644     99999999  `\n",
                    b"not an object at all", corpus()[0][:200]):
            with pytest.raises(hotlink.LinkError):
                lib.add(bad)
        assert lib.units == [] and s.memory().used == 0
