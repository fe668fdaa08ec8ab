"""C++ differential test: the same two objects (tests/fixtures/cxx) linked by
hotlink and by ``g++ -shared`` + ``dlopen`` must behave the same.

thrower.o defines a virtual class hierarchy, a static object with a
constructor and destructor, and throws exceptions; catcher.o derives from
thrower's classes and catches thrower's exceptions, so typeinfo, vtables,
``.eh_frame``/``.gcc_except_table`` and COMDAT statics cross unit boundaries.
"""
from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import hotlink
from conftest import FIXTURES, Toolchain, elf_symbols, reloc_types

CXX_DIR = FIXTURES / "cxx"
CXXFLAGS = ["-O2", "-fPIC", f"-I{CXX_DIR}"]

# builds the fixture with g++ twice (objects, and a shared library to compare with)
pytestmark = pytest.mark.slow

c_size_t = ctypes.c_size_t
c_char_p = ctypes.c_char_p

# name -> (restype, argtypes)
SIGNATURES: dict[str, tuple[object, list[object]]] = {
    "cx_static_ctor_count": (ctypes.c_int, []),
    "cx_set_dtor_counter": (None, [ctypes.POINTER(ctypes.c_int)]),
    "cx_static_greeting": (c_size_t, [c_char_p, c_size_t]),
    "cx_vector_sum": (ctypes.c_longlong, [ctypes.c_int]),
    "cx_shapes_area": (ctypes.c_double, [ctypes.c_int]),
    "cx_describe": (c_size_t, [ctypes.c_int, ctypes.c_double, ctypes.c_double, c_char_p, c_size_t]),
    "cx_shared_counter_bump_thrower": (ctypes.c_int, []),
    # catcher.cpp
    "cx_catch": (ctypes.c_int, [ctypes.c_int, c_char_p, c_size_t]),
    "cx_catch_std": (ctypes.c_int, [ctypes.c_int, c_char_p, c_size_t]),
    "cx_rethrow": (ctypes.c_int, [ctypes.c_int]),
    "cx_mixed_shapes": (c_size_t, [c_char_p, c_size_t, ctypes.POINTER(ctypes.c_double)]),
    "cx_shared_counter_bump_catcher": (ctypes.c_int, []),
}


@dataclass
class Objects:
    thrower: Path
    catcher: Path
    shared: Path


def build(tc: Toolchain) -> Objects:
    thrower = tc.compile_cxx(CXX_DIR / "thrower.cpp", CXXFLAGS, name="thrower")
    catcher = tc.compile_cxx(CXX_DIR / "catcher.cpp", CXXFLAGS, name="catcher")
    # The reference .so is linked from the very same objects.
    shared = tc.shared([thrower, catcher], name="libcxxref", cxx=True)
    return Objects(thrower, catcher, shared)


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> Objects:
    return build(Toolchain(tmp_path_factory.mktemp("cxx")))


class Impl:
    """The entry points of one build, as ctypes callables."""

    def __init__(self, label: str, lookup: Callable[[str, object, list[object]], Callable]):
        self.label = label
        self.fn = {name: lookup(name, res, args) for name, (res, args) in SIGNATURES.items()}

    def __getattr__(self, name: str) -> Callable:
        try:
            return self.fn[name]
        except KeyError:
            raise AttributeError(name) from None

    def string_call(self, name: str, *args, size: int = 512) -> tuple[int, bytes]:
        buf = ctypes.create_string_buffer(size)
        n = self.fn[name](*args, buf, size)
        return n, buf.value


def hotlink_impl(lib: hotlink.Library) -> Impl:
    return Impl("hotlink", lambda name, res, args: lib.function(name, res, args))


def dlopen_impl(path: Path) -> Impl:
    dll = ctypes.CDLL(str(path))

    def lookup(name: str, res: object, args: list[object]) -> Callable:
        f = getattr(dll, name)
        f.restype = res
        f.argtypes = args
        return f

    impl = Impl("dlopen", lookup)
    impl.dll = dll  # keep it loaded
    return impl


def load_into(s: hotlink.Session, objs: Objects, name: str = "cxx") -> hotlink.Library:
    s.load_shared("libstdc++.so.6")
    lib = s.library(name)
    lib.add(str(objs.thrower))   # thrower first: it needs nothing from catcher
    lib.add(str(objs.catcher))
    return lib


@pytest.fixture(scope="module")
def impls(objects: Objects) -> Iterator[list[Impl]]:
    with hotlink.Session() as s:
        lib = load_into(s, objects)
        yield [hotlink_impl(lib), dlopen_impl(objects.shared)]


def both(impls: list[Impl], f: Callable[[Impl], object]) -> object:
    """Run f on both builds, assert equal results, return the result."""
    got = {impl.label: f(impl) for impl in impls}
    assert got["hotlink"] == got["dlopen"], got
    return got["hotlink"]


# ---------------------------------------------------------------- tests

def test_fixture_objects_cross_unit_boundaries(objects: Objects):
    # Sanity of the fixture itself (read with pyelftools, independently of
    # hotlink): catcher needs thrower's typeinfo and vtables, and both carry
    # a GNU_UNIQUE copy of the inline function's static.
    thrower, catcher = elf_symbols(objects.thrower), elf_symbols(objects.catcher)
    for name in ("_ZTI9TestError", "_ZTV6Circle", "_ZTV4Rect", "_Z10total_areaRKSt6vectorIPK5ShapeSaIS2_EE"):
        assert catcher[name] == ("STB_GLOBAL", "SHN_UNDEF"), name
        assert thrower[name][1] != "SHN_UNDEF", name
    unique = "_ZZ14shared_countervE7counter"
    assert thrower[unique][0] == catcher[unique][0] == "STB_LOOS"   # STB_GNU_UNIQUE
    assert "R_X86_64_PLT32" in reloc_types(objects.catcher)


