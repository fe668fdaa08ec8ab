"""LLVM IR front end: text, bitcode and llvmlite modules go through
``Library.add`` and run; LLVM's diagnostics come back as CompileError."""
from __future__ import annotations

import ctypes
import io
from ctypes import c_char_p, c_int, c_int32, c_int64, c_void_p

import llvmlite.binding as llvm
import llvmlite.ir as ir
import pytest

import hotlink
from hotlink.frontend import Source

llvm.initialize_native_target()
llvm.initialize_native_asmprinter()


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Never touch the user's object cache."""
    monkeypatch.setenv("HOTLINK_CACHE_DIR", str(tmp_path / "cache"))


SQUARE = r"""
define i32 @square(i32 %x) {
  %r = mul i32 %x, %x
  ret i32 %r
}
"""

LIBC = r"""
@fmt = private unnamed_addr constant [9 x i8] c"%s-%d-%s\00"
@tail = private unnamed_addr constant [5 x i8] c"tail\00"

declare i32 @snprintf(ptr, i64, ptr, ...)
declare i64 @strlen(ptr)

define i64 @format_len(ptr %buf, i64 %n, ptr %head, i32 %k) {
  %w = call i32 (ptr, i64, ptr, ...) @snprintf(ptr %buf, i64 %n, ptr @fmt, ptr %head, i32 %k, ptr @tail)
  %len = call i64 @strlen(ptr %buf)
  ret i64 %len
}
"""

CTOR = r"""
@ready = global i32 0
@table = global [4 x i32] [i32 3, i32 5, i32 7, i32 11]
@llvm.global_ctors = appending global [1 x { i32, ptr, ptr }] [{ i32, ptr, ptr } { i32 65535, ptr @init, ptr null }]

define internal void @init() {
  %p = getelementptr [4 x i32], ptr @table, i32 0, i32 3
  %v = load i32, ptr %p
  %r = mul i32 %v, 100          ; 1100: proves the data was in place before the constructor ran
  store i32 %r, ptr @ready
  ret void
}

define i32 @get_ready() {
  %v = load i32, ptr @ready
  ret i32 %v
}
"""

SWITCH = r"""
define i64 @dispatch(i32 %op, i64 %x) {
entry:
  switch i32 %op, label %other [
    i32 0, label %c0
    i32 1, label %c1
    i32 2, label %c2
    i32 3, label %c3
    i32 4, label %c4
    i32 5, label %c5
    i32 6, label %c6
    i32 7, label %c7
  ]
c0:
  %r0 = add i64 %x, 1
  ret i64 %r0
c1:
  %r1 = mul i64 %x, 3
  ret i64 %r1
c2:
  %r2 = sub i64 %x, 7
  ret i64 %r2
c3:
  %r3 = shl i64 %x, 4
  ret i64 %r3
c4:
  %r4 = xor i64 %x, 255
  ret i64 %r4
c5:
  %r5 = udiv i64 %x, 5
  ret i64 %r5
c6:
  %r6 = mul i64 %x, %x
  ret i64 %r6
c7:
  %r7 = and i64 %x, 15
  ret i64 %r7
other:
  ret i64 -1
}
"""

