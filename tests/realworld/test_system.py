"""Systems archives: libuuid, SQLite, libuv, Tcl, libffi, libgpg-error.

libuv and Tcl register fork handlers (``pthread_atfork``), libuuid keeps
its clock state in thread-local storage, SQLite and Tcl create mutexes and
thread-specific keys, libffi builds closures (executable trampolines) at run
time. References: Python's ``uuid``, ``sqlite3``, ``tkinter.Tcl`` and ctypes
(which itself runs on the shared libffi), and the shared builds.
"""
from __future__ import annotations

import ctypes
import math
import os
import sqlite3
import uuid

import pytest

from realworld.harness import Api, case

c_size_t = ctypes.c_size_t
c_char_p = ctypes.c_char_p
c_void_p = ctypes.c_void_p
c_int = ctypes.c_int
c_uint = ctypes.c_uint
c_double = ctypes.c_double
buf = ctypes.create_string_buffer
UUID_T = ctypes.c_ubyte * 16


@case("uuid", "libuuid.a", "libuuid.so.1", package="uuid-dev")
def UUID(api: Api) -> list[object]:
    parse = api("uuid_parse", c_int, c_char_p, UUID_T)
    unparse_lower = api("uuid_unparse_lower", None, UUID_T, c_char_p)
    unparse_upper = api("uuid_unparse_upper", None, UUID_T, c_char_p)
    compare = api("uuid_compare", c_int, UUID_T, UUID_T)
    is_null = api("uuid_is_null", c_int, UUID_T)
    generate_random = api("uuid_generate_random", None, UUID_T)
    generate_time = api("uuid_generate_time", None, UUID_T)
    generate_md5 = api("uuid_generate_md5", None, UUID_T, UUID_T, c_char_p, c_size_t)
    generate_sha1 = api("uuid_generate_sha1", None, UUID_T, UUID_T, c_char_p, c_size_t)
    variant = api("uuid_variant", c_int, UUID_T)
    type_ = api("uuid_type", c_int, UUID_T)
    text = buf(37)
    out: list[object] = []
    for u in (uuid.NAMESPACE_DNS, uuid.NAMESPACE_URL, uuid.UUID(int=0), uuid.UUID(int=(1 << 128) - 1)):
        raw = UUID_T()
        assert parse(str(u).upper().encode(), raw) == 0
        assert bytes(raw) == u.bytes
        unparse_lower(raw, text)
        assert text.value == str(u).encode()
        unparse_upper(raw, text)
        assert text.value == str(u).upper().encode()
        assert is_null(raw) == (u.int == 0)
        out.append(bytes(raw))
    assert parse(b"not-a-uuid", UUID_T()) == -1
    a, b = UUID_T.from_buffer_copy(uuid.NAMESPACE_DNS.bytes), UUID_T.from_buffer_copy(uuid.NAMESPACE_URL.bytes)
    assert compare(a, b) < 0 < compare(b, a) and compare(a, a) == 0
    for name in (b"python.org", b"example.com", "\u00e9t\u00e9".encode()):
        md5, sha1 = UUID_T(), UUID_T()
        generate_md5(md5, UUID_T.from_buffer_copy(uuid.NAMESPACE_DNS.bytes), name, len(name))
        generate_sha1(sha1, UUID_T.from_buffer_copy(uuid.NAMESPACE_DNS.bytes), name, len(name))
        assert bytes(md5) == uuid.uuid3(uuid.NAMESPACE_DNS, name.decode()).bytes
        assert bytes(sha1) == uuid.uuid5(uuid.NAMESPACE_DNS, name.decode()).bytes
        out += [bytes(md5), bytes(sha1)]
    seen = set()
    for gen, version in ((generate_random, 4), (generate_time, 1)):
        for _ in range(50):
            raw = UUID_T()
            gen(raw)
            u = uuid.UUID(bytes=bytes(raw))
            assert u.version == version and u.variant == uuid.RFC_4122
            assert type_(raw) == version and variant(raw) == 1       # UUID_VARIANT_DCE
            seen.add(u)
    assert len(seen) == 100                                           # all distinct
    return out


