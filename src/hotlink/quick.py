"""The quick link: one small object, in one pass.

Most objects a JIT makes are small and need little of what the general link
transaction (linker.py) is built for: no archive to pull from, no other
object in the same link, no initializer, no thread-local.  For those, the
staged transaction's bookkeeping is most of the cost (about 60 µs for a
one-function object); ``link`` does the same work in one pass: the reading,
checking and writing in the native core (``quickcore.py``, about 12 µs in
all), or, where the core is not sure or cannot be compiled, in Python here
(about 30 µs).

It never raises for the object.  At the first thing it does not take, or
anything that looks wrong, it returns None having changed nothing, and the
general transaction links the object or names what is wrong with it.  Its
``.eh_frame`` check is the full one's, through the full check's caches:
records that check has not passed before send the object the general way
(once: then they are known).  So every error comes from one place, and an
object linked here is linked exactly as the general transaction links it
(``tests/test_quick.py`` links objects both ways and compares every byte,
symbol, dependency and frame, and feeds it mutated objects).

What it takes: one relocatable object, added (not a replacement) to a
library that is not patchable, with no debug observer; sections of code,
data, read-only data, ``.bss`` and notes, and one ``.eh_frame``; global
symbols defined in those sections (not common, absolute, thread-local or
IFUNC) and not yet defined in the library, and undefined ones that bind, as
the general transaction would bind them, to a definition of a library in
the link order (not an archive member still to pull) or to an external
address (defines, shared objects, the process); relocations ``R64``,
``PC32``, ``PLT32`` within reach, and GOT loads that relax to direct
references.
"""
from __future__ import annotations

import ctypes
import struct
import threading
from collections.abc import Mapping, Sequence
from operator import add
from typing import TYPE_CHECKING, Any, NamedTuple

from . import ehframe, elf, platform, quickcore, runtime, vector
from .arena import CODE, DATA, PAGE, RODATA, pack_block
from .errors import LinkError
from .graph import EH_FRAME, FUNC, HIDDEN, PLACE, SKIP, STUB, WEAK, Definition, section_role
from .interrupts import GATE
from .linker import PLATFORM_NAMES
from .x86_64 import WRITE_ERRORS, Reloc, relax_got_loads, write_common

if TYPE_CHECKING:
    from .arena import Arena
    from .elf import Rela
    from .library import Library, Unit

enabled = True      # tests switch it off to link the same objects the general way
native = True       # and this to link them with the quick link in Python (quickcore.py: the native core)
# Quick links before the native core is compiled (once per process, about 60 ms,
# the cost of some 3,000 links it makes faster): a short script never pays it.
CORE_AFTER = 64
_links = 0

_IDENT = elf.ELFMAG + bytes((elf.ELFCLASS64, elf.ELFDATA2LSB))
_SHDR_SIZE = elf.SHDR.size
# section types only the general transaction links
_GENERAL_TYPES = frozenset((elf.SHT_REL, elf.SHT_GROUP, elf.SHT_INIT_ARRAY, elf.SHT_FINI_ARRAY,
                            elf.SHT_PREINIT_ARRAY, elf.SHT_SYMTAB_SHNDX))
_ALLOC_TYPES = frozenset((elf.SHT_PROGBITS, elf.SHT_NOBITS, elf.SHT_NOTE, elf.SHT_X86_64_UNWIND))
_GENERAL_FLAGS = elf.SHF_TLS | elf.SHF_EXCLUDE      # (of an allocated section)
_ALIGNS = frozenset([0] + [1 << i for i in range(PAGE.bit_length())])
# st_info values (bind << 4 | type) of thread-local and IFUNC symbols, any binding
_SPECIAL_INFO = frozenset(b << 4 | t for b in range(16) for t in (elf.STT_TLS, elf.STT_GNU_IFUNC))
_WEAK_BINDS = (elf.STB_WEAK, elf.STB_GNU_UNIQUE)
_GOT_LOADS = (Reloc.GOTPCRELX, Reloc.REX_GOTPCRELX)
_KINDS = frozenset((Reloc.NONE, Reloc.R64, Reloc.PC32, Reloc.PLT32, *_GOT_LOADS))
_PC32, _NONE = int(Reloc.PC32), int(Reloc.NONE)
_KIND_MASK, _SYMBOL_SHIFT = 0xFFFFFFFF, 32        # r_info: symbol << 32 | kind
_MASK64 = (1 << 64) - 1                           # a published address wraps as the general link's does
_ABS_ONLY = frozenset((elf.SHN_ABS,))
_ALLOC, _EXEC, _ABS, _RELA_TYPE = elf.SHF_ALLOC, elf.SHF_EXECINSTR, elf.SHN_ABS, elf.SHT_RELA


