"""The host's own symbols (static ones too) and IR bound to them: JIT code
that reads and writes the running program's internal state."""
from __future__ import annotations

import ctypes
import os
from ctypes import c_int, c_void_p

import pytest

import hotlink
from hotlink.frontend import bind_to_host
from hotlink.host import AmbiguousSymbolError, host_symbols


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HOTLINK_CACHE_DIR", str(tmp_path / "cache"))


HOST_C = r"""
static int counter;                      /* internal: only .symtab knows it */
static int bump_calls;

__attribute__((noinline, used))
static int host_bump(int d) {            /* internal function */
    bump_calls++;
    counter += d;
    return counter;
}

int host_get_counter(void) { return counter; }
int host_get_bump_calls(void) { return bump_calls; }
void host_set_counter(int v) { counter = v; }
int host_uses_bump(void) { return host_bump(0); }
"""

# IR as extracted from the host program: its statics are internal definitions
# (host_bump's body is the program's own), plus new JIT code using them.
JIT_IR = r"""
@counter = internal global i32 0, align 4
@jit_calls = internal global i32 0, align 4

define internal i32 @host_bump(i32 %d) {
  %c = load i32, ptr @counter
  %n = add i32 %c, %d
  store i32 %n, ptr @counter
  ret i32 %n
}

define i32 @jit_tick() {
  %c = load i32, ptr @counter
  %n = add i32 %c, 1
  store i32 %n, ptr @counter
  %k = load i32, ptr @jit_calls
  %k1 = add i32 %k, 1
  store i32 %k1, ptr @jit_calls
  %r = call i32 @host_bump(i32 10)
  ret i32 %r
}
"""


@pytest.fixture
def host_so(toolchain, tmp_path):
    src = tmp_path / "hostlib.c"
    src.write_text(HOST_C)
    path = toolchain.shared([src], name="hotlink_test_host")
    return path, ctypes.CDLL(str(path))


def test_host_symbols_find_statics_of_a_loaded_library(session, host_so):
    path, so = host_so
    syms = session.host_symbols(str(path))
    assert syms.path == str(path) and syms.table == ".symtab"
    assert {"counter", "bump_calls", "host_bump", "host_get_counter"} <= set(syms)
    assert syms["host_get_counter"] == ctypes.cast(so.host_get_counter, c_void_p).value
    so.host_set_counter(1234)
    assert c_int.from_address(syms["counter"]).value == 1234      # really the host's variable
    assert ctypes.CFUNCTYPE(c_int, c_int)(syms["host_bump"])(6) == 1240
    assert so.host_get_bump_calls() == 1
    exported = session.host_symbols(str(path), include_local=False)
    assert "host_get_counter" in exported and "counter" not in exported and "host_bump" not in exported
    kinds = {c.name: (c.kind, c.binding) for n in ("counter", "host_bump") for c in syms.candidates(n)}
    assert kinds == {"counter": ("object", "local"), "host_bump": ("func", "local")}


def test_jit_code_bound_to_host_statics(session, host_so):
    path, so = host_so
    so.host_set_counter(5)
    syms = session.host_symbols(str(path))
    bound = bind_to_host(JIT_IR, syms)
    assert bound.bound == {"counter": syms["counter"], "host_bump": syms["host_bump"]}
    assert bound.promoted == ["jit_calls"]                         # the host has none: JIT's own now

    session.define(bound.bound)
    lib = session.library("jit")
    unit = lib.add(bound.module)
    assert "jit_calls" in unit.symbols and "counter" not in unit.symbols
    tick = lib.function("jit_tick", c_int)
    assert tick() == 5 + 1 + 10
    assert so.host_get_counter() == 16                             # the host's accessor sees it
    assert so.host_get_bump_calls() == 1                           # the host's own function ran
    assert tick() == 27 and so.host_get_counter() == 27 and so.host_get_bump_calls() == 2
    assert c_int.from_address(lib.address("jit_calls")).value == 2

    # Unbound, the same IR would work on private copies and leave the host alone.
    copy = session.library("copy")
    copy.add(JIT_IR, language="llvm")
    assert copy.function("jit_tick", c_int)() == 11
    assert so.host_get_counter() == 27


def test_bind_to_host_accepts_modules_and_keeps_literals(host_so):
    import llvmlite.binding as llvm
    path, _ = host_so
    syms = host_symbols(str(path))
    text = JIT_IR + '@.msg = private unnamed_addr constant [3 x i8] c"hi\\00"\n'
    b = bind_to_host(llvm.parse_assembly(text), syms)
    assert b.kept == [".msg"] and set(b.bound) == {"counter", "host_bump"}
    assert "@counter = available_externally global i32 0" in b.ir
    b2 = bind_to_host(llvm.parse_assembly(text).as_bitcode(), syms, promote=False)
    assert b2.promoted == [] and set(b2.kept) == {"jit_calls", ".msg"}