def test_static_constructor_ran(impls):
    # 1 constructor call + a 10-entry std::map built in it
    assert both(impls, lambda i: i.cx_static_ctor_count()) == 10_001
    n, text = both(impls, lambda i: i.string_call("cx_static_greeting"))
    assert text == b"hello from a static constructor / k7=49"
    assert n == len(text)


@pytest.mark.parametrize("n", [0, 1, 2, 10, 1000, 100_000])
def test_vector_sum(impls, n):
    expected = sum(i * i - 3 * i for i in range(n))
    top = sorted((i * i - 3 * i for i in range(n)), reverse=True)[:10]
    expected += sum(v * (k + 1) for k, v in enumerate(top))
    assert both(impls, lambda i: i.cx_vector_sum(n)) == expected


@pytest.mark.parametrize("n", [0, 1, 2, 7, 50])
def test_virtual_dispatch_total_area(impls, n):
    result = both(impls, lambda i: i.cx_shapes_area(n))
    expected = sum(3.14159265358979 * k * k if k % 2 else k * (k + 1) for k in range(1, n + 1))
    assert result == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("kind,a,b,text", [
    (0, 2.0, 0.0, b"circle r=2(area=12.566)"),
    (1, 3.0, 4.0, b"rect 3x4(area=12.000)"),
    (1, 10.0, 0.5, b"rect 10x0(area=5.000)"),
])
def test_string_result_copied_to_caller_buffer(impls, kind, a, b, text):
    n, got = both(impls, lambda i: i.string_call("cx_describe", kind, a, b))
    assert got == text
    assert n == len(text)


def test_string_result_truncated(impls):
    n, got = both(impls, lambda i: i.string_call("cx_describe", 1, 3.0, 4.0, size=8))
    assert got == b"rect 3x"
    assert n == len(b"rect 3x4(area=12.000)")


@pytest.mark.parametrize("code,kind,text", [
    (0, 1, b"TestError thrown in thrower.cpp with code 0 [code=0]"),
    (7, 1, b"TestError thrown in thrower.cpp with code 7 [code=7]"),
    (123456, 1, b"TestError thrown in thrower.cpp with code 123456 [code=123456]"),
    (-3, 2, b"logic_error: negative code -3"),
])
def test_exception_caught_across_units(impls, code, kind, text):
    def call(i: Impl):
        buf = ctypes.create_string_buffer(256)
        return i.cx_catch(code, buf, 256), buf.value

    assert both(impls, call) == (kind, text)


@pytest.mark.parametrize("which,kind,text", [
    (0, 1, b"out_of_range"),
    (1, 2, b"a thrown std::string"),
    (2, 3, b"12345"),
    (3, 0, b"nothing"),
])
def test_std_and_non_class_exceptions(impls, which, kind, text):
    def call(i: Impl):
        buf = ctypes.create_string_buffer(256)
        return i.cx_catch_std(which, buf, 256), buf.value

    assert both(impls, call) == (kind, text)


def test_rethrow_across_units(impls):
    assert both(impls, lambda i: [i.cx_rethrow(c) for c in (1, 21, 500)]) == [2, 42, 1000]


def test_exceptions_many_times(impls):
    # Repeated throwing exercises the unwinder's frame lookup caches.
    def call(i: Impl):
        buf = ctypes.create_string_buffer(128)
        return sum(i.cx_catch(k, buf, 128) for k in range(300))

    assert both(impls, call) == 300


def test_cross_unit_inheritance_and_dispatch(impls):
    def call(i: Impl):
        buf = ctypes.create_string_buffer(512)
        area = ctypes.c_double()
        n = i.cx_mixed_shapes(buf, 512, ctypes.byref(area))
        return n, buf.value, area.value

    n, text, area = both(impls, call)
    assert text == (b"square 3, shape, circle r=2, rect 2x7"
                    b" | square 3(area=9.000) | shape(area=10.000)")
    assert n == len(text)
    assert area == pytest.approx(9 + 10 + 3.14159265358979 * 4 + 14)


def test_inline_static_is_one_instance(impls):
    # shared_counter() is an inline function with a static local, emitted as a
    # COMDAT (GNU_UNIQUE) copy in both objects: like the static linker, the
    # library must keep one instance that both units use.
    def call(i: Impl):
        start = i.cx_shared_counter_bump_thrower()
        return [i.cx_shared_counter_bump_catcher() - start,
                i.cx_shared_counter_bump_thrower() - start,
                i.cx_shared_counter_bump_catcher() - start]

    assert both(impls, call) == [1, 2, 3]


def test_static_destructor_runs_at_remove_and_reload_works(objects: Objects):
    """hotlink only: remove runs the static destructor (registered with
    __cxa_atexit against the unit's own __dso_handle) and deregisters the
    unit's .eh_frame, so loading the same code again works from scratch."""
    dtor_calls = ctypes.c_int(0)
    with hotlink.Session() as s:
        for round_ in range(3):
            lib = load_into(s, objects, name="cxx")
            impl = hotlink_impl(lib)
            assert impl.cx_static_ctor_count() == 10_001   # fresh statics each time
            impl.cx_set_dtor_counter(ctypes.byref(dtor_calls))
            buf = ctypes.create_string_buffer(128)
            assert impl.cx_catch(round_, buf, 128) == 1
            assert buf.value.endswith(b"[code=%d]" % round_)
            assert dtor_calls.value == round_
            lib.remove()
            assert dtor_calls.value == round_ + 1
    assert dtor_calls.value == 3