class _Decline(Exception):
    """Something the quick link does not take: the general transaction links it."""


def link(lib: Library, data: bytes, uname: str | None) -> Unit | None:
    """Link ``data`` as a new unit of ``lib`` if the quick link takes it (see
    the module docstring), else return None having changed nothing.  The
    caller holds the session lock and checked ``lib`` is open."""
    session = lib.session
    if not enabled or lib.patchable or session.observers:
        return None
    core = quickcore.compiled if native else None
    if core is None and native:
        global _links
        _links += 1
        if _links >= CORE_AFTER:
            core = quickcore.core()
    if core is not None:
        try:
            unit = _link_natively(core, lib, data, uname)
        except _Decline:
            unit = None
        if unit is not None:
            return unit
    try:
        plan = _plan(lib, data)
    except _Decline:
        return None
    return _commit(lib, data, uname, plan)


class _Scratch(threading.local):
    """The native core's buffer, one per thread (a link holds its session's lock)."""

    def __init__(self) -> None:
        self.out = (ctypes.c_int64 * quickcore.WORDS)()
        self.out[quickcore.REGISTER] = platform.REGISTER_FRAME
        self.out[quickcore.COUNTER] = platform.NATIVE_FRAME_COUNT


_scratch = _Scratch()
_HEAD = struct.Struct("<10q")       # quickcore's out[0:10]: sizes, alignments, .eh_frame, its size, counts
_SET_BASES = struct.Struct("<5q").pack_into    # quickcore's out[BASES:BASES + 5]: the blocks, the views' distance
_SET_BUMP = struct.Struct("<10q").pack_into    # out[BUMP:BUMP + 10]: 1, the pools' tops and ends, the region, GOT
_CODE_TOP, _RODATA_TOP, _DATA_TOP = quickcore.TOPS, quickcore.TOPS + 2, quickcore.TOPS + 4
_BLOCKS = quickcore.BLOCKS
_new_tuple = tuple.__new__      # a NamedTuple without the call of its __new__ in Python


def _link_natively(core: quickcore.Core, lib: Library, data: bytes, uname: str | None) -> Unit | None:
    """``link`` through the native core: it reads, checks and writes; what
    depends on the library (names taken, binding) is decided here.  None if
    the core is not sure (the Python quick link then starts over)."""
    scratch = _scratch
    out = scratch.out
    if not core.scan(data, len(data), out):
        return None
    s0, s1, s2, a0, a1, a2, _eh, eh_size, npub, nimp = _HEAD.unpack_from(out)
    defined, lazy = lib.definitions, lib.lazy
    publish: dict[str, int] = {}                # name -> its entry in out's list
    pub: tuple[int, ...] = ()
    if npub:
        pub = elf.table_reader("qqqqqq", npub)(out, quickcore.PUB * 8)
        for k in range(0, 6 * npub, 6):
            name = data[pub[k + 1]:pub[k + 1] + pub[k + 2]].decode("utf-8", "surrogateescape")
            if name in defined or name in lazy or name in PLATFORM_NAMES or name in publish:
                raise _Decline
            publish[name] = k
    addresses: list[int | None] = []
    uses: set[Any] = set()
    if nimp:
        imp = elf.table_reader("qqqq", nimp)(out, quickcore.IMP * 8)
        addresses, uses = _bind(lib, [(imp[k], data[imp[k + 1]:imp[k + 1] + imp[k + 2]].decode(
            "utf-8", "surrogateescape"), bool(imp[k + 3])) for k in range(0, 4 * nimp, 4)], publish)
    arena = lib.session.arena
    n = len(data)
    with GATE:
        got = 0
        if addresses:
            imports = quickcore.IMPORTS
            for k, address in enumerate(addresses):
                if address is None:         # _GLOBAL_OFFSET_TABLE_: the core sets it
                    got = k + 1
                else:
                    out[imports + k] = address
        # most links: the core takes the blocks at the pools' tops, in the first region
        with arena.lock:
            tops = arena.tops()
            if tops is not None:
                _SET_BUMP(out, quickcore.BUMP * 8, 1, *tops, arena.base, arena.base + arena.size, got)
                out[quickcore.DELTA] = arena.write_base - arena.base
                if core.apply(data, n, out):        # (which registers the .eh_frame last)
                    arena.set_tops(out[_CODE_TOP], out[_RODATA_TOP], out[_DATA_TOP])
                else:
                    tops = None
        if tops is None and not _apply_allocated(core, arena, data, n, out, got, (s0, s1, s2), (a0, a1, a2),
                                                 eh_size + 4 if eh_size else 0):
            return None
        at = quickcore.PUB
        return _record(lib, uname, out[_BLOCKS:_BLOCKS + out[quickcore.NBLOCKS]], tuple(publish),
                       [(out[at + k + 5], pub[k + 3], pub[k + 4]) for k in publish.values()], uses)


