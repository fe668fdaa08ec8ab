"""Placing an object's sections in the arena: one block per pool, sections in
file order at their alignment, ``SHN_COMMON`` symbols at the end of the data
block, and ``.eh_frame`` in a block of its own with the zero terminator the
unwinder needs.
"""
from __future__ import annotations

from . import elf
from .arena import DATA, PAGE, RODATA, Arena
from .errors import UnsupportedRelocationError
from .graph import EH_FRAME, PLACE, LinkObject


def place(lo: LinkObject, arena: Arena) -> None:
    """Allocate blocks for ``lo`` and give each placed section its address."""
    obj = lo.obj
    sizes, aligns = obj.sh_size, obj.sh_align
    size = [0, 0, 0]
    align = [1, 1, 1]
    offset = {}
    eh_size = 0
    for i, role, p in lo.sections:
        if role == PLACE:
            a = aligns[i] or 1
            if a > PAGE:
                raise UnsupportedRelocationError(
                    f"{obj.name}: section {obj.section_name(i)!r} asks for {a}-byte alignment; "
                    f"at most {PAGE} is supported")
            if a > align[p]:
                align[p] = a
            o = (size[p] + a - 1) & -a
            offset[i] = o
            size[p] = o + sizes[i]
        elif role == EH_FRAME:
            # back to back: the unwinder walks records with no gaps between
            # them, up to the one terminator after the last
            offset[i] = eh_size
            eh_size += len(lo.eh[i][0]) if i in lo.eh else sizes[i]
    placed_commons = []
    shndx = obj.sym_shndx
    for si in range(obj.first_global, len(shndx)) if elf.SHN_COMMON in shndx else ():
        a = max(1, obj.sym_value[si])
        if a & (a - 1) or a > PAGE:
            raise UnsupportedRelocationError(f"{obj.name}: common symbol {obj.sym_name[si]!r} has alignment {a}")
        align[DATA] = max(align[DATA], a)
        o = (size[DATA] + a - 1) & -a
        placed_commons.append((si, o))
        size[DATA] = o + obj.sym_size[si]
    base = [0, 0, 0]
    pools = arena.pools
    blocks = lo.blocks
    for p in (0, 1, 2):
        if size[p]:
            base[p] = pools[p].alloc(size[p], align[p])
            blocks.append((p, base[p], size[p]))
    if eh_size:
        lo.eh_block = pools[RODATA].alloc(eh_size + 4, 8)
        blocks.append((RODATA, lo.eh_block, eh_size + 4))
    addr = lo.addr
    for i, role, p in lo.sections:
        if role == PLACE:
            addr[i] = base[p] + offset[i]
        elif role == EH_FRAME:
            addr[i] = lo.eh_block + offset[i]
    for si, o in placed_commons:
        lo.commons[si] = base[DATA] + o
    lo.got_base = base[0] or base[1] or base[2] or lo.eh_block


def release(lo: LinkObject, arena: Arena) -> None:
    for p, a, s in lo.blocks:
        arena.pools[p].free(a, s)
    lo.blocks = []
