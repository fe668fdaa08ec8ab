"""Small focused tests of linking semantics, each on a tiny object compiled
at test time with gcc.

Defaults: ``gcc -O2`` (Debian's gcc produces PIE code by default: calls are
``PLT32``, local data ``PC32``, *extern* data ``PC32`` too, weak undefined
symbols ``GOTPCREL``). Tests that reference data living outside the arena
(``Session.define``) compile with ``-fPIC`` so such data is reached through
the GOT, as it would be in a shared object.
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

import hotlink
from conftest import reloc_types

c_int, c_long, c_size_t, c_void_p, c_char_p = (
    ctypes.c_int, ctypes.c_long, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_char_p)


def int_at(addr: int) -> int:
    return ctypes.c_int.from_address(addr).value


# ---------------------------------------------------------------- code and data

SECTIONS = r"""
#include <stdint.h>

int counter = 5;                                  /* .data   */
int zeroes[100];                                  /* .bss    */
static const char msg[] = "hello rodata";         /* .rodata */
const double constants[3] = {1.5, 2.5, 3.5};      /* .rodata */

__attribute__((noinline)) static int helper(int x) { return x * 7; }   /* local */
__attribute__((noinline)) static int twice(int x) { return 2 * x; }
/* a table of local function addresses: R_X86_64_64 in .data.rel.ro */
static int (*const ops[])(int) = { helper, twice };