def _apply_allocated(core: quickcore.Core, arena: Arena, data: bytes, n: int, out: ctypes.Array[ctypes.c_int64],
                     got: int, sizes: tuple[int, int, int], aligns: tuple[int, int, int], eh_bytes: int) -> bool:
    """The core's apply on blocks ``alloc_blocks`` takes (after the holes
    the pools have, in any region); False, with the blocks freed, if they
    are out of the core's reach or it fails."""
    try:
        base, eh_block, blocks = arena.alloc_blocks(sizes, aligns, eh_bytes, RODATA, 8)
    except LinkError:
        return False
    # the core writes through the first region's write view, at a fixed distance from its run view
    if len(arena.regions) != 1 and not all(arena.base <= a and a + size <= arena.base + arena.size
                                           for _, a, size in blocks):
        _free(arena, blocks)
        return False
    _SET_BASES(out, quickcore.BASES * 8, base[CODE], base[RODATA], base[DATA], eh_block,
               arena.write_base - arena.base)
    out[quickcore.BUMP] = 0
    out[quickcore.GOT_IMPORT] = got
    if not core.apply(data, n, out):       # (which registers the .eh_frame last)
        _free(arena, blocks)
        return False
    return True


def _free(arena: Arena, blocks: list[tuple[int, int, int]]) -> None:
    pools = arena.pools
    for p, a, n in blocks:
        pools[p].free(a, n)


class _Plan(NamedTuple):
    """What ``_plan`` read and checked: everything but the addresses."""
    size: list[int]                     # bytes per pool (CODE, RODATA, DATA)
    align: list[int]                    # alignment per pool
    placed: list[tuple[int, int, int]]  # (section, pool, offset in the pool's block)
    eh: int                             # the .eh_frame section, or 0
    eh_size: int                        # its records' bytes (without a terminator)
    relocs: dict[int, list[Rela]]       # section -> its relocations
    shndx: Sequence[int]                # the symbols' sections
    value: Sequence[int]                # the symbols' values
    sym_size: Sequence[int]
    sizes: Sequence[int]                # the sections'
    types: Sequence[int]
    offsets: Sequence[int]
    publish: dict[str, tuple[int, int]]     # name -> (symbol, definition flags)
    got: int                            # the symbol _GLOBAL_OFFSET_TABLE_, or 0
    bound: list[tuple[int, int]]        # undefined symbols: (symbol, address)
    uses: set[Any]                      # the units and entry stubs they are bound to


# What the section table says, by its shape: the sections' names, types,
# flags, links, infos and alignments (not their offsets and sizes).  Objects
# made by one compiler share a few shapes, so the decisions are made once per
# shape: (symbol table, .eh_frame, the placed sections with their pools, the
# relocation section of each section, each section's pool or -1), or () if
# the quick link does not take such objects.
_Shape = tuple[bytes, int, tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...],
               tuple[int, ...]]
_Sections = tuple[int, int, list[tuple[int, int]], dict[int, int], list[int]] | tuple[()]
_shapes: dict[_Shape, _Sections] = {}


def _sections(shape: _Shape) -> _Sections:
    shstrtab, shstrndx, sh_names, types, flags, links, infos, aligns = shape
    shnum = len(types)
    if (not _GENERAL_TYPES.isdisjoint(types) or types.count(elf.SHT_SYMTAB) != 1
            or not _ALIGNS.issuperset(aligns) or types[shstrndx] != elf.SHT_STRTAB):
        return ()
    symtab = types.index(elf.SHT_SYMTAB)

    def name_of(i: int) -> str:
        name = elf.cstr(shstrtab, sh_names[i])
        if name is None:
            raise _Decline
        return name

    alloc: list[tuple[int, int]] = []
    pool_of = [-1] * shnum
    eh = 0
    rela: dict[int, int] = {}
    try:
        for i in range(1, shnum):
            f, t = flags[i], types[i]
            if f & _ALLOC:
                if f & _GENERAL_FLAGS or t not in _ALLOC_TYPES:
                    return ()
                role, pool = section_role(f, t, name_of, i)
                if role == SKIP:
                    continue
                if role == EH_FRAME and not eh:
                    eh = i
                    continue
                if role != PLACE:
                    return ()
                alloc.append((i, pool))
                pool_of[i] = pool
            elif t == elf.SHT_RELA:
                if not 0 < infos[i] < shnum or links[i] != symtab or infos[i] in rela:
                    return ()
                rela[infos[i]] = i
    except _Decline:
        return ()
    return symtab, eh, alloc, rela, pool_of