def test_ambiguous_static_names_are_flagged(session, toolchain, tmp_path):
    a, b = tmp_path / "tu_a.c", tmp_path / "tu_b.c"
    a.write_text("__attribute__((noinline, used)) static int helper(void) { return 1; }\n"
                 "int call_a(void) { return helper(); }\n")
    b.write_text("__attribute__((noinline, used)) static int helper(void) { return 2; }\n"
                 "int call_b(void) { return helper(); }\n")
    path = toolchain.shared([a, b], name="hotlink_test_ambiguous")
    ctypes.CDLL(str(path))
    syms = session.host_symbols(path.name)                        # by file name: one is loaded
    assert "helper" not in syms and "helper" in syms.ambiguous
    with pytest.raises(AmbiguousSymbolError) as info:
        syms["helper"]
    assert isinstance(info.value, KeyError) and isinstance(info.value, hotlink.LinkError)
    assert "tu_a.c" in str(info.value) and "tu_b.c" in str(info.value)
    by_file = {os.path.basename(c.file): c.address for c in syms.candidates("helper")}
    assert ctypes.CFUNCTYPE(c_int)(by_file["tu_a.c"])() == 1
    assert ctypes.CFUNCTYPE(c_int)(by_file["tu_b.c"])() == 2
    with pytest.raises(hotlink.SymbolNotFoundError):
        syms["no_such_symbol_here"]


def test_executable_symbols_lie_in_the_executable():
    syms = host_symbols()
    exe = os.path.realpath("/proc/self/exe")
    assert syms.path == exe and len(syms) > 0
    ranges = []
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 6 and os.path.realpath(fields[5]) == exe:
                lo, hi = (int(x, 16) for x in fields[0].split("-"))
                ranges.append((lo, hi))
    funcs = [c for n in syms for c in syms.candidates(n) if c.kind == "func" and c.size]
    assert funcs and all(any(lo <= c.address < hi for lo, hi in ranges) for c in funcs)
    assert all(c.binding != "local" for n in host_symbols(include_local=False)
               for c in host_symbols(include_local=False).candidates(n))


def test_unknown_or_vague_library_names(host_so):
    with pytest.raises(hotlink.LinkError, match="no loaded object"):
        host_symbols("libhotlink-surely-not-loaded")
    with pytest.raises(hotlink.LinkError, match="several"):
        host_symbols("lib")                                        # matches many objects


def test_libc_exports_match_dlsym():
    libc = ctypes.CDLL(None)
    syms = host_symbols("libc.so.6")
    for name in ("printf", "qsort", "fopen"):
        assert syms[name] == ctypes.cast(getattr(libc, name), c_void_p).value


def test_stripped_objects_fall_back_to_dynsym(monkeypatch, toolchain, tmp_path):
    import hotlink.host as host
    src = tmp_path / "stripped.c"
    src.write_text("static int hidden_state;\nint visible(void) { return ++hidden_state; }\n")
    path = toolchain.shared([src], ["-s"], name="hotlink_test_stripped")
    so = ctypes.CDLL(str(path))
    syms = host_symbols(str(path))
    assert syms.table == ".dynsym" and "hidden_state" not in syms
    assert syms["visible"] == ctypes.cast(so.visible, c_void_p).value

    monkeypatch.setattr(host, "DEBUG_DIR", str(tmp_path / "no-debug-files"))
    host._file_symbols.cache_clear()                               # libc without its debug file
    try:
        libc, syms = ctypes.CDLL(None), host_symbols("libc.so.6")
        assert syms.table == ".dynsym"
        for name in ("printf", "qsort", "fopen", "pthread_create"):
            assert syms[name] == ctypes.cast(getattr(libc, name), c_void_p).value, name
    finally:
        host._file_symbols.cache_clear()


def test_bind_to_host_edge_cases():
    text = ("@tls = internal thread_local global i32 0\n"
            "@base = internal global i32 1\n"
            "@al = internal alias i32, ptr @base\n"
            "define i32 @get() {\n  %v = load i32, ptr @al\n  ret i32 %v\n}\n")
    b = bind_to_host(text, {"base": 0x1000})                      # the alias follows its aliasee
    assert b.bound == {"base": 0x1000, "al": 0x1000} and b.promoted == ["tls"]
    assert "@al = external global i32" in b.ir
    b = bind_to_host(text, {}, promote=False)
    assert b.bound == {} and b.promoted == [] and b.kept == ["tls", "base", "al"]
    assert "@al = internal alias" in b.ir
    with pytest.raises(hotlink.LinkError, match="thread-local"):
        bind_to_host(text, {"tls": 0x2000})
    with pytest.raises(hotlink.CompileError, match="invalid LLVM IR"):
        bind_to_host("define i32 @f( {", {})
