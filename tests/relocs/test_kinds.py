"""One test per relocation kind that needs no GOT: each fixture is written in
assembly, linked by hotlink, and every field it wrote is checked twice,
against the psABI formula (from the addresses hotlink reports) and against
GNU ld linking the same object at the same addresses."""
from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass

import pytest

import hotlink

from .toolkit import WIDTH, assemble, assert_same_as_ld, expected, link, relocations

TEXT_DATA = {".text": "text0", ".data": "data0"}


@dataclass
class Case:
    kind: str
    source: str
    symbols: Callable[[hotlink.Session], dict[str, int]] = lambda s: {}
    starts: dict[str, str] | None = None

    def __str__(self) -> str:
        return self.kind.removeprefix("R_X86_64_")


def near(s: hotlink.Session) -> dict[str, int]:
    """``ext``: an absolute address inside the arena's reach (never called)."""
    return {"ext": s.arena.base + 0x12340}


CASES = [
    Case("R_X86_64_64", """
        .text
        .globl text0
    text0:
        movabs $ext+8, %rax
        movabs $var, %rcx
        ret
        .data
        .globl data0, var
    data0:
        .quad ext
        .quad ext - 16
    var:
        .quad text0 + 3
        .quad .Lhere            # a section symbol plus an offset
    .Lhere:
        .quad 0
    """, near),
    Case("R_X86_64_PC32", """
        .text
        .globl text0
    text0:
        leaq var+4(%rip), %rax
        leaq ext(%rip), %rcx
        movl .Lv(%rip), %eax    # against .data, addend off-4
        ret
        .data
        .globl data0, var
    data0:
        .long ext - .
        .long text0 - . + 100
    var:
        .quad 0
    .Lv:
        .long 0
    """, near),
    Case("R_X86_64_PLT32", """
        .text
        .globl text0, func
        .type func, @function
    text0:
        call ext
        jmp ext
        call func
        call func@PLT
        ret
    func:
        ret
    """, near, {".text": "text0"}),
    Case("R_X86_64_PC64", """
        .text
        .globl text0
    text0:
        ret
        .data
        .globl data0
    data0:
        .quad ext - .
        .quad text0 - . + 7
    """, near),
    Case("R_X86_64_32", """
        .text
        .globl text0
    text0:
        movl $v32, %eax
        ret
        .data
        .globl data0
    data0:
        .long v32
        .long v32 + 0x10
    """, lambda s: {"v32": 0x89ABCDE0}),       # fits unsigned, not signed
    Case("R_X86_64_32S", """
        .text
        .globl text0
    text0:
        movq $v32s, %rax
        movq neg(,%rax,8), %rdx
        movq $neg+4, %rcx
        ret
    """, lambda s: {"v32s": 0x7FF00000, "neg": -0x1000}, {".text": "text0"}),
    Case("R_X86_64_16", """
        .text
        .globl text0
    text0:
        movw $v16, %ax
        ret
        .data
        .globl data0
    data0:
        .word v16
        .word v16 + 1
    """, lambda s: {"v16": 0xFFE0}),
    Case("R_X86_64_8", """
        .text
        .globl text0
    text0:
        movb $v8, %al
        ret
        .data
        .globl data0
    data0:
        .byte v8
        .byte v8 + 1
    """, lambda s: {"v8": 0xF0}),
    Case("R_X86_64_PC16", """
        .text
        .globl text0
    text0:
        ret
        .data
        .globl data0, anchor, later
    data0:
    anchor:
        .quad 0
        .reloc ., R_X86_64_PC16, anchor + 30000
        .word 0
        .reloc ., R_X86_64_PC16, anchor - 30000
        .word 0
        .reloc ., R_X86_64_PC16, later + 2
        .word 0
        .skip 1000
    later:
        .byte 0
    """),
    Case("R_X86_64_PC8", """
        .text
        .globl text0
    text0:
        ret
        .data
        .globl data0, anchor, later
    data0:
    anchor:
        .quad 0
        .reloc ., R_X86_64_PC8, anchor + 100
        .byte 0
        .reloc ., R_X86_64_PC8, anchor - 100
        .byte 0
        .reloc ., R_X86_64_PC8, later
        .byte 0
        .skip 20
    later:
        .byte 0
    """),
    Case("R_X86_64_SIZE32", """
        .text
        .globl text0
    text0:
        movl $var@SIZE, %eax
        ret
        .data
        .globl data0, var
    data0:
        .reloc ., R_X86_64_SIZE32, var + 4
        .long 0
    var:
        .zero 40
        .size var, 40
    """),
    Case("R_X86_64_SIZE64", """
        .text
        .globl text0
    text0:
        movabs $var@SIZE, %rax
        ret
        .data
        .globl data0, var
    data0:
        .reloc ., R_X86_64_SIZE64, var - 1
        .quad 0
    var:
        .zero 24
        .size var, 24
    """),
    Case("R_X86_64_NONE", """
        .text
        .globl text0
    text0:
        ret
        .data
        .globl data0
    data0:
        .reloc ., R_X86_64_NONE, ext
        .byte 0xaa, 0xbb, 0xcc, 0xdd
    """, near),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_kind_matches_psabi_and_ld(case: Case, tmp_path) -> None:
    obj = assemble(tmp_path, case.source)
    rels = relocations(obj)
    assert case.kind in {r.kind for r in rels}, "the fixture must exercise its kind"
    with hotlink.Session() as s:
        linked = link(s, obj, case.starts or TEXT_DATA, case.symbols(s))
        for r in rels:
            if WIDTH[r.kind]:
                assert linked.value(r, signed=False) == expected(linked, r), r
        if case.kind == "R_X86_64_NONE":
            assert linked.read(".data") == b"\xaa\xbb\xcc\xdd"
        assert_same_as_ld(linked)


def test_size_of_a_symbol_of_another_unit(tmp_path) -> None:
    """SIZE32/SIZE64 take Z from the unit that defines the symbol."""
    table = assemble(tmp_path, """
        .data
        .globl table
    table:
        .zero 4096
        .size table, 4096
    """, name="table")
    user = assemble(tmp_path, """
        .text
        .globl text0
    text0:
        movl $table@SIZE+8, %eax
        movabs $table@SIZE-8, %rax
        ret
    """, name="user")
    with hotlink.Session() as s:
        s.library("tables").add(table)
        lib = s.library("user", link_order=[s.libraries["tables"]])
        lib.add(user)
        text = lib.address("text0")
        assert int.from_bytes(ctypes.string_at(text + 1, 4), "little") == 4096 + 8
        assert int.from_bytes(ctypes.string_at(text + 5 + 2, 8), "little") == 4096 - 8


def test_every_kind_hotlink_applies_has_a_test() -> None:
    """Each static-link kind of ``x86_64.Reloc`` (not TLS, not the dynamic
    loader's own) has a case here or in test_got.py."""
    from hotlink.x86_64 import NAMES, TLS_KINDS, Reloc

    from . import test_got
    dynamic = {Reloc.COPY, Reloc.GLOB_DAT, Reloc.JUMP_SLOT, Reloc.RELATIVE, Reloc.IRELATIVE}
    applied = {NAMES[k] for k in Reloc if k not in TLS_KINDS and k not in dynamic}
    covered = {c.kind for c in CASES} | {c.kind for c in test_got.CASES}
    assert applied <= covered, f"no test for {sorted(applied - covered)}"
