"""One link transaction: gather objects (pulling archive members on demand),
resolve symbols, lay out, apply fixups, then commit or roll back.

Nothing a transaction does is visible before ``commit``: symbols are
published, lazy archive entries consumed and COMDAT groups claimed only
there, after the code is written, its unwind info registered and its
initializers run.  On any error, ``abort`` frees the memory and the GOT and
stub entries the transaction took, so a failed ``add`` leaves no trace.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from . import elf, layout, patch, platform
from .arena import CODE, RODATA, pack_block
from .errors import DuplicateSymbolError, MalformedObjectError, UndefinedSymbolError
from .graph import EH_FRAME, FUNC, HIDDEN, INIT, PLACE, STUB, WEAK, LinkObject
from .tables import Acquired
from .x86_64 import apply_relocations

if TYPE_CHECKING:
    from .library import Library, Unit
    from .session import Session

_LOCAL, _WEAK, _UNDEF, _ABS, _COMMON = elf.STB_LOCAL, elf.STB_WEAK, elf.SHN_UNDEF, elf.SHN_ABS, elf.SHN_COMMON
_WEAK_BINDS = (elf.STB_WEAK, elf.STB_GNU_UNIQUE)
_HIDDEN_VIS = (elf.STV_HIDDEN, elf.STV_INTERNAL)
# Names the platform provides per unit, found before anything else.
PLATFORM_NAMES = frozenset(("__dso_handle", "atexit", "__cxa_atexit", "_GLOBAL_OFFSET_TABLE_"))


class Job:
    def __init__(self, session: Session, replacing: Unit | None = None):
        self.session = session
        self.replacing = replacing          # a unit whose definitions this link takes over
        self.items: list[LinkObject] = []
        self.pending: dict[Library, dict[str, tuple]] = {}     # lib -> name -> (lo, si, flags, size)
        self.comdats: dict[Library, dict[str, Unit]] = {}
        self.pulled: set[tuple[Unit, int]] = set()
        self.acquired: dict[Unit, Acquired] = {}
        self.synthetic: list[tuple[Unit, str, int, int, int]] = []   # (unit, attr, pool, addr, size)
        self.inits: list[tuple[Unit, list[int], list]] = []
        self.frames: list[tuple[Unit, int]] = []
        self.deps: set[tuple[Unit, Unit]] = set()
        self._unit: Unit | None = None     # whose fixups are being applied
        self.entries: dict[tuple[Library, str], patch.EntryStub] = {}   # patchable functions defined here
        self.new_entries: list[patch.EntryStub] = []
        self.stub_uses: set[tuple[Unit, patch.EntryStub]] = set()

    # --- gathering -------------------------------------------------------

    def add(self, obj: elf.ObjectFile, unit: Unit) -> None:
        lo = LinkObject(obj, unit, unit.library)
        lib = unit.library
        if obj.groups:
            claimed = self.comdats.setdefault(lib, {})
            for g in obj.groups:
                if g.comdat:
                    if g.signature in lib._comdats or g.signature in claimed:
                        lo.drop_group(g.members)
                    else:
                        claimed[g.signature] = unit
        for i, role, _ in lo.sections:
            if role == EH_FRAME:
                lo.eh[i] = platform.prune_eh_frame(
                    obj.section_bytes(i), obj.relocations(i), f"{obj.name}:{obj.section_name(i)}",
                    lo.is_dropped_symbol if lo.dropped else None)
        self._define(lo)
        self.items.append(lo)

    def _define(self, lo: LinkObject) -> None:
        lib = lo.library
        pend = self.pending.get(lib)
        if pend is None:
            pend = self.pending[lib] = {}
        published = lib._symbols
        dropped = lo.dropped
        obj = lo.obj
        names, info, shndx = obj.sym_name, obj.sym_info, obj.sym_shndx
        for si in range(obj.first_global, len(names)):
            x = shndx[si]
            if x == _UNDEF or x in dropped or not names[si]:
                continue
            name = names[si]
            flags = ((WEAK if info[si] >> 4 in _WEAK_BINDS or x == _COMMON else 0)
                     | (FUNC if info[si] & 15 == elf.STT_FUNC else 0)
                     | (HIDDEN if obj.sym_other[si] & 3 in _HIDDEN_VIS else 0))
            cur = pend.get(name) or published.get(name)
            if cur is not None and cur[1] is self.replacing and self.replacing is not None:
                cur = None
            if cur is None or (cur[2] & WEAK and not flags & WEAK):
                pend[name] = (lo, si, flags, obj.sym_size[si])
            elif not (cur[2] | flags) & WEAK:
                owner = cur[0].obj.name if isinstance(cur[0], LinkObject) else f"unit {cur[1].name!r}"
                raise DuplicateSymbolError(name, owner, obj.name)

    def pull(self, unit: Unit, offset: int) -> None:
        key = (unit, offset)
        if key not in self.pulled:
            self.pulled.add(key)
            self.add(unit._archive.load_member(offset), unit)

    def find(self, lib: Library, name: str, pull: bool):
        """The definition ``name`` binds to from ``lib``: a pending (lo, si, flags, size),
        a published (address, unit, flags, size), or None."""
        for other in (lib, *lib.link_order) if lib.link_order else (lib,):
            own = other is lib
            pend = self.pending.get(other)
            d = pend.get(name) if pend else None
            if d is not None and (own or not d[2] & HIDDEN):
                return d
            d = other._symbols.get(name)
            if d is not None and (own or not d[2] & HIDDEN) and (d[1] is not self.replacing or d[1] is None):
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
            obj, dropped = lo.obj, lo.dropped
            names, shndx = obj.sym_name, obj.sym_shndx
            for si in range(obj.first_global, len(names)):
                if (shndx[si] == _UNDEF or shndx[si] in dropped) and names[si] \
                        and names[si] not in PLATFORM_NAMES:
                    self.find(lo.library, names[si], pull=True)

    # --- resolution and fixups -------------------------------------------

    def _synthetic(self, unit: Unit, attr: str, pool: int, size: int, align: int, content: bytes) -> int:
        """A per-unit platform object (``dso`` handle or ``atexit`` thunk), made once."""
        extras = unit.extras()
        addr = getattr(extras, attr)
        if not addr:
            addr = self.session._arena.pools[pool].alloc(size, align)
            setattr(extras, attr, addr)
            self.synthetic.append((unit, attr, pool, addr, size))
            self.session._arena.write(addr, content)
        return addr

    def _platform_value(self, lo: LinkObject, name: str) -> int:
        unit = lo.unit
        if name == "__dso_handle":
            return self._synthetic(unit, "dso", RODATA, 8, 8, bytes(8))
        if name == "atexit":
            dso = self._platform_value(lo, "__dso_handle")
            return self._synthetic(unit, "atexit", CODE, platform.ATEXIT_THUNK_SIZE, 16,
                                   platform.atexit_thunk(dso))
        if name == "__cxa_atexit":
            return platform.CXA_ATEXIT
        return lo.got_base   # _GLOBAL_OFFSET_TABLE_

    def _entry_stubs(self) -> None:
        """Give every function defined in a patchable library its entry stub
        (reusing the library's existing one when a name is redefined)."""
        for lib, defs in self.pending.items():
            if not lib.patchable:
                continue
            for name, d in defs.items():
                if d[2] & FUNC:
                    entry = lib._entries.get(name)
                    if entry is None:
                        entry = patch.allocate(self.session._arena, name)
                        self.new_entries.append(entry)
                    self.entries[(lib, name)] = entry

    @staticmethod
    def _address(lo: LinkObject, si: int) -> int:
        obj = lo.obj
        shndx = obj.sym_shndx[si]
        if shndx == _ABS:
            return obj.sym_value[si]
        if shndx == _COMMON:
            return lo.commons.get(si, 0)
        return lo.addr[shndx] + obj.sym_value[si]

    def resolve(self, lo: LinkObject, missing: dict[str, list[str]]) -> None:
        obj = lo.obj
        names, shndx, value = obj.sym_name, obj.sym_shndx, obj.sym_value
        addr = lo.addr
        first = obj.first_global
        # locals: section-relative, or absolute
        values = [v if x == _ABS else addr[x] + v if x != _COMMON else 0
                  for x, v in zip(shndx[:first], value[:first])]
        unit = lo.unit
        for si in range(first, len(names)):
            name = names[si]
            if name in PLATFORM_NAMES and (shndx[si] == _UNDEF or name == "_GLOBAL_OFFSET_TABLE_"):
                values.append(self._platform_value(lo, name))
                continue
            d = self.find(lo.library, name, pull=False) if name else None
            if d is None:
                if shndx[si] != _UNDEF and shndx[si] not in lo.dropped:  # unnamed global: itself
                    values.append(self._address(lo, si))
                    continue
                if obj.sym_info[si] >> 4 != _WEAK:
                    missing.setdefault(name, []).append(obj.name)
                values.append(0)
                continue
            owner = d[0]
            if owner.__class__ is LinkObject:
                if owner.unit is unit:
                    values.append(self._address(owner, d[1]))
                elif (owner.library, name) in self.entries:      # another unit's patchable function
                    entry = self.entries[(owner.library, name)]
                    values.append(entry.addr)
                    self.stub_uses.add((unit, entry))
                else:
                    values.append(self._address(owner, d[1]))
                    self.deps.add((unit, owner.unit))
            else:
                values.append(owner)
                if d[2] & STUB:
                    self.stub_uses.add((unit, d[1].library._entries[name]))
                elif d[1] is not None and d[1] is not unit:
                    self.deps.add((unit, d[1]))
        lo.values = values

    def _check_entry_points(self, lo: LinkObject, section: int, fns: list[int]) -> None:
        """Initializers and finalizers must be functions of this link: anything
        else would jump into data or the middle of code."""
        starts = self._function_starts()
        for f in fns:
            if f not in starts:
                obj = lo.obj
                raise MalformedObjectError(
                    f"{obj.name}:{obj.section_name(section)}: entry {f:#x} is not the start of a function "
                    f"defined by the objects being linked")

    def _function_starts(self) -> set[int]:
        starts = set()
        for lo in self.items:
            obj = lo.obj
            info, shndx = obj.sym_info, obj.sym_shndx
            for si in range(len(info)):
                if info[si] & 15 == elf.STT_FUNC and shndx[si] and shndx[si] < obj.shnum \
                        and lo.addr[shndx[si]] and obj.sh_flags[shndx[si]] & elf.SHF_EXECINSTR:
                    starts.add(lo.addr[shndx[si]] + obj.sym_value[si])
        return starts

    def _acquired(self) -> Acquired:
        acq = self.acquired.get(self._unit)
        if acq is None:
            acq = self.acquired[self._unit] = Acquired(self.session._tables)
        return acq

    def got(self, target: int) -> int:
        """A GOT entry for ``target``, owned by the unit being fixed up."""
        return self._acquired().got(target)

    def stub(self, target: int) -> int:
        return self._acquired().stub(target)

    def _size(self, lo: LinkObject, si: int) -> int:
        obj = lo.obj
        if obj.sym_shndx[si] != _UNDEF or si < obj.first_global:
            return obj.sym_size[si]
        d = self.find(lo.library, obj.sym_name[si], pull=False)
        return d[3] if d else 0

    def fixup(self, lo: LinkObject) -> None:
        obj = lo.obj
        arena = self.session._arena
        self._unit = lo.unit
        sizes = lambda si: self._size(lo, si)
        inits, finis = [], []
        eh_end = 0
        for i, role, _ in lo.sections:
            if role == PLACE:
                if not obj.sh_size[i]:
                    continue
                if obj.sh_type[i] == elf.SHT_NOBITS:
                    arena.zero(lo.addr[i], obj.sh_size[i])
                    continue
                data = obj.section_bytes(i)
                if obj.has_relocations(i):
                    data = bytearray(data)
                    apply_relocations(data, obj, i, lo.addr[i], obj.relocations(i), lo.values,
                                      sizes, lo.got_base, self)
                arena.write(lo.addr[i], data)
            elif role == EH_FRAME:
                data, relocs = lo.eh[i]
                if relocs:
                    data = bytearray(data)
                    apply_relocations(data, obj, i, lo.addr[i], relocs, lo.values,
                                      sizes, lo.got_base, self)
                arena.write(lo.addr[i], data)
                eh_end = max(eh_end, lo.addr[i] + len(data))
            elif role == INIT:
                name = obj.section_name(i)
                t = obj.sh_type[i]
                prio, is_init, backwards = platform.init_priority(name) or (
                    (65536 if t != elf.SHT_PREINIT_ARRAY else -1), t != elf.SHT_FINI_ARRAY, False)
                data = bytearray(obj.section_bytes(i))
                if obj.has_relocations(i):
                    apply_relocations(data, obj, i, 0, obj.relocations(i), lo.values,
                                      sizes, lo.got_base, self)
                fns = [f for (f,) in struct.iter_unpack("<Q", data[:len(data) & ~7])
                       if f not in (0, 0xFFFFFFFFFFFFFFFF)]
                self._check_entry_points(lo, i, fns)
                if backwards:
                    fns.reverse()
                (inits if is_init else finis).append((prio, fns))
        if lo.eh_block:
            arena.write(eh_end, b"\0\0\0\0")   # the unwinder's terminator
            self.frames.append((lo.unit, lo.eh_block))
        if inits or finis:
            inits.sort(key=lambda t: t[0])
            finis.sort(key=lambda t: t[0])
            # finalizers go on the unit's handler stack first, so they run
            # after (newest first) anything __cxa_atexit registers later
            fini_stack = [(f, None) for _, fns in finis for f in fns]
            self.inits.append((lo.unit, [f for _, fns in inits for f in fns], fini_stack))

    # --- the transaction -------------------------------------------------

    def run(self) -> None:
        """Lay out, resolve, fix up and commit; on failure leave no trace."""
        arena = self.session._arena
        try:
            self.gather()
            for lo in self.items:
                layout.place(lo, arena)
            self._entry_stubs()
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
            setattr(unit.extras(), attr, 0)
            arena.pools[pool].free(addr, size)
        for entry in self.new_entries:
            for pool, addr, size in patch.blocks(entry):
                arena.pools[pool].free(addr, size)

    def commit(self) -> None:
        for lo in self.items:
            eh = lo.eh_block
            lo.unit._blocks.extend(pack_block(p, a, n, a == eh) for p, a, n in lo.blocks)
        for unit, attr, pool, addr, size in self.synthetic:
            unit._blocks.append(pack_block(pool, addr, size))
            if attr == "dso":
                platform.bind_dso(addr, unit.extras().handlers)
        for unit, acq in self.acquired.items():
            if acq.got_targets or acq.stub_targets:
                extras = unit.extras()
                extras.got += acq.got_targets
                extras.stubs += acq.stub_targets
        for user, used in self.deps | self.stub_uses:   # used: a unit, or an entry stub
            if user._deps is None:
                user._deps = set()
            user._deps.add(used)
            if used._users is None:
                used._users = set()
            used._users.add(user)
        for unit, addr in self.frames:
            platform.register_frames(addr)
        for unit, inits, fini_stack in self.inits:
            handlers = unit.extras().handlers
            handlers.extend(fini_stack)
            platform.run_initializers(inits, handlers)
        for lib, claimed in self.comdats.items():
            for sig, unit in claimed.items():
                lib._comdats[sig] = unit
                unit.extras().comdats.append(sig)
        for unit, offset in self.pulled:
            unit.extras().members.add(offset)
            lazy = unit.library._lazy
            for name in unit._archive.member_symbols(offset):
                if lazy.get(name) == (unit, offset):
                    del lazy[name]
        address = self._address
        entries = self.entries
        published: dict[Unit, list[str]] = {}
        for lib, defs in self.pending.items():
            table = lib._symbols
            for name, (lo, si, flags, size) in defs.items():
                entry = entries.get((lib, name)) if entries else None
                if entry is None:
                    table[name] = (address(lo, si), lo.unit, flags, size)
                else:   # the slot swings to the new code, then the stub is published
                    patch.point(entry, address(lo, si))
                    entry.unit = lo.unit
                    lib._entries[name] = entry
                    table[name] = (entry.addr, lo.unit, flags | STUB, size)
                published.setdefault(lo.unit, []).append(name)
        for unit, names in published.items():
            unit._symbols += tuple(names)