QUERIES = [
    "SELECT sqlite_version() IS NOT NULL",
    "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, grp INT, score REAL, doc TEXT)",
    "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 500) "
    "INSERT INTO t(name, grp, score, doc) SELECT 'item' || i, i % 7, i * 0.25, "
    "json_object('i', i, 'tags', json_array('a', i % 3)) FROM c",
    "CREATE INDEX t_grp ON t(grp)",
    "SELECT grp, count(*), sum(score), group_concat(id, ',') FROM t WHERE id % 50 = 0 GROUP BY grp ORDER BY grp",
    "SELECT name, rank() OVER (PARTITION BY grp ORDER BY score DESC) FROM t WHERE id < 20 ORDER BY id",
    "SELECT json_extract(doc, '$.tags[1]'), count(*) FROM t GROUP BY 1 ORDER BY 1",
    "SELECT printf('%08.3f|%-5s|%x', 3.14159, 'ab', 255), upper('stra\u00dfe'), length('\u4e2d\u6587'), "
    "hex(zeroblob(3)), 'x' LIKE 'X', substr('hotlink', 2, 3), round(2.5), abs(-7), typeof(1.0)",
    "SELECT name FROM t WHERE name GLOB 'item4?' ORDER BY name DESC LIMIT 3",
    "UPDATE t SET score = score * 2 WHERE grp = 3",
    "SELECT total(score), avg(score), min(name), max(name) FROM t",
    "DELETE FROM t WHERE id > 10",
    "SELECT count(*), sum(length(doc)) FROM t",
]


@case("sqlite3", "libsqlite3.a", "libsqlite3.so.0", package="libsqlite3-dev")
def SQLITE3(api: Api) -> list[object]:
    open_v2 = api("sqlite3_open_v2", c_int, c_char_p, ctypes.POINTER(c_void_p), c_int, c_char_p)
    prepare = api("sqlite3_prepare_v2", c_int, c_void_p, c_char_p, c_int, ctypes.POINTER(c_void_p), c_void_p)
    step = api("sqlite3_step", c_int, c_void_p)
    column_count = api("sqlite3_column_count", c_int, c_void_p)
    column_type = api("sqlite3_column_type", c_int, c_void_p, c_int)
    column_int64 = api("sqlite3_column_int64", ctypes.c_int64, c_void_p, c_int)
    column_double = api("sqlite3_column_double", c_double, c_void_p, c_int)
    column_text = api("sqlite3_column_text", c_char_p, c_void_p, c_int)
    finalize = api("sqlite3_finalize", c_int, c_void_p)
    close = api("sqlite3_close", c_int, c_void_p)
    errmsg = api("sqlite3_errmsg", c_char_p, c_void_p)
    changes = api("sqlite3_changes", c_int, c_void_p)
    libversion = api("sqlite3_libversion", c_char_p)
    db = c_void_p()
    assert open_v2(b":memory:", ctypes.byref(db), 0x6, None) == 0     # READWRITE | CREATE
    py = sqlite3.connect(":memory:")
    out: list[object] = [libversion()]
    assert libversion().decode() == sqlite3.sqlite_version
    for q in QUERIES:
        stmt = c_void_p()
        assert prepare(db, q.encode(), -1, ctypes.byref(stmt), None) == 0, errmsg(db)
        rows = []
        while (rc := step(stmt)) == 100:                 # SQLITE_ROW
            row: list[object] = []
            for i in range(column_count(stmt)):
                t = column_type(stmt, i)
                row.append(column_int64(stmt, i) if t == 1 else column_double(stmt, i) if t == 2
                           else None if t == 5 else column_text(stmt, i).decode())
            rows.append(tuple(row))
        assert rc == 101, errmsg(db)                     # SQLITE_DONE
        assert finalize(stmt) == 0
        want = py.execute(q).fetchall()
        assert rows == want, (q, rows[:5], want[:5])
        out.append((rows, changes(db)))
    stmt = c_void_p()
    assert prepare(db, b"SELECT * FROM missing", -1, ctypes.byref(stmt), None) == 1
    assert errmsg(db) == b"no such table: missing"
    assert close(db) == 0
    return out


UV_TIMER, UV_FS = 13, 6


