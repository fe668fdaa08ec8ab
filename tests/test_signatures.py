"""C signatures: ``Library.function(sym, "C declaration")``, signatures inferred
for IR and C that hotlink compiled, and buffers (numpy arrays, bytearray,
memoryview, ...) for pointer parameters, each misuse a clear TypeError."""
from __future__ import annotations

import array
import ctypes

import llvmlite.ir as ir
import numpy as np
import pytest

import hotlink
from hotlink.call import BufferFunction, Function
from hotlink.signature import SignatureError


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Never touch the user's object cache."""
    monkeypatch.setenv("HOTLINK_CACHE_DIR", str(tmp_path / "cache"))


KERNELS = r"""
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct point { int x, y; };
typedef struct { double re, im; } cplx;
typedef long idx;
typedef const double *cdp;

double dot(double *a, const double *b, long n) {
    double s = 0;
    for (long i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}
void scale(double *a, long n, double k) { for (long i = 0; i < n; i++) a[i] *= k; }
void fill_ints(int *out, int n) { for (int i = 0; i < n; i++) out[i] = i * i; }
size_t count_char(const char *s, size_t n, char c) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += s[i] == c;
    return k;
}
void upcase(char *s, size_t n) { for (size_t i = 0; i < n; i++) if (s[i] >= 'a' && s[i] <= 'z') s[i] -= 32; }
int manhattan(const struct point *p) { return (p->x < 0 ? -p->x : p->x) + (p->y < 0 ? -p->y : p->y); }
void move(struct point *p, int dx, int dy) { p->x += dx; p->y += dy; }
double norm2(const cplx *z) { return z->re * z->re + z->im * z->im; }
idx twice(idx v) { return 2 * v; }
double head(cdp p) { return p[0]; }
unsigned char low_byte(unsigned long long v) { return (unsigned char)v; }
float halve(float f) { return f / 2; }
_Bool is_odd(long long v) { return v & 1; }
int is_null(const void *p) { return p == 0; }
const char *greeting(void) { return "hello"; }
static int counter;
void bump(void) { counter++; }
int get_counter(void) { return counter; }
int sum_ints(int n, ...) { return n; }
cplx make_cplx(double re) { cplx z = {re, 0}; return z; }
static int hidden(int x) { return x; }
int use_hidden(int x) { return hidden(x); }
typedef void (*callback)(void);
void call_back(char *buf, callback cb) { buf[0] = 'X'; cb(); }
int apply(int (*f)(int), int x) { return f(x); }
"""


@pytest.fixture
def kernels(session):
    lib = session.library("kernels")
    lib.add(KERNELS, language="c")
    return lib


# --- C declarations --------------------------------------------------------------------------

def test_c_declaration_scalars(kernels):
    twice = kernels.function("twice", "long(long)")
    assert twice(21) == 42 and twice(-(2 ** 40)) == -(2 ** 41)
    assert kernels.function("low_byte", "unsigned char(unsigned long long)")(0x1FF) == 0xFF
    assert kernels.function("halve", "float(float)")(3.0) == 1.5
    assert kernels.function("is_odd", "_Bool(long long)")(7) is True
    assert kernels.function("is_odd", "bool is_odd(int64_t v)")(8) is False
    # a scalar-only signature is the plain ctypes call: no conversion layer
    assert type(twice) is Function
    assert twice.signature is not None and str(twice.signature) == "long(long)"


def test_c_declaration_void_and_results(kernels):
    bump = kernels.function("bump", "void(void)")
    get = kernels.function("get_counter", "int get_counter(void);")
    assert bump() is None and bump() is None
    assert get() == 2
    assert kernels.function("greeting", "const char *(void)")() == b"hello"     # const char *: bytes
    addr = kernels.function("greeting", "char *(void)")()                       # other pointers: the address
    assert isinstance(addr, int) and ctypes.string_at(addr) == b"hello"
    assert kernels.function("bump", "void()")() is None                        # () means (void), as in cffi


def test_c_declaration_pointers_and_repr(kernels):
    dot = kernels.function("dot", "double(double *, const double *, long)")
    a = np.arange(1.0, 6.0)
    b = np.full(5, 2.0)
    assert dot(a, b, 5) == 30.0
    assert isinstance(dot, BufferFunction)
    assert "double dot(double *, const double *, long)" in repr(dot)
    named = kernels.function("dot", "double dot(double *a, const double *b, long n)")
    assert named.signature.declaration("dot") == "double dot(double *a, const double *b, long n)"


