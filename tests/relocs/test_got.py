"""The GOT forms, one test per kind: GOT-base relative (GOTPC32/64,
GOTOFF64, PLTOFF64), GOT-entry relative (GOT32, GOT64, GOTPLT64, GOTPCREL,
GOTPCREL64) and the relaxable GOT loads (GOTPCRELX, REX_GOTPCRELX), relaxed
and not.

hotlink's GOT base may be any address of the unit (the psABI only needs one
per unit) and its GOT entries live in a table the session shares, so both
are read back from what hotlink wrote: GOT from the first GOTPC field, G from
the first field that uses the entry.  Every other field must then agree
with the psABI formula, the entry must hold the symbol's address, and GNU
ld, given the same GOT base (``.got.plt``) and entry (``.got``), must write
the same bytes.
"""
from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass

import pytest

import hotlink

from .toolkit import (
    Linked,
    Rel,
    assemble,
    assert_same_as_ld,
    expected,
    link,
    relocations,
    section_data,
    u64,
)

TEXT_DATA = {".text": "text0", ".data": "data0"}
FAR = 0x1000_0000_0000          # 16 TiB: far from the arena and above 4 GiB; never dereferenced

GOT_BASE_KINDS = ("R_X86_64_GOTPC32", "R_X86_64_GOTPC64")
ENTRY_FROM_GOT = ("R_X86_64_GOT32", "R_X86_64_GOT64", "R_X86_64_GOTPLT64")
ENTRY_FROM_P = ("R_X86_64_GOTPCREL", "R_X86_64_GOTPCREL64", "R_X86_64_GOTPCRELX", "R_X86_64_REX_GOTPCRELX")

# a GOTPC32 that gives GOT in %rbx: the anchor for the GOT-base relative kinds
GOT_ANCHOR = "leaq _GLOBAL_OFFSET_TABLE_(%rip), %rbx"


@dataclass
class Case:
    id: str
    kind: str
    source: str
    entry_for: str | None = None          # the symbol that needs a GOT entry
    symbols: Callable[[hotlink.Session], dict[str, int]] = lambda s: {"ext": s.arena.base + 0x12340}
    relaxed: bool = False                 # GOT loads rewritten to direct references
    as_flags: tuple[str, ...] = ()
    with_ld: bool = True

    def __str__(self) -> str:
        return self.id


def body(text: str, data: str = "") -> str:
    return f"""
        .text
        .globl text0, func
        .type func, @function
    text0:
        {text}
        ret
    func:
        ret
        .size func, .-func
        .data
        .globl data0, var
    data0:
        {data}
    var:
        .quad 42
        .size var, 8
    """


def lines(*items: str) -> str:
    return "\n        ".join(items)


CASES = [
    Case("GOTPC32", "R_X86_64_GOTPC32", body(lines(GOT_ANCHOR, "leaq _GLOBAL_OFFSET_TABLE_(%rip), %rcx"),
                                            ".long _GLOBAL_OFFSET_TABLE_ - ."), None),
    Case("GOTPC64", "R_X86_64_GOTPC64", body(lines(".L1: leaq .L1(%rip), %rbx",
                                                   "movabs $_GLOBAL_OFFSET_TABLE_-.L1, %r11",
                                                   "addq %r11, %rbx"),
                                             ".quad _GLOBAL_OFFSET_TABLE_ - ."), None),
    Case("GOTOFF64", "R_X86_64_GOTOFF64", body(lines(GOT_ANCHOR, "movabs $var@GOTOFF, %rax",
                                                     "movabs $ext@GOTOFF, %rcx"),
                                               ".quad func@GOTOFF + 1"), None),
    Case("PLTOFF64", "R_X86_64_PLTOFF64", body(lines(GOT_ANCHOR, "movabs $func@PLTOFF, %rax",
                                                     "movabs $ext@PLTOFF, %rcx")), None),
    Case("GOT32", "R_X86_64_GOT32", body(lines(GOT_ANCHOR, "movq var@GOT(%rbx), %rax",
                                               "movl var@GOT(%rbx), %ecx")), "var"),
    Case("GOT64", "R_X86_64_GOT64", body(lines(GOT_ANCHOR, "movabs $var@GOT, %rax", "movq (%rbx,%rax), %rax")),
         "var"),
    Case("GOTPLT64", "R_X86_64_GOTPLT64", body(lines(GOT_ANCHOR, "movabs $func@GOTPLT, %rax")), "func"),
    Case("GOTPCREL64", "R_X86_64_GOTPCREL64", body("nop", lines(".quad var@GOTPCREL", ".quad var@GOTPCREL + 8")),
         "var"),
    # plain GOTPCREL (as -mrelax-relocations=no) is never relaxed
    Case("GOTPCREL", "R_X86_64_GOTPCREL", body("movq var@GOTPCREL(%rip), %rax", ".long var@GOTPCREL"),
         "var", as_flags=("-mrelax-relocations=no",)),
    Case("GOTPCRELX-relaxed", "R_X86_64_GOTPCRELX",
         body(lines("movl var@GOTPCREL(%rip), %eax", "call *func@GOTPCREL(%rip)", "jmp *func@GOTPCREL(%rip)")),
         relaxed=True),
    # the target is beyond +-2 GiB: the load stays, through a GOT entry
    Case("GOTPCRELX-far", "R_X86_64_GOTPCRELX",
         body(lines("call *far@GOTPCREL(%rip)", "jmp *far@GOTPCREL(%rip)", "movl far@GOTPCREL(%rip), %eax")),
         "far", lambda s: {"far": FAR}),
    # near, but cmp and test are not instructions hotlink rewrites
    Case("GOTPCRELX-cmp", "R_X86_64_GOTPCRELX",
         body(lines("cmpl var@GOTPCREL(%rip), %eax", "testl %eax, var@GOTPCREL(%rip)")), "var"),
    Case("REX_GOTPCRELX-relaxed", "R_X86_64_REX_GOTPCRELX",
         body(lines("movq var@GOTPCREL(%rip), %rax", "movq var@GOTPCREL(%rip), %r12")), relaxed=True),
    Case("REX_GOTPCRELX-far", "R_X86_64_REX_GOTPCRELX", body("movq far@GOTPCREL(%rip), %r9"),
         "far", lambda s: {"far": FAR}),
    Case("REX_GOTPCRELX-add", "R_X86_64_REX_GOTPCRELX", body("addq var@GOTPCREL(%rip), %rax"), "var"),
    # a weak undefined symbol is 0: never relaxed, its entry holds 0 (ld
    # would rewrite the load to ``mov $0``, so only the formula checks it)
    Case("REX_GOTPCRELX-weak", "R_X86_64_REX_GOTPCRELX",
         body(lines(".weak missing", "movq missing@GOTPCREL(%rip), %rax")), "missing", with_ld=False),
]

