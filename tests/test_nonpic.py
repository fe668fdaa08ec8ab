"""Objects compiled without -fPIC (issue 13, point 5): ``R_X86_64_32`` /
``R_X86_64_32S`` absolute addresses need the code and data below 2 GiB.
hotlink places every unit holding such an object there, with its GOT
entries, far-call stubs (its calls to libc) and entry stubs; memory and
the low mappings go back on removal, a fork() child gets its own copy, and
when no low memory can be had the error names the object and says -fPIC."""
from __future__ import annotations

import ctypes
import os
import re
import subprocess
import sys
import textwrap
from ctypes import c_char_p, c_int, c_uint32, c_ulong
from pathlib import Path

import pytest

import hotlink
from conftest import reloc_types, run_tool
from hotlink import arena as arena_module

LOW = 1 << 31
NOPIC = "-fno-pic -mcmodel=small"

NONPIC = r"""
#include <stdio.h>
#include <string.h>

int counter = 5;
static int table[16] = {1, 2, 3, 4};
char message[64];

static int add(int a, int b) { return a + b; }
static int mul(int a, int b) { return a * b; }
int (*ops[])(int, int) = {add, mul};                  /* function pointers in data: R_X86_64_64 */

int apply(int op, int a, int b) { return ops[op](a, b); }   /* ops(,%rax,8): R_X86_64_32S */

int classify(int x, int y) {                          /* a jump table: jmp *.L(,%rax,8), R_X86_64_32S */
    switch (x) {
    case 0: return y + 10;
    case 1: return y * 21;
    case 2: return y - 32;
    case 3: return y ^ 43;
    case 4: return y << 4;
    case 5: return y / 65;
    case 6: return counter + y;
    default: return -1;
    }
}

int lookup(int i) { return table[i & 15]; }
int *counter_address(void) { return &counter; }       /* mov $counter, %eax: R_X86_64_32 */
int bump(void) { return ++counter; }

const char *format(int x) {
    snprintf(message, sizeof message, "value=%d len=%zu", x, strlen(message + 40));
    return message;
}
int say(int x) { int n = printf("nonpic says %d\n", x); fflush(NULL); return n; }
"""


def classify_model(x: int, y: int, counter: int) -> int:
    return {0: y + 10, 1: y * 21, 2: y - 32, 3: y ^ 43, 4: y << 4, 5: int(y / 65), 6: counter + y}.get(x, -1)


CALLER = r"""
extern int classify(int, int);
extern int apply(int, int, int);
extern int counter;
extern const char *format(int);
int call_nonpic(int x) { return classify(x % 8, x) + apply(1, x, 2) + counter; }
int *where_counter(void) { return &counter; }
const char *formatted(int x) { return format(x); }
"""


def arena_maps() -> list[tuple[int, int, str]]:
    """(start, end, perms) of the process's hotlink arena mappings."""
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            if "hotlink-arena" in line:
                rng, perms = line.split()[:2]
                lo, hi = (int(x, 16) for x in rng.split("-"))
                out.append((lo, hi, perms))
    return out


def low_maps() -> list[tuple[int, int, str]]:
    return [m for m in arena_maps() if m[0] < LOW]


def has_jump_table(obj: Path) -> bool:
    """objdump shows an indirect jmp through a table in .rodata, relocated with 32S."""
    text = run_tool(["objdump", "-dr", obj])
    return re.search(r"jmp\s+\*0x0\(,%r\w+,8\)\s*\n\s*\w+: R_X86_64_32S\s+\.rodata", text) is not None


@pytest.fixture
def nonpic(compile_c) -> Path:
    obj = compile_c(NONPIC, NOPIC, name="nonpic")
    assert {"R_X86_64_32", "R_X86_64_32S", "R_X86_64_64", "R_X86_64_PLT32"} <= reloc_types(obj)
    assert has_jump_table(obj)
    return obj


