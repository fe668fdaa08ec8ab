"""Debian's static zlib (libz.a) linked by hotlink, checked against Python's
own zlib module and the system's shared libz.so.1 loaded with ctypes (the
same zlib version, so compressed output must be byte-identical).

One caveat: at level 0 (stored blocks) deflate sizes its blocks by the space
left in the output buffer, and Python's zlib.compress grows its output
buffer in steps, so for large inputs at level 0 only libz.so's compress2
(one big output buffer, like ours) is a byte-exact reference."""
from __future__ import annotations

import ctypes
import random
import zlib
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hotlink
from conftest import LIBZ_A

c_ulong_p = ctypes.POINTER(ctypes.c_ulong)

# zlib.h return codes (Python's zlib module does not export them)
Z_OK = 0
Z_DATA_ERROR = -3


class Zlib:
    """ctypes bindings to a zlib: the hotlink-linked one, or the system's."""

    def __init__(self, lib: hotlink.Library | ctypes.CDLL):
        self.lib = lib
        function = self._cdll_function if isinstance(lib, ctypes.CDLL) else lib.function
        self.compress2 = function(
            "compress2", ctypes.c_int,
            [ctypes.c_char_p, c_ulong_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_int])
        self.compressBound = function("compressBound", ctypes.c_ulong, [ctypes.c_ulong])
        self.uncompress = function(
            "uncompress", ctypes.c_int,
            [ctypes.c_char_p, c_ulong_p, ctypes.c_char_p, ctypes.c_ulong])
        self.crc32 = function(
            "crc32", ctypes.c_ulong, [ctypes.c_ulong, ctypes.c_char_p, ctypes.c_uint])
        self.adler32 = function(
            "adler32", ctypes.c_ulong, [ctypes.c_ulong, ctypes.c_char_p, ctypes.c_uint])
        self.zlibVersion = function("zlibVersion", ctypes.c_char_p, [])

    def _cdll_function(self, name, restype, argtypes):
        f = getattr(self.lib, name)
        f.restype, f.argtypes = restype, argtypes
        return f

    def compress(self, data: bytes, level: int) -> bytes:
        bound = self.compressBound(len(data))
        dest = ctypes.create_string_buffer(bound)
        dest_len = ctypes.c_ulong(bound)
        rc = self.compress2(dest, ctypes.byref(dest_len), data, len(data), level)
        assert rc == Z_OK, f"compress2 returned {rc}"
        assert 0 < dest_len.value <= bound
        return dest.raw[: dest_len.value]

    def decompress(self, blob: bytes, size: int) -> bytes:
        dest = ctypes.create_string_buffer(max(size, 1))
        dest_len = ctypes.c_ulong(size)
        rc = self.uncompress(dest, ctypes.byref(dest_len), blob, len(blob))
        assert rc == Z_OK, f"uncompress returned {rc}"
        assert dest_len.value == size
        return dest.raw[:size]


@pytest.fixture(scope="module")
def z() -> Iterator[Zlib]:
    with hotlink.Session() as s:
        lib = s.library("zlib")
        lib.add(str(LIBZ_A))
        yield Zlib(lib)


@pytest.fixture(scope="module")
def system_z() -> Zlib:
    return Zlib(ctypes.CDLL("libz.so.1"))


# ---------------------------------------------------------------- inputs

