"""Unit tests of ``hotlink.ehframe.prune_eh_frame`` on ``.eh_frame`` sections
written here record by record (no compiler, no session).

A section is a hypothesis-chosen sequence of CIEs (``zR``, optionally with a
personality ``P`` and an LSDA encoding ``L``) and FDEs (each pointing back
at one of the CIEs before it, with or without a ``pc_begin`` relocation, an
LSDA relocation when its CIE has ``L``), with record sizes varied by padding
instructions.  A random set of symbols is "dropped" (as when a COMDAT group
was discarded): the FDEs whose ``pc_begin`` relocation names one of them
must go, and nothing else.

The expected result is written by the same little writer from the records
that stay, so every check is exact: the kept records are byte for byte the
ones not dropped, FDE -> CIE back-pointers are recomputed for the new
layout, relocations move with their records (and vanish with dropped ones),
the result passes the checker again, and a section with nothing to drop
comes back unchanged.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hotlink.ehframe import prune_eh_frame
from hotlink.errors import MalformedObjectError
from hotlink.x86_64 import Reloc

Rela = tuple[int, int, int, int]

PERSONALITY_SYMBOL = 1
NOP = b"\x00"                                   # DW_CFA_nop


@dataclass(frozen=True)
class Cie:
    personality: bool
    lsda: bool
    padding: int                                # extra DW_CFA_nop: varies the record size

    def body(self) -> tuple[bytes, list[tuple[int, int, int]]]:
        """The record after its length field, and (offset in it, symbol, addend) relocations."""
        aug = b"z" + (b"P" if self.personality else b"") + (b"L" if self.lsda else b"") + b"R"
        out = bytearray(b"\0\0\0\0" + b"\x01" + aug + b"\0" + b"\x01\x78\x10")  # id 0, version 1, caf 1, daf -8, ra 16
        data = bytearray()
        relocs = []
        if self.personality:                    # indirect pcrel sdata4, relocated to DW.ref.__gxx_personality_v0
            data += b"\x9b"
            relocs.append((len(out) + 1 + len(data), PERSONALITY_SYMBOL, 0))
            data += bytes(4)
        if self.lsda:
            data += b"\x1b"                     # LSDA: pcrel sdata4
        data += b"\x1b"                         # FDE pointers: pcrel sdata4
        out += bytes([len(data)]) + data
        out += b"\x0c\x07\x08\x90\x01"          # def_cfa rsp+8; offset r16 at cfa-8
        out += NOP * self.padding
        return bytes(out), relocs


@dataclass(frozen=True)
class Fde:
    cie: int                                    # index among the section's CIEs
    symbol: int | None                          # pc_begin's relocation symbol; None: pc_begin 0, no relocation
    pc_range: int
    lsda_symbol: int | None                     # when the CIE has 'L': the LSDA relocation's symbol, or none
    padding: int

    def body(self, cie: Cie, back: int) -> tuple[bytes, list[tuple[int, int, int]]]:
        out = bytearray(struct.pack("<IiI", back, 0, self.pc_range))
        relocs = []
        if self.symbol is not None:
            relocs.append((4, self.symbol, self.symbol * 16))
        out += b"\x04" if cie.lsda else b"\x00"  # augmentation data length
        if cie.lsda:
            if self.lsda_symbol is not None:
                relocs.append((len(out), self.lsda_symbol, 0))
            out += bytes(4)
        out += b"\x41\x0e\x10"                  # advance_loc 1; def_cfa_offset 16
        out += NOP * self.padding
        return bytes(out), relocs


Record = Cie | Fde


@dataclass
class Section:
    data: bytes
    relocs: list[Rela]
    starts: list[int] = field(default_factory=list)      # where each record begins


def write(records: list[Record]) -> Section:
    """The section of ``records``; FDE back-pointers go to the ``fde.cie``-th CIE."""
    out = bytearray()
    relocs: list[Rela] = []
    cies: list[tuple[int, Cie]] = []            # (position, CIE) in order
    starts = []
    for r in records:
        pos = len(out)
        starts.append(pos)
        if isinstance(r, Cie):
            body, rel = r.body()
            cies.append((pos, r))
        else:
            cie_pos, cie = cies[r.cie]
            body, rel = r.body(cie, pos + 4 - cie_pos)
        out += struct.pack("<I", len(body)) + body
        relocs += [(pos + 4 + off, Reloc.PC32, si, a) for off, si, a in rel]
    return Section(bytes(out), relocs, starts)


def gone(r: Record, dropped: frozenset[int]) -> bool:
    return isinstance(r, Fde) and r.symbol is not None and r.symbol in dropped


@st.composite
def sections(draw: st.DrawFn) -> list[Record]:
    records: list[Record] = []
    cies: list[Cie] = []
    for i in range(draw(st.integers(1, 24))):
        if not cies or draw(st.integers(0, 4)) == 0:
            cie = Cie(draw(st.booleans()), draw(st.booleans()), draw(st.integers(0, 9)))
            cies.append(cie)
            records.append(cie)
            continue
        k = draw(st.integers(0, len(cies) - 1))
        symbol = None if draw(st.integers(0, 5)) == 0 else 100 + i
        lsda = (200 + i if draw(st.booleans()) else None) if cies[k].lsda else None
        records.append(Fde(k, symbol, draw(st.integers(1, 0x7FFF)), lsda, draw(st.integers(0, 9))))
    return records


def symbols_of(records: list[Record]) -> list[int]:
    out = [PERSONALITY_SYMBOL]
    for r in records:
        if isinstance(r, Fde):
            out += [s for s in (r.symbol, r.lsda_symbol) if s is not None]
    return out


# --- properties -------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_prune_keeps_exactly_what_is_not_dropped(data: st.DataObject) -> None:
    records = data.draw(sections())
    # any symbols may be dropped: pc_begin symbols drop their FDE, LSDA and personality ones drop nothing
    dropped = frozenset(data.draw(st.sets(st.sampled_from(symbols_of(records)))))
    section = write(records)
    relocs = data.draw(st.permutations(section.relocs))      # input order does not matter
    out, moved = prune_eh_frame(section.data, list(relocs), ".eh_frame", dropped.__contains__)

    kept = [r for r in records if not gone(r, dropped)]
    expected = write(kept)
    assert out == expected.data                  # kept records, in order, back-pointers rewritten
    assert sorted(moved) == sorted(expected.relocs)   # relocations moved with their records

    # the back-pointers, read back: each kept FDE names the start of its own CIE
    cie_starts = [s for s, r in zip(expected.starts, kept) if isinstance(r, Cie)]
    for s, r in zip(expected.starts, kept):
        (back,) = struct.unpack_from("<I", out, s + 4)
        if isinstance(r, Fde):
            assert s + 4 - back == cie_starts[r.cie]
        else:
            assert back == 0

    # the result is a valid section: checking it again changes nothing
    again, again_relocs = prune_eh_frame(out, moved, ".eh_frame")
    assert again == out and again_relocs == moved


@settings(max_examples=100, deadline=None)
@given(sections(), st.booleans())
def test_nothing_dropped_comes_back_unchanged(records: list[Record], terminated: bool) -> None:
    section = write(records)
    data = section.data + (bytes(4) if terminated else b"")   # a terminator is left for the linker to write
    for dropped in (None, lambda si: False, frozenset({999}).__contains__):
        out, relocs = prune_eh_frame(data, section.relocs, ".eh_frame", dropped)
        assert out == section.data
        assert relocs == section.relocs


# --- spelled out ------------------------------------------------------------------


def test_back_pointers_across_a_dropped_fde() -> None:
    a, b = Cie(False, False, 0), Cie(True, True, 3)
    records: list[Record] = [a, Fde(0, 100, 16, None, 0), Fde(0, 101, 16, None, 1), b,
                             Fde(1, 102, 16, 202, 0), Fde(0, 103, 16, None, 2)]
    section = write(records)
    out, moved = prune_eh_frame(section.data, section.relocs, ".eh_frame", {100, 102}.__contains__)
    kept = [records[i] for i in (0, 2, 3, 5)]
    assert out == write(kept).data
    size = [section.starts[i + 1] - section.starts[i] for i in range(len(records) - 1)]
    # FDE 101 moved up by the size of FDE 100; its CIE did not move
    assert struct.unpack_from("<I", out, section.starts[2] - size[1] + 4)[0] == section.starts[2] + 4 - size[1]
    # no relocation of FDE 100 or FDE 102 (pc_begin and LSDA) survives
    assert {si for _o, _k, si, _a in moved} == {PERSONALITY_SYMBOL, 101, 103}


def test_fde_before_its_cie_is_refused() -> None:
    section = write([Cie(False, False, 0), Fde(0, 100, 16, None, 0)])
    data = bytearray(section.data)
    fde = section.starts[1]
    struct.pack_into("<I", data, fde + 4, 4)                # points at itself
    with pytest.raises(MalformedObjectError, match="which is no CIE"):
        prune_eh_frame(bytes(data), section.relocs, ".eh_frame", {100}.__contains__)
