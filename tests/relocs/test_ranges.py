"""Range checks: every narrow kind at both ends of its range and one past
them.  In range, hotlink writes what the psABI formula and GNU ld give; out
of range, ``add`` raises a LinkError naming object, section, offset, kind and
symbol, and leaves the session as it was.

Signed kinds (PC8, PC16, PC32, PLT32, 32S, GOTPC32, GOTPCREL, GOT32) check
the signed range, unsigned ones (8, 16, 32, SIZE32) the unsigned range, as
mold and LLVM JITLink do.  (A PLT32 out of range goes through a far-call
stub instead: test_stubs.py.)  GNU ld checks 8, 16 and PC16 only as bit fields
(either range), so for those three it is the reference for in-range values
only; for the others it refuses what hotlink refuses.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

import hotlink

from .toolkit import assemble, expected, ld_link, link, relocations


@dataclass
class Field:
    """A fixture with one field of ``kind`` whose value is ``value``: an
    absolute symbol ``v`` (``define``) or, with ``anchor``, the addend of a
    reference to the field's own address (so S + A - P is the addend)."""
    kind: str
    section: str
    source: str
    define: bool = True

    def asm(self, value: int) -> str:
        return self.source.format(value=value)


def data_field(kind: str, directive: str) -> Field:
    return Field(kind, ".data", f"""
        .text
        .globl text0
    text0:
        ret
        .data
        .globl data0
    data0:
        .quad 0
        {directive}
    """)


def self_relative(kind: str, width: str) -> Field:
    """``.reloc`` to the field itself plus the value: S + A - P == value."""
    return Field(kind, ".data", f"""
        .text
        .globl text0
    text0:
        ret
        .data
        .globl data0, anchor
    data0:
        .quad 0
    anchor:
        .reloc ., {kind}, anchor + {{value}}
        {width} 0
    """, define=False)


FIELDS = {
    "R_X86_64_8": data_field("R_X86_64_8", ".byte v"),
    "R_X86_64_16": data_field("R_X86_64_16", ".word v"),
    "R_X86_64_32": data_field("R_X86_64_32", ".long v"),
    "R_X86_64_32S": Field("R_X86_64_32S", ".text", """
        .text
        .globl text0
    text0:
        movq $v, %rax
        ret
        .data
        .globl data0
    data0:
        .quad 0
    """),
    "R_X86_64_PC8": self_relative("R_X86_64_PC8", ".byte"),
    "R_X86_64_PC16": self_relative("R_X86_64_PC16", ".word"),
    "R_X86_64_PC32": self_relative("R_X86_64_PC32", ".long"),
    "R_X86_64_PLT32": self_relative("R_X86_64_PLT32", ".long"),
    "R_X86_64_SIZE32": Field("R_X86_64_SIZE32", ".data", """
        .text
        .globl text0
    text0:
        ret
        .data
        .globl data0, var
    data0:
        .quad 0
        .reloc ., R_X86_64_SIZE32, var + {value} - 16
        .long 0
    var:
        .zero 16
        .size var, 16
    """, define=False),
}

IN_RANGE = [
    ("R_X86_64_8", 0), ("R_X86_64_8", 255),
    ("R_X86_64_16", 0), ("R_X86_64_16", 0xFFFF),
    ("R_X86_64_32", 0), ("R_X86_64_32", 0xFFFF_FFFF),
    ("R_X86_64_32S", 0x7FFF_FFFF), ("R_X86_64_32S", -0x8000_0000),
    ("R_X86_64_32S", 0xFFFF_FFFF_8000_0000),          # the same, as a 64-bit address: taken modulo 2**64
    ("R_X86_64_PC8", 127), ("R_X86_64_PC8", -128),
    ("R_X86_64_PC16", 32767), ("R_X86_64_PC16", -32768),
    ("R_X86_64_PC32", 0x7FFF_FFFF), ("R_X86_64_PC32", -0x8000_0000),
    ("R_X86_64_PLT32", 0x7FFF_FFFF), ("R_X86_64_PLT32", -0x8000_0000),
    ("R_X86_64_SIZE32", 0), ("R_X86_64_SIZE32", 0xFFFF_FFFF),
]