def _rand(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _text(n: int, seed: int) -> bytes:
    rng = random.Random(seed)
    words = ("the quick brown fox jumps over lazy dog linker symbol relocation "
             "section arena object archive python zlib deflate inflate huffman").split()
    out: list[str] = []
    size = 0
    while size < n:
        w = rng.choice(words)
        out.append(w)
        size += len(w) + 1
        if rng.random() < 0.08:
            out.append(".\n")
    return " ".join(out).encode()[:n]


def _runs(n: int, seed: int) -> bytes:
    """Runs of random lengths of a few byte values: long matches, short literals."""
    rng = random.Random(seed)
    parts = []
    size = 0
    while size < n:
        k = rng.randint(1, 300)
        parts.append(bytes([rng.choice(b"\x00\x01AZ\xff")]) * k)
        size += k
    return b"".join(parts)[:n]


def _mixed(n: int, seed: int) -> bytes:
    """Alternating compressible and incompressible blocks."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < n:
        if rng.random() < 0.5:
            out += rng.randbytes(rng.randint(1, 4096))
        else:
            out += _text(rng.randint(1, 8192), rng.randint(0, 1 << 30))
    return bytes(out[:n])


MIB = 1 << 20

CASES: list[tuple[str, bytes, int]] = [
    ("empty-default", b"", -1),
    ("empty-0", b"", 0),
    ("empty-9", b"", 9),
    ("one-byte", b"a", 6),
    ("hello", b"hello, world\n", -1),
    ("zeros-1k-1", b"\x00" * 1024, 1),
    ("zeros-1MiB-9", b"\x00" * MIB, 9),
    ("abc-repeat-300k", b"abc" * 100_000, 6),
    ("all-bytes-1MiB-5", bytes(range(256)) * 4096, 5),
    ("random-100-6", _rand(100, 1), 6),
    ("random-64k-0", _rand(65536, 2), 0),
    ("random-64k-1", _rand(65536, 3), 1),
    ("random-1MiB-9", _rand(MIB, 4), 9),
    ("random-1MiB-default", _rand(MIB, 5), -1),
    ("text-10k-1", _text(10_000, 6), 1),
    ("text-200k-2", _text(200_000, 7), 2),
    ("text-200k-3", _text(200_000, 8), 3),
    ("text-500k-4", _text(500_000, 9), 4),
    ("text-1MiB-6", _text(MIB, 10), 6),
    ("text-1MiB-9", _text(MIB, 11), 9),
    ("runs-300k-7", _runs(300_000, 12), 7),
    ("runs-1MiB-8", _runs(MIB, 13), 8),
    ("mixed-700k-6", _mixed(700_000, 14), 6),
    ("mixed-1MiB-2", _mixed(MIB, 15), 2),
    ("window-edge-32k+1", _text(32769, 16) * 3, 6),
]


def test_cases_are_varied():
    assert len(CASES) >= 20
    assert max(len(d) for _, d, _ in CASES) == MIB
    assert {lvl for _, _, lvl in CASES} >= {-1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9}


@pytest.mark.parametrize("data,level", [(d, lvl) for _, d, lvl in CASES], ids=[c[0] for c in CASES])
@pytest.mark.slow
def test_compress2_matches_reference(z: Zlib, system_z: Zlib, data: bytes, level: int):
    ours = z.compress(data, level)
    assert ours == system_z.compress(data, level)
    if level != 0 or len(data) < 16384:
        assert ours == zlib.compress(data, level)
    assert zlib.decompress(ours) == data


@pytest.mark.parametrize("data,level", [(d, lvl) for _, d, lvl in CASES], ids=[c[0] for c in CASES])
@pytest.mark.slow
def test_uncompress_round_trip(z: Zlib, data: bytes, level: int):
    # Decompress what Python produced, and what we produced ourselves.
    assert z.decompress(zlib.compress(data, level), len(data)) == data
    assert z.decompress(z.compress(data, level), len(data)) == data


def test_uncompress_rejects_corrupt_input(z: Zlib):
    blob = bytearray(zlib.compress(b"some data that is long enough " * 20))
    blob[len(blob) // 2] ^= 0xFF
    dest = ctypes.create_string_buffer(4096)
    dest_len = ctypes.c_ulong(4096)
    rc = z.uncompress(dest, ctypes.byref(dest_len), bytes(blob), len(blob))
    assert rc == Z_DATA_ERROR


@pytest.mark.parametrize("data", [d for _, d, _ in CASES], ids=[c[0] for c in CASES])
def test_crc32_and_adler32_match(z: Zlib, data: bytes):
    assert z.crc32(0, data, len(data)) == zlib.crc32(data)
    assert z.adler32(1, data, len(data)) == zlib.adler32(data)


def test_crc32_running_value(z: Zlib):
    data = _text(100_000, 99)
    crc = 0
    for i in range(0, len(data), 777):
        chunk = data[i:i + 777]
        crc = z.crc32(crc, chunk, len(chunk))
    assert crc == zlib.crc32(data)
    assert z.crc32(0x12345678, b"abc", 3) == zlib.crc32(b"abc", 0x12345678)


def test_zlib_version(z: Zlib, system_z: Zlib):
    assert z.zlibVersion().decode() == zlib.ZLIB_RUNTIME_VERSION
    assert z.zlibVersion() == system_z.zlibVersion()


def test_is_not_the_system_library(z: Zlib, system_z: Zlib):
    # hotlink must have linked its own copy, not bound to the process's libz.so
    for name in ("compress2", "crc32", "zlibVersion"):
        assert z.lib.address(name) != ctypes.cast(getattr(system_z.lib, name), ctypes.c_void_p).value


def test_symbols_resolve_to_distinct_addresses(z: Zlib):
    names = ["compress2", "uncompress", "crc32", "adler32", "deflate", "inflate", "zlibVersion"]
    addrs = [z.lib.address(n) for n in names]
    assert all(a != 0 for a in addrs)
    assert len(set(addrs)) == len(addrs)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=20_000), level=st.integers(min_value=-1, max_value=9))
def test_compress_property(z: Zlib, system_z: Zlib, data: bytes, level: int):
    ours = z.compress(data, level)
    assert ours == system_z.compress(data, level)
    assert ours == zlib.compress(data, level)
    assert z.decompress(ours, len(data)) == data
    assert z.crc32(0, data, len(data)) == zlib.crc32(data)
