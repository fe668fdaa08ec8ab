"""One link transaction: gather objects (pulling archive members on demand),
resolve symbols, lay out, apply fixups, then commit or roll back.

Nothing a transaction does is visible before ``commit``: symbols are
published, lazy archive entries consumed and COMDAT groups claimed only
there, after the code is written, its unwind info registered and its
initializers run.  On any error, ``abort`` frees the memory and the GOT and
stub entries the transaction took, so a failed ``add`` leaves no trace.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from . import elf, layout, platform
from .errors import DuplicateSymbolError, UndefinedSymbolError
from .graph import EH_FRAME, FUNC, HIDDEN, INIT, PLACE, WEAK, LinkObject
from .arena import CODE, RODATA
from .tables import Acquired
from .x86_64 import apply_relocations

if TYPE_CHECKING:
    from .library import Library, Unit
    from .session import Session

_LOCAL, _UNDEF, _ABS, _COMMON = elf.STB_LOCAL, elf.SHN_UNDEF, elf.SHN_ABS, elf.SHN_COMMON
_WEAK_BINDS = (elf.STB_WEAK, elf.STB_GNU_UNIQUE)
# Names the platform provides per unit, found before anything else.
PLATFORM_NAMES = frozenset(("__dso_handle", "atexit", "__cxa_atexit", "_GLOBAL_OFFSET_TABLE_"))


def _describe(owner) -> str:
    return owner.obj.name if isinstance(owner, LinkObject) else f"unit {owner.name!r}"


class Job:
    def __init__(self, session: Session):
        self.session = session
        self.items: list[LinkObject] = []
        self.pending: dict[Library, dict[str, tuple]] = {}     # lib -> name -> (lo, si, flags, size)
        self.comdats: dict[Library, dict[str, Unit]] = {}
        self.pulled: set[tuple[Unit, int]] = set()
        self.acquired: dict[Unit, Acquired] = {}
        self.synthetic: list[tuple[Unit, str, int, int, int]] = []   # (unit, attr, pool, addr, size)
        self.inits: list[tuple[Unit, list[int], list]] = []
        self.frames: list[tuple[Unit, int]] = []
        self.deps: set[tuple[Unit, Unit]] = set()

    # --- gathering -------------------------------------------------------

    def add(self, obj: elf.ObjectFile, unit: Unit) -> None:
        lo = LinkObject(obj, unit, unit.library)
        lib = unit.library
        groups = obj.groups
        if groups:
            claimed = self.comdats.setdefault(lib, {})
            for g in groups:
                if g.comdat:
                    if g.signature in lib._comdats or g.signature in claimed:
                        lo.drop_group(g.members)
                    else:
                        claimed[g.signature] = unit
            if lo.dropped:
                for i, role in enumerate(lo.roles):
                    if role == EH_FRAME:
                        sec = obj.sections[i]
                        lo.eh[i] = platform.prune_eh_frame(
                            obj.section_bytes(sec), obj.relocations.get(i, []),
                            f"{obj.name}:{sec.name}", lo.is_dropped_symbol)
        self._define(lo)
        self.items.append(lo)

    def _define(self, lo: LinkObject) -> None:
        lib = lo.library
        pend = self.pending.get(lib)
        if pend is None:
            pend = self.pending[lib] = {}
        published = lib._symbols
        dropped = lo.dropped
        for si, sym in enumerate(lo.obj.symbols):
            if sym.bind == _LOCAL or sym.shndx == _UNDEF or not sym.name or sym.shndx in dropped:
                continue
            name = sym.name
            flags = ((WEAK if sym.bind in _WEAK_BINDS or sym.shndx == _COMMON else 0)
                     | (FUNC if sym.type == elf.STT_FUNC else 0)
                     | (HIDDEN if sym.visibility in (elf.STV_HIDDEN, elf.STV_INTERNAL) else 0))
            cur = pend.get(name) or published.get(name)
            if cur is None or (cur[2] & WEAK and not flags & WEAK):
                pend[name] = (lo, si, flags, sym.size)
            elif not (cur[2] | flags) & WEAK:
                raise DuplicateSymbolError(name, _describe(cur[0] if isinstance(cur[0], LinkObject) else cur[1]),
                                           lo.obj.name)

    def pull(self, unit: Unit, offset: int) -> None:
        key = (unit, offset)
        if key not in self.pulled:
            self.pulled.add(key)
            self.add(unit._archive.load_member(offset), unit)

    def find(self, lib: Library, name: str, pull: bool):
        """The definition ``name`` binds to from ``lib``: a pending (lo, si, flags, size),
        a published (address, unit, flags, size), or None."""
        for other in (lib, *lib.link_order):
            own = other is lib
            pend = self.pending.get(other)
            d = pend.get(name) if pend else None
            if d is not None and (own or not d[2] & HIDDEN):
                return d
            d = other._symbols.get(name)
            if d is not None and (own or not d[2] & HIDDEN):
                return d
            if pull:
                z = other._lazy.get(name)
                if z is not None and z not in self.pulled:
                    self.pull(*z)
                    return self.find(lib, name, pull)
        addr = self.session._external(name)
        return None if addr is None else (addr, None, 0, 0)

    def gather(self) -> None:
        """Pull, transitively, every archive member some object needs."""
        i = 0
        while i < len(self.items):
            lo = self.items[i]
            i += 1
            dropped = lo.dropped
            for sym in lo.obj.symbols:
                if sym.bind != _LOCAL and sym.name and (sym.shndx == _UNDEF or sym.shndx in dropped) \
                        and sym.name not in PLATFORM_NAMES:
                    self.find(lo.library, sym.name, pull=True)

    # --- layout, resolution, fixups --------------------------------------

    def _synthetic(self, unit: Unit, attr: str, pool: int, size: int, align: int, content) -> int:
        addr = getattr(unit, attr)
        if not addr:
            addr = self.session._arena.pools[pool].alloc(size, align)
            setattr(unit, attr, addr)
            self.synthetic.append((unit, attr, pool, addr, size))
            self.session._arena.write(addr, content(addr))
        return addr

    def _platform_value(self, lo: LinkObject, name: str) -> int:
        unit = lo.unit
        if name == "__dso_handle":
            return self._synthetic(unit, "_dso", RODATA, 8, 8, lambda a: bytes(8))
        if name == "atexit":
            dso = self._platform_value(lo, "__dso_handle")
            return self._synthetic(unit, "_atexit", CODE, platform.ATEXIT_THUNK_SIZE, 16,
                                   lambda a: platform.atexit_thunk(dso))
        if name == "__cxa_atexit":
            return platform.CXA_ATEXIT
        return lo.got_base   # _GLOBAL_OFFSET_TABLE_

    @staticmethod
    def _address(lo: LinkObject, si: int) -> int:
        sym = lo.obj.symbols[si]
        shndx = sym.shndx
        if shndx == _ABS:
            return sym.value
        if shndx == _COMMON:
            return lo.commons.get(si, 0)
        if shndx < len(lo.addr):
            return lo.addr[shndx] + sym.value
        return 0

    def resolve(self, lo: LinkObject, missing: dict[str, list[str]]) -> None:
        symbols = lo.obj.symbols
        values = [0] * len(symbols)
        addr = lo.addr
        unit = lo.unit
        address = self._address
        for si, sym in enumerate(symbols):
            if sym.bind == _LOCAL or not sym.name:
                shndx = sym.shndx
                if shndx == _ABS:
                    values[si] = sym.value
                elif 0 < shndx < len(addr):
                    values[si] = addr[shndx] + sym.value
                continue
            name = sym.name
            if name in PLATFORM_NAMES and (sym.shndx == _UNDEF or name == "_GLOBAL_OFFSET_TABLE_"):
                values[si] = self._platform_value(lo, name)
                continue
            d = self.find(lo.library, name, pull=False)
            if d is None:
                if sym.bind != elf.STB_WEAK:
                    missing.setdefault(name, []).append(lo.obj.name)
                continue
            owner = d[0]
            if isinstance(owner, LinkObject):
                values[si] = address(owner, d[1])
                if owner.unit is not unit:
                    self.deps.add((unit, owner.unit))
            else:
                values[si] = owner
                if d[1] is not None and d[1] is not unit:
                    self.deps.add((unit, d[1]))
        lo.values = values

    def fixup(self, lo: LinkObject) -> None:
        obj = lo.obj
        secs = obj.sections
        arena = self.session._arena
        acq = self.acquired.get(lo.unit)
        if acq is None:
            acq = self.acquired[lo.unit] = Acquired(self.session._tables)
        values = lo.values
        symbols = obj.symbols
        relocations = obj.relocations
        names = lambda si: symbols[si].name or (
            secs[symbols[si].shndx].name if symbols[si].shndx < len(secs) else f"symbol {si}")
        sizes = lambda si: self._size(lo, si)
        inits, finis = [], []
        for i, role in enumerate(lo.roles):
            if role == PLACE or role == EH_FRAME:
                sec = secs[i]
                if sec.type == elf.SHT_NOBITS:
                    arena.write(lo.addr[i], bytes(sec.size))
                    continue
                if i in lo.eh:
                    data, relocs = lo.eh[i]
                else:
                    data, relocs = obj.section_bytes(sec), relocations.get(i)
                if relocs:
                    data = bytearray(data)
                    apply_relocations(data, f"{obj.name}:{sec.name}", lo.addr[i], relocs, values,
                                      sizes, names, lo.got_base, acq)
                arena.write(lo.addr[i], data)
            elif role == INIT:
                sec = secs[i]
                prio, is_init, backwards = platform.init_priority(sec.name) or (
                    (65536 if sec.type != elf.SHT_PREINIT_ARRAY else -1), sec.type != elf.SHT_FINI_ARRAY, False)
                data = bytearray(obj.section_bytes(sec))
                if relocations.get(i):
                    apply_relocations(data, f"{obj.name}:{sec.name}", 0, relocations[i], values,
                                      sizes, names, lo.got_base, acq)
                fns = [f for (f,) in _iter_q(data) if f not in (0, 0xFFFFFFFFFFFFFFFF)]
                if backwards:
                    fns.reverse()
                (inits if is_init else finis).append((prio, fns))
        if lo.eh_block:
            size = next(s for _, a, s in lo.blocks if a == lo.eh_block)
            arena.write(lo.eh_block + size - 4, b"\0\0\0\0")   # the unwinder's terminator
            self.frames.append((lo.unit, lo.eh_block))
        if inits or finis:
            inits.sort(key=lambda t: t[0])
            finis.sort(key=lambda t: t[0])
            # finalizers are pushed on the unit's handler stack, so they run
            # after (newest first) anything registered later by __cxa_atexit
            fini_stack = [(f, None) for _, fns in finis for f in fns]
            self.inits.append((lo.unit, [f for _, fns in inits for f in fns], fini_stack))

    def _size(self, lo: LinkObject, si: int) -> int:
        sym = lo.obj.symbols[si]
        if sym.shndx != _UNDEF or not sym.name:
            return sym.size
        d = self.find(lo.library, sym.name, pull=False)
        return d[3] if d else 0

    # --- the transaction -------------------------------------------------

    def run(self) -> None:
        """Lay out, resolve, fix up and commit; on failure leave no trace."""
        arena = self.session._arena
        try:
            self.gather()
            for lo in self.items:
                layout.place(lo, arena)
            missing: dict[str, list[str]] = {}
            for lo in self.items:
                self.resolve(lo, missing)
            if missing:
                raise UndefinedSymbolError(missing)
            for lo in self.items:
                self.fixup(lo)
        except BaseException:
            self.abort()
            raise
        self.commit()

    def abort(self) -> None:
        arena = self.session._arena
        for lo in self.items:
            layout.release(lo, arena)
        for acq in self.acquired.values():
            acq.release()
        for unit, attr, pool, addr, size in self.synthetic:
            setattr(unit, attr, 0)
            arena.pools[pool].free(addr, size)

    def commit(self) -> None:
        for lo in self.items:
            unit = lo.unit
            unit._blocks.extend(lo.blocks)
        for unit, attr, pool, addr, size in self.synthetic:
            unit._blocks.append((pool, addr, size))
            if attr == "_dso":
                platform.bind_dso(addr, unit._handlers)
        for unit, acq in self.acquired.items():
            unit._got.extend(acq.got_targets)
            unit._stubs.extend(acq.stub_targets)
        for user, used in self.deps:
            user._deps.add(used)
            used._users.add(user)
        for unit, addr in self.frames:
            platform.register_frames(addr)
            unit._frames.append(addr)
        for unit, inits, fini_stack in self.inits:
            unit._handlers.extend(fini_stack)
            platform.run_initializers(inits, unit._handlers)
        for lib, claimed in self.comdats.items():
            for sig, unit in claimed.items():
                lib._comdats[sig] = unit
                unit._comdats.append(sig)
        for unit, offset in self.pulled:
            unit._members.add(offset)
            lazy = unit.library._lazy
            for name in unit._archive.member_symbols(offset):
                if lazy.get(name) == (unit, offset):
                    del lazy[name]
        for lib, defs in self.pending.items():
            table = lib._symbols
            for name, (lo, si, flags, size) in defs.items():
                table[name] = (self._address(lo, si), lo.unit, flags, size)
                lo.unit._symbols.append(name)


def _iter_q(data: bytearray):
    import struct
    return struct.iter_unpack("<Q", data[: len(data) & ~7])