def test_nonpic_object_runs_below_2gib(session, nonpic, capfd):
    session.synchronize()
    before = session.memory()
    maps_before = arena_maps()
    lib = session.library("nonpic")
    unit = lib.add(nonpic)
    for name in ("classify", "apply", "format", "say", "counter", "message", "ops"):
        assert 0 < lib.address(name) < LOW, (name, hex(lib.address(name)))
    counter = ctypes.c_int.from_address(lib.address("counter"))
    # the jump table, every case
    classify = lib.function("classify", c_int, [c_int, c_int])
    for x in range(-1, 9):
        assert classify(x, 1000) == classify_model(x, 1000, counter.value), x
    # function pointers in data (R_X86_64_64) reached through an R_X86_64_32S index
    apply = lib.function("apply", c_int, [c_int, c_int, c_int])
    assert (apply(0, 3, 4), apply(1, 3, 4)) == (7, 12)
    assert ctypes.c_uint64.from_address(lib.address("ops")).value < LOW
    # absolute addresses (R_X86_64_32) and data
    assert lib.function("counter_address", ctypes.c_void_p)() == lib.address("counter")
    assert lib.function("lookup", c_int, [c_int])(2) == 3
    assert lib.function("bump", c_int)() == 6 and counter.value == 6
    # libc through far-call stubs that are themselves below 2 GiB
    assert lib.function("format", c_char_p, [c_int])(42) == b"value=42 len=0"
    capfd.readouterr()
    assert lib.function("say", c_int, [c_int])(7) == len("nonpic says 7\n")
    assert capfd.readouterr().out == "nonpic says 7\n"
    _, low_stubs = session.tables.zone(True)
    assert len(low_stubs.entries) >= 3 and all(a < LOW for a, _ in low_stubs.entries.values())
    assert session.memory().stubs - before.stubs == len(low_stubs.entries)
    assert low_maps(), "the low region is mapped"
    # removal: memory and the low mappings go back
    unit.remove()
    assert session.synchronize(5)
    after = session.memory()
    assert (after.used, after.mapped, after.got_entries, after.stubs) == \
        (before.used, before.mapped, before.got_entries, before.stubs)
    assert low_maps() == [] and len(arena_maps()) == len(maps_before)
    assert session.arena.low_regions == []


def test_pic_objects_with_debug_info_stay_near_libc(session, compile_c):
    """Debug sections use R_X86_64_32 for offsets; they are never placed, so
    they do not send an object below 2 GiB."""
    obj = compile_c(MEMBER_C, "-fPIC -g", name="pic_debug")
    assert "R_X86_64_32" in reloc_types(obj)
    lib = session.library("debug")
    lib.add(obj)
    assert lib.address("c_late") > LOW and session.arena.low_regions == []


def test_called_from_a_pic_unit(session, nonpic, compile_c):
    pic = compile_c(CALLER, "-fPIC", name="caller")
    lib = session.library("nonpic")
    u = lib.add(nonpic)
    session.synchronize()
    users = session.library("users", link_order=[lib])
    caller = users.add(pic)
    assert users.address("call_nonpic") > LOW, "PIC code stays near libc"
    call = users.function("call_nonpic", c_int, [c_int])
    for x in range(20):
        assert call(x) == classify_model(x % 8, x, 5) + x * 2 + 5
    assert users.function("where_counter", ctypes.c_void_p)() == lib.address("counter")
    assert users.function("formatted", c_char_p, [c_int])(9) == b"value=9 len=0"
    with pytest.raises(hotlink.DependencyError):
        u.remove()
    caller.remove()
    u.remove()
    assert session.synchronize(5)
    m = session.memory()
    assert (m.used, m.stubs, m.got_entries) == (0, 0, 0)
    assert {k: v for k, v in m.pools.items() if k.startswith("low ")} == \
        {"low code": (0, 0), "low rodata": (0, 0), "low data": (0, 0)}
    assert low_maps() == []


PATCH_V = r"""
int version(void) {{ return {v}; }}
unsigned long version_address(void) {{ return (unsigned long)&version; }}   /* R_X86_64_32 */
"""

PATCH_USER = r"""
extern int version(void);
unsigned long user_sees(void) { return (unsigned long)&version; }    /* R_X86_64_32: the entry stub */
int user_calls(void) { return version() * 10; }
"""


def test_patchable_library_entry_stubs_are_low(session, compile_c):
    v1 = compile_c(PATCH_V.format(v=1), NOPIC, name="v1")
    v2 = compile_c(PATCH_V.format(v=2), NOPIC, name="v2")
    lib = session.library("kernel", patchable=True)
    u1 = lib.add(v1)
    stub = lib.address("version")
    assert stub < LOW
    user = lib.add(compile_c(PATCH_USER, NOPIC, name="user"))
    assert lib.function("user_sees", c_ulong)() == stub
    assert lib.function("user_calls", c_int)() == 10
    u2 = lib.replace(u1, v2)
    assert lib.address("version") == stub and lib.function("user_calls", c_int)() == 20
    user.remove()
    u2.remove()
    assert session.synchronize(5) and session.memory().used == 0 and low_maps() == []