def test_structs_by_pointer(kernels):
    class Point(ctypes.Structure):
        _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_int)]

    manhattan = kernels.function("manhattan", "int(const struct point *)")
    move = kernels.function("move", "void(struct point *p, int dx, int dy)")
    p = Point(3, -4)
    assert manhattan(p) == 7                      # a ctypes structure is a buffer
    assert manhattan(ctypes.byref(p)) == 7        # byref and pointers pass as ctypes passes them
    assert manhattan(ctypes.pointer(p)) == 7
    move(p, 10, 10)
    assert (p.x, p.y) == (13, 6)
    pts = np.zeros(1, dtype=[("x", "<i4"), ("y", "<i4")])   # a numpy structured array
    move(pts, -2, 5)
    assert manhattan(pts) == 7 and pts["x"][0] == -2
    raw = bytearray(8)
    move(raw, 1, 2)
    assert raw == bytes([1, 0, 0, 0, 2, 0, 0, 0])
    with pytest.raises(TypeError, match="read-only"):
        move(bytes(8), 1, 1)                      # struct point * is not const


def test_variadic_rejected_clearly(kernels):
    with pytest.raises(SignatureError, match=r"sum_ints: .*variadic"):
        kernels.function("sum_ints", "int(int, ...)")
    with pytest.raises(hotlink.LinkError, match="variadic"):
        kernels.function("sum_ints")             # inferred: the compiler says '...' too


def test_struct_by_value_rejected(kernels):
    with pytest.raises(SignatureError, match=r"make_cplx: the result \(struct cplx\) is returned by value"):
        kernels.function("make_cplx", "struct cplx(double)")
    with pytest.raises(SignatureError, match=r"parameter 1 \(struct point\) is passed by value"):
        kernels.function("manhattan", "int(struct point)")
    with pytest.raises(SignatureError, match=r"make_cplx: .*returned by value"):
        kernels.function("make_cplx")


def test_bad_declarations(kernels):
    with pytest.raises(SignatureError, match=r"dot: cannot parse the C declaration 'double\(double \*'"):
        kernels.function("dot", "double(double *")
    with pytest.raises(SignatureError, match="unknown names: real"):
        kernels.function("dot", "real(real *, long)")
    with pytest.raises(SignatureError, match="is for 'dotp', not 'dot'"):
        kernels.function("dot", "double dotp(double *, const double *, long)")
    with pytest.raises(TypeError, match="argtypes go with a ctypes restype"):
        kernels.function("dot", "double(double *, const double *, long)", [ctypes.c_void_p])
    with pytest.raises(SignatureError, match="cannot be passed"):
        kernels.function("twice", "__int128(long)")


def test_ctypes_form_still_works(kernels):
    dot = kernels.function("dot", ctypes.c_double, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long])
    a = (ctypes.c_double * 3)(1, 2, 3)
    assert dot(a, a, 3) == 14.0
    assert dot.signature is None and type(dot) is Function


def test_function_pointer_parameters(kernels):
    seen = []
    cb = ctypes.CFUNCTYPE(None)(lambda: seen.append(1))
    buf = bytearray(b"abc")
    kernels.function("call_back", "void(char *, void (*)(void))")(buf, cb)
    assert seen == [1] and buf == b"Xbc"
    inc = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)
    assert kernels.function("apply")(inc, 41) == 42                  # inferred: int (*)(int) is an address
    assert kernels.function("apply")(ctypes.cast(inc, ctypes.c_void_p).value, 1) == 2


# --- buffers -------------------------------------------------------------------------------------

def test_numpy_float64_and_int32(kernels):
    scale = kernels.function("scale", "void(double *, long, double)")
    a = np.arange(4.0)
    scale(a, 4, 2.5)
    assert a.tolist() == [0.0, 2.5, 5.0, 7.5]
    m = np.ones((3, 4))                           # 2-D, C-contiguous
    scale(m, 12, 3.0)
    assert (m == 3.0).all()
    fill = kernels.function("fill_ints", "void(int *, int)")
    out = np.zeros(6, dtype=np.int32)
    fill(out, 6)
    assert out.tolist() == [0, 1, 4, 9, 16, 25]
    out64 = np.zeros(2, dtype=np.int64)
    with pytest.raises(TypeError, match=r"fill_ints\(\) argument 1: int \* needs signed integers of 4 bytes, "
                                        r"got a ndarray of int64 items"):
        fill(out64, 2)
    assert out64.tolist() == [0, 0]               # nothing ran