OUT_OF_RANGE = [
    ("R_X86_64_8", 256), ("R_X86_64_8", -1),
    ("R_X86_64_16", 0x10000), ("R_X86_64_16", -1),
    ("R_X86_64_32", 0x1_0000_0000), ("R_X86_64_32", -1),
    ("R_X86_64_32S", 0x8000_0000), ("R_X86_64_32S", -0x8000_0001),
    ("R_X86_64_PC8", 128), ("R_X86_64_PC8", -129),
    ("R_X86_64_PC16", 32768), ("R_X86_64_PC16", 40000), ("R_X86_64_PC16", -32769),
    ("R_X86_64_PC32", 0x8000_0000), ("R_X86_64_PC32", -0x8000_0001),
    ("R_X86_64_SIZE32", 0x1_0000_0000), ("R_X86_64_SIZE32", -1),
]

# the kinds whose range GNU ld checks as hotlink does
LD_AGREES = {"R_X86_64_32", "R_X86_64_32S", "R_X86_64_PC8", "R_X86_64_PC32", "R_X86_64_PLT32", "R_X86_64_SIZE32"}


def ident(kind_value: tuple[str, int]) -> str:
    kind, value = kind_value
    return f"{kind.removeprefix('R_X86_64_')}={value:#x}"


def build(tmp_path, kind: str, value: int):
    f = FIELDS[kind]
    obj = assemble(tmp_path, f.asm(value))
    rel = next(r for r in relocations(obj) if r.kind == kind)
    return f, obj, rel, ({"v": value} if f.define else {})


@pytest.mark.parametrize("kind_value", IN_RANGE, ids=ident)
def test_in_range(kind_value, tmp_path) -> None:
    kind, value = kind_value
    f, obj, rel, symbols = build(tmp_path, kind, value)
    with hotlink.Session() as s:
        linked = link(s, obj, {".text": "text0", ".data": "data0"}, symbols)
        width = len(linked.field(rel))
        assert linked.value(rel, signed=False) == value & ((1 << 8 * width) - 1) == expected(linked, rel)
        ref = ld_link(obj, linked.sections, symbols)
        assert ref.ok, ref.errors
        assert ref.sections[rel.section][rel.offset:rel.offset + width] == linked.field(rel)


@pytest.mark.parametrize("kind_value", OUT_OF_RANGE, ids=ident)
def test_out_of_range_fails_and_changes_nothing(kind_value, tmp_path) -> None:
    kind, value = kind_value
    f, obj, rel, symbols = build(tmp_path, kind, value)
    with hotlink.Session() as s:
        s.define(symbols)
        before = s.memory()
        lib = s.library("relocs")
        with pytest.raises(hotlink.LinkError) as info:
            lib.add(obj)
        message = str(info.value)
        symbol = "v" if f.define else "var" if kind == "R_X86_64_SIZE32" else "anchor"
        for part in (f"{obj.name}:{rel.section}+{rel.offset:#x}", kind, symbol):
            assert part in message, f"{part!r} missing from: {message}"
        after = s.memory()
        assert lib.units == []
        assert (after.used, after.got_entries, after.stubs) == (before.used, before.got_entries, before.stubs)
        # the session still links: the failed add left nothing half done
        lib.add(assemble(tmp_path, ".text\n.globl other\nother: ret\n", name="other"))
        assert s.memory().used > before.used
    if kind in LD_AGREES:
        placement = {".text": 0x7F00_0000_1000, ".data": 0x7F00_0010_0000}
        ref = ld_link(obj, placement, symbols)
        assert not ref.ok and re.search("relocation truncated to fit: " + kind, ref.errors), ref.errors


def test_pc16_of_40000_is_refused_not_wrapped(tmp_path) -> None:
    """The issue's case: a PC16 displacement of 40000 was written as -25536."""
    _, obj, _, _ = build(tmp_path, "R_X86_64_PC16", 40000)
    with hotlink.Session() as s:
        with pytest.raises(hotlink.UnsupportedRelocationError, match="40000 does not fit in a signed 16-bit"):
            s.library("relocs").add(obj)


def test_got_forms_overflow(tmp_path) -> None:
    """GOTPC32, GOTPCREL and GOT32 are signed 32-bit too."""
    for kind, target in (("R_X86_64_GOTPC32", "_GLOBAL_OFFSET_TABLE_"), ("R_X86_64_GOTPCREL", "var"),
                         ("R_X86_64_GOT32", "var")):
        obj = assemble(tmp_path, f"""
            .text
            .globl text0
        text0:
            ret
            .data
            .globl data0, var
        data0:
            .reloc ., {kind}, {target} + 0x100000000
            .long 0
        var:
            .quad 0
        """, name=kind)
        with hotlink.Session() as s:
            with pytest.raises(hotlink.LinkError, match=rf"{obj.name}:\.data\+0x0: {kind} to {target}"):
                s.library("relocs").add(obj)
            assert s.memory().used == 0 and s.memory().got_entries == 0
