"""Hashing and cryptography archives: OpenSSL's libcrypto, libsodium, nettle,
libb2, libxxhash, libxcrypt.

Digests are checked against hashlib (same algorithms, independent code),
key derivations against hashlib.pbkdf2_hmac/scrypt, and everything else
(signatures, password hashes) between the hotlink and the shared build and
against published test vectors.
"""
from __future__ import annotations

import ctypes
import hashlib
import hmac
import random

import pytest

from realworld.harness import Api, case

c_size_t = ctypes.c_size_t
c_char_p = ctypes.c_char_p
c_void_p = ctypes.c_void_p
c_int = ctypes.c_int
c_uint = ctypes.c_uint
c_ulonglong = ctypes.c_ulonglong
buf = ctypes.create_string_buffer

MESSAGES = [b"", b"abc", b"The quick brown fox jumps over the lazy dog",
            random.Random(5).randbytes(10_000), bytes(range(256)) * 40]


@case("libcrypto", "libcrypto.a", "libcrypto.so.3", package="libssl-dev")
def LIBCRYPTO(api: Api) -> list[object]:
    version = api("OpenSSL_version", c_char_p, c_int)
    sha256 = api("SHA256", c_void_p, c_char_p, c_size_t, c_char_p)
    sha512 = api("SHA512", c_void_p, c_char_p, c_size_t, c_char_p)
    md5 = api("MD5", c_void_p, c_char_p, c_size_t, c_char_p)
    evp_sha256 = api("EVP_sha256", c_void_p)
    evp_sha3 = api("EVP_sha3_256", c_void_p)
    evp_digest = api("EVP_Digest", c_int, c_char_p, c_size_t, c_char_p, ctypes.POINTER(c_uint), c_void_p, c_void_p)
    hmac_ = api("HMAC", c_void_p, c_void_p, c_char_p, c_int, c_char_p, c_size_t, c_char_p, ctypes.POINTER(c_uint))
    pbkdf2 = api("PKCS5_PBKDF2_HMAC", c_int, c_char_p, c_int, c_char_p, c_int, c_int, c_void_p, c_int, c_char_p)
    out: list[object] = [version(0)]
    for m in MESSAGES:
        for fn, ref, n in ((sha256, hashlib.sha256, 32), (sha512, hashlib.sha512, 64), (md5, hashlib.md5, 16)):
            d = buf(n)
            fn(m, len(m), d)
            assert d.raw == ref(m).digest()
        d, n = buf(64), c_uint(0)
        assert evp_digest(m, len(m), d, ctypes.byref(n), evp_sha3(), None) == 1
        assert d.raw[:n.value] == hashlib.sha3_256(m).digest()
        assert hmac_(evp_sha256(), b"key", 3, m, len(m), d, ctypes.byref(n))
        assert d.raw[:n.value] == hmac.new(b"key", m, "sha256").digest()
        out.append(d.raw[:n.value])
    key = buf(48)
    assert pbkdf2(b"password", 8, b"salt", 4, 1000, evp_sha256(), 48, key) == 1
    assert key.raw == hashlib.pbkdf2_hmac("sha256", b"password", b"salt", 1000, 48)
    return out