def test_bytearray_memoryview_bytes_array(kernels):
    upcase = kernels.function("upcase", "void(char *, size_t)")
    count = kernels.function("count_char", "size_t(const char *, size_t, char)")
    b = bytearray(b"hello world")
    upcase(b, len(b))
    assert b == b"HELLO WORLD"
    mv = memoryview(b)[6:]                        # a writable slice: its own start address
    upcase(bytearray(b"x"), 1)
    b[6:] = b"world"
    upcase(mv, len(mv))
    assert b == b"HELLO WORLD"
    assert count(b"banana", 6, b"a") == 3         # bytes are fine for const char *
    assert count(memoryview(b"banana")[1:], 5, b"n") == 2
    assert count(array.array("b", b"aXa"), 3, b"a") == 2
    assert kernels.function("is_null", "int(const void *)")(None) == 1
    assert kernels.function("is_null", "int(const void *)")(np.zeros(0)) == 0   # empty: a real address
    dot = kernels.function("dot", "double(double *, const double *, long)")
    assert dot(array.array("d", [1, 2]), (ctypes.c_double * 2)(3, 4), 2) == 11.0


def test_read_only_buffer_to_non_const_pointer(kernels):
    scale = kernels.function("scale", "void(double *, long, double)")
    ro = np.arange(3.0)
    ro.setflags(write=False)
    with pytest.raises(TypeError, match=r"scale\(\) argument 1: a read-only buffer \(ndarray\) cannot be passed "
                                        r"as double \*"):
        scale(ro, 3, 2.0)
    upcase = kernels.function("upcase", "void(char *s, size_t n)")
    with pytest.raises(TypeError, match=r"upcase\(\) argument 1 \(s\): a read-only buffer \(bytes\)"):
        upcase(b"abc", 3)
    with pytest.raises(TypeError, match=r"read-only buffer \(memoryview\)"):
        upcase(memoryview(bytearray(b"abc")).toreadonly(), 3)
    dot = kernels.function("dot", "double(double *, const double *, long)")
    assert dot(np.ones(3), ro, 3) == 3.0          # const double *: read-only is fine


def test_wrong_dtype(kernels):
    dot = kernels.function("dot", "double(double *, const double *, long)")
    with pytest.raises(TypeError, match=r"dot\(\) argument 1: double \* needs floating point numbers of 8 bytes, "
                                        r"got a ndarray of int32 items \(format 'i', 4 bytes each\)"):
        dot(np.arange(3, dtype=np.int32), np.ones(3), 3)
    with pytest.raises(TypeError, match="got a ndarray of float32 items"):
        dot(np.ones(3), np.ones(3, dtype=np.float32), 3)
    with pytest.raises(TypeError, match="got a bytearray of uint8 items"):
        dot(bytearray(24), np.ones(3), 3)
    with pytest.raises(TypeError, match="structured or big-endian"):
        dot(np.ones(3), np.ones(3, dtype=">f8"), 3)


def test_non_contiguous(kernels):
    dot = kernels.function("dot", "double(double *, const double *, long)")
    a = np.arange(10.0)
    with pytest.raises(TypeError, match=r"argument 2: the ndarray is not C-contiguous"):
        dot(np.ones(5), a[::2], 5)
    with pytest.raises(TypeError, match="not C-contiguous"):
        dot(np.ones((3, 3)).T.copy(order="F"), np.ones(9), 9)
    assert dot(np.ones(5), np.ascontiguousarray(a[::2]), 5) == 20.0


def test_not_a_buffer_and_argument_count(kernels):
    dot = kernels.function("dot", "double(double *, const double *, long)")
    with pytest.raises(TypeError, match=r"argument 1: expected a buffer .* got list"):
        dot([1.0, 2.0], np.ones(2), 2)
    with pytest.raises(TypeError, match=r"dot\(\) takes 3 arguments \(2 given\)"):
        dot(np.ones(2), np.ones(2))
    a = np.arange(3.0)
    assert dot(a.ctypes.data, a, 3) == 5.0        # an int is an address