int get_counter(void) { return counter; }
int bump(int d) { counter += d; zeroes[3] += d; return counter; }
const char *get_msg(void) { return msg; }
int call_helper(int x) { return helper(x) + 1; }
int apply(int which, int x) { return ops[which](x); }
double sum_constants(void) { return constants[0] + constants[1] + constants[2]; }
"""


def test_function_data_bss_rodata(session, compile_c):
    lib = session.library("sections")
    unit = lib.add(str(compile_c(SECTIONS)))

    assert {"counter", "zeroes", "constants", "get_counter", "bump", "get_msg",
            "call_helper", "apply", "sum_constants"} <= set(unit.symbols)

    get_counter = lib.function("get_counter", c_int)
    bump = lib.function("bump", c_int, [c_int])
    assert get_counter() == 5
    assert int_at(lib.address("counter")) == 5
    assert bump(3) == 8
    assert int_at(lib.address("counter")) == 8

    zeroes = (c_int * 100).from_address(lib.address("zeroes"))
    assert zeroes[3] == 3
    assert sum(zeroes) == 3

    assert ctypes.string_at(lib.function("get_msg", c_void_p)()) == b"hello rodata"
    assert list((ctypes.c_double * 3).from_address(lib.address("constants"))) == [1.5, 2.5, 3.5]
    assert lib.function("sum_constants", ctypes.c_double)() == 7.5

    assert lib.function("call_helper", c_int, [c_int])(6) == 43
    apply = lib.function("apply", c_int, [c_int, c_int])
    assert apply(0, 5) == 35
    assert apply(1, 5) == 10


def test_static_functions_are_not_exported(session, compile_c):
    lib = session.library("statics")
    unit = lib.add(str(compile_c(SECTIONS)))
    assert "helper" not in unit.symbols
    assert "msg" not in unit.symbols
    with pytest.raises(hotlink.SymbolNotFoundError):
        lib.address("helper")
    with pytest.raises(KeyError):          # SymbolNotFoundError is also a KeyError
        lib.address("msg")


def test_add_accepts_bytes_and_pathlike(session, compile_c):
    obj = compile_c("int answer(void) { return 42; }")
    lib1 = session.library("from-bytes")
    lib1.add(obj.read_bytes())
    lib2 = session.library("from-path")
    lib2.add(Path(obj))
    assert lib1.function("answer", c_int)() == 42
    assert lib2.function("answer", c_int)() == 42
    assert lib1.address("answer") != lib2.address("answer")


def test_remove_unit_and_reuse_library_name(session, compile_c):
    obj = str(compile_c("int value = 1; int get(void) { return value; }"))
    lib = session.library("reuse")
    unit = lib.add(obj)
    lib.function("get", c_int)()
    unit.remove()
    with pytest.raises(hotlink.SymbolNotFoundError):
        lib.address("get")
    assert len(lib.units) == 0
    lib.add(obj)
    assert lib.function("get", c_int)() == 1
    lib.remove()
    lib = session.library("reuse")            # names are reusable after removal
    lib.add(obj)
    assert lib.function("get", c_int)() == 1


# ---------------------------------------------------------------- weak symbols

WEAK_UNDEF = r"""
extern int hotlink_test_missing_fn(void) __attribute__((weak));
extern int hotlink_test_missing_data __attribute__((weak));
int fn_is_null(void) { return &hotlink_test_missing_fn == 0; }
int data_is_null(void) { return &hotlink_test_missing_data == 0; }
int call_if_present(void) { return hotlink_test_missing_fn ? hotlink_test_missing_fn() : -1; }
"""


@pytest.mark.parametrize("flags", ["", "-fPIC", "-mcmodel=large"])
def test_weak_undefined_resolves_to_zero(session, compile_c, flags):
    lib = session.library("weak-undef")
    lib.add(str(compile_c(WEAK_UNDEF, flags)))
    assert lib.function("fn_is_null", c_int)() == 1
    assert lib.function("data_is_null", c_int)() == 1
    assert lib.function("call_if_present", c_int)() == -1


def test_weak_undefined_binds_to_definition_in_library(session, compile_c):
    lib = session.library("weak-bound")
    lib.add(str(compile_c("int hotlink_test_missing_fn(void) { return 99; }\n"
                          "int hotlink_test_missing_data = 5;\n")))
    lib.add(str(compile_c(WEAK_UNDEF)))
    assert lib.function("fn_is_null", c_int)() == 0
    assert lib.function("data_is_null", c_int)() == 0
    assert lib.function("call_if_present", c_int)() == 99


def test_weak_definition(session, compile_c):
    lib = session.library("weak-def")
    lib.add(str(compile_c(r"""
        __attribute__((weak)) int wdef(void) { return 11; }
        __attribute__((weak)) int wdata = 3;
        int call_wdef(void) { return wdef() + wdata; }
    """)))
    assert lib.function("wdef", c_int)() == 11
    assert lib.function("call_wdef", c_int)() == 14
    assert int_at(lib.address("wdata")) == 3


def test_weak_and_strong_definitions_do_not_conflict(session, compile_c):
    lib = session.library("weak-strong")
    lib.add(str(compile_c("__attribute__((weak)) int shared_name(void) { return 1; }\n"
                          "int first(void) { return shared_name(); }\n")))
    # another weak definition, then a strong one: neither is a duplicate
    lib.add(str(compile_c("__attribute__((weak)) int shared_name(void) { return 2; }\n"
                          "int second(void) { return 20; }\n")))
    lib.add(str(compile_c("int shared_name(void) { return 3; }\n"
                          "int third(void) { return 30; }\n")))
    assert lib.function("second", c_int)() == 20
    assert lib.function("third", c_int)() == 30
    assert lib.function("first", c_int)() in (1, 3)
    assert lib.function("shared_name", c_int)() in (1, 3)


# ---------------------------------------------------------------- errors

def test_undefined_symbol_error_leaves_nothing(session, compile_c):
    lib = session.library("undef")
    before = session.memory().used
    obj = compile_c(r"""
        extern int hotlink_test_no_such_function(int);
        int uses_missing(int x) { return hotlink_test_no_such_function(x) + 1; }
        int innocent(void) { return 3; }
    """)
    with pytest.raises(hotlink.UndefinedSymbolError) as info:
        lib.add(str(obj))
    assert isinstance(info.value, hotlink.LinkError)
    assert "hotlink_test_no_such_function" in str(info.value)

    # transactional: nothing of the unit is visible or kept
    for name in ("innocent", "uses_missing"):
        with pytest.raises(hotlink.SymbolNotFoundError) as lookup:
            lib.address(name)
        assert isinstance(lookup.value, KeyError)
        assert name in str(lookup.value)
    assert len(lib.units) == 0
    assert session.memory().used == before

    # the library is still usable
    lib.add(str(compile_c("int innocent(void) { return 3; }")))
    assert lib.function("innocent", c_int)() == 3


def test_duplicate_strong_symbol(session, compile_c):
    lib = session.library("dup")
    lib.add(str(compile_c("int dup_fn(void) { return 1; }")))
    with pytest.raises(hotlink.DuplicateSymbolError) as info:
        lib.add(str(compile_c("int dup_fn(void) { return 2; }\nint extra(void) { return 9; }")))
    assert isinstance(info.value, hotlink.LinkError)
    assert "dup_fn" in str(info.value)
    assert lib.function("dup_fn", c_int)() == 1
    with pytest.raises(hotlink.SymbolNotFoundError):
        lib.address("extra")
    assert len(lib.units) == 1


def test_same_name_in_different_libraries(session, compile_c):
    a = session.library("a")
    b = session.library("b")
    a.add(str(compile_c("int which(void) { return 1; }")))
    b.add(str(compile_c("int which(void) { return 2; }")))
    assert a.function("which", c_int)() == 1
    assert b.function("which", c_int)() == 2


def test_library_names_are_unique_while_alive(session):
    session.library("unique")
    with pytest.raises((ValueError, hotlink.LinkError)):
        session.library("unique")


# ---------------------------------------------------------------- host symbols

HOST = r"""
extern long host_value;
extern long host_array[4];
extern int host_callback(int);
long read_host(void) { return host_value; }
void write_host(long v) { host_value = v; }
long sum_host_array(void) { long s = 0; for (int i = 0; i < 4; i++) s += host_array[i]; return s; }
int call_host(int x) { return host_callback(x) * 2; }
"""


def test_define_host_symbols(session, compile_c):
    value = ctypes.c_long(1234)
    array = (ctypes.c_long * 4)(1, 2, 3, 4)
    CB = ctypes.CFUNCTYPE(c_int, c_int)
    callback = CB(lambda x: x + 1000)
    session.define({
        "host_value": ctypes.addressof(value),
        "host_array": ctypes.addressof(array),
        "host_callback": ctypes.cast(callback, c_void_p).value,
    })
    lib = session.library("host")
    lib.add(str(compile_c(HOST, "-fPIC")))
    assert lib.function("read_host", c_long)() == 1234
    lib.function("write_host", None, [c_long])(-77)
    assert value.value == -77
    assert lib.function("sum_host_array", c_long)() == 10
    array[3] = 100
    assert lib.function("sum_host_array", c_long)() == 106
    assert lib.function("call_host", c_int, [c_int])(5) == 2010


# ---------------------------------------------------------------- libc

LIBC = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t my_strlen(const char *s) { return strlen(s); }
int format(char *buf, size_t n, int x, const char *s) {
    return snprintf(buf, n, "x=%d s=%s len=%zu", x, s, strlen(s));
}
static int cmp(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}
void sort_ints(int *v, size_t n) { qsort(v, n, sizeof *v, cmp); }   /* libc calls back into us */
int stdout_fileno(void) { return fileno(stdout); }                  /* libc data: stdout */
"""


