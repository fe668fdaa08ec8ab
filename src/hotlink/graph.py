"""The link graph of one object: which sections are placed, in which pool,
and where each symbol ends up.

Kept deliberately flat (lists indexed by section and symbol number) because
a tiny object's whole link has to fit in tens of microseconds.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
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

_ALLOC, _EXCLUDE, _TLS = elf.SHF_ALLOC, elf.SHF_EXCLUDE, elf.SHF_TLS
# flags that make a section plain code, or plain .bss, for LinkObject (see classify)
_CODE_MASK, _CODE = _ALLOC | _EXCLUDE | _TLS | elf.SHF_EXECINSTR, _ALLOC | elf.SHF_EXECINSTR
_DATA_MASK = _ALLOC | _EXCLUDE | _TLS
# st_info values (bind << 4 | type) of IFUNC and TLS symbols, any binding
_IFUNC_INFO = frozenset(b << 4 | elf.STT_GNU_IFUNC for b in range(16))
_TLS_INFO = frozenset(b << 4 | elf.STT_TLS for b in range(16))

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
    return section_role(obj.sh_flags[i], obj.sh_type[i], obj.section_name, i)


def section_role(flags: int, t: int, name_of: Callable[[int], str], i: int) -> tuple[int, int]:
    """(role, pool) of section ``i`` with these flags and type; its name,
    ``name_of(i)``, is read only when they do not say."""
    if not flags & _ALLOC or flags & _EXCLUDE:
        return SKIP, 0
    if flags & elf.SHF_TLS:
        return THREAD_LOCAL, 0
    if t == elf.SHT_NOTE or t == elf.SHT_GROUP:
        return SKIP, 0
    if flags & elf.SHF_EXECINSTR and t == elf.SHT_PROGBITS:   # the common cases need no name
        return PLACE, CODE
    if t == elf.SHT_NOBITS:
        return PLACE, DATA
    name = name_of(i)
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
        flags, types = obj.sh_flags, obj.sh_type
        # (index, role, pool) of every allocated section that takes part; code
        # and .bss, the common cases, need no name
        self.sections = [(i, PLACE, CODE) if f & _CODE_MASK == _CODE and types[i] == elf.SHT_PROGBITS
                         else (i, PLACE, DATA) if f & _DATA_MASK == _ALLOC and types[i] == elf.SHT_NOBITS
                         else (i, *classify(obj, i)) for i, f in enumerate(flags) if f & _ALLOC]
        self.dropped: set[int] = set()      # sections of discarded COMDAT groups
        self.addr = [0] * obj.shnum         # placed address per section
        self.commons: dict[int, int] = {}   # symbol index -> address, for SHN_COMMON
        self.values: list[int] = []
        self.blocks: list[tuple[int, int, int]] = []   # (pool, address, size)
        self.eh_block = 0
        self.got_base = 0
        self.eh: dict[int, tuple[bytes, Any]] = {}   # pruned .eh_frame contents and relocations (list or columns)
        info = set(obj.sym_info)
        self.special = ((0 if _IFUNC_INFO.isdisjoint(info) else HAS_IFUNC)
                        | (HAS_TLS if not _TLS_INFO.isdisjoint(info) or any(map(_TLS.__and__, flags))
                           and any(s[1] == THREAD_LOCAL for s in self.sections) else 0))
        self.tls: dict[tuple[int, int], int] = {}   # (TLS relocation kind, symbol) -> value (tls.py)

    def drop_group(self, members: Iterable[int]) -> None:
        self.dropped.update(members)
        self.sections = [s for s in self.sections if s[0] not in self.dropped]

    def is_dropped_symbol(self, si: int) -> bool:
        return self.obj.sym_shndx[si] in self.dropped
