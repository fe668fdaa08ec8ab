"""The relocation tests' tools: assemble with GNU ``as``, link the object into
a hotlink session, link the same object with GNU ``ld`` at the addresses
hotlink chose, and compare what both wrote, relocation by relocation.

``ld`` is the reference: a static link whose linker script puts every section
where hotlink placed it (``.got.plt``, whose address is ``ld``'s GOT base, at
hotlink's GOT base, ``.got`` at hotlink's GOT entry) and ``--defsym``s the
external symbols at the addresses hotlink resolved them to.  Sections may
overlap (``--no-check-sections``): only their contents matter.
"""
from __future__ import annotations

import ctypes
import struct
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection

import hotlink

# psABI numbers (written out here, not taken from hotlink, nor from
# pyelftools, which lacks SIZE32/SIZE64 and the GOTPCRELX pair)
KIND_NAMES = {i: "R_X86_64_" + n for i, n in enumerate(
    "NONE 64 PC32 GOT32 PLT32 COPY GLOB_DAT JUMP_SLOT RELATIVE GOTPCREL 32 32S 16 PC16 8 PC8 DTPMOD64 DTPOFF64 "
    "TPOFF64 TLSGD TLSLD DTPOFF32 GOTTPOFF TPOFF32 PC64 GOTOFF64 GOTPC32 GOT64 GOTPCREL64 GOTPC64 GOTPLT64 "
    "PLTOFF64 SIZE32 SIZE64 GOTPC32_TLSDESC TLSDESC_CALL TLSDESC IRELATIVE RELATIVE64 - - GOTPCRELX "
    "REX_GOTPCRELX".split())}

# bytes each kind writes
WIDTH = {
    "R_X86_64_NONE": 0, "R_X86_64_64": 8, "R_X86_64_PC32": 4, "R_X86_64_GOT32": 4, "R_X86_64_PLT32": 4,
    "R_X86_64_GOTPCREL": 4, "R_X86_64_32": 4, "R_X86_64_32S": 4, "R_X86_64_16": 2, "R_X86_64_PC16": 2,
    "R_X86_64_8": 1, "R_X86_64_PC8": 1, "R_X86_64_PC64": 8, "R_X86_64_GOTOFF64": 8, "R_X86_64_GOTPC32": 4,
    "R_X86_64_GOT64": 8, "R_X86_64_GOTPCREL64": 8, "R_X86_64_GOTPC64": 8, "R_X86_64_GOTPLT64": 8,
    "R_X86_64_PLTOFF64": 8, "R_X86_64_SIZE32": 4, "R_X86_64_SIZE64": 8, "R_X86_64_GOTPCRELX": 4,
    "R_X86_64_REX_GOTPCRELX": 4,
}


