"""COMMON symbols (issue 13, point 4): only a COMMON symbol's value is an
alignment; the other globals of the same object keep their meaning (OpenSSL's
libcrypto.a failed with "common symbol ... has alignment 48")."""
from __future__ import annotations

import ctypes

import hotlink

SOURCE = r"""
int table[12];                        /* COMMON, 48 bytes, alignment 4 (-fcommon) */
double big_aligned[3] __attribute__((aligned(32)));   /* COMMON, alignment 32 */
int pad[12] = {1};                    /* .data offset 0 */
int initialised = 48;                 /* .data offset 48: its value is not an alignment */
long filler(void) { return 48; }      /* .text at offset 0 */
long fill(int n) {
    for (int i = 0; i < 12; i++) table[i] = n + i;
    big_aligned[2] = n * 0.5;
    return (long)table[11] + initialised;
}
long aligned_ok(void) { return ((long)big_aligned & 31) == 0 && ((long)table & 3) == 0; }
"""


def test_common_symbols_beside_ordinary_globals(session, compile_c):
    obj = compile_c(SOURCE, ["-fPIC", "-fcommon"])
    from tests.conftest import elf_symbols
    syms = elf_symbols(obj)
    assert syms["table"][1] == "SHN_COMMON" and syms["initialised"][1] != "SHN_COMMON"
    lib = session.library("c")
    lib.add(obj)
    assert lib.function("fill", ctypes.c_long, [ctypes.c_int])(100) == 111 + 48
    assert lib.function("aligned_ok", ctypes.c_long)() == 1
    table = (ctypes.c_int * 12).from_address(lib.address("table"))
    assert list(table) == list(range(100, 112))
    assert ctypes.c_double.from_address(lib.address("big_aligned") + 16).value == 50.0


def test_common_symbols_in_an_archive_member_pulled_lazily(session, compile_c, make_archive):
    member = compile_c(SOURCE, ["-fPIC", "-fcommon"], name="member")
    other = compile_c("int unrelated(void) { return 5; }", "-fPIC", name="other")
    archive = make_archive([other, member])
    lib = session.library("a")
    used = session.memory().used
    u = lib.add(archive)
    assert lib.function("unrelated", ctypes.c_int)() == 5
    before_pull = session.memory().used
    assert lib.function("fill", ctypes.c_long, [ctypes.c_int])(1) == 12 + 48   # pulls the member
    assert session.memory().used > before_pull
    u.remove()
    assert session.synchronize(10)
    assert session.memory().used == used


def test_an_impossible_common_alignment_is_refused(session, toolchain):
    asm = toolchain.workdir / "c.s"
    asm.write_text(".comm odd, 8, 48\n")     # alignment 48: not a power of two
    obj = toolchain.workdir / "c.o"
    import subprocess
    r = subprocess.run(["as", str(asm), "-o", str(obj)], capture_output=True, text=True)
    if r.returncode != 0:       # gas itself refuses it on some versions
        assert "alignment" in r.stderr
        return
    lib = session.library("bad")
    try:
        lib.add(obj)
    except hotlink.LinkError as e:
        assert "odd" in str(e) and "48" in str(e)
    else:
        raise AssertionError("a 48-byte COMMON alignment was accepted")