def _plan(lib: Library, data: bytes) -> _Plan:
    """Read and check ``data`` for the quick link; _Decline if it is not for it."""
    n = len(data)
    if n < elf.EHDR.size:
        raise _Decline
    (ident, e_type, machine, _version, _entry, _phoff, shoff, _flags, _ehsize, _phentsize, _phnum,
     shentsize, shnum, shstrndx) = elf.EHDR.unpack_from(data)
    if (ident[:6] != _IDENT or e_type != elf.ET_REL or machine != elf.EM_X86_64 or shentsize != _SHDR_SIZE
            or not 0 < shnum or shstrndx >= shnum or not 0 < shoff <= n - shnum * _SHDR_SIZE):
        raise _Decline
    flat = elf.table_reader(elf.SHDR_RECORD, shnum)(data, shoff)
    offsets, sizes = flat[4::10], flat[5::10]
    if max(map(add, offsets, sizes)) > n:
        raise _Decline
    shstrtab = data[offsets[shstrndx]:offsets[shstrndx] + sizes[shstrndx]]
    shape = (shstrtab, shstrndx, flat[0::10], flat[1::10], flat[2::10], flat[6::10], flat[7::10], flat[8::10])
    sections = _shapes.get(shape)
    if sections is None:
        sections = _sections(shape)
        if len(_shapes) >= 256:
            _shapes.clear()
        _shapes[shape] = sections
    if not sections:
        raise _Decline
    symtab, eh, alloc, rela, pool_of = sections
    types, aligns = shape[3], shape[7]
    # place: one block per pool, sections in file order at their alignment (as layout.place)
    size, align = [0, 0, 0], [1, 1, 1]
    placed: list[tuple[int, int, int]] = []     # (section, pool, offset in the pool's block)
    for i, pool in alloc:
        a = aligns[i]
        if a > 1:
            if a > align[pool]:
                align[pool] = a
            o = (size[pool] + a - 1) & -a
        else:
            o = size[pool]
        placed.append((i, pool, o))
        size[pool] = o + sizes[i]
    for r in rela.values():
        if sizes[r] % 24:
            raise _Decline

    # symbols: locals first; every global defined in a placed section
    flags, links, infos = shape[4], shape[5], shape[6]
    strx = links[symtab]
    count = sizes[symtab] // 24
    if sizes[symtab] % 24 or not count or count >= vector.MIN_ROWS or strx >= shnum \
            or types[strx] != elf.SHT_STRTAB:
        raise _Decline
    sym = elf.table_reader(elf.SYM_RECORD, count)(data, offsets[symtab])
    name_off, info, other, shndx = sym[0::6], sym[1::6], sym[2::6], sym[3::6]
    first = infos[symtab]
    if (not 0 < first <= count or max(info[:first]) >= 16 or not _SPECIAL_INFO.isdisjoint(info)
            or max(shndx[:first]) >= shnum and not _ABS_ONLY.issuperset(set(shndx[:first]).difference(range(shnum)))):
        raise _Decline
    publish: dict[str, tuple[int, int]] = {}    # name -> (symbol, definition flags)
    imports: list[tuple[int, str, bool]] = []   # undefined symbols (symbol, name, weak), bound below
    if first < count:
        if min(info[first:]) < 16 or max(shndx[first:]) >= shnum:
            raise _Decline
        strtab = data[offsets[strx]:offsets[strx] + sizes[strx]]
        defined, lazy = lib.definitions, lib.lazy
        for si in range(first, count):
            x = shndx[si]
            if not x:       # undefined: bound after the relocations are checked (below)
                name = elf.cstr(strtab, name_off[si])
                if not name:
                    raise _Decline
                imports.append((si, name, info[si] >> 4 == elf.STB_WEAK))
                continue
            if pool_of[x] < 0:
                raise _Decline
            if name_off[si]:
                name = elf.cstr(strtab, name_off[si])
                if name is None:
                    raise _Decline
                if not name:            # (an empty name is not published)
                    continue
                if name in defined or name in lazy or name in PLATFORM_NAMES or name in publish:
                    raise _Decline
                typ = info[si] & 15
                code = typ == elf.STT_FUNC or typ == elf.STT_NOTYPE and flags[x] & _EXEC
                publish[name] = si, ((WEAK if info[si] >> 4 in _WEAK_BINDS else 0) | (FUNC if code else 0)
                                     | (HIDDEN if other[si] & 3 in (elf.STV_HIDDEN, elf.STV_INTERNAL) else 0))

    # relocations of the placed sections and the .eh_frame
    relocs: dict[int, list[Rela]] = {}
    for target, r in rela.items():
        if pool_of[target] < 0 and target != eh:
            continue                            # (debug sections: not loaded)
        k = sizes[r] // 24
        if not k:
            continue
        if k > vector.MIN_FIXUP_ROWS:
            raise _Decline
        f3 = elf.table_reader(elf.RELA_RECORD, k)(data, offsets[r])
        kinds = list(map(_KIND_MASK.__and__, f3[1::3]))
        syms = list(map(_SYMBOL_SHIFT.__rrshift__, f3[1::3]))
        if not _KINDS.issuperset(kinds) or max(syms) >= count:
            raise _Decline
        relocs[target] = list(zip(f3[0::3], kinds, syms, f3[2::3]))

    # bound only now, when no relocation can make one a thread-local (which a
    # dlsym would pin to dynamic TLS)
    addresses, uses = _bind(lib, imports, publish) if imports else ((), set())
    got = 0
    bound: list[tuple[int, int]] = []           # (symbol, address)
    for (si, _, _), address in zip(imports, addresses):
        if address is None:
            got = si
        else:
            bound.append((si, address))
    value = sym[4::6]
    # .eh_frame: the full check's caches, then where each FDE points (as ehframe._check_targets)
    eh_size = 0
    if eh:
        rows = relocs.get(eh, [])
        rel = {off: kind for off, kind, _, _ in rows}
        if len(rel) != len(rows) or _NONE in rel.values():
            raise _Decline
        edata = data[offsets[eh]:offsets[eh] + sizes[eh]]
        known = ehframe.known_records(edata, rel)
        if known is None:
            raise _Decline
        eh_size, fdes = known
        pc_begin = {off: (si, a) for off, _, si, a in rows}
        for pos, width in fdes:
            si, a = pc_begin[pos + 8]
            x = shndx[si]
            if not 0 < x < shnum or pool_of[x] != CODE:
                raise _Decline
            start = value[si] + a
            stop = start + int.from_bytes(edata[pos + 8 + width:pos + 8 + 2 * width], "little")
            if start < 0 or stop > sizes[x]:
                raise _Decline

    return _Plan(size, align, placed, eh, eh_size, relocs, shndx, value, sym[5::6], sizes, types, offsets,
                 publish, got, bound, uses)


