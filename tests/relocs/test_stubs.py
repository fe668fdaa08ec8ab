"""Far-call stubs: a PLT32 call or jmp, or a PC32 after a call/jmp opcode,
whose target is beyond +-2 GiB branches to a stub ``jmp *0(%rip); .quad
target`` instead.  A static link at the same addresses cannot do this: GNU
ld reports the branches as truncated."""
from __future__ import annotations

import ctypes
import struct
import subprocess
import sys
import textwrap

import pytest

import hotlink

from .toolkit import assemble, ld_link, link, relocations

FAR = 0x1000_0000_0000        # 16 TiB, never executed in this process

BRANCHES = """
    .text
    .globl text0, call_far, jmp_far, pc32_call, pc32_jmp
    .type call_far, @function
    .type jmp_far, @function
    .type pc32_call, @function
    .type pc32_jmp, @function
text0:
call_far:
    call far_fn                 # PLT32
    addl $1, %eax
    ret
jmp_far:
    jmp far_fn                  # PLT32
pc32_call:
    .byte 0xe8                  # call rel32 with a PC32 relocation, as older assemblers write it
    .reloc ., R_X86_64_PC32, far_fn - 4
    .long 0
    addl $2, %eax
    ret
pc32_jmp:
    .byte 0xe9                  # jmp rel32
    .reloc ., R_X86_64_PC32, far_fn - 4
    .long 0
"""


def stub_bytes(target: int) -> bytes:
    return b"\xff\x25\x00\x00\x00\x00" + struct.pack("<Q", target)


def test_far_branches_go_through_one_stub(tmp_path) -> None:
    obj = assemble(tmp_path, BRANCHES)
    rels = relocations(obj)
    assert {r.kind for r in rels} == {"R_X86_64_PLT32", "R_X86_64_PC32"}
    with hotlink.Session() as s:
        linked = link(s, obj, {".text": "text0"}, {"far_fn": FAR})
        text = linked.sections[".text"]
        assert abs(FAR - text) > 1 << 31
        stubs = set()
        for r in rels:
            target = text + r.offset + 4 + linked.value(r)
            assert ctypes.string_at(target, 14) == stub_bytes(FAR), f"{r}: not a stub to far_fn"
            stubs.add(target)
        assert len(stubs) == 1 and s.memory().stubs == 1, "one stub per target, shared"
        ref = ld_link(obj, linked.sections, linked.symbols)
        assert not ref.ok and "relocation truncated to fit: R_X86_64_PLT32" in ref.errors
        assert "relocation truncated to fit: R_X86_64_PC32" in ref.errors


# Runs in a child: a wrong branch would crash the test run.
EXECUTE = """
import ctypes, sys, hotlink
libc = ctypes.CDLL(None)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
page = libc.mmap(0x08000000, 4096, 7, 0x22 | 0x100000, -1, 0)   # rwx, private anonymous, FIXED_NOREPLACE
assert page == 0x08000000, page
ctypes.memmove(page, b"\\xb8\\x2a\\x00\\x00\\x00\\xc3", 6)          # mov $42, %eax; ret
with hotlink.Session() as s:
    s.define({"far_fn": page})
    lib = s.library("stubs")
    lib.add(sys.argv[1])
    assert abs(lib.address("text0") - page) > 1 << 31
    print([lib.function(n, ctypes.c_int)() for n in ("call_far", "jmp_far", "pc32_call", "pc32_jmp")])
"""


def test_far_branches_reach_their_target(tmp_path) -> None:
    obj = assemble(tmp_path, BRANCHES)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(EXECUTE), str(obj)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[43, 42, 44, 42]"


@pytest.mark.parametrize("source, kind", [
    # a call to far_fn + 8: a stub stands for far_fn only
    (".byte 0xe8\n.reloc ., R_X86_64_PC32, far_fn + 4\n.long 0", "R_X86_64_PC32"),
    # a data reference: no stub can help
    (".long far_fn - .", "R_X86_64_PC32"),
], ids=["call-with-addend", "data"])
def test_far_pc32_that_no_stub_fixes_fails(tmp_path, source: str, kind: str) -> None:
    obj = assemble(tmp_path, f".text\n.globl text0\ntext0:\nret\n{source}\nret\n")
    rel = next(r for r in relocations(obj) if r.kind == kind)
    with hotlink.Session() as s:
        s.define({"far_fn": FAR})
        with pytest.raises(hotlink.LinkError) as info:
            s.library("relocs").add(obj)
        for part in (f"{obj.name}:.text+{rel.offset:#x}", kind, "far_fn"):
            assert part in str(info.value)
        assert s.memory().used == 0 and s.memory().stubs == 0


def test_failed_add_releases_its_stubs(tmp_path) -> None:
    """A far call needs a stub, a later field overflows: nothing stays."""
    obj = assemble(tmp_path, """
        .text
        .globl text0
    text0:
        call far_fn
        ret
        .data
        .globl anchor
    anchor:
        .reloc ., R_X86_64_PC16, anchor + 40000
        .word 0
    """)
    with hotlink.Session() as s:
        s.define({"far_fn": FAR})
        with pytest.raises(hotlink.LinkError, match="R_X86_64_PC16 to anchor"):
            s.library("relocs").add(obj)
        m = s.memory()
        assert (m.used, m.stubs, m.got_entries) == (0, 0, 0)
