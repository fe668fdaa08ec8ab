"""Image archives: libpng16 (with zlib) and libjpeg-turbo's TurboJPEG API.

Images are encoded and decoded again; the encoded bytes must be identical
between the hotlink build and the shared build, the PNG's chunks are checked
with Python's zlib (CRCs, IDAT stream), the JPEG decodes back close to the
source. libjpeg-turbo keeps its last error message in thread-local storage
and picks SIMD code by CPU feature at run time.
"""
from __future__ import annotations

import ctypes
import struct
import zlib

import pytest

from realworld.harness import Api, case

c_size_t = ctypes.c_size_t
c_char_p = ctypes.c_char_p
c_void_p = ctypes.c_void_p
c_int = ctypes.c_int
c_ulong = ctypes.c_ulong
buf = ctypes.create_string_buffer


def gradient(w: int, h: int, channels: int) -> bytes:
    """A smooth test image with a sharp diagonal edge."""
    px = bytearray()
    for y in range(h):
        for x in range(w):
            edge = 255 if x > y else 0
            rgba = ((x * 255) // max(1, w - 1), (y * 255) // max(1, h - 1), edge, (x + y) % 256)
            px += bytes(rgba[:channels])
    return bytes(px)


class PngImage(ctypes.Structure):
    _fields_ = [("opaque", c_void_p), ("version", ctypes.c_uint32), ("width", ctypes.c_uint32),
                ("height", ctypes.c_uint32), ("format", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("colormap_entries", ctypes.c_uint32), ("warning_or_error", ctypes.c_uint32),
                ("message", ctypes.c_char * 64)]


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    out, pos = [], 8
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert crc == zlib.crc32(kind + body), kind
        out.append((kind, body))
        pos += 12 + n
    return out


@case("png16", ("libpng16.a", "libz.a"), "libpng16.so.16", package="libpng-dev zlib1g-dev")
def PNG16(api: Api) -> list[object]:
    version = api("png_access_version_number", ctypes.c_uint32)
    sig_cmp = api("png_sig_cmp", c_int, c_char_p, c_size_t, c_size_t)
    write = api("png_image_write_to_memory", c_int, ctypes.POINTER(PngImage), c_void_p, ctypes.POINTER(c_size_t),
                c_int, c_char_p, ctypes.c_int32, c_void_p)
    begin_read = api("png_image_begin_read_from_memory", c_int, ctypes.POINTER(PngImage), c_char_p, c_size_t)
    finish_read = api("png_image_finish_read", c_int, ctypes.POINTER(PngImage), c_void_p, c_char_p,
                      ctypes.c_int32, c_void_p)
    image_free = api("png_image_free", None, ctypes.POINTER(PngImage))
    out: list[object] = [version()]
    for (w, h, fmt, channels) in ((64, 48, 3, 4), (33, 7, 2, 3), (1, 1, 0, 1)):   # RGBA, RGB, GRAY
        pixels = gradient(w, h, channels)
        img = PngImage(version=1, width=w, height=h, format=fmt)
        size = c_size_t(0)
        assert write(ctypes.byref(img), None, ctypes.byref(size), 0, pixels, 0, None) == 1, img.message
        mem = buf(size.value)
        assert write(ctypes.byref(img), mem, ctypes.byref(size), 0, pixels, 0, None) == 1, img.message
        data = mem.raw[:size.value]
        assert sig_cmp(data, 0, 8) == 0
        chunks = png_chunks(data)
        assert chunks[0][0] == b"IHDR" and struct.unpack(">II", chunks[0][1][:8]) == (w, h)
        raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
        assert len(raw) == h * (1 + w * channels)        # one filter byte per row
        back = PngImage(version=1)
        assert begin_read(ctypes.byref(back), data, len(data)) == 1, back.message
        assert (back.width, back.height) == (w, h)
        back.format = fmt
        pix = buf(len(pixels))
        assert finish_read(ctypes.byref(back), None, pix, 0, None) == 1, back.message
        assert pix.raw == pixels
        image_free(ctypes.byref(back))
        out.append(data)
    bad = PngImage(version=1)
    assert begin_read(ctypes.byref(bad), b"\x89PNG\r\n\x1a\nnot really", 18) == 0
    out.append(bad.message)
    return out


@case("turbojpeg", "libturbojpeg.a", "libturbojpeg.so.0", package="libturbojpeg0-dev")
def TURBOJPEG(api: Api) -> list[object]:
    init_compress = api("tjInitCompress", c_void_p)
    init_decompress = api("tjInitDecompress", c_void_p)
    compress = api("tjCompress2", c_int, c_void_p, c_char_p, c_int, c_int, c_int, c_int,
                   ctypes.POINTER(c_void_p), ctypes.POINTER(c_ulong), c_int, c_int, c_int)
    header = api("tjDecompressHeader3", c_int, c_void_p, c_char_p, c_ulong, ctypes.POINTER(c_int),
                 ctypes.POINTER(c_int), ctypes.POINTER(c_int), ctypes.POINTER(c_int))
    decompress = api("tjDecompress2", c_int, c_void_p, c_char_p, c_ulong, c_char_p, c_int, c_int, c_int, c_int,
                     c_int)
    error = api("tjGetErrorStr2", c_char_p, c_void_p)
    last_error = api("tjGetErrorStr", c_char_p)
    tj_free = api("tjFree", None, c_void_p)
    destroy = api("tjDestroy", c_int, c_void_p)
    buf_size = api("tjBufSize", c_ulong, c_int, c_int, c_int)
    TJPF_RGB = 0
    comp, dec = init_compress(), init_decompress()
    assert comp and dec
    out: list[object] = []
    w, h = 96, 64
    pixels = gradient(w, h, 3)
    for quality, subsamp in ((95, 0), (75, 2), (40, 1)):            # 4:4:4, 4:2:0, 4:2:2
        jpeg, size = c_void_p(), c_ulong(0)
        assert compress(comp, pixels, w, 0, h, TJPF_RGB, ctypes.byref(jpeg), ctypes.byref(size), subsamp,
                        quality, 0) == 0, error(comp)
        assert 0 < size.value <= buf_size(w, h, subsamp)
        data = ctypes.string_at(jpeg.value, size.value)
        tj_free(jpeg)
        assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
        dims = [c_int() for _ in range(4)]
        assert header(dec, data, len(data), *map(ctypes.byref, dims)) == 0, error(dec)
        assert (dims[0].value, dims[1].value, dims[2].value) == (w, h, subsamp)
        back = buf(len(pixels))
        assert decompress(dec, data, len(data), back, w, 0, h, TJPF_RGB, 0) == 0, error(dec)
        err = sum(abs(a - b) for a, b in zip(back.raw, pixels)) / len(pixels)
        assert err < (4 if quality == 95 else 12), (quality, err)
        out.append(data)
    # not a JPEG: fails with a message, also kept in the thread-local global one
    assert header(dec, b"garbage", 7, *[ctypes.byref(c_int()) for _ in range(4)]) == -1
    assert error(dec) == b"Not a JPEG file: starts with 0x67 0x61" == last_error()
    out.append(error(dec))
    destroy(comp)
    destroy(dec)
    return out


@pytest.mark.parametrize("c", [PNG16, TURBOJPEG], ids=lambda c: c.name)
def test_image_archive(run_case, c):
    run_case(c)