def test_buffer_stays_exported_during_the_call(kernels):
    """A bytearray cannot be resized (its memory moved) while native code holds it."""
    buf = bytearray(b"abc")
    errors = []

    def resize() -> None:
        try:
            buf.extend(b"more")
        except BufferError as e:
            errors.append(e)

    kernels.function("call_back")(buf, ctypes.CFUNCTYPE(None)(resize))
    assert len(errors) == 1 and buf == b"Xbc"
    buf.extend(b"!")                              # released after the call
    assert buf == b"Xbc!"


# --- inferred signatures ------------------------------------------------------------------------

def test_inferred_from_c_source(kernels):
    dot = kernels.function("dot")
    assert dot.signature.declaration("dot") == "double dot(double *a, const double *b, long n)"
    assert dot(np.ones(4), np.arange(4.0), 4) == 6.0
    with pytest.raises(TypeError, match="read-only"):
        dot(np.frombuffer(bytes(32)), np.ones(4), 4)
    assert kernels.function("twice").signature.declaration("twice") == "idx twice(idx v)"   # typedef long
    assert kernels.function("twice")(-4) == -8
    assert kernels.function("head")(np.array([2.5])) == 2.5                 # typedef const double *
    z = np.array([3.0, 4.0])
    norm2 = kernels.function("norm2")                                       # typedef struct {...} cplx
    assert str(norm2.signature) == "double(const cplx *z)" and norm2(z) == 25.0
    assert kernels.function("manhattan").signature.params[0].type.const
    assert kernels.function("count_char")(b"aab", 3, b"a") == 2
    assert kernels.function("low_byte")(0x1234) == 0x34
    assert kernels.function("is_odd")(3) is True
    assert kernels.function("greeting")() == b"hello"
    assert kernels.function("bump")() is None


def test_inferred_from_c_file_with_local_header(tmp_path, session):
    (tmp_path / "shape.h").write_text("typedef struct { int w, h; } shape;\ntypedef unsigned short u16;\n")
    src = tmp_path / "area.c"
    src.write_text('#include "shape.h"\nint area(const shape *s) { return s->w * s->h; }\n'
                   "u16 widen(unsigned char c) { return c * 2u; }\n")
    lib = session.library("shapes")
    lib.add(src)
    assert lib.function("area")(np.array([6, 7], dtype=np.int32)) == 42
    widen = lib.function("widen")
    assert str(widen.signature) == "u16(unsigned char c)" and widen(200) == 400


def test_static_functions_and_objects_have_no_inferred_signature(kernels, session, compile_c):
    assert kernels.function("use_hidden")(5) == 5
    lib = session.library("objects")
    lib.add(compile_c("int forty_two(void) { return 42; }"))
    with pytest.raises(SignatureError, match=r"forty_two: no signature known \(unit '.*\.o' was not compiled "
                                             r"from C or LLVM IR by hotlink\); pass a C declaration"):
        lib.function("forty_two")
    assert lib.function("forty_two", "int(void)")() == 42


def test_inferred_after_replace_add_many_and_compile_many(session):
    lib = session.library("p", patchable=True)
    u = lib.add("int f(int x) { return x + 1; }", language="c")
    old = lib.function("f")
    assert old(1) == 2
    lib.replace(u, "long f(long x, long y) { return x * y; }", language="c")
    new = lib.function("f")
    assert str(new.signature) == "long(long x, long y)" and new(6, 7) == 42
    units = lib.add_many([hotlink.Source("double g(double x) { return x / 4; }", language="c"),
                          "define i32 @h(i32 %x) {\n  ret i32 %x\n}\n"])
    assert len(units) == 2 and lib.function("g")(2.0) == 0.5 and lib.function("h")(9) == 9
    obj, = session.compile_many([hotlink.Source("unsigned k(unsigned x) { return ~x; }", language="c")])
    lib.add(obj)                                  # the compiled object carries its declarations
    assert lib.function("k")(0) == 2 ** 32 - 1