MEMBER_A = "extern int b_value(int); int a_entry(int x) { static int seen; seen += x; return b_value(x) + seen; }\n"
MEMBER_B = "int b_value(int x) { switch (x) { case 0: return 5; case 1: return 8; case 2: return 13; " \
           "case 3: return 21; case 4: return 34; default: return x; } }\n"
MEMBER_C = "int c_late(int x) { return x * 3; }\n"      # PIC, pulled later


def test_archive_unit_stays_low_when_members_are_pulled_later(session, compile_c, make_archive):
    a = compile_c(MEMBER_A, NOPIC, name="mem_a")
    b = compile_c(MEMBER_B, NOPIC, name="mem_b")
    c = compile_c(MEMBER_C, "-fPIC", name="mem_c")
    archive = make_archive([a, b, c], name="mixed")
    lib = session.library("arch")
    unit = lib.add(archive)
    assert lib.function("a_entry", c_int, [c_int])(3) == 21 + 3
    assert lib.address("a_entry") < LOW and lib.address("b_value") < LOW
    # a later pull into the same unit goes below 2 GiB too, PIC or not
    assert lib.address("c_late") < LOW and lib.function("c_late", c_int, [c_int])(5) == 15
    unit.remove()
    assert session.synchronize(5) and session.memory().used == 0 and low_maps() == []


# --- the unsigned kind: R_X86_64_32 zero-extends --------------------------------

ASM32 = r"""
    .data
    .globl table32
table32:
    .long target_a              # R_X86_64_32 in data
    .long target_b + 4
    .long high_abs              # an absolute address between 2 and 4 GiB: fits unsigned
    .globl target_b
target_b:
    .quad 0
    .text
    .globl target_a, get32
target_a:
get32:
    movl $target_b, %eax        # R_X86_64_32, zero-extended into %rax
    ret
"""

ASM32S = r"""
    .text
    .globl get32s
get32s:
    movq $high_abs, %rax        # R_X86_64_32S: sign-extended, so 0xC0000000 does not fit
    ret
"""


def assemble(tmp_path: Path, source: str, name: str) -> Path:
    src, obj = tmp_path / f"{name}.s", tmp_path / f"{name}.o"
    src.write_text(textwrap.dedent(source))
    run_tool(["as", "--64", src, "-o", obj])
    return obj


def test_unsigned_32bit_relocations(session, tmp_path):
    obj = assemble(tmp_path, ASM32, "abs32")
    assert reloc_types(obj) == {"R_X86_64_32"}
    session.define({"high_abs": 0xC0000000})
    lib = session.library("abs32")
    lib.add(obj)
    table = lib.address("table32")
    words = [c_uint32.from_address(table + 4 * i).value for i in range(3)]
    assert words == [lib.address("target_a"), lib.address("target_b") + 4, 0xC0000000]
    assert lib.function("get32", c_ulong)() == lib.address("target_b") < LOW


def test_signed_32bit_relocation_out_of_range_says_so(session, tmp_path):
    obj = assemble(tmp_path, ASM32S, "abs32s")
    assert reloc_types(obj) == {"R_X86_64_32S"}
    session.define({"high_abs": 0xC0000000})
    lib = session.library("abs32s")
    with pytest.raises(hotlink.UnsupportedRelocationError, match=r"R_X86_64_32S to high_abs .*below 2 GiB.*-fPIC"):
        lib.add(obj)
    assert lib.units == [] and session.memory().used == 0 and low_maps() == []


# --- when no low memory can be had ---------------------------------------------

def assert_refused(session: hotlink.Session, obj: Path, why: str) -> None:
    lib = session.library("refused")
    with pytest.raises(hotlink.UnsupportedRelocationError) as info:
        lib.add(obj)
    msg = str(info.value)
    assert obj.name in msg and "not position-independent" in msg and "compile it with -fPIC" in msg, msg
    assert re.search(why, msg), msg
    assert lib.units == [] and "classify" not in lib
    m = session.memory()
    assert (m.used, m.stubs, m.got_entries) == (0, 0, 0) and low_maps() == []
    lib.remove()


@pytest.mark.parametrize("bad,error", [(-1, ValueError), (12345, ValueError), (2 << 30, ValueError),
                                       ("1G", TypeError)])
def test_low_arena_size_is_checked(bad, error):
    with pytest.raises(error, match="low_arena_size"):
        hotlink.Session(low_arena_size=bad)


def test_low_memory_turned_off(nonpic):
    with hotlink.Session(low_arena_size=0) as s:
        assert_refused(s, nonpic, r"turned off \(Session\(low_arena_size=0\)\)")