SWITCH_EXPECTED = [lambda x: x + 1, lambda x: x * 3, lambda x: x - 7, lambda x: x << 4,
                   lambda x: x ^ 255, lambda x: x // 5, lambda x: x * x, lambda x: x & 15]


def square(lib: hotlink.Library) -> int:
    return lib.function("square", c_int, [c_int])(12)


# ------------------------------------------------------------- forms of input

def test_ir_text_string(session):
    lib = session.library("text")
    unit = lib.add(SQUARE, language="llvm")
    assert square(lib) == 144
    assert "square" in unit.symbols


def test_ir_text_file_and_bytes(session, tmp_path):
    path = tmp_path / "square.ll"
    path.write_text(SQUARE)
    lib = session.library("file")
    unit = lib.add(path)
    assert unit.name == "square.ll" and square(lib) == 144
    other = tmp_path / "square.txt"                   # no telling extension: detected by content
    other.write_text(SQUARE.replace("square", "square2"))
    lib.add(str(other))
    assert lib.function("square2", c_int, [c_int])(3) == 9
    lib2 = session.library("bytes")
    lib2.add(SQUARE.encode())                         # IR text as bytes: detected too
    assert square(lib2) == 144
    lib3 = session.library("many")
    lib3.add_many([SQUARE])                           # IR text as str in add_many: detected
    assert square(lib3) == 144
    with pytest.raises(FileNotFoundError):
        lib3.add_many([str(tmp_path / "missing.ll")])


def test_bitcode_bytes_and_file(session, tmp_path):
    bc = llvm.parse_assembly(SQUARE).as_bitcode()
    assert bc[:4] == b"BC\xc0\xde"
    lib = session.library("bc")
    lib.add(bc)
    assert square(lib) == 144
    path = tmp_path / "sq.bc"
    path.write_bytes(llvm.parse_assembly(SQUARE.replace("square", "sq_file")).as_bitcode())
    lib.add(path)
    assert lib.function("sq_file", c_int, [c_int])(5) == 25


def test_llvmlite_ir_module(session):
    mod = ir.Module(name="built")
    i64 = ir.IntType(64)
    fn = ir.Function(mod, ir.FunctionType(i64, [i64, i64]), name="muladd")
    b = ir.IRBuilder(fn.append_basic_block())
    a, c = fn.args
    b.ret(b.add(b.mul(a, c), ir.Constant(i64, 7)))
    lib = session.library("irmod")
    lib.add(mod)
    assert lib.function("muladd", c_int64, [c_int64, c_int64])(6, 7) == 49


def test_llvmlite_module_ref_is_not_consumed(session):
    ref = llvm.parse_assembly(SQUARE)
    lib = session.library("ref")
    lib.add(ref)
    assert square(lib) == 144
    assert "define i32 @square" in str(ref)           # the caller's module is untouched
    ref.verify()


# ------------------------------------------------------------- what the code does

def test_calls_into_libc(session):
    lib = session.library("libc")
    lib.add(LIBC, language="llvm")
    fmt = lib.function("format_len", c_int64, [c_void_p, c_int64, c_char_p, c_int32])
    buf = ctypes.create_string_buffer(64)
    assert fmt(buf, 64, b"head", 42) == len("head-42-tail")
    assert buf.value == b"head-42-tail"


def test_global_constructor_runs_at_add(session):
    lib = session.library("ctor")
    lib.add(CTOR, language="llvm")
    assert lib.function("get_ready", c_int)() == 1100


def test_switch_lowered_to_jump_table(session):
    # The same settings the front end uses give a jump table: a .LJTI table in
    # .rodata whose entries are PC32 relocations against .text.
    tm = llvm.Target.from_default_triple().create_target_machine(opt=2, reloc="pic", codemodel="small")
    mod = llvm.parse_assembly(SWITCH)
    pb = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(speed_level=2))
    pb.getModulePassManager().run(mod, pb)
    assert ".LJTI" in tm.emit_assembly(mod)

    obj = session.compile_many([SWITCH], workers=1)[0]
    from elftools.elf.elffile import ELFFile
    elf = ELFFile(io.BytesIO(obj))
    rela = elf.get_section_by_name(".rela.rodata")
    assert rela is not None and rela.num_relocations() == 8

    lib = session.library("switch")
    lib.add(obj)
    dispatch = lib.function("dispatch", c_int64, [c_int32, c_int64])
    for op, f in enumerate(SWITCH_EXPECTED):
        for x in (0, 1, 37, 1000):
            assert dispatch(op, x) == f(x), (op, x)
    assert dispatch(8, 5) == -1 and dispatch(-1, 5) == -1


@pytest.mark.parametrize("opt", [0, 3])
def test_opt_levels_and_generic_cpu(session, opt):
    lib = session.library(f"opt{opt}")
    lib.add(SWITCH, language="llvm", opt=opt, cpu="x86-64")
    assert lib.function("dispatch", c_int64, [c_int32, c_int64])(6, 9) == 81


def test_replace_with_ir(session):
    lib = session.library("swap")
    u = lib.add(SQUARE, language="llvm")
    lib.replace(u, SQUARE.replace("mul i32 %x, %x", "add i32 %x, %x"), language="llvm")
    assert square(lib) == 24


def test_add_many_links_ir_modules_together(session):
    caller = r"""
    declare i32 @square(i32)
    define i32 @sum_squares(i32 %a, i32 %b) {
      %x = call i32 @square(i32 %a)
      %y = call i32 @square(i32 %b)
      %r = add i32 %x, %y
      ret i32 %r
    }
    """
    lib = session.library("many")
    units = lib.add_many([Source(caller, language="llvm"), Source(SQUARE, language="llvm")])
    assert len(units) == 2
    assert lib.function("sum_squares", c_int, [c_int, c_int])(3, 4) == 25


# ------------------------------------------------------------- errors

def test_invalid_ir_gives_compile_error_with_llvm_message(session):
    lib = session.library("bad")
    with pytest.raises(hotlink.CompileError) as info:
        lib.add("define i32 @broken(i32 %x) {\n  %r = mul i32 %x, %undefined_value\n  ret i32 %r\n}\n",
                language="llvm")
    assert "undefined_value" in info.value.diagnostics
    assert "error" in info.value.diagnostics and "invalid LLVM IR" in str(info.value)
    assert lib.units == [] and session.memory().used == 0


def test_ir_that_does_not_verify(session):
    bad = "define i32 @f() {\n  ret i64 0\n}\n"
    with pytest.raises(hotlink.CompileError):
        session.library("verify").add(bad, language="llvm")


def test_foreign_triple_is_refused(session):
    ir_text = 'target triple = "aarch64-unknown-linux-gnu"\n' + SQUARE
    with pytest.raises(hotlink.CompileError, match="aarch64"):
        session.library("arm").add(ir_text, language="llvm")


def test_unrecognised_input_and_bad_options(session):
    lib = session.library("junk")
    with pytest.raises(hotlink.MalformedObjectError, match="not LLVM IR"):
        lib.add(b"this is neither an object nor IR")
    with pytest.raises(TypeError, match="optimise"):
        lib.add(SQUARE, language="llvm", optimise=3)
    with pytest.raises(ValueError, match="language"):
        lib.add(SQUARE, language="fortran")
    with pytest.raises(ValueError, match="opt"):
        lib.add(SQUARE, language="llvm", opt=7)
    assert lib.units == []
