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
    secs = lo.obj.sections
    roles, pools = lo.roles, lo.pools
    size = [0, 0, 0]
    align = [1, 1, 1]
    offset = [0] * len(secs)
    eh_size = 0
    eh = []
    for i, role in enumerate(roles):
        if role == PLACE:
            sec = secs[i]
            p = pools[i]
            a = sec.align
            if a > PAGE:
                raise UnsupportedRelocationError(
                    f"{lo.obj.name}: section {sec.name!r} asks for {a}-byte alignment; at most {PAGE} is supported")
            if a > align[p]:
                align[p] = a
            o = (size[p] + a - 1) & -a
            offset[i] = o
            size[p] = o + sec.size
        elif role == EH_FRAME:
            eh_size = (eh_size + 7) & -8
            offset[i] = eh_size
            eh_size += len(lo.eh[i][0]) if i in lo.eh else secs[i].size
            eh.append(i)
    commons = []
    for si, sym in enumerate(lo.obj.symbols):
        if sym.shndx == elf.SHN_COMMON and lo.binding.get(sym.name, ("self",))[0] == "self":
            a = max(1, sym.value)
            if a & (a - 1) or a > PAGE:
                raise UnsupportedRelocationError(f"{lo.obj.name}: common symbol {sym.name!r} has alignment {a}")
            align[DATA] = max(align[DATA], a)
            o = (size[DATA] + a - 1) & -a
            commons.append((si, o))
            size[DATA] = o + sym.size
    base = [0, 0, 0]
    pools_ = arena.pools
    for p in range(3):
        if size[p]:
            base[p] = pools_[p].alloc(size[p], align[p])
            lo.blocks.append((p, base[p], size[p]))
    if eh:
        lo.eh_block = pools_[RODATA].alloc(eh_size + 4, 8)
        lo.blocks.append((RODATA, lo.eh_block, eh_size + 4))
    addr = lo.addr
    for i, role in enumerate(roles):
        if role == PLACE:
            addr[i] = base[pools[i]] + offset[i]
        elif role == EH_FRAME:
            addr[i] = lo.eh_block + offset[i]
    for si, o in commons:
        lo.commons[si] = base[DATA] + o
    lo.got_base = base[0] or base[1] or base[2] or lo.eh_block


def release(lo: LinkObject, arena: Arena) -> None:
    for p, a, s in lo.blocks:
        arena.pools[p].free(a, s)
    lo.blocks = []
