"""Placing an object's sections in the arena: one block per pool, sections in
file order at their alignment, ``SHN_COMMON`` symbols at the end of the data
block, and ``.eh_frame`` in a block of its own with the zero terminator the
unwinder needs.

Objects compiled without ``-fPIC`` hold absolute 32-bit addresses
(``R_X86_64_32``/``32S``): ``low_units`` finds, before anything is placed,
the units that have such an object, and ``place`` puts every object of those
units in the arena's pools below 2 GiB.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from . import elf
from .arena import DATA, LOW_LIMIT, PAGE, RODATA, Arena, LowMemoryError, unpack_block
from .errors import UnsupportedRelocationError
from .graph import EH_FRAME, PLACE, SKIP, LinkObject

_ABSOLUTE_32 = (b"\x0a", b"\x0b")      # R_X86_64_32, R_X86_64_32S: low byte of r_info
_RELA_SIZE = elf.RELA.size


def needs_low_memory(lo: LinkObject) -> bool:
    """Whether a section ``lo`` places has an absolute 32-bit relocation.

    Only the kind byte of each RELA entry is looked at (a strided slice, in
    C), so PIC objects pay a microsecond or so; debug sections, which use
    ``R_X86_64_32`` for offsets and are never placed, do not count."""
    obj = lo.obj
    data, offset, size = obj.data, obj.sh_offset, obj.sh_size
    for target, tables in obj.rela_sections.items():
        for r in tables:
            kinds = data[offset[r] + 8:offset[r] + size[r]:_RELA_SIZE]
            if (_ABSOLUTE_32[0] in kinds or _ABSOLUTE_32[1] in kinds) and any(
                    i == target and role != SKIP for i, role, _ in lo.sections):
                return True
    return False


def is_low_unit(unit: Any) -> bool:
    """Whether a committed unit lives below 2 GiB: once a unit is placed
    there, every later link into it (archive members pulled) is too, so its
    newest block says."""
    blocks = unit.blocks
    return bool(blocks) and unpack_block(blocks[-1])[1] < LOW_LIMIT


def low_units(items: Iterable[LinkObject]) -> dict[Any, str]:
    """The units of a link that must be placed below 2 GiB, each with the
    object that needs it (for messages): a unit with any object that uses
    absolute 32-bit addresses, or already placed there."""
    out: dict[Any, str] = {}
    for lo in items:
        unit = lo.unit
        if unit not in out:
            if needs_low_memory(lo):
                out[unit] = lo.obj.name
            elif is_low_unit(unit):
                out[unit] = f"unit {unit.name!r} (placed below 2 GiB for the non-PIC objects it holds)"
    return out


def place(lo: LinkObject, arena: Arena, low: str = "") -> None:
    """Allocate blocks for ``lo`` and give each placed section its address;
    below 2 GiB if ``low`` names the object that needs it."""
    obj = lo.obj
    sizes, aligns = obj.sh_size, obj.sh_align
    size = [0, 0, 0]
    align = [1, 1, 1]
    offset = []                 # per entry of lo.sections
    eh_size = 0
    for i, role, p in lo.sections:
        if role == PLACE:
            a = aligns[i]
            if a > 1:
                if a > PAGE:
                    raise UnsupportedRelocationError(
                        f"{obj.name}: section {obj.section_name(i)!r} asks for {a}-byte alignment; "
                        f"at most {PAGE} is supported")
                if a > align[p]:
                    align[p] = a
                o = (size[p] + a - 1) & -a
            else:
                o = size[p]
            offset.append(o)
            size[p] = o + sizes[i]
        elif role == EH_FRAME:
            # back to back: the unwinder walks records with no gaps between
            # them, up to the one terminator after the last
            offset.append(eh_size)
            eh_size += len(lo.eh[i][0]) if i in lo.eh else sizes[i]
        else:
            offset.append(0)
    placed_commons = []
    shndx = obj.sym_shndx
    for si in range(obj.first_global, len(shndx)) if elf.SHN_COMMON in shndx else ():
        if shndx[si] != elf.SHN_COMMON:
            continue
        a = max(1, obj.sym_value[si])  # a COMMON symbol's value is its alignment
        if a & (a - 1) or a > PAGE:
            raise UnsupportedRelocationError(f"{obj.name}: common symbol {obj.sym_name[si]!r} has alignment {a}")
        align[DATA] = max(align[DATA], a)
        o = (size[DATA] + a - 1) & -a
        placed_commons.append((si, o))
        size[DATA] = o + obj.sym_size[si]
    try:
        base, lo.eh_block, blocks = arena.alloc_blocks(size, align, eh_size + 4 if eh_size else 0, RODATA, 8,
                                                       bool(low))
    except LowMemoryError as e:
        raise low_memory_error(low, e) from None
    lo.blocks += blocks
    addr = lo.addr
    eh = lo.eh_block
    for (i, role, p), o in zip(lo.sections, offset):
        if role == PLACE:
            addr[i] = base[p] + o
        elif role == EH_FRAME:
            addr[i] = eh + o
    for si, o in placed_commons:
        lo.commons[si] = base[DATA] + o
    lo.got_base = base[0] or base[1] or base[2] or lo.eh_block


def low_memory_error(low: str, why: LowMemoryError) -> UnsupportedRelocationError:
    """The error for code that needs memory below 2 GiB and cannot have it."""
    return UnsupportedRelocationError(
        f"{low}: not position-independent (it uses absolute 32-bit addresses, R_X86_64_32/32S), so it "
        f"must be placed below 2 GiB, but {why}; compile it with -fPIC")


def release(lo: LinkObject, arena: Arena) -> None:
    for p, a, s in lo.blocks:
        arena.pools[p].free(a, s)
    lo.blocks = []
