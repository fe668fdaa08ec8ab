"""Objects emitted by llvmlite (LLVM's own code generator) load and run.

Three target-machine settings, covering the relocation families LLVM emits:

* llvmlite's default (``codemodel='jitdefault'`` = large on x86-64, static
  relocation model): ``R_X86_64_64`` for every address, ``PC64`` in
  ``.eh_frame``, code in ``.ltext``, data in ``.lrodata``; ``.ctors``.
* ``reloc='pic', codemodel='small'``: ``PLT32``, ``PC32``, ``REX_GOTPCRELX``.
* ``reloc='pic'`` with the large code model: ``GOT64``, ``GOTOFF64``,
  ``GOTPC64`` against ``_GLOBAL_OFFSET_TABLE_``.

All of them put the constructor in ``.ctors`` (not ``.init_array``) and the
unwind tables in an ``.eh_frame`` of type ``SHT_X86_64_UNWIND``.
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import llvmlite.binding as llvm
import pytest

import hotlink
from conftest import reloc_types

llvm.initialize_native_target()
llvm.initialize_native_asmprinter()

IR = r"""
@counter = global i64 7
@ctor_ran = global i32 0
@table = global [4 x i32] [i32 10, i32 20, i32 30, i32 40]
@msg = private unnamed_addr constant [12 x i8] c"hello world\00"
@llvm.global_ctors = appending global [1 x { i32, ptr, ptr }] [{ i32, ptr, ptr } { i32 65535, ptr @init, ptr null }]

declare i64 @strlen(ptr)

define internal void @init() {
  %c = load i64, ptr @counter
  %v = trunc i64 %c to i32
  %r = add i32 %v, 35            ; 7 + 35 = 42: proves @counter was initialised first
  store i32 %r, ptr @ctor_ran
  ret void
}

define i32 @square(i32 %x) noinline {
  %r = mul i32 %x, %x
  ret i32 %r
}

define i32 @sq_plus_table(i32 %x, i32 %i) {
  %s = call i32 @square(i32 %x)
  %p = getelementptr [4 x i32], ptr @table, i32 0, i32 %i
  %t = load i32, ptr %p
  %r = add i32 %s, %t
  ret i32 %r
}

define i64 @bump(i64 %d) {
  %c = load i64, ptr @counter
  %n = add i64 %c, %d
  store i64 %n, ptr @counter
  ret i64 %n
}

define i32 @get_ctor_ran() {
  %v = load i32, ptr @ctor_ran
  ret i32 %v
}

define i64 @msg_len() {
  %n = call i64 @strlen(ptr @msg)
  ret i64 %n
}

define ptr @msg_ptr() {
  ret ptr @msg
}
"""

TARGETS = {
    "default-large": dict(),
    "pic-small": dict(reloc="pic", codemodel="small"),
    "pic-large": dict(reloc="pic"),
}

EXPECTED_RELOCS = {
    "default-large": {"R_X86_64_64"},
    "pic-small": {"R_X86_64_PLT32", "R_X86_64_REX_GOTPCRELX", "R_X86_64_PC32"},
    "pic-large": {"R_X86_64_GOT64", "R_X86_64_GOTOFF64", "R_X86_64_GOTPC64"},
}


def emit_object(**tm_options) -> bytes:
    target = llvm.Target.from_default_triple()
    tm = target.create_target_machine(**tm_options)
    module = llvm.parse_assembly(IR)
    module.verify()
    return tm.emit_object(module)


@pytest.fixture(params=list(TARGETS), ids=list(TARGETS))
def variant(request, tmp_path: Path) -> tuple[str, bytes, Path]:
    obj = emit_object(**TARGETS[request.param])
    path = tmp_path / f"{request.param}.o"
    path.write_bytes(obj)
    return request.param, obj, path


def test_object_uses_expected_relocations(variant):
    name, _, path = variant
    assert EXPECTED_RELOCS[name] <= reloc_types(path)


def test_llvmlite_object_loads_and_runs(session: hotlink.Session, variant):
    name, obj, _ = variant
    lib = session.library(f"llvm-{name}")
    unit = lib.add(obj)

    for sym in ("square", "sq_plus_table", "bump", "get_ctor_ran", "msg_len", "counter", "table"):
        assert sym in unit.symbols

    # the global constructor (.ctors) ran at add, after data was in place
    get_ctor_ran = lib.function("get_ctor_ran", ctypes.c_int, [])
    assert get_ctor_ran() == 42
    assert ctypes.c_int.from_address(lib.address("ctor_ran")).value == 42

    # a call to another function, and an indexed load from a global array
    square = lib.function("square", ctypes.c_int, [ctypes.c_int])
    sq_plus_table = lib.function("sq_plus_table", ctypes.c_int, [ctypes.c_int, ctypes.c_int])
    assert square(12) == 144
    assert [sq_plus_table(3, i) for i in range(4)] == [19, 29, 39, 49]

    # a global variable, written by JIT code and by Python
    bump = lib.function("bump", ctypes.c_int64, [ctypes.c_int64])
    counter = ctypes.c_int64.from_address(lib.address("counter"))
    assert counter.value == 7
    assert bump(5) == 12
    assert counter.value == 12
    counter.value = 100
    assert bump(1) == 101

    # writes through the table's address are seen by the code
    table = (ctypes.c_int32 * 4).from_address(lib.address("table"))
    assert list(table) == [10, 20, 30, 40]
    table[2] = 1000
    assert sq_plus_table(2, 2) == 1004

    # an external call into libc on a private constant string
    assert lib.function("msg_len", ctypes.c_int64, [])() == 11
    msg_ptr = lib.function("msg_ptr", ctypes.c_void_p, [])()
    assert ctypes.string_at(msg_ptr) == b"hello world"

    # the internal constructor is not exported
    with pytest.raises(hotlink.SymbolNotFoundError):
        lib.address("init")


def test_all_variants_coexist(session: hotlink.Session):
    # The same symbol names in three libraries: each library sees its own.
    libs = {}
    for i, (name, opts) in enumerate(TARGETS.items()):
        lib = session.library(name)
        lib.add(emit_object(**opts))
        libs[name] = lib
        lib.function("bump", ctypes.c_int64, [ctypes.c_int64])(i * 1000)
    for i, lib in enumerate(libs.values()):
        assert ctypes.c_int64.from_address(lib.address("counter")).value == 7 + i * 1000
        assert lib.function("get_ctor_ran", ctypes.c_int, [])() == 42
    addresses = {lib.address("square") for lib in libs.values()}
    assert len(addresses) == 3
