"""The link graph of one object: which sections are placed, in which pool,
what each global symbol binds to, and where each symbol ends up.

Kept deliberately flat (lists indexed by section and symbol number, tuples
for definitions) because a tiny object's whole link has to fit in tens of
microseconds.
"""
from __future__ import annotations

from . import elf
from .arena import CODE, DATA, RODATA
from .platform import init_priority

# How a section takes part in the link.
SKIP, PLACE, EH_FRAME, INIT = 0, 1, 2, 3

# Definition flags.
WEAK, FUNC, HIDDEN = 1, 2, 4


def classify(sec: elf.Section) -> tuple[int, int]:
    """(role, pool) of a section."""
    flags = sec.flags
    if not flags & elf.SHF_ALLOC or flags & elf.SHF_EXCLUDE:
        return SKIP, 0
    t = sec.type
    name = sec.name
    if t == elf.SHT_X86_64_UNWIND or name == ".eh_frame":
        return EH_FRAME, RODATA
    if t in (elf.SHT_INIT_ARRAY, elf.SHT_FINI_ARRAY, elf.SHT_PREINIT_ARRAY) or (
            name.startswith((".ctors", ".dtors")) and init_priority(name) is not None):
        return INIT, 0
    if t == 7 or flags & elf.SHF_TLS or t == elf.SHT_GROUP:   # notes, TLS templates
        return SKIP, 0
    if flags & elf.SHF_EXECINSTR:
        return PLACE, CODE
    if flags & elf.SHF_WRITE and not name.startswith(".data.rel.ro"):
        # .data.rel.ro is only written by relocation, which happens in the write view
        return PLACE, DATA
    return PLACE, RODATA


class LinkObject:
    """One object taking part in a link, with the unit it will belong to."""

    __slots__ = ("obj", "unit", "library", "roles", "pools", "dropped", "addr", "commons",
                 "binding", "values", "blocks", "eh_block", "got_base", "eh")

    def __init__(self, obj: elf.ObjectFile, unit, library):
        self.obj = obj
        self.unit = unit
        self.library = library
        secs = obj.sections
        roles = [SKIP] * len(secs)
        pools = [0] * len(secs)
        for i, sec in enumerate(secs):
            roles[i], pools[i] = classify(sec)
        self.roles = roles
        self.pools = pools
        self.dropped: set[int] = set()      # sections of discarded COMDAT groups
        self.addr = [0] * len(secs)         # placed address per section
        self.commons: dict[int, int] = {}   # symbol index -> address, for SHN_COMMON
        # global name -> ("self", symbol index) | (address, unit or None, size)
        self.binding: dict[str, tuple] = {}
        self.values: list[int] = []
        self.blocks: list[tuple[int, int, int]] = []   # (pool, address, size)
        self.eh_block = 0
        self.got_base = 0
        self.eh: dict[int, tuple[bytes, list]] = {}   # pruned .eh_frame contents and relocations

    def drop_group(self, members) -> None:
        for m in members:
            self.dropped.add(m)
            self.roles[m] = SKIP

    def is_dropped_symbol(self, si: int) -> bool:
        return self.obj.symbols[si].shndx in self.dropped