def test_calls_into_libc(session, compile_c):
    lib = session.library("libc-user")
    lib.add(str(compile_c(LIBC)))
    assert lib.function("my_strlen", c_size_t, [c_char_p])(b"hello, libc") == 11
    buf = ctypes.create_string_buffer(64)
    n = lib.function("format", c_int, [c_char_p, c_size_t, c_int, c_char_p])(buf, 64, -5, b"abc")
    assert buf.value == b"x=-5 s=abc len=3"
    assert n == len(buf.value)
    values = (c_int * 9)(5, -1, 9, 3, 3, 0, 100, -50, 7)
    lib.function("sort_ints", None, [c_void_p, c_size_t])(values, 9)
    assert list(values) == [-50, -1, 0, 3, 3, 5, 7, 9, 100]
    assert lib.function("stdout_fileno", c_int)() == 1


# ---------------------------------------------------------------- alignment

def test_aligned_data(session, compile_c):
    lib = session.library("aligned")
    # an odd-sized first unit, so the aligned unit does not start on a boundary by luck
    lib.add(str(compile_c("char odd_data[13] = {1}; char odd_bss[7]; int odd_fn(void) { return 1; }")))
    lib.add(str(compile_c(r"""
        #include <stdint.h>
        char pad1 = 1;
        __attribute__((aligned(64))) char blob64[100] = {1, 2, 3};
        char pad2;
        __attribute__((aligned(64))) char bss64[100];
        __attribute__((aligned(4096))) char page_aligned[10] = {9};
        uintptr_t blob_addr(void) { return (uintptr_t)blob64; }
        uintptr_t bss_addr(void) { return (uintptr_t)bss64; }
    """)))
    blob, bss, page = lib.address("blob64"), lib.address("bss64"), lib.address("page_aligned")
    assert blob % 64 == 0
    assert bss % 64 == 0
    assert page % 4096 == 0
    assert lib.function("blob_addr", c_void_p)() == blob
    assert lib.function("bss_addr", c_void_p)() == bss
    assert ctypes.string_at(blob, 4) == b"\x01\x02\x03\x00"
    assert ctypes.string_at(bss, 100) == bytes(100)
    assert ctypes.string_at(page, 1) == b"\x09"


