"""The link graph of one object: which sections are placed, in which pool,
and where each symbol ends up.

Kept deliberately flat (lists indexed by section and symbol number) because
a tiny object's whole link has to fit in tens of microseconds.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from . import elf
from .arena import CODE, DATA, RODATA
from .platform import init_priority

# How a section takes part in the link (THREAD_LOCAL: part of the unit's TLS image, tls.py).
SKIP, PLACE, EH_FRAME, INIT, THREAD_LOCAL = 0, 1, 2, 3, 4
# What a LinkObject's symbols hold that most objects' do not.
HAS_IFUNC, HAS_TLS = 1, 2

# Definition flags.
WEAK, FUNC, HIDDEN, STUB = 1, 2, 4, 8   # STUB: the published address is an entry stub
THREAD = 16                             # a thread-local: the "address" is its offset in its unit's TLS image

_ALLOC, _EXCLUDE = elf.SHF_ALLOC, elf.SHF_EXCLUDE

if TYPE_CHECKING:
    from .library import Unit


class Definition(NamedTuple):
    """A definition a library publishes (or an external address, ``unit`` None)."""
    address: int
    unit: Unit | None
    flags: int
    size: int


class Pending(NamedTuple):
    """A definition made by a link transaction, not yet placed or published."""
    obj: LinkObject
    symbol: int         # symbol index in ``obj.obj``
    flags: int
    size: int


def classify(obj: elf.ObjectFile, i: int) -> tuple[int, int]:
    """(role, pool) of section ``i``."""
    flags = obj.sh_flags[i]
    if not flags & _ALLOC or flags & _EXCLUDE:
        return SKIP, 0
    t = obj.sh_type[i]
    if flags & elf.SHF_TLS:
        return THREAD_LOCAL, 0
    if t == elf.SHT_NOTE or t == elf.SHT_GROUP:
        return SKIP, 0
    if flags & elf.SHF_EXECINSTR and t == elf.SHT_PROGBITS:   # the common cases need no name
        return PLACE, CODE
    if t == elf.SHT_NOBITS:
        return PLACE, DATA
    name = obj.section_name(i)
    if t == elf.SHT_X86_64_UNWIND or name == ".eh_frame":
        return EH_FRAME, RODATA
    if t in (elf.SHT_INIT_ARRAY, elf.SHT_FINI_ARRAY, elf.SHT_PREINIT_ARRAY) or (
            name.startswith((".ctors", ".dtors")) and init_priority(name) is not None):
        return INIT, 0
    if flags & elf.SHF_EXECINSTR:
        return PLACE, CODE
    if flags & elf.SHF_WRITE and not name.startswith(".data.rel.ro"):
        # .data.rel.ro is written only by relocation, which happens in the write view
        return PLACE, DATA
    return PLACE, RODATA


class LinkObject:
    """One object taking part in a link, with the unit it will belong to."""

    __slots__ = ("obj", "unit", "library", "sections", "dropped", "addr", "commons",
                 "values", "blocks", "eh_block", "got_base", "eh", "special", "tls")

    def __init__(self, obj: elf.ObjectFile, unit: Any, library: Any):
        self.obj = obj
        self.unit = unit
        self.library = library
        flags = obj.sh_flags
        # (index, role, pool) of every allocated section that takes part
        self.sections = [(i, *classify(obj, i)) for i in range(obj.shnum) if flags[i] & _ALLOC]
        self.dropped: set[int] = set()      # sections of discarded COMDAT groups
        self.addr = [0] * obj.shnum         # placed address per section
        self.commons: dict[int, int] = {}   # symbol index -> address, for SHN_COMMON
        self.values: list[int] = []
        self.blocks: list[tuple[int, int, int]] = []   # (pool, address, size)
        self.eh_block = 0
        self.got_base = 0
        self.eh: dict[int, tuple[bytes, list]] = {}   # pruned .eh_frame contents and relocations
        types = {x & 15 for x in set(obj.sym_info)}
        self.special = ((HAS_IFUNC if elf.STT_GNU_IFUNC in types else 0)
                        | (HAS_TLS if elf.STT_TLS in types or any(s[1] == THREAD_LOCAL for s in self.sections)
                           else 0))
        self.tls: dict[tuple[int, int], int] = {}   # (TLS relocation kind, symbol) -> value (tls.py)

    def drop_group(self, members: Iterable[int]) -> None:
        self.dropped.update(members)
        self.sections = [s for s in self.sections if s[0] not in self.dropped]

    def is_dropped_symbol(self, si: int) -> bool:
        return self.obj.sym_shndx[si] in self.dropped