@case("sodium", "libsodium.a", "libsodium.so.23", package="libsodium-dev")
def SODIUM(api: Api) -> list[object]:
    init = api("sodium_init", c_int)
    version = api("sodium_version_string", c_char_p)
    generichash = api("crypto_generichash", c_int, c_char_p, c_size_t, c_char_p, c_ulonglong, c_char_p, c_size_t)
    sha256 = api("crypto_hash_sha256", c_int, c_char_p, c_char_p, c_ulonglong)
    sha512 = api("crypto_hash_sha512", c_int, c_char_p, c_char_p, c_ulonglong)
    scalarmult_base = api("crypto_scalarmult_curve25519_base", c_int, c_char_p, c_char_p)
    seed_keypair = api("crypto_sign_seed_keypair", c_int, c_char_p, c_char_p, c_char_p)
    sign = api("crypto_sign_detached", c_int, c_char_p, ctypes.POINTER(c_ulonglong), c_char_p, c_ulonglong,
               c_char_p)
    verify = api("crypto_sign_verify_detached", c_int, c_char_p, c_char_p, c_ulonglong, c_char_p)
    scrypt = api("crypto_pwhash_scryptsalsa208sha256_ll", c_int, c_char_p, c_size_t, c_char_p, c_size_t,
                 ctypes.c_uint64, ctypes.c_uint32, ctypes.c_uint32, c_char_p, c_size_t)
    secretbox = api("crypto_secretbox_easy", c_int, c_char_p, c_char_p, c_ulonglong, c_char_p, c_char_p)
    open_box = api("crypto_secretbox_open_easy", c_int, c_char_p, c_char_p, c_ulonglong, c_char_p, c_char_p)
    assert init() == 0, "sodium_init: first call in this build must initialise (0)"
    assert init() == 1
    out: list[object] = [version()]
    for m in MESSAGES:
        d = buf(64)
        assert generichash(d, 32, m, len(m), None, 0) == 0
        assert d.raw[:32] == hashlib.blake2b(m, digest_size=32).digest()
        assert generichash(d, 64, m, len(m), b"k" * 16, 16) == 0
        assert d.raw == hashlib.blake2b(m, key=b"k" * 16).digest()
        assert sha256(d, m, len(m)) == 0 and d.raw[:32] == hashlib.sha256(m).digest()
        assert sha512(d, m, len(m)) == 0 and d.raw == hashlib.sha512(m).digest()
    pk, sk, sig, siglen = buf(32), buf(64), buf(64), c_ulonglong(0)
    assert seed_keypair(pk, sk, bytes(range(32))) == 0
    for m in MESSAGES:
        assert sign(sig, ctypes.byref(siglen), m, len(m), sk) == 0 and siglen.value == 64
        assert verify(sig, m, len(m), pk) == 0
        assert verify(sig, m + b"!", len(m) + 1, pk) != 0
        out.append(sig.raw)
    q = buf(32)
    assert scalarmult_base(q, bytes(range(1, 33))) == 0
    out += [pk.raw, q.raw]
    key = buf(64)
    assert scrypt(b"password", 8, b"NaCl", 4, 1024, 8, 16, key, 64) == 0
    assert key.raw == hashlib.scrypt(b"password", salt=b"NaCl", n=1024, r=8, p=16, dklen=64)
    m = b"attack at dawn"
    box, back = buf(len(m) + 16), buf(len(m))
    assert secretbox(box, m, len(m), b"n" * 24, b"K" * 32) == 0
    assert open_box(back, box.raw, len(box), b"n" * 24, b"K" * 32) == 0 and back.raw == m
    out.append(box.raw)
    return out