def test_low_address_range_taken(session, nonpic, monkeypatch):
    """A process whose low address space is all taken: every mapping below
    2 GiB fails (hint or MAP_32BIT)."""
    real = arena_module._mmap

    def no_low(addr, size, prot, flags, fd, off):
        if (addr is not None and addr < LOW) or flags & arena_module.MAP_32BIT:
            return arena_module.MAP_FAILED
        return real(addr, size, prot, flags, fd, off)

    monkeypatch.setattr(arena_module, "_mmap", no_low)
    assert_refused(session, nonpic, r"no free address range .* between 1 GiB and 2 GiB")
    monkeypatch.setattr(arena_module, "_mmap", real)
    lib = session.library("works-again")
    lib.add(nonpic)
    assert lib.function("lookup", c_int, [c_int])(0) == 1


BIG = "static char big[1 << 20]; char *big_at(int i) { return &big[i]; }\n"


def test_low_region_exhausted(compile_c, nonpic):
    big = compile_c(BIG, NOPIC, name="big_nonpic")
    with hotlink.Session(low_arena_size=256 << 10) as s:
        assert_refused(s, big, r"exhausted: .* 256 KiB allowed")
        lib = s.library("small")                    # what fits still links
        u = lib.add(nonpic)
        assert lib.function("apply", c_int, [c_int, c_int, c_int])(1, 6, 7) == 42
        u.remove()
        assert s.synchronize(5) and s.memory().used == 0 and low_maps() == []


STDERR_USER = "#include <stdio.h>\nint complain(void) { return fputs(\"x\", stderr); }\n"


def test_nonpic_reference_to_libc_data_is_refused_clearly(session, compile_c):
    """``stderr`` lives in libc, beyond reach of low code's PC32 (a static
    linker would use a copy relocation)."""
    obj = compile_c(STDERR_USER, NOPIC, name="uses_stderr")
    lib = session.library("stderr")
    with pytest.raises(hotlink.UnsupportedRelocationError, match=r"uses_stderr.*stderr.*not position-independent.*-fPIC"):
        lib.add(obj)
    assert session.memory().used == 0 and low_maps() == []


# --- fork --------------------------------------------------------------------

FORK = r"""
import ctypes, os, sys, hotlink
LOW = 1 << 31
s = hotlink.Session()
lib = s.library("nonpic")
u = lib.add(sys.argv[1])
bump = lib.function("bump", ctypes.c_int)
fmt = lib.function("format", ctypes.c_char_p, [ctypes.c_int])
assert lib.address("bump") < LOW and bump() == 6
s.synchronize()
before = s.memory()
for child_does in ("calls", "removes_and_adds"):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            assert [bump() for _ in range(3)] == [7, 8, 9], "the child's copy"
            assert fmt(5) == b"value=5 len=0"
            if child_does == "removes_and_adds":
                u.remove()
                assert s.synchronize(5) and s.memory().used == 0
                assert not [l for l in open("/proc/self/maps") if "hotlink-arena" in l and int(l.split("-")[0], 16) < LOW]
                k = s.library("k")
                k.add(sys.argv[1])
                assert k.function("bump", ctypes.c_int)() == 6
            os.write(w, b"ok")
        except BaseException as e:
            os.write(w, repr(e).encode())
        os._exit(0)
    os.close(w)
    msg = os.read(r, 1000)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert msg == b"ok" and status == 0, (child_does, msg, status)
    assert bump() == 7, "the parent's data is its own"
    ctypes.c_int.from_address(lib.address("counter")).value = 6
    after = s.memory()
    assert (after.used, after.mapped) == (before.used, before.mapped), (before, after)
u.remove()
assert s.synchronize(5) and s.memory().used == 0
print("parent ok")
"""