# ---------------------------------------------------------------- initializers

def test_constructor_runs_at_add_and_destructor_at_remove(session, compile_c):
    dtor_calls = ctypes.c_int(0)
    session.define({"host_dtor_calls": ctypes.addressof(dtor_calls)})
    lib = session.library("ctor")
    unit = lib.add(str(compile_c(r"""
        extern int host_dtor_calls;
        static int ctor_count;
        __attribute__((constructor)) static void init(void) { ctor_count++; }
        __attribute__((destructor)) static void fini(void) { host_dtor_calls++; }
        int get_ctor_count(void) { return ctor_count; }
    """, "-fPIC")))
    assert lib.function("get_ctor_count", c_int)() == 1
    assert dtor_calls.value == 0
    unit.remove()
    assert dtor_calls.value == 1


def test_constructor_priorities(session, compile_c):
    lib = session.library("ctor-prio")
    lib.add(str(compile_c(r"""
        static int order[8], n;
        __attribute__((constructor)) static void plain(void) { order[n++] = 3; }
        __attribute__((constructor(300))) static void late(void) { order[n++] = 2; }
        __attribute__((constructor(101))) static void early(void) { order[n++] = 1; }
        int get_n(void) { return n; }
        int get_order(int i) { return order[i]; }
    """)))
    assert lib.function("get_n", c_int)() == 3
    get_order = lib.function("get_order", c_int, [c_int])
    assert [get_order(i) for i in range(3)] == [1, 2, 3]


# ---------------------------------------------------------------- archives

# Each member's constructor marks its slot in a host array, so the test sees
# exactly which members were pulled in.
MEMBER_A = r"""
extern int host_pulled[3];
extern int b_fn(int);
__attribute__((constructor)) static void a_init(void) { host_pulled[0]++; }
int a_fn(int x) { return b_fn(x) * 2; }
"""
MEMBER_B = r"""
extern int host_pulled[3];
__attribute__((constructor)) static void b_init(void) { host_pulled[1]++; }
int b_fn(int x) { return x + 100; }
"""
MEMBER_C = r"""
extern int host_pulled[3];
__attribute__((constructor)) static void c_init(void) { host_pulled[2]++; }
int c_fn(void) { return 77; }
"""


@pytest.fixture
def archive(compile_c, make_archive) -> Path:
    objs = [compile_c(src, "-fPIC", name=name)
            for name, src in (("a", MEMBER_A), ("b", MEMBER_B), ("c", MEMBER_C))]
    return make_archive(objs, name="libabc")