def run(cmd: Sequence[str | Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True)


def assemble(workdir: Path, source: str, name: str = "t", flags: Sequence[str] = ()) -> Path:
    """``as --64`` the source into ``workdir/name.o``."""
    src, obj = workdir / f"{name}.s", workdir / f"{name}.o"
    src.write_text(source)
    proc = run(["as", "--64", *flags, "-o", obj, src])
    if proc.returncode:
        pytest.fail(f"as failed:\n{proc.stderr}\n--- source ---\n{source}", pytrace=False)
    return obj


@dataclass(frozen=True)
class Rel:
    """One relocation of the object, as pyelftools reads it."""
    section: str
    offset: int
    kind: str
    symbol: str
    addend: int


def relocations(obj: Path) -> list[Rel]:
    """Every relocation of ``obj``, read independently of hotlink's ELF reader."""
    out = []
    with open(obj, "rb") as f:
        elf = ELFFile(f)
        for sec in elf.iter_sections():
            if isinstance(sec, RelocationSection):
                target = elf.get_section(sec["sh_info"]).name
                symtab = elf.get_section(sec["sh_link"])
                for r in sec.iter_relocations():
                    sym = symtab.get_symbol(r["r_info_sym"])
                    name = sym.name or elf.get_section(sym["st_shndx"]).name
                    out.append(Rel(target, r["r_offset"], KIND_NAMES[r["r_info_type"]], name, r["r_addend"]))
    return out


def section_sizes(obj: Path) -> dict[str, int]:
    """Sizes of the object's allocated sections."""
    with open(obj, "rb") as f:
        return {s.name: s["sh_size"] for s in ELFFile(f).iter_sections() if s["sh_flags"] & 2 and s["sh_size"]}


def section_data(obj: Path, name: str) -> bytes:
    with open(obj, "rb") as f:
        return ELFFile(f).get_section_by_name(name).data()


@dataclass
class LdResult:
    ok: bool
    errors: str
    sections: dict[str, bytes] = field(default_factory=dict)


def ld_link(obj: Path, placement: Mapping[str, int], symbols: Mapping[str, int] = {},
            relax: bool = True, pie: bool = False) -> LdResult:
    """Link ``obj`` statically with GNU ld, each section of ``placement``
    (``.got``/``.got.plt`` included) at the given address, ``symbols`` as
    absolute symbols; the output sections' bytes, or ld's errors.

    ``relax=False`` (``--no-relax``) keeps GOT loads: ld also rewrites a
    plain GOTPCREL mov (hotlink, like mold, does not), and in a non-PIC
    link turns ``cmp foo@GOTPCREL(%rip)`` into ``cmp $foo``, or fails
    when foo is above 4 GiB.  In a ``pie``, ld rewrites GOT loads as hotlink
    does (``mov`` to ``lea``, not to ``mov $foo``)."""
    script = "SECTIONS {\n" + "".join(f"  {name} {addr:#x} : {{ *({name}) }}\n"
                                      for name, addr in placement.items()) + "}\n"
    workdir = obj.parent
    lds, out = workdir / f"{obj.stem}.ld", workdir / f"{obj.stem}.ld.elf"
    lds.write_text(script)
    proc = run(["ld", "-o", out, "-T", lds, "--no-check-sections", "-e", "0", "-z", "noexecstack",
                "--no-warn-rwx-segments", *(() if relax else ("--no-relax",)),
                *(("-pie", "--no-dynamic-linker") if pie else ()),
                *(f"--defsym={k}={v:#x}" if v >= 0 else f"--defsym={k}=-{-v:#x}" for k, v in symbols.items()),
                obj])
    if proc.returncode:
        return LdResult(False, proc.stderr)
    with open(out, "rb") as f:
        secs = {s.name: s.data() for s in ELFFile(f).iter_sections() if s.name in placement}
    return LdResult(True, proc.stderr, secs)


@dataclass
class Linked:
    """An object linked by hotlink, and where its sections went."""
    session: hotlink.Session
    lib: hotlink.Library
    obj: Path
    sections: dict[str, int]          # section name -> address (from its start label)
    symbols: dict[str, int]           # external names the session defines
    weak: tuple[str, ...] = ()        # weak undefined names: 0

    def read(self, section: str, offset: int = 0, size: int | None = None) -> bytes:
        if size is None:
            size = section_sizes(self.obj)[section] - offset
        return ctypes.string_at(self.sections[section] + offset, size)

    def field(self, rel: Rel) -> bytes:
        return self.read(rel.section, rel.offset, WIDTH[rel.kind])

    def value(self, rel: Rel, signed: bool = True) -> int:
        """The number hotlink wrote in ``rel``'s field (little-endian)."""
        return int.from_bytes(self.field(rel), "little", signed=signed)

    def address(self, symbol: str) -> int:
        if symbol in self.weak:
            return 0
        return self.symbols[symbol] if symbol in self.symbols else self.lib.address(symbol)


def link(session: hotlink.Session, obj: Path, starts: Mapping[str, str],
         symbols: Mapping[str, int] = {}, name: str = "relocs") -> Linked:
    """Add ``obj`` to a new library of ``session`` (``symbols`` defined first);
    ``starts`` maps each section to the global label at its start."""
    session.define(dict(symbols))
    lib = session.library(name)
    lib.add(obj)
    return Linked(session, lib, obj, {sec: lib.address(label) for sec, label in starts.items()}, dict(symbols))


def mismatches(linked: Linked, ref: LdResult, skip: Sequence[Rel] = ()) -> Iterator[str]:
    """Where hotlink's bytes differ from ld's: per relocation first (named),
    then any other byte of the sections."""
    rels = [r for r in relocations(linked.obj) if r.section in linked.sections and r not in skip]
    for r in rels:
        mine = linked.field(r)
        theirs = ref.sections[r.section][r.offset:r.offset + WIDTH[r.kind]]
        if mine != theirs:
            yield (f"{r.kind} at {r.section}+{r.offset:#x} against {r.symbol}{r.addend:+#x}: "
                   f"hotlink wrote {mine.hex()}, ld wrote {theirs.hex()}")
    skipped = {(r.section, r.offset + i) for r in skip for i in range(-2, WIDTH[r.kind] + 1)}
    for sec in linked.sections:
        mine, theirs = linked.read(sec), ref.sections[sec]
        if len(mine) != len(theirs):
            yield f"{sec}: {len(mine)} bytes in hotlink, {len(theirs)} in ld's output"
        for i, (a, b) in enumerate(zip(mine, theirs)):
            if a != b and (sec, i) not in skipped:
                yield f"{sec}+{i:#x}: hotlink has {a:#04x}, ld has {b:#04x}"
                break


def assert_same_as_ld(linked: Linked, extra: Mapping[str, int] = {}, skip: Sequence[Rel] = (),
                      relax: bool = True, pie: bool = False) -> LdResult:
    """Link the object with ld at hotlink's addresses (plus ``extra``
    placements: ``.got``, ``.got.plt``) and require identical bytes."""
    ref = ld_link(linked.obj, {**linked.sections, **extra}, linked.symbols, relax, pie)
    assert ref.ok, f"ld refused what hotlink linked:\n{ref.errors}"
    bad = list(mismatches(linked, ref, skip))
    assert not bad, "hotlink and ld disagree:\n  " + "\n  ".join(bad)
    return ref


def symbol_sizes(obj: Path) -> dict[str, int]:
    """st_size of the object's named symbols."""
    with open(obj, "rb") as f:
        return {s.name: s["st_size"] for s in ELFFile(f).get_section_by_name(".symtab").iter_symbols() if s.name}


def expected(linked: Linked, rel: Rel, got: int | None = None, slot: int | None = None,
             size: int | None = None) -> int:
    """The psABI value of ``rel`` (S symbol, A addend, P field address, GOT
    the GOT base, G the symbol's GOT entry, Z its size), truncated to the
    field's width, as an unsigned number."""
    s = got if rel.symbol == "_GLOBAL_OFFSET_TABLE_" else \
        linked.sections[rel.symbol] if rel.symbol in linked.sections else linked.address(rel.symbol)
    a, p = rel.addend, linked.sections[rel.section] + rel.offset
    k = rel.kind.removeprefix("R_X86_64_")
    if k in ("64", "32", "32S", "16", "8"):
        v = s + a
    elif k in ("PC64", "PC32", "PLT32", "PC16", "PC8"):
        v = s + a - p
    elif k in ("GOTOFF64", "PLTOFF64"):
        v = s + a - _given(got, "GOT")
    elif k in ("GOTPC32", "GOTPC64"):
        v = _given(got, "GOT") + a - p
    elif k in ("GOT32", "GOT64", "GOTPLT64"):
        v = _given(slot, "G") - _given(got, "GOT") + a
    elif k in ("GOTPCREL", "GOTPCREL64", "GOTPCRELX", "REX_GOTPCRELX"):
        v = _given(slot, "G") + a - p
    elif k in ("SIZE32", "SIZE64"):
        v = (symbol_sizes(linked.obj)[rel.symbol] if size is None else size) + a
    else:
        raise AssertionError(f"no formula for {rel.kind}")
    return v & ((1 << 8 * WIDTH[rel.kind]) - 1)


def _given(x: int | None, what: str) -> int:
    assert x is not None, f"the formula needs {what}"
    return x


def u64(addr: int) -> int:
    return struct.unpack("<Q", ctypes.string_at(addr, 8))[0]
