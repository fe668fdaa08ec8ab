"""Compression archives: libbz2, liblzma, libzstd, liblz4, libbrotlienc/dec.

Each check compresses inputs of several shapes, decompresses them again, and
returns the compressed bytes, which must be identical between the hotlink
build and the shared build (same version, same code); Python's bz2 module
gives the same bytes, and Python's lzma and zlib check the xz streams and CRCs.
"""
from __future__ import annotations

import bz2
import ctypes
import lzma
import random
import zlib

import pytest

from realworld.harness import Api, case

c_size_t = ctypes.c_size_t
c_char_p = ctypes.c_char_p
c_void_p = ctypes.c_void_p
c_int = ctypes.c_int
c_uint = ctypes.c_uint


def samples() -> list[bytes]:
    rng = random.Random(13)
    words = b"archive member relocation symbol section python linker hotlink static".split()
    text = b" ".join(rng.choice(words) for _ in range(6000))
    return [b"", b"a", text, rng.randbytes(20000), bytes(50000), text[:777] * 9]


@case("bz2", "libbz2.a", "libbz2.so.1.0", package="libbz2-dev")
def BZ2(api: Api) -> list[object]:
    compress = api("BZ2_bzBuffToBuffCompress", c_int, c_char_p, ctypes.POINTER(c_uint), c_char_p, c_uint,
                   c_int, c_int, c_int)
    decompress = api("BZ2_bzBuffToBuffDecompress", c_int, c_char_p, ctypes.POINTER(c_uint), c_char_p, c_uint,
                     c_int, c_int)
    version = api("BZ2_bzlibVersion", c_char_p)
    out: list[object] = [version()]
    for data in samples():
        for level in (1, 9):
            cap = len(data) + len(data) // 100 + 601
            buf, n = ctypes.create_string_buffer(cap), c_uint(cap)
            assert compress(buf, ctypes.byref(n), data, len(data), level, 0, 0) == 0
            blob = buf.raw[:n.value]
            assert bz2.decompress(blob) == data
            if level == 9:
                assert blob == bz2.compress(data, 9)
            back, m = ctypes.create_string_buffer(len(data) + 1), c_uint(len(data) + 1)
            assert decompress(back, ctypes.byref(m), blob, len(blob), 0, 0) == 0
            assert back.raw[:m.value] == data
            out.append(blob)
    # a corrupted stream is reported, not crashed on
    bad = bytearray(bz2.compress(b"x" * 1000))
    bad[20] ^= 0xFF
    m = c_uint(2000)
    assert decompress(ctypes.create_string_buffer(2000), ctypes.byref(m), bytes(bad), len(bad), 0, 0) < 0
    return out


@case("lzma", "liblzma.a", "liblzma.so.5", package="liblzma-dev")
def LZMA(api: Api) -> list[object]:
    encode = api("lzma_easy_buffer_encode", c_int, c_uint, c_int, c_void_p, c_char_p, c_size_t,
                 c_char_p, ctypes.POINTER(c_size_t), c_size_t)
    decode = api("lzma_stream_buffer_decode", c_int, ctypes.POINTER(ctypes.c_uint64), c_uint, c_void_p,
                 c_char_p, ctypes.POINTER(c_size_t), c_size_t, c_char_p, ctypes.POINTER(c_size_t), c_size_t)
    crc32 = api("lzma_crc32", ctypes.c_uint32, c_char_p, c_size_t, ctypes.c_uint32)
    crc64 = api("lzma_crc64", ctypes.c_uint64, c_char_p, c_size_t, ctypes.c_uint64)
    version = api("lzma_version_string", c_char_p)
    bound = api("lzma_stream_buffer_bound", c_size_t, c_size_t)
    LZMA_CHECK_CRC64 = 4
    out: list[object] = [version()]
    for data in samples():
        assert crc32(data, len(data), 0) == zlib.crc32(data)
        out.append(crc64(data, len(data), 0))
        for preset in (0, 6):
            cap = bound(len(data))
            buf, pos = ctypes.create_string_buffer(cap), c_size_t(0)
            assert encode(preset, LZMA_CHECK_CRC64, None, data, len(data), buf, ctypes.byref(pos), cap) == 0
            blob = buf.raw[:pos.value]
            # the one-call encoder records sizes in the block header, unlike Python's streaming one
            assert lzma.decompress(blob, format=lzma.FORMAT_XZ) == data
            back = ctypes.create_string_buffer(len(data) + 1)
            limit, in_pos, out_pos = ctypes.c_uint64(1 << 30), c_size_t(0), c_size_t(0)
            assert decode(ctypes.byref(limit), 0, None, blob, ctypes.byref(in_pos), len(blob),
                          back, ctypes.byref(out_pos), len(data) + 1) == 0
            assert back.raw[:out_pos.value] == data and in_pos.value == len(blob)
            out.append(blob)
    return out


