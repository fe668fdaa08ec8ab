"""C++ archives: RE2 and Snappy, with libstdc++.so.6 loaded for the C++
runtime.

RE2 uses ``std::call_once`` (libstdc++'s thread-local ``__once_callable`` /
``__once_call``, reached with initial-exec GOTTPOFF relocations) and a
``thread_local`` of its own (``re2::hooks::context``, local exec). Its API is
C++, so a small C shim compiled here calls it; the reference is the same
shim object linked against libre2.so. One shim function matches from 8
threads started inside JIT code, so the once-initialised DFA and the
thread-locals are used from threads created after the add.

Snappy is checked through its C API against a small pure-Python decoder of
the Snappy format.
"""
from __future__ import annotations

import ctypes
import re

import pytest

from realworld.harness import Api, case

c_size_t = ctypes.c_size_t
c_char_p = ctypes.c_char_p
c_int = ctypes.c_int
buf = ctypes.create_string_buffer

SHIM = r"""
#include <re2/re2.h>
#include <re2/set.h>
#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

static size_t put(const std::string& s, char* out, size_t n) {
    size_t k = s.size() < n - 1 ? s.size() : n - 1;
    memcpy(out, s.data(), k);
    out[k] = 0;
    return s.size();
}

extern "C" {
int rw_full_match(const char* pattern, const char* text) { return RE2::FullMatch(text, pattern); }

// start/end offsets of every match of group 0 and group 1 (-1 when it did not take part)
int rw_find_all(const char* pattern, const char* text, long* spans, int max) {
    RE2 re(pattern);
    if (!re.ok()) return -1;
    re2::StringPiece input(text), groups[2];
    int ngroups = re.NumberOfCapturingGroups() >= 1 ? 2 : 1, found = 0;
    size_t pos = 0, len = strlen(text);
    while (pos <= len && found < max) {
        if (!re.Match(input, pos, len, RE2::UNANCHORED, groups, ngroups)) break;
        for (int g = 0; g < 2; g++) {
            bool on = g < ngroups && groups[g].data() != nullptr;
            spans[4 * found + 2 * g] = on ? groups[g].data() - text : -1;
            spans[4 * found + 2 * g + 1] = on ? groups[g].data() + groups[g].size() - text : -1;
        }
        found++;
        pos = groups[0].empty() ? groups[0].data() - text + 1 : groups[0].data() + groups[0].size() - text;
    }
    return found;
}

int rw_global_replace(const char* pattern, const char* rewrite, const char* text, char* out, size_t n) {
    std::string s(text);
    int count = RE2::GlobalReplace(&s, pattern, rewrite);
    put(s, out, n);
    return count;
}

size_t rw_quote_meta(const char* text, char* out, size_t n) { return put(RE2::QuoteMeta(text), out, n); }

int rw_error(const char* pattern, char* out, size_t n) {
    RE2 re(pattern, RE2::Quiet);
    put(re.error(), out, n);
    return re.error_code();
}

int rw_set(const char* const* patterns, int count, const char* text, int* hits, int max) {
    RE2::Set set(RE2::DefaultOptions, RE2::UNANCHORED);
    for (int i = 0; i < count; i++) if (set.Add(patterns[i], nullptr) != i) return -1;
    if (!set.Compile()) return -2;
    std::vector<int> v;
    set.Match(text, &v);
    int k = 0;
    for (int h : v) if (k < max) hits[k++] = h;
    return (int)v.size();
}

// one RE2 shared by many threads: the DFA is built under std::call_once
long rw_threads(const char* pattern, const char* text, int nthreads, int rounds) {
    RE2 re(pattern);
    std::atomic<long> total{0};
    std::vector<std::thread> pool;
    for (int t = 0; t < nthreads; t++)
        pool.emplace_back([&] {
            long mine = 0;
            for (int r = 0; r < rounds; r++) {
                re2::StringPiece in(text);
                std::string word;
                while (RE2::FindAndConsume(&in, re, &word)) mine++;
            }
            total += mine;
        });
    for (auto& th : pool) th.join();
    return total.load();
}
}
"""

SUBJECT = (b"2024-01-15 ERROR disk /dev/sda1 95% full; 2024-02-03 WARN cpu 88%; "
           b"contact admin@example.org or ops@example.com; x=1 y=22 z=333")
PATTERNS = [rb"(\d{4})-\d\d-\d\d", rb"\b(ERROR|WARN)\b", rb"([\w.]+)@[\w-]+\.(?:org|com)", rb"(\d+)%",
            rb"(?i)error\s+(\w+)", rb"(\w)=(?:\d+)", rb"(q?)=\d+"]