@case("nettle", "libnettle.a", "libnettle.so.8", package="nettle-dev")
def NETTLE(api: Api) -> list[object]:
    out: list[object] = [api("nettle_version_major", c_int)(), api("nettle_version_minor", c_int)()]
    for algo, size in (("sha256", 32), ("sha512", 64), ("md5", 16), ("sha3_256", 32), ("sha1", 20)):
        init = api(f"nettle_{algo}_init", None, c_void_p)
        update = api(f"nettle_{algo}_update", None, c_void_p, c_size_t, c_char_p)
        digest = api(f"nettle_{algo}_digest", None, c_void_p, c_size_t, c_char_p)
        for m in MESSAGES:
            ctx, d = buf(1024), buf(size)
            init(ctx)
            update(ctx, len(m) // 2, m)             # two updates: the buffering path
            update(ctx, len(m) - len(m) // 2, m[len(m) // 2:])
            digest(ctx, size, d)
            assert d.raw == hashlib.new(algo.replace("_", "-") if algo == "sha3_256" else algo, m).digest()
            out.append(d.raw)
    pbkdf2 = api("nettle_pbkdf2_hmac_sha256", None, c_size_t, c_char_p, c_uint, c_size_t, c_char_p, c_size_t,
                 c_char_p)
    key = buf(40)
    pbkdf2(8, b"password", 4096, 4, b"salt", 40, key)
    assert key.raw == hashlib.pbkdf2_hmac("sha256", b"password", b"salt", 4096, 40)
    # AES-128 known answer (FIPS-197 C.1)
    set_key = api("nettle_aes128_set_encrypt_key", None, c_void_p, c_char_p)
    encrypt = api("nettle_aes128_encrypt", None, c_void_p, c_size_t, c_char_p, c_char_p)
    ctx, block = buf(512), buf(16)
    set_key(ctx, bytes(range(16)))
    encrypt(ctx, 16, block, bytes.fromhex("00112233445566778899aabbccddeeff"))
    assert block.raw.hex() == "69c4e0d86a7b0430d8cdb78070b4c55a"
    return out


@case("b2", "libb2.a", "libb2.so.1", shared=["libgomp.so.1"], package="libb2-dev")  # blake2?p use OpenMP
def B2(api: Api) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    variants = [("blake2b", hashlib.blake2b, 64), ("blake2s", hashlib.blake2s, 32)]
    if not api.forked:          # libgomp's thread pool does not survive fork (the shared build hangs too)
        variants += [("blake2bp", None, 64), ("blake2sp", None, 32)]
    for name, ref, size in variants:
        fn = api(name, c_int, c_char_p, c_char_p, c_char_p, c_size_t, c_size_t, c_size_t)
        out[name] = []
        for m in MESSAGES:
            for key in (b"", b"secret key"):
                d = buf(size)
                assert fn(d, m, key or None, size, len(m), len(key)) == 0
                if ref is not None:
                    assert d.raw == ref(m, key=key).digest()
                out[name].append(d.raw)
    return out


class XXH128(ctypes.Structure):
    _fields_ = [("low64", ctypes.c_uint64), ("high64", ctypes.c_uint64)]


@case("xxhash", "libxxhash.a", "libxxhash.so.0", package="libxxhash-dev")
def XXHASH(api: Api) -> list[object]:
    xxh32 = api("XXH32", ctypes.c_uint32, c_char_p, c_size_t, ctypes.c_uint32)
    xxh64 = api("XXH64", ctypes.c_uint64, c_char_p, c_size_t, ctypes.c_uint64)
    xxh3 = api("XXH3_64bits_withSeed", ctypes.c_uint64, c_char_p, c_size_t, ctypes.c_uint64)
    xxh128 = api("XXH3_128bits", XXH128, c_char_p, c_size_t)
    version = api("XXH_versionNumber", c_uint)
    # reference values of the empty input, from xxHash's own documentation and sanity checks
    assert xxh32(b"", 0, 0) == 0x02CC5D05
    assert xxh64(b"", 0, 0) == 0xEF46DB3751D8E999
    assert xxh3(b"", 0, 0) == 0x2D06800538D394C2
    e = xxh128(b"", 0)
    assert (e.high64, e.low64) == (0x99AA06D3014798D8, 0x6001C324468D497F)
    out: list[object] = [version()]
    for m in MESSAGES:
        for seed in (0, 2654435761):
            r = xxh128(m, len(m))
            out.append((xxh32(m, len(m), seed), xxh64(m, len(m), seed), xxh3(m, len(m), seed),
                        r.low64, r.high64))
    return out


@case("crypt", "libcrypt.a", "libcrypt.so.1", package="libcrypt-dev")
def CRYPT(api: Api) -> list[object]:
    crypt_rn = api("crypt_rn", c_char_p, c_char_p, c_char_p, c_void_p, c_int)
    gensalt = api("crypt_gensalt_rn", c_char_p, c_char_p, ctypes.c_ulong, c_char_p, c_int, c_char_p, c_int)
    data = buf(32768)                       # struct crypt_data
    # the SHA-crypt specification's first test vector
    h = crypt_rn(b"Hello world!", b"$6$saltstring", data, 32768)
    assert h == (b"$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS"
                 b"35inz1")
    out: list[object] = [h]
    for prefix in (b"$5$", b"$2b$", b"$y$", b"$1$"):
        salt = buf(128)
        assert gensalt(prefix, 5 if prefix == b"$y$" else 0, bytes(range(16, 48)), 32, salt, 128) is not None
        h = crypt_rn(b"correct horse", salt.value, data, 32768)
        assert h is not None and h.startswith(prefix) and h != salt.value
        assert crypt_rn(b"correct horse", h, data, 32768) == h          # verification reproduces the hash
        assert crypt_rn(b"wrong horse", h, data, 32768) != h
        out.append(h)
    return out


@pytest.mark.parametrize("c", [LIBCRYPTO, SODIUM, NETTLE, B2, XXHASH, CRYPT], ids=lambda c: c.name)
def test_hash_archive(run_case, c):
    run_case(c)