@case("zstd", "libzstd.a", "libzstd.so.1", package="libzstd-dev")
def ZSTD(api: Api) -> list[object]:
    compress = api("ZSTD_compress", c_size_t, c_char_p, c_size_t, c_char_p, c_size_t, c_int)
    decompress = api("ZSTD_decompress", c_size_t, c_char_p, c_size_t, c_char_p, c_size_t)
    bound = api("ZSTD_compressBound", c_size_t, c_size_t)
    is_error = api("ZSTD_isError", c_uint, c_size_t)
    error_name = api("ZSTD_getErrorName", c_char_p, c_size_t)
    content_size = api("ZSTD_getFrameContentSize", ctypes.c_ulonglong, c_char_p, c_size_t)
    version = api("ZSTD_versionNumber", c_uint)
    out: list[object] = [version()]
    for data in samples():
        for level in (1, 3, 19):
            cap = bound(len(data))
            buf = ctypes.create_string_buffer(cap)
            n = compress(buf, cap, data, len(data), level)
            assert not is_error(n), error_name(n)
            blob = buf.raw[:n]
            assert content_size(blob, len(blob)) == len(data)
            back = ctypes.create_string_buffer(len(data) + 1)
            assert decompress(back, len(data) + 1, blob, len(blob)) == len(data)
            assert back.raw[:len(data)] == data
            out.append(blob)
    n = decompress(ctypes.create_string_buffer(10), 10, b"not a zstd frame", 16)
    assert is_error(n)
    out.append(error_name(n))
    return out


@case("lz4", "liblz4.a", "liblz4.so.1", package="liblz4-dev")
def LZ4(api: Api) -> list[object]:
    compress = api("LZ4_compress_default", c_int, c_char_p, c_char_p, c_int, c_int)
    compress_hc = api("LZ4_compress_HC", c_int, c_char_p, c_char_p, c_int, c_int, c_int)
    decompress = api("LZ4_decompress_safe", c_int, c_char_p, c_char_p, c_int, c_int)
    bound = api("LZ4_compressBound", c_int, c_int)
    version = api("LZ4_versionString", c_char_p)
    out: list[object] = [version()]
    for data in samples():
        cap = bound(len(data))
        for hc in (False, True):
            buf = ctypes.create_string_buffer(cap)
            n = compress_hc(data, buf, len(data), cap, 9) if hc else compress(data, buf, len(data), cap)
            assert n > 0
            blob = buf.raw[:n]
            back = ctypes.create_string_buffer(len(data) + 1)
            assert decompress(blob, back, n, len(data) + 1) == len(data)
            assert back.raw[:len(data)] == data
            out.append(blob)
    assert decompress(b"\xff" * 8, ctypes.create_string_buffer(64), 8, 64) < 0
    return out


@case("brotli", ("libbrotlienc.a", "libbrotlidec.a", "libbrotlicommon.a"), "libbrotlienc.so.1",
      package="libbrotli-dev")
def BROTLI(api: Api) -> list[object]:
    if api.kind == "shared":
        # the shared build is split in three; load the decoder next to the encoder
        dec = Api(ctypes.CDLL("libbrotlidec.so.1"), "shared")
    else:
        dec = api
    compress = api("BrotliEncoderCompress", c_int, c_int, c_int, c_int, c_size_t, c_char_p,
                   ctypes.POINTER(c_size_t), c_char_p)
    max_size = api("BrotliEncoderMaxCompressedSize", c_size_t, c_size_t)
    enc_version = api("BrotliEncoderVersion", ctypes.c_uint32)
    decompress = dec("BrotliDecoderDecompress", c_int, c_size_t, c_char_p, ctypes.POINTER(c_size_t), c_char_p)
    dec_version = dec("BrotliDecoderVersion", ctypes.c_uint32)
    out: list[object] = [enc_version(), dec_version()]
    for data in samples():
        for quality, lgwin in ((1, 18), (11, 22)):
            cap = max(max_size(len(data)), 64)
            buf, n = ctypes.create_string_buffer(cap), c_size_t(cap)
            assert compress(quality, lgwin, 0, len(data), data, ctypes.byref(n), buf) == 1
            blob = buf.raw[:n.value]
            back, m = ctypes.create_string_buffer(len(data) + 1), c_size_t(len(data) + 1)
            assert decompress(len(blob), blob, ctypes.byref(m), back) == 1
            assert back.raw[:m.value] == data
            out.append(blob)
    return out


@pytest.mark.parametrize("c", [BZ2, LZMA, ZSTD, LZ4, BROTLI], ids=lambda c: c.name)
def test_compression_archive(run_case, c):
    run_case(c)