@case("re2", "libre2.a", None, shared=["libstdc++.so.6"], package="libre2-dev")
def RE2(api: Api) -> list[object]:
    full_match = api("rw_full_match", c_int, c_char_p, c_char_p)
    find_all = api("rw_find_all", c_int, c_char_p, c_char_p, ctypes.POINTER(ctypes.c_long), c_int)
    replace = api("rw_global_replace", c_int, c_char_p, c_char_p, c_char_p, c_char_p, c_size_t)
    quote = api("rw_quote_meta", c_size_t, c_char_p, c_char_p, c_size_t)
    error = api("rw_error", c_int, c_char_p, c_char_p, c_size_t)
    re_set = api("rw_set", c_int, ctypes.POINTER(c_char_p), c_int, c_char_p, ctypes.POINTER(c_int), c_int)
    threads = api("rw_threads", ctypes.c_long, c_char_p, c_char_p, c_int, c_int)
    out: list[object] = []
    for pat, text in ((rb"\d+-\w+", b"123-abc"), (rb"\d+-\w+", b"123-abc!"), (rb"(?s).*", b"a\nb"),
                      (rb"h.*k", b"hotlink"), (rb"[[:alpha:]]+", b"abc1")):
        got = full_match(pat, text)
        assert bool(got) == bool(re.fullmatch(pat.replace(b"[[:alpha:]]", b"[a-zA-Z]"), text)), pat
        out.append(got)
    for pat in PATTERNS:
        spans = (ctypes.c_long * 800)()      # room for every match, empty ones of x* included
        n = find_all(pat, SUBJECT, spans, 200)
        got = [tuple(spans[4 * i:4 * i + 4]) for i in range(n)]
        want = [(m.start(), m.end(), *(m.span(1) if m.re.groups else (-1, -1))) for m in re.finditer(pat, SUBJECT)]
        assert got == want, (pat, got, want)
        out.append(got)
    res = buf(1024)
    n = replace(rb"(\d{4})-(\d\d)-(\d\d)", rb"\3/\2/\1", SUBJECT, res, 1024)
    assert n == 2 and res.value == re.sub(rb"(\d{4})-(\d\d)-(\d\d)", rb"\3/\2/\1", SUBJECT)
    out.append(res.value)
    for s in (b"1.5+2*[x]", b"a\\b$c^d", "caf\u00e9 (\u4e2d)".encode()):
        assert quote(s, res, 1024) == len(res.value)
        assert re.fullmatch(res.value, s), res.value
        out.append(res.value)
    code = error(b"(unclosed", res, 1024)
    assert code == 6 and b"missing )" in res.value                   # RE2::ErrorMissingParen
    out.append((code, res.value))
    pats = (c_char_p * 4)(rb"\d+%", rb"ERROR", rb"nomatch\d", rb"@example\.(org|com)")
    hits = (c_int * 4)()
    assert re_set(pats, 4, SUBJECT, hits, 4) == 3 and sorted(hits[:3]) == [0, 1, 3]
    words = len(re.findall(rb"([a-z]+)@", SUBJECT))
    assert threads(rb"([a-z]+)@", SUBJECT, 8, 200) == 8 * 200 * words
    return out


def snappy_decode(data: bytes) -> bytes:
    """The Snappy block format: a varint length, then literal and copy elements."""
    pos, shift, size = 0, 0, 0
    while True:
        b = data[pos]
        pos += 1
        size |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            break
    out = bytearray()
    while pos < len(data):
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:                                      # literal
            n = tag >> 2
            if n >= 60:
                extra = n - 59
                n = int.from_bytes(data[pos:pos + extra], "little")
                pos += extra
            n += 1
            out += data[pos:pos + n]
            pos += n
            continue
        if kind == 1:                                      # copy, 1-byte offset
            length, offset = ((tag >> 2) & 7) + 4, ((tag >> 5) << 8) | data[pos]
            pos += 1
        else:                                              # copy, 2- or 4-byte offset
            width = 2 if kind == 2 else 4
            length, offset = (tag >> 2) + 1, int.from_bytes(data[pos:pos + width], "little")
            pos += width
        assert 0 < offset <= len(out)
        for _ in range(length):                            # may overlap its own output
            out.append(out[-offset])
    assert len(out) == size
    return bytes(out)


@case("snappy", "libsnappy.a", "libsnappy.so.1", shared=["libstdc++.so.6"], package="libsnappy-dev")
def SNAPPY(api: Api) -> list[object]:
    compress = api("snappy_compress", c_int, c_char_p, c_size_t, c_char_p, ctypes.POINTER(c_size_t))
    uncompress = api("snappy_uncompress", c_int, c_char_p, c_size_t, c_char_p, ctypes.POINTER(c_size_t))
    max_length = api("snappy_max_compressed_length", c_size_t, c_size_t)
    uncompressed_length = api("snappy_uncompressed_length", c_int, c_char_p, c_size_t, ctypes.POINTER(c_size_t))
    validate = api("snappy_validate_compressed_buffer", c_int, c_char_p, c_size_t)
    import random
    rng = random.Random(3)
    text = b" ".join(rng.choice(b"snappy fast compression block copy literal".split()) for _ in range(5000))
    out: list[object] = []
    for data in (b"", b"a", b"ab" * 40000, text, rng.randbytes(30000), bytes(70000)):
        cap = max_length(len(data))
        dst, n = buf(cap), c_size_t(cap)
        assert compress(data, len(data), dst, ctypes.byref(n)) == 0
        blob = dst.raw[:n.value]
        assert snappy_decode(blob) == data
        assert validate(blob, len(blob)) == 0
        size = c_size_t()
        assert uncompressed_length(blob, len(blob), ctypes.byref(size)) == 0 and size.value == len(data)
        back, m = buf(len(data) + 1), c_size_t(len(data) + 1)
        assert uncompress(blob, len(blob), back, ctypes.byref(m)) == 0 and back.raw[:m.value] == data
        out.append(blob)
    assert validate(b"\x05\x00garbage", 9) == 1                       # SNAPPY_INVALID_INPUT
    return out


def test_re2_archive(run_case, toolchain):
    shim = toolchain.compile_cxx(SHIM, ["-fPIC"], name="re2shim")
    reference = toolchain.shared([shim], ["-lre2"], name="libre2shim", cxx=True)
    run_case(RE2, objects=[shim], reference=reference)


@pytest.mark.parametrize("c", [SNAPPY], ids=lambda c: c.name)
def test_cxx_archive(run_case, c):
    run_case(c)