def _find(lib: Library, name: str) -> Definition | None:
    """The definition ``name`` binds to from ``lib`` (LinkTransaction.find
    with nothing pending); _Decline where an archive member would be pulled."""
    for other in (lib, *lib.link_order) if lib.link_order else (lib,):
        d = other.definitions.get(name)
        if d is not None and (other is lib or not d.flags & HIDDEN):
            return d
        if name in other.lazy:
            raise _Decline
    addr = lib.session.resolve_external(name)
    return None if addr is None else Definition(addr, None, 0, 0)


def _bind(lib: Library, imports: list[tuple[int, str, bool]],
          publish: Mapping[str, object]) -> tuple[list[int | None], set[Any]]:
    """The address each undefined symbol (symbol, name, weak) binds to, as
    LinkTransaction.find binds it (None: ``_GLOBAL_OFFSET_TABLE_``, whose
    address is the object's first block), and the units and entry stubs
    that makes this one depend on; _Decline for what only the general
    transaction links."""
    addresses: list[int | None] = []
    uses: set[Any] = set()
    got = False
    for _, name, weak in imports:
        if name == "_GLOBAL_OFFSET_TABLE_" and not got:     # the GOT's address (PIC code)
            got = True
            addresses.append(None)
            continue
        if name in PLATFORM_NAMES or name in runtime.NAMES or name in publish:
            raise _Decline      # the unit's own __dso_handle, atexit thunks..., hotlink's runtime
        d = _find(lib, name)
        if d is None:
            if not weak:
                raise _Decline                  # undefined: the general transaction says so
            addresses.append(0)
            continue
        addresses.append(d.address)
        if d.unit is not None:
            uses.add(d.unit.library.entry_stubs[name] if d.flags & STUB else d.unit)
    return addresses, uses