IR_TYPED = r"""
define double @ir_dot(double* readonly %a, double* %b, i64 %n) {
entry:
  %c = icmp sgt i64 %n, 0
  br i1 %c, label %loop, label %exit
loop:
  %i = phi i64 [0, %entry], [%i1, %loop]
  %acc = phi double [0.0, %entry], [%acc1, %loop]
  %pa = getelementptr double, double* %a, i64 %i
  %pb = getelementptr double, double* %b, i64 %i
  %x = load double, double* %pa
  %y = load double, double* %pb
  %m = fmul double %x, %y
  %acc1 = fadd double %acc, %m
  %i1 = add i64 %i, 1
  %d = icmp slt i64 %i1, %n
  br i1 %d, label %loop, label %exit
exit:
  %r = phi double [0.0, %entry], [%acc1, %loop]
  ret double %r
}

define zeroext i8 @ir_low(i32 zeroext %v) {
  %t = trunc i32 %v to i8
  ret i8 %t
}

define i32 @ir_neg(i32 %v) {
  %r = sub i32 0, %v
  ret i32 %r
}

define void @ir_store(ptr %p, i32 %v) {
  store i32 %v, ptr %p
  ret void
}

define i32 @ir_va(i32 %n, ...) {
  ret i32 %n
}

define { i64, i64 } @ir_pair() {
  ret { i64, i64 } zeroinitializer
}
"""


def test_inferred_from_ir_text(session):
    lib = session.library("ir")
    lib.add(IR_TYPED, language="llvm")
    dot = lib.function("ir_dot")
    assert str(dot.signature) == "double(const double *a, double *b, int64_t n)"
    assert dot(np.arange(3.0), np.ones(3), 3) == 3.0
    with pytest.raises(TypeError, match="double \\* needs floating point numbers of 8 bytes"):
        dot(np.ones(3), np.ones(3, dtype=np.int64), 3)            # typed pointer: checked
    with pytest.raises(TypeError, match="read-only"):
        dot(np.ones(3), np.frombuffer(bytes(24)), 3)              # not readonly: not const
    assert lib.function("ir_neg")(5) == -5
    low = lib.function("ir_low")
    assert str(low.signature) == "uint8_t(uint32_t v)" and low(0x1FF) == 0xFF
    store = lib.function("ir_store")
    assert str(store.signature) == "void(void *p, int32_t v)"  # opaque ptr: any buffer
    cell = np.zeros(2, dtype=np.int32)
    store(cell, -7)
    assert cell[0] == -7
    with pytest.raises(SignatureError, match=r"ir_va .*variadic"):
        lib.function("ir_va")
    with pytest.raises(SignatureError, match=r"ir_pair .*LLVM type \{ i64, i64 \}"):
        lib.function("ir_pair")


def test_inferred_from_llvmlite_module_and_bitcode(session):
    mod = ir.Module(name="m")
    fnty = ir.FunctionType(ir.DoubleType(), [ir.PointerType(ir.DoubleType()), ir.IntType(64)])
    fn = ir.Function(mod, fnty, name="first_times")
    a, k = fn.args
    b = ir.IRBuilder(fn.append_basic_block())
    b.ret(b.fmul(b.load(a), b.sitofp(k, ir.DoubleType())))
    lib = session.library("mods")
    lib.add(mod)
    f = lib.function("first_times")
    assert f.signature.params[0].type.element is not None     # double* from the module's text
    assert f(np.array([1.5]), 4) == 6.0
    import llvmlite.binding as llvm
    bc = llvm.parse_assembly("define i64 @bc_add(i64 %a, i64 %b) {\n  %r = add i64 %a, %b\n  ret i64 %r\n}\n")
    lib.add(bc.as_bitcode())
    assert lib.function("bc_add")(40, 2) == 42


def test_inference_for_cxx_is_refused_clearly(session):
    lib = session.library("cxx")
    lib.add('extern "C" int cx(int x) { return x; }', language="c++")
    with pytest.raises(SignatureError, match="cannot infer the signatures of C\\+\\+ functions"):
        lib.function("cx")
    assert lib.function("cx", "int(int)")(3) == 3


def test_callable_of_a_removed_unit_raises(session):
    lib = session.library("gone")
    u = lib.add("double id(double *p) { return *p; }", language="c")
    f = lib.function("id")
    assert f(np.array([1.25])) == 1.25
    u.remove()
    with pytest.raises(hotlink.SessionClosedError):
        f(np.array([1.0]))
