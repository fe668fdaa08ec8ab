"""Debian's static Lua 5.4 (liblua5.4.a) linked by hotlink, driven through its
C API with ctypes, checked against the ``lua5.4`` interpreter's output."""
from __future__ import annotations

import ctypes
import subprocess
from collections.abc import Iterator

import pytest

import hotlink
from conftest import FIXTURES, LIBLUA_A

PROGRAM = FIXTURES / "lua" / "program.lua"

LUA_OK = 0
LUA_ERRRUN = 2
LUA_ERRSYNTAX = 3
LUA_TSTRING = 4
LUA_TFUNCTION = 6

vp = ctypes.c_void_p


class Lua:
    """The handful of C API entry points the tests use.

    ``lua_pcall``, ``lua_tostring``, ``lua_pop`` and ``lua_tointeger`` are
    macros in lua.h; they are spelled out here in terms of ``lua_pcallk``,
    ``lua_tolstring``, ``lua_settop`` and ``lua_tointegerx``.
    """

    def __init__(self, lib: hotlink.Library):
        f = lib.function
        self.luaL_newstate = f("luaL_newstate", vp, [])
        self.luaL_openlibs = f("luaL_openlibs", None, [vp])
        self.luaL_loadstring = f("luaL_loadstring", ctypes.c_int, [vp, ctypes.c_char_p])
        self.lua_pcallk = f("lua_pcallk", ctypes.c_int,
                            [vp, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_ssize_t, vp])
        self.lua_getglobal = f("lua_getglobal", ctypes.c_int, [vp, ctypes.c_char_p])
        self.lua_tolstring = f("lua_tolstring", vp, [vp, ctypes.c_int, ctypes.POINTER(ctypes.c_size_t)])
        self.lua_settop = f("lua_settop", None, [vp, ctypes.c_int])
        self.lua_gettop = f("lua_gettop", ctypes.c_int, [vp])
        self.lua_pushinteger = f("lua_pushinteger", None, [vp, ctypes.c_longlong])
        self.lua_tointegerx = f("lua_tointegerx", ctypes.c_longlong, [vp, ctypes.c_int, vp])
        self.lua_close = f("lua_close", None, [vp])

    # -- helpers built from the API
    def new_state(self) -> int:
        L = self.luaL_newstate()
        assert L, "luaL_newstate returned NULL"
        self.luaL_openlibs(L)
        return L

    def pcall(self, L: int, nargs: int = 0, nresults: int = 0) -> int:
        return self.lua_pcallk(L, nargs, nresults, 0, 0, None)

    def tostring(self, L: int, idx: int) -> bytes:
        n = ctypes.c_size_t()
        p = self.lua_tolstring(L, idx, ctypes.byref(n))
        assert p, "value is not a string"
        return ctypes.string_at(p, n.value)

    def pop(self, L: int, n: int = 1) -> None:
        self.lua_settop(L, -n - 1)

    def run(self, L: int, code: bytes) -> None:
        rc = self.luaL_loadstring(L, code)
        assert rc == LUA_OK, self.tostring(L, -1)
        rc = self.pcall(L)
        assert rc == LUA_OK, self.tostring(L, -1)

    def global_string(self, L: int, name: bytes) -> bytes:
        assert self.lua_getglobal(L, name) == LUA_TSTRING
        value = self.tostring(L, -1)
        self.pop(L)
        return value


@pytest.fixture(scope="module")
def lua() -> Iterator[Lua]:
    with hotlink.Session() as s:
        lib = s.library("lua")
        lib.add(str(LIBLUA_A))
        yield Lua(lib)


@pytest.fixture
def L(lua: Lua) -> Iterator[int]:
    state = lua.new_state()
    yield state
    lua.lua_close(state)


def reference_output() -> bytes:
    proc = subprocess.run(["lua5.4", PROGRAM.name], cwd=PROGRAM.parent,
                          capture_output=True, check=True)
    assert proc.stderr == b""
    return proc.stdout


def test_program_matches_lua_interpreter(lua: Lua, L: int):
    expected = reference_output()
    # sanity: the reference run really went through the whole program
    assert expected.count(b"\n") >= 30
    assert b"fib: 6765 12586269025 2880067194370816120\n" in expected
    assert b"coroutine-wrap: 1 4 9 16 25 done\n" in expected

    lua.run(L, PROGRAM.read_bytes())
    got = lua.global_string(L, b"OUT")
    assert got == expected
    assert lua.lua_gettop(L) == 0


def test_program_runs_repeatedly_in_fresh_states(lua: Lua):
    expected = reference_output()
    code = PROGRAM.read_bytes()
    for _ in range(3):
        state = lua.new_state()
        try:
            lua.run(state, code)
            assert lua.global_string(state, b"OUT") == expected
        finally:
            lua.lua_close(state)


def test_call_lua_function_from_c(lua: Lua, L: int):
    lua.run(L, PROGRAM.read_bytes())
    for n, fib_n in [(0, 0), (1, 1), (30, 832040), (90, 2880067194370816120)]:
        assert lua.lua_getglobal(L, b"fib") == LUA_TFUNCTION
        lua.lua_pushinteger(L, n)
        assert lua.pcall(L, 1, 1) == LUA_OK
        assert lua.lua_tointegerx(L, -1, None) == fib_n
        lua.pop(L)
    assert lua.lua_gettop(L) == 0


def test_runtime_error_is_reported(lua: Lua, L: int):
    assert lua.luaL_loadstring(L, b"local t = {} ; error('boom from lua: ' .. #t + 41)") == LUA_OK
    assert lua.pcall(L) == LUA_ERRRUN
    assert b"boom from lua: 41" in lua.tostring(L, -1)
    lua.pop(L)
    # the state stays usable after the error (longjmp unwound correctly)
    lua.run(L, b"OK_AFTER = string.rep('ok', 2)")
    assert lua.global_string(L, b"OK_AFTER") == b"okok"


def test_syntax_error_is_reported(lua: Lua, L: int):
    assert lua.luaL_loadstring(L, b"local = = 3") == LUA_ERRSYNTAX
    msg = lua.tostring(L, -1)
    assert b"near" in msg
    lua.pop(L)
    assert lua.lua_gettop(L) == 0