@case("uv", "libuv_a.a", "libuv.so.1", package="libuv1-dev")
def UV(api: Api) -> list[object]:
    version = api("uv_version_string", c_char_p)
    loop_size = api("uv_loop_size", c_size_t)
    handle_size = api("uv_handle_size", c_size_t, c_int)
    req_size = api("uv_req_size", c_size_t, c_int)
    loop_init = api("uv_loop_init", c_int, c_void_p)
    loop_close = api("uv_loop_close", c_int, c_void_p)
    run = api("uv_run", c_int, c_void_p, c_int)
    now = api("uv_now", ctypes.c_uint64, c_void_p)
    timer_init = api("uv_timer_init", c_int, c_void_p, c_void_p)
    timer_start = api("uv_timer_start", c_int, c_void_p, c_void_p, ctypes.c_uint64, ctypes.c_uint64)
    timer_stop = api("uv_timer_stop", c_int, c_void_p)
    close = api("uv_close", None, c_void_p, c_void_p)
    strerror = api("uv_strerror", c_char_p, c_int)
    err_name = api("uv_err_name", c_char_p, c_int)
    fs_stat = api("uv_fs_stat", c_int, c_void_p, c_void_p, c_char_p, c_void_p)
    fs_statbuf = api("uv_fs_get_statbuf", ctypes.POINTER(ctypes.c_uint64), c_void_p)
    fs_cleanup = api("uv_fs_req_cleanup", None, c_void_p)
    hrtime = api("uv_hrtime", ctypes.c_uint64)

    loop = buf(loop_size())
    assert loop_init(loop) == 0
    ticks: list[int] = []
    timer = buf(handle_size(UV_TIMER))

    @api.callback(None, c_void_p)
    def on_tick(handle):
        ticks.append(len(ticks))
        if len(ticks) == 5:
            timer_stop(handle)

    assert timer_init(loop, timer) == 0
    t0 = hrtime()
    assert timer_start(timer, on_tick, 2, 1) == 0
    start = now(loop)
    assert run(loop, 0) == 0                          # UV_RUN_DEFAULT: until no active handles
    assert ticks == [0, 1, 2, 3, 4]
    # five ticks, 2 ms then every 1 ms: at least 5 ms have passed (uv_now counts whole ms, cached)
    assert now(loop) - start >= 5 and hrtime() - t0 >= 5_000_000
    close(timer, None)
    run(loop, 0)
    req = buf(req_size(UV_FS))
    assert fs_stat(None, req, b"/etc/passwd", None) == 0          # synchronous (no callback)
    assert fs_statbuf(req)[7] == os.stat("/etc/passwd").st_size   # uv_stat_t: st_size is field 7
    fs_cleanup(req)
    assert fs_stat(None, req, b"/no/such/file", None) == -2
    fs_cleanup(req)
    assert loop_close(loop) == 0
    return [version(), ticks, strerror(-2), err_name(-2), strerror(-98), err_name(-98)]


SCRIPTS = [
    "expr {2**100}",
    "string toupper {hello world}",
    "lsort -integer -decreasing {5 3 10 1 22}",
    "format %.6f [expr {acos(-1)}]",
    "proc fib {n} {if {$n < 2} {return $n}; expr {[fib [expr {$n-1}]] + [fib [expr {$n-2}]]}}; fib 16",
    "binary encode base64 {hotlink links}",
    "set d [dict create a 1 b 2]; dict set d c 3; dict keys $d",
    "regsub -all {(\\w+)@(\\w+)} {ann@x bob@y} {\\2:\\1}",
    "string map {a 1 b 2} abcabc",
    "lmap x {1 2 3 4} {expr {$x * $x}}",
    "encoding convertto utf-8 \u00e9",
    "catch {error boom} msg; set msg",
]


@case("tcl", ("libtcl8.6.a", "libz.a"), "libtcl8.6.so", package="tcl8.6-dev zlib1g-dev")
def TCL(api: Api) -> list[object]:
    import tkinter

    find_executable = api("Tcl_FindExecutable", None, c_char_p)
    create = api("Tcl_CreateInterp", c_void_p)
    eval_ = api("Tcl_Eval", c_int, c_void_p, c_char_p)
    result = api("Tcl_GetStringResult", c_char_p, c_void_p)
    delete = api("Tcl_DeleteInterp", None, c_void_p)
    version = api("Tcl_GetVersion", None, ctypes.POINTER(c_int), ctypes.POINTER(c_int), ctypes.POINTER(c_int),
                  ctypes.POINTER(c_int))
    find_executable(None)
    interp = create()
    ref = tkinter.Tcl()                               # Python's own Tcl (the shared library)
    out: list[object] = []
    for script in SCRIPTS:
        assert eval_(interp, script.encode()) == 0, result(interp)
        got = result(interp).decode()
        assert got == ref.eval(script), script
        out.append(got)
    assert eval_(interp, b"error {kaboom}") == 1 and result(interp) == b"kaboom"   # TCL_ERROR
    v = [c_int() for _ in range(4)]
    version(*map(ctypes.byref, v))
    assert (v[0].value, v[1].value) == (8, 6)
    delete(interp)
    return out + [[x.value for x in v]]


class FfiType(ctypes.Structure):
    _fields_ = [("size", c_size_t), ("alignment", ctypes.c_ushort), ("type", ctypes.c_ushort),
                ("elements", c_void_p)]


