"""Targets beyond +-2 GiB of the arena: calls go through stubs, data through
GOT entries, and both are shared, counted and released."""
from __future__ import annotations

import ctypes

import pytest

import hotlink

_libc = ctypes.CDLL(None)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)


@pytest.fixture
def far_page():
    """A page at a low address (far from libc and the arena) holding a
    function returning 42 and an int variable holding 1234."""
    addr = _libc.mmap(0x10000000, 4096, 7, 0x22 | 0x100000, -1, 0)   # rwx, MAP_PRIVATE|ANON|FIXED_NOREPLACE
    assert addr and addr != ctypes.c_void_p(-1).value
    ctypes.memmove(addr, b"\xb8\x2a\x00\x00\x00\xc3", 6)            # mov $42, %eax; ret
    ctypes.c_int.from_address(addr + 64).value = 1234
    yield addr
    _libc.munmap(addr, 4096)


SRC = r"""
extern int far_fn(void);
extern int far_data;
int call_far(void) { return far_fn() + 1; }
int read_far(void) { return far_data; }
int (*far_pointer(void))(void) { return far_fn; }
"""


def test_far_calls_use_stubs_and_far_data_uses_got(session, compile_c, far_page):
    session.define({"far_fn": far_page, "far_data": far_page + 64})
    arena = session.arena
    assert abs(far_page - arena.base) > 1 << 31
    obj = compile_c(SRC, "-fPIC")
    lib = session.library("far")
    u1 = lib.add(obj, name="one")
    mem = session.memory()
    assert mem.stubs == 1 and mem.got_entries >= 1
    assert lib.function("call_far", ctypes.c_int)() == 43
    assert lib.function("read_far", ctypes.c_int)() == 1234
    assert lib.function("far_pointer", ctypes.c_void_p)() == far_page   # through the GOT: the real address
    other = session.library("far2")
    u2 = other.add(obj, name="two")
    assert session.memory().stubs == 1, "units calling the same far target share one stub"
    u1.remove()
    session.synchronize()
    assert session.memory().stubs == 1 and other.function("call_far", ctypes.c_int)() == 43
    u2.remove()
    session.synchronize()
    assert session.memory().stubs == 0 and session.memory().got_entries == 0


def test_far_data_with_pc32_fails_clearly(session, compile_c, far_page):
    session.define({"far_data": far_page + 64, "far_fn": far_page})
    obj = compile_c(SRC, "-fPIE")       # PIE code reads extern data with PC32 (no GOT)
    lib = session.library("pie")
    with pytest.raises(hotlink.LinkError, match="far_data"):
        lib.add(obj)
    assert lib.units == [] and session.memory().used == 0 and session.memory().stubs == 0