# the two bytes before a relaxed field: (opcode, ModRM) -> the rewrite
RELAXED_BRANCHES = {b"\xff\x15": b"\x67\xe8",    # call *foo@GOTPCREL(%rip) -> addr32 call foo
                    b"\xff\x25": b"\x90\xe9"}    # jmp *foo@GOTPCREL(%rip)  -> nop; jmp foo


def got_base(linked: Linked, rels: list[Rel]) -> int | None:
    """GOT = V - A + P for the first GOTPC field (V: what hotlink wrote)."""
    for r in rels:
        if r.kind in GOT_BASE_KINDS:
            return linked.value(r) - r.addend + linked.sections[r.section] + r.offset
    return None


def entry(linked: Linked, rels: list[Rel], got: int | None, symbol: str) -> int:
    """G, from the first field that uses ``symbol``'s entry."""
    for r in rels:
        if r.symbol == symbol and r.kind in ENTRY_FROM_P:
            return linked.value(r) - r.addend + linked.sections[r.section] + r.offset
        if r.symbol == symbol and r.kind in ENTRY_FROM_GOT and got is not None:
            return linked.value(r) - r.addend + got
    raise AssertionError(f"no field uses the GOT entry of {symbol}")


@pytest.mark.parametrize("case", CASES, ids=str)
def test_got_kind_matches_psabi_and_ld(case: Case, tmp_path) -> None:
    obj = assemble(tmp_path, case.source, flags=case.as_flags)
    rels = relocations(obj)
    assert case.kind in {r.kind for r in rels}, "the fixture must exercise its kind"
    with hotlink.Session() as s:
        linked = link(s, obj, TEXT_DATA, case.symbols(s))
        linked.weak = ("missing",)
        got = got_base(linked, rels)
        slot = entry(linked, rels, got, case.entry_for) if case.entry_for else None
        if slot is not None:
            assert u64(slot) == linked.address(case.entry_for), "the GOT entry must hold the symbol's address"
        assert s.memory().got_entries == (1 if case.entry_for else 0)
        skip = []
        for r in rels:
            if r.kind in ("R_X86_64_GOTPCRELX", "R_X86_64_REX_GOTPCRELX") and case.relaxed:
                skip += check_relaxed(linked, r)
            else:
                assert linked.value(r, signed=False) == expected(linked, r, got, slot), r
        if case.with_ld:
            extra = {}
            if got is not None:
                extra[".got.plt"] = got
            if slot is not None:
                extra[".got"] = slot
            ref = assert_same_as_ld(linked, extra, skip, relax=case.relaxed, pie=case.relaxed)
            if slot is not None:
                assert ref.sections[".got"] == ctypes.string_at(slot, 8), "ld's GOT entry holds the same"
            for r in skip:     # ld writes a relaxed ``jmp *foo@GOTPCREL`` as jmp; nop
                text = ref.sections[".text"]
                start = r.offset - 2
                assert text[start] == 0xE9 and text[start + 5] == 0x90
                ld_target = linked.sections[".text"] + start + 5 + int.from_bytes(text[start + 1:start + 5],
                                                                                     "little", signed=True)
                assert ld_target == linked.address(r.symbol)


def check_relaxed(linked: Linked, r: Rel) -> list[Rel]:
    """A relaxed load: the opcode rewritten, the field S + A - P.  Returns
    ``[r]`` when ld encodes it differently (the jmp)."""
    before = section_data(linked.obj, r.section)[r.offset - 2:r.offset]
    s, p = linked.address(r.symbol), linked.sections[r.section] + r.offset
    assert linked.value(r) == s + r.addend - p, f"{r}: a relaxed load is PC-relative to the symbol"
    if before in RELAXED_BRANCHES:
        want = RELAXED_BRANCHES[before]
    else:
        assert before[0] == 0x8B, f"{r}: relaxed, but {before.hex()} is not a mov"
        want = b"\x8d" + before[1:]              # mov foo@GOTPCREL(%rip), %reg -> lea foo(%rip), %reg
    mine = linked.read(r.section, r.offset - 2, 2)
    assert mine == want, f"{r}: {before.hex()} became {mine.hex()}, want {want.hex()}"
    return [r] if before == b"\xff\x25" else []