@case("ffi", "libffi.a", "libffi.so.8", package="libffi-dev")
def FFI(api: Api) -> list[object]:
    prep_cif = api("ffi_prep_cif", c_int, c_void_p, c_int, c_uint, c_void_p, c_void_p)
    call = api("ffi_call", None, c_void_p, c_void_p, c_void_p, c_void_p)
    closure_alloc = api("ffi_closure_alloc", c_void_p, c_size_t, ctypes.POINTER(c_void_p))
    prep_closure = api("ffi_prep_closure_loc", c_int, c_void_p, c_void_p, c_void_p, c_void_p, c_void_p)
    closure_free = api("ffi_closure_free", None, c_void_p)

    def type_addr(name: str) -> int:
        if api.kind == "shared":
            return ctypes.addressof(FfiType.in_dll(api.target, name))
        return int(api.target.address(name))

    t_double, t_sint64, t_pointer = (type_addr(f"ffi_type_{n}") for n in ("double", "sint64", "pointer"))
    assert FfiType.from_address(t_double).size == 8 and FfiType.from_address(t_double).type == 3
    libm, libc = ctypes.CDLL("libm.so.6"), ctypes.CDLL(None)
    FFI_DEFAULT_ABI = 2                                # FFI_UNIX64
    out: list[object] = []

    # hypot(double, double) through ffi_call
    cif = buf(64)
    args = (c_void_p * 2)(t_double, t_double)
    assert prep_cif(cif, FFI_DEFAULT_ABI, 2, t_double, args) == 0
    for x, y in ((3.0, 4.0), (5.0, 12.0), (1e-300, 1e-300)):
        a, b, r = c_double(x), c_double(y), c_double()
        values = (c_void_p * 2)(ctypes.addressof(a), ctypes.addressof(b))
        call(cif, ctypes.cast(libm.hypot, c_void_p), ctypes.byref(r), values)
        assert r.value == math.hypot(x, y)
        out.append(r.value)

    # long strtol(const char *, char **, int): pointer and integer arguments
    cif2 = buf(64)
    args2 = (c_void_p * 3)(t_pointer, t_pointer, type_addr("ffi_type_sint32"))
    assert prep_cif(cif2, FFI_DEFAULT_ABI, 3, t_sint64, args2) == 0
    text = buf(b"  -12345xyz")
    s, end, base, r64 = c_char_p(ctypes.addressof(text)), c_void_p(), c_int(10), ctypes.c_int64()
    p_end = c_void_p(ctypes.addressof(end))
    values3 = (c_void_p * 3)(ctypes.addressof(s), ctypes.addressof(p_end), ctypes.addressof(base))
    call(cif2, ctypes.cast(libc.strtol, c_void_p), ctypes.byref(r64), values3)
    assert r64.value == -12345 and end.value == ctypes.addressof(text) + 8
    out.append(r64.value)

    # a closure: libffi writes a trampoline that calls back into Python
    cif3 = buf(64)
    args3 = (c_void_p * 1)(t_double)
    assert prep_cif(cif3, FFI_DEFAULT_ABI, 1, t_double, args3) == 0

    @api.callback(None, c_void_p, c_void_p, ctypes.POINTER(c_void_p), c_void_p)
    def handler(_cif, ret, argv, user):
        c_double.from_address(ret).value = c_double.from_address(argv[0]).value * 2 + user

    code = c_void_p()
    closure = closure_alloc(256, ctypes.byref(code))
    assert closure and code.value
    assert prep_closure(closure, cif3, handler, 7, code) == 0
    fn = ctypes.CFUNCTYPE(c_double, c_double)(code.value)
    got = [fn(x) for x in (0.0, 1.5, -4.25)]
    assert got == [7.0, 10.0, -1.5]
    closure_free(closure)
    return out + got


@case("gpg-error", "libgpg-error.a", "libgpg-error.so.0", package="libgpg-error-dev")
def GPG_ERROR(api: Api) -> list[object]:
    strerror = api("gpg_strerror", c_char_p, c_uint)
    strsource = api("gpg_strsource", c_char_p, c_uint)
    from_errno = api("gpg_err_code_from_errno", c_uint, c_int)
    to_errno = api("gpg_err_code_to_errno", c_int, c_uint)
    check_version = api("gpgrt_check_version", c_char_p, c_char_p)
    out: list[object] = [check_version(None)]
    assert check_version(b"1.0") is not None and check_version(b"99.0") is None
    for e in (2, 13, 22, 28):                           # ENOENT, EACCES, EINVAL, ENOSPC
        code = from_errno(e)
        assert to_errno(code) == e
        assert strerror(code).decode() == os.strerror(e)
        out.append((code, strerror(code)))
    for err in (0, 1, 11, 58, (2 << 24) | 11, (5 << 24) | 58):    # (source << 24) | code
        out.append((strerror(err), strsource(err)))
    assert strerror(58) == b"No data" and strsource((5 << 24) | 58) == b"Pinentry"
    return out


@pytest.mark.parametrize("c", [UUID, SQLITE3, UV, TCL, FFI, GPG_ERROR], ids=lambda c: c.name)
def test_system_archive(run_case, c):
    run_case(c)