def _record(lib: Library, uname: str | None, blocks: list[int], names: tuple[str, ...],
            definitions: list[tuple[int, int, int]], uses: set[Any]) -> Unit:
    """Commit, as LinkTransaction.commit does for one object: the unit, its
    blocks (packed), its definitions ((address, flags, size) for each of
    ``names``) and dependencies.  Runs with signal handlers deferred."""
    session = lib.session
    unit = session.new_unit(lib, uname)
    unit.blocks = blocks
    lib.changes += 1
    session.code_changed()
    lib.record_unit(unit)
    # (Library.publish without what it does for a name defined or lazy before: these are not)
    defined = lib.definitions
    for name, (address, flags, size) in zip(names, definitions):
        defined[name] = _new_tuple(Definition, (address, unit, flags, size))
    unit.names = names
    if uses:
        unit.deps = set(uses)
        for used in uses:
            if used.users is None:
                used.users = set()
            used.users.add(unit)
    return unit


def _commit(lib: Library, data: bytes, uname: str | None, plan: _Plan) -> Unit | None:
    """Allocate, write and publish what ``plan`` holds, with Python signal
    handlers deferred; None (and nothing changed) if a relocation does not
    fit or the arena is full, which the general transaction reports."""
    arena = lib.session.arena
    sizes, offsets = plan.sizes, plan.offsets
    with GATE:
        try:
            base, eh_block, blocks = arena.alloc_blocks(plan.size, plan.align,
                                                        plan.eh_size + 4 if plan.eh_size else 0, RODATA, 8)
        except LinkError:
            return None
        try:
            addr = [0] * len(sizes)
            for i, p, o in plan.placed:
                addr[i] = base[p] + o
            if plan.eh:
                addr[plan.eh] = eh_block
            values = [v if x == _ABS else addr[x] + v for x, v in zip(plan.shndx, plan.value)]
            if plan.got:        # as the general transaction: the first block the object has
                values[plan.got] = base[CODE] or base[RODATA] or base[DATA] or eh_block
            for si, address in plan.bound:
                values[si] = address
            relocs = plan.relocs
            for i, _p, _o in plan.placed:
                if not sizes[i]:
                    continue
                if plan.types[i] == elf.SHT_NOBITS:
                    arena.zero(addr[i], sizes[i])
                    continue
                section = data[offsets[i]:offsets[i] + sizes[i]]
                arena.write(addr[i], _relocated(section, relocs[i], values, addr[i]) if i in relocs else section)
            if eh_block:
                eh = plan.eh
                frames = _relocated(data[offsets[eh]:offsets[eh] + plan.eh_size], relocs.get(eh, []),
                                    values, eh_block)
                arena.write(eh_block, frames + b"\0\0\0\0")   # and the unwinder's terminator
        except _Decline:
            _free(arena, blocks)
            return None
        if eh_block:
            platform.register_frames(eh_block)
        sym_size = plan.sym_size
        unit = _record(lib, uname, [pack_block(p, a, s, a == eh_block) for p, a, s in blocks], tuple(plan.publish),
                       [(values[si] & _MASK64, fl, sym_size[si]) for si, fl in plan.publish.values()], plan.uses)
    return unit


def _relocated(section: bytes, rows: list[Rela], values: list[int], base: int) -> bytearray:
    """``section``, placed at ``base``, with ``rows`` applied in order (GOT
    loads relaxed to direct references, as the general scan does)."""
    buf = bytearray(section)
    try:
        got = [j for j, r in enumerate(rows) if r[1] in _GOT_LOADS]
        if not got:
            write_common(buf, rows, values, base)
            return buf
        relaxed = relax_got_loads(section, rows, got, values, base)
        if len(relaxed) != len(got):
            raise _Decline                      # a GOT entry: the general transaction makes it
        for j, (off, kind, si, a) in enumerate(rows):
            new = relaxed.get(j)
            if new is not None:
                buf[off - 2:off] = new
                kind = _PC32                    # now S + A - P, as PC32
            write_common(buf, [(off, kind, si, a)], values, base)
    except WRITE_ERRORS:
        raise _Decline from None                # out of range: the general transaction says which
    return buf