@pytest.fixture
def pulled(session):
    slots = (c_int * 3)()
    session.define({"host_pulled": ctypes.addressof(slots)})
    return slots


def test_archive_pulls_members_on_lookup(session, archive, pulled):
    lib = session.library("archive")
    unit = lib.add(str(archive))
    assert list(pulled) == [0, 0, 0]          # nothing needed yet: nothing linked

    a_fn = lib.function("a_fn", c_int, [c_int])   # pulls a, which needs b
    assert list(pulled) == [1, 1, 0]
    assert a_fn(1) == 202
    assert {"a_fn", "b_fn"} <= set(unit.symbols)  # pulled members belong to the archive's unit

    assert lib.function("c_fn", c_int)() == 77    # a lookup pulls c
    assert list(pulled) == [1, 1, 1]
    lib.address("a_fn")
    lib.address("c_fn")
    assert list(pulled) == [1, 1, 1]              # each member is linked once


def test_archive_member_pulled_by_later_object(session, archive, pulled, compile_c):
    lib = session.library("archive-user")
    lib.add(str(archive))
    lib.add(str(compile_c("extern int b_fn(int); int use_b(void) { return b_fn(1); }")))
    assert list(pulled) == [0, 1, 0]
    assert lib.function("use_b", c_int)() == 101


def test_archive_lookup_of_unknown_symbol(session, archive, pulled):
    lib = session.library("archive-unknown")
    lib.add(str(archive))
    with pytest.raises(hotlink.SymbolNotFoundError):
        lib.address("d_fn")
    assert list(pulled) == [0, 0, 0]


# ---------------------------------------------------------------- code models

FAR = r"""
int far_table[16];
int get_far(int i) { return far_table[i]; }
"""


def test_absolute_32bit_relocation_without_low_memory(compile_c):
    """Non-PIC code goes below 2 GiB (tests/test_nonpic.py); with no memory
    there allowed, it is refused clearly."""
    obj = compile_c(FAR, "-fno-pic -mcmodel=small")
    assert "R_X86_64_32S" in reloc_types(obj)
    with hotlink.Session(low_arena_size=0) as session:
        lib = session.library("abs32")
        with pytest.raises(hotlink.LinkError) as info:   # UnsupportedRelocationError is one
            lib.add(str(obj))
        assert "-fPIC" in str(info.value) and "below 2 GiB" in str(info.value)
        with pytest.raises(hotlink.SymbolNotFoundError):
            lib.address("get_far")


LARGE = r"""
#include <string.h>
int big_counter = 3;
static const char greet[] = "large model";
__attribute__((noinline)) static int tri(int x) { return x * 3; }
int (*fp)(int) = tri;
__attribute__((noinline)) size_t len_of(const char *s) { return strlen(s); }   /* libc call */
const char *greeting(void) { return greet; }
int large_entry(int x) {
    big_counter += x;
    return tri(x) + fp(1) + (int)len_of(greet) + big_counter;
}
"""


@pytest.mark.parametrize("flags,expected", [
    ("-mcmodel=large", {"R_X86_64_GOTPC64", "R_X86_64_GOTOFF64", "R_X86_64_PLTOFF64"}),
    ("-mcmodel=large -fPIC", {"R_X86_64_GOTPC64", "R_X86_64_GOTOFF64", "R_X86_64_PLTOFF64"}),
    ("-mcmodel=large -fno-pic", {"R_X86_64_64"}),
])
def test_large_code_model(session, compile_c, flags, expected):
    obj = compile_c(LARGE, flags)
    assert expected <= reloc_types(obj)
    lib = session.library("large")
    lib.add(str(obj))
    entry = lib.function("large_entry", c_int, [c_int])
    assert entry(2) == 6 + 3 + 11 + 5
    assert int_at(lib.address("big_counter")) == 5
    assert entry(0) == 0 + 3 + 11 + 5
    assert ctypes.string_at(lib.function("greeting", c_void_p)()) == b"large model"