def test_fork_copies_the_low_region(nonpic, tmp_path):
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    env.pop("HOTLINK_CACHE_DIR", None)
    proc = subprocess.run([sys.executable, "-c", FORK, str(nonpic)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 0 and "parent ok" in proc.stdout, proc.stdout + proc.stderr


# --- the arena's low zone ---------------------------------------------------------

def test_arena_low_zone_regions_pools_and_release():
    """Low pools take chunks only from low regions (1-2 GiB, never touching
    one another), with their pool's protection; a block freed through the
    pool of its kind in the other zone lands in its own; the regions are
    unmapped once the last low block goes."""
    from hotlink.arena import CODE, DATA, LOW_FLOOR, Arena
    a = Arena(1 << 20)
    try:
        low = a.zone(True)
        code = low[CODE].alloc(64, 16)
        a.write(code, b"\xb8\x2a\x00\x00\x00\xc3")            # mov $42, %eax; ret
        assert ctypes.CFUNCTYPE(c_int)(code)() == 42
        big = [low[DATA].alloc(40 << 20, 16) for _ in range(3)]  # more than one 64 MiB region
        near = a.pools[DATA].alloc(4096, 16)
        assert near > LOW and a.owner(near) is a.pools[DATA]
        assert len(a.low_regions) >= 2
        spans = sorted((r.base, r.end) for r in a.low_regions)
        assert all(LOW_FLOOR <= s and e <= LOW for s, e in spans)
        assert all(e < s2 for (_, e), (s2, _) in zip(spans, spans[1:])), "regions never touch"
        assert a.owner(code) is low[CODE] and all(a.owner(b) is low[DATA] for b in big)
        perms = {lo: p for lo, _, p in low_maps()}
        assert perms[code & -(64 << 10)].startswith("r-x")
        for b in big:                                          # freed through the near pool of the kind
            a.pools[DATA].free(b, 40 << 20)
        assert low[DATA].used == 0 and low[DATA].mapped <= 2 * (64 << 10) and a.pools[DATA].used == 4096
        assert a.low_regions, "a low code block is still live"
        low[CODE].free(code, 64)
        assert a.low_regions == [] and low_maps() == [] and sum(p.mapped for p in low) == 0
        a.pools[DATA].free(near, 4096)
        assert a.zone(True)[CODE].alloc(16, 16) < LOW          # the zone comes back on demand
    finally:
        a.close()
    assert low_maps() == []


# --- a real non-PIC archive: Debian's libpython3.11.a ---------------------------

LIBPYTHON_A = Path("/usr/lib/x86_64-linux-gnu/libpython3.11.a")   # libpython3.11-dev, built without -fPIC


class FuncDef(ctypes.Structure):
    _fields_ = [("hash", ctypes.c_void_p), ("name", c_char_p), ("hash_bits", c_int), ("seed_bits", c_int)]


def test_debian_libpython_pyhash_matches_this_interpreter(session, tmp_path):
    """``pyhash.o`` of Debian's libpython3.11.a (non-PIC: ``R_X86_64_32`` to
    its hash definition, ``32S`` jump tables), pulled lazily from the
    archive, hashes bytes and floats exactly as this interpreter does once
    it is given the same secret."""
    member = tmp_path / "pyhash.o"
    member.write_bytes(subprocess.run(["ar", "p", LIBPYTHON_A, "pyhash.o"], capture_output=True,
                                      check=True).stdout)
    assert {"R_X86_64_32", "R_X86_64_32S"} <= reloc_types(member)
    session.synchronize()
    before = session.memory()
    lib = session.library("libpython")
    unit = lib.add(LIBPYTHON_A)
    hash_bytes = lib.function("_Py_HashBytes", ctypes.c_ssize_t, [c_char_p, ctypes.c_ssize_t])
    assert lib.address("_Py_HashBytes") < LOW and "_Py_HashDouble" in unit.symbols
    secret = ctypes.c_char.in_dll(ctypes.pythonapi, "_Py_HashSecret")     # a 24-byte union
    ctypes.memmove(lib.address("_Py_HashSecret"), ctypes.addressof(secret), 24)
    samples = [b"", b"a", b"hotlink", bytes(range(256)), b"x" * 1000] + [bytes([i]) * i for i in range(1, 40)]
    for b in samples:
        assert hash_bytes(b, len(b)) == hash(b), b
    hash_double = lib.function("_Py_HashDouble", ctypes.c_ssize_t, [ctypes.py_object, ctypes.c_double])
    for v in (0.0, -0.0, 1.0, -1.0, 1.5, 2.0 ** 61, -1e308, 1e-300, float("inf"), float("-inf"), float("nan")):
        assert hash_double(v, v) == hash(v), v
    funcdef = lib.function("PyHash_GetFuncDef", ctypes.POINTER(FuncDef))()
    assert ctypes.addressof(funcdef.contents) < LOW
    assert (funcdef.contents.name, funcdef.contents.hash_bits, funcdef.contents.seed_bits) == (b"siphash13", 64, 128)
    unit.remove()
    assert session.synchronize(5)
    after = session.memory()
    assert (after.used, after.stubs, after.got_entries) == (before.used, before.stubs, before.got_entries)
    assert low_maps() == []
