"""One link transaction, in stages that read like the pipeline:

    gather → place → resolve → fix up → initialize → commit

* **gather** parses the objects, claims COMDAT groups, prunes ``.eh_frame``,
  collects definitions and pulls, transitively, every archive member needed;
* **place** gives every section an address in the arena (and entry stubs to
  the functions of patchable libraries);
* **resolve** binds every symbol to a definition: this transaction's, a
  library's, or an external address;
* **fix up** writes the sections through the arena's write view, applying
  relocations (GOT entries and far-call stubs are acquired here);
* **initialize** registers unwind info and runs initializers.  It is the
  last stage that can fail (a C++ constructor that throws): it is undone by
  running the destructors registered so far and deregistering the frames;
* **commit** records units, dependencies, COMDAT claims, pulled members and
  symbols in their libraries.  It cannot fail, and it runs with Python signal
  handlers deferred (``interrupts.GATE``), so an interrupt never splits it.

Until commit, nothing of the transaction is visible: a failure or an
interrupt at any earlier point runs ``abort``, which frees every block,
table entry and entry stub the transaction took, and leaves the session as
it was.  Ctrl-C is noticed between objects (``GATE.checkpoint``) so a long
link can still be cancelled.
"""
from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import ehframe, elf, layout, patch, platform
from .arena import CODE, RODATA, pack_block
from .errors import (
    DuplicateSymbolError,
    InitializerError,
    MalformedObjectError,
    UndefinedSymbolError,
    UnsupportedRelocationError,
)
from .graph import EH_FRAME, FUNC, HIDDEN, INIT, PLACE, STUB, WEAK, Definition, LinkObject, Pending
from .interrupts import GATE
from .tables import Acquired
from .x86_64 import Fixups, Scanner, SectionPlan

if TYPE_CHECKING:
    from .archive import Archive
    from .library import Library, Unit
    from .session import Session

Found = Pending | Definition

_LOCAL, _WEAK, _UNDEF, _ABS, _COMMON = elf.STB_LOCAL, elf.STB_WEAK, elf.SHN_UNDEF, elf.SHN_ABS, elf.SHN_COMMON
_WEAK_BINDS = (elf.STB_WEAK, elf.STB_GNU_UNIQUE)
_HIDDEN_VIS = (elf.STV_HIDDEN, elf.STV_INTERNAL)
# Names the platform provides per unit, found before anything else.
PLATFORM_NAMES = frozenset(("__dso_handle", "atexit", "__cxa_atexit", "_GLOBAL_OFFSET_TABLE_"))


def _referenced(lo: LinkObject) -> set[int]:
    """Indices of the symbols that the relocations of ``lo``'s sections use."""
    obj = lo.obj
    return {si for i, _, _ in lo.sections for _, _, si, _ in obj.relocations(i)}


def _refuse_ifuncs(obj: elf.ObjectFile) -> None:
    """IFUNC resolvers are not run yet: binding the name to the resolver would
    give silently wrong results (``floor(2.7)`` returning 2.7), so refuse."""
    info = obj.sym_info
    if not any(i & 15 == elf.STT_GNU_IFUNC for i in info):
        return
    for si, x in enumerate(info):
        if x & 15 == elf.STT_GNU_IFUNC and obj.sym_shndx[si]:
            raise UnsupportedRelocationError(
                f"{obj.name}: {obj.symbol_name(si)!r} is an IFUNC (STT_GNU_IFUNC); hotlink does not run "
                f"IFUNC resolvers yet, and binding the name to its resolver would give wrong results")


class LinkTransaction:
    def __init__(self, session: Session, replacing: Unit | None = None):
        self.session = session
        self.replacing = replacing          # a unit whose definitions this link takes over
        self.units: list[Unit] = []         # new units, recorded in their libraries at commit
        self.archives: list[Unit] = []      # new archive units, offered at commit
        self.items: list[LinkObject] = []
        self.pending: dict[Library, dict[str, Pending]] = {}
        self.shadowed: list[tuple[Library, str, Pending]] = []   # definitions that lost to another
        self.offered: dict[Library, dict[str, tuple[Unit, int]]] = {}   # new archives' members
        self.comdats: dict[Library, dict[str, Unit]] = {}
        self.pulled: set[tuple[Unit, int]] = set()
        self.acquired: dict[Unit, Acquired] = {}
        self.synthetic: list[tuple[Unit, str, int, int, int]] = []   # (unit, attr, pool, addr, size)
        self.inits: list[tuple[Unit, list[int], list]] = []
        self.frames: list[tuple[Unit, int]] = []
        self.registered: list[int] = []     # frames registered by initialize (undone by abort)
        self.constructed: list[tuple[list, int]] = []   # (handler list, length before) per initialized unit
        self.bound_dsos: list[int] = []
        self.deps: set[tuple[Unit, Unit]] = set()
        self._starts: set[int] | None = None   # function entry addresses, computed once
        self.entries: dict[tuple[Library, str], patch.EntryStub] = {}   # patchable functions defined here
        self.new_entries: list[patch.EntryStub] = []
        self.stub_uses: set[tuple[Unit, patch.EntryStub]] = set()

    # --- gathering -------------------------------------------------------

    def add_object(self, lib: Library, obj: elf.ObjectFile, unit: Unit) -> None:
        """A new unit made of one object."""
        self.units.append(unit)
        self.add(obj, unit)

    def add_archive(self, lib: Library, unit: Unit, archive: Archive) -> None:
        """A new archive unit: its members are pulled by this link's needs,
        and offered to later lookups at commit."""
        unit.archive = archive
        self.units.append(unit)
        self.archives.append(unit)
        offered = self.offered.setdefault(lib, {})
        for sym, off in archive.index.items():
            if sym not in lib.definitions and sym not in lib.lazy:
                offered.setdefault(sym, (unit, off))

    def add(self, obj: elf.ObjectFile, unit: Unit) -> None:
        _refuse_ifuncs(obj)
        lo = LinkObject(obj, unit, unit.library)
        lib = unit.library
        if obj.groups:
            claimed = self.comdats.setdefault(lib, {})
            for g in obj.groups:
                if g.comdat:
                    if g.signature in lib.comdats or g.signature in claimed:
                        lo.drop_group(g.members)
                    else:
                        claimed[g.signature] = unit
        for i, role, _ in lo.sections:
            if role == EH_FRAME:
                lo.eh[i] = ehframe.prune_eh_frame(
                    obj.section_bytes(i), obj.relocations(i), f"{obj.name}:{obj.section_name(i)}",
                    lo.is_dropped_symbol if lo.dropped else None, obj=obj)
        self._define(lo)
        self.items.append(lo)

    def _define(self, lo: LinkObject) -> None:
        lib = lo.library
        pend = self.pending.get(lib)
        if pend is None:
            pend = self.pending[lib] = {}
        published = lib.definitions
        replacing = self.replacing
        dropped = lo.dropped
        obj = lo.obj
        names, info, shndx, sh_flags = obj.sym_name, obj.sym_info, obj.sym_shndx, obj.sh_flags
        for si in range(obj.first_global, len(names)):
            x = shndx[si]
            if x == _UNDEF or x in dropped or not names[si]:
                continue
            name = names[si]
            if x < obj.shnum and not sh_flags[x] & elf.SHF_ALLOC:
                raise MalformedObjectError(
                    f"{obj.name}: global {name!r} is defined in section {obj.section_name(x)!r}, "
                    f"which is not loaded (not SHF_ALLOC)")
            # an untyped symbol in code (assembly without .type) is a function too:
            # patchable libraries must keep its entry stub
            flags = ((WEAK if info[si] >> 4 in _WEAK_BINDS or x == _COMMON else 0)
                     | (FUNC if obj.is_code_symbol(si) else 0)
                     | (HIDDEN if obj.sym_other[si] & 3 in _HIDDEN_VIS else 0))
            new = Pending(lo, si, flags, obj.sym_size[si])
            cur: Found | None = pend.get(name)
            if cur is None:
                d = published.get(name)
                cur = None if d is None or (replacing is not None and d.unit is replacing) else d
            if cur is None:
                pend[name] = new
            elif cur.flags & WEAK and not flags & WEAK:
                pend[name] = new
                if isinstance(cur, Pending):
                    self.shadowed.append((lib, name, cur))
            elif (cur.flags | flags) & WEAK:
                self.shadowed.append((lib, name, new))
            else:
                owner = (cur.obj.obj.name if isinstance(cur, Pending)
                         else f"unit {cur.unit.name!r}" if cur.unit is not None else "the process")
                raise DuplicateSymbolError(name, owner, obj.name)

    def pull(self, unit: Unit, offset: int) -> None:
        key = (unit, offset)
        if key not in self.pulled:
            self.pulled.add(key)
            assert unit.archive is not None    # only archive units offer members
            self.add(unit.archive.load_member(offset), unit)

    def find(self, lib: Library, name: str, pull: bool) -> Found | None:
        """The definition ``name`` binds to from ``lib``: this transaction's,
        a library's, or an external address; None if there is none."""
        for other in (lib, *lib.link_order) if lib.link_order else (lib,):
            own = other is lib
            pend = self.pending.get(other)
            d: Found | None = pend.get(name) if pend else None
            if d is not None and (own or not d.flags & HIDDEN):
                return d
            d = other.definitions.get(name)
            if d is not None and (own or not d.flags & HIDDEN) and (d.unit is not self.replacing or d.unit is None):
                return d
            if pull:
                z = other.lazy.get(name)
                if z is None and self.offered:
                    z = self.offered.get(other, {}).get(name)
                if z is not None and z not in self.pulled:
                    self.pull(*z)
                    return self.find(lib, name, pull)
        addr = self.session.resolve_external(name)
        return None if addr is None else Definition(addr, None, 0, 0)

    def gather(self) -> None:
        """Pull, transitively, every archive member some object needs."""
        i = 0
        while i < len(self.items):
            GATE.checkpoint()
            lo = self.items[i]
            i += 1
            obj, dropped = lo.obj, lo.dropped
            names, shndx = obj.sym_name, obj.sym_shndx
            for si in range(obj.first_global, len(names)):
                if (shndx[si] == _UNDEF or shndx[si] in dropped) and names[si] \
                        and names[si] not in PLATFORM_NAMES:
                    self.find(lo.library, names[si], pull=True)

    # --- placing ----------------------------------------------------------

    def place(self) -> None:
        arena = self.session.arena
        for lo in self.items:
            layout.place(lo, arena)
        self._entry_stubs()

    def _entry_stubs(self) -> None:
        """Give every function defined in a patchable library its entry stub
        (reusing the library's existing one when a name is redefined)."""
        for lib, defs in self.pending.items():
            if not lib.patchable:
                continue
            for name, d in defs.items():
                if d.flags & FUNC:
                    entry = lib.entry_stubs.get(name)
                    if entry is None:
                        entry = patch.allocate(self.session.arena, name)
                        self.new_entries.append(entry)
                    self.entries[(lib, name)] = entry

    # --- resolution and fixups -------------------------------------------

    def _synthetic(self, unit: Unit, attr: str, pool: int, size: int, align: int,
                   content: Callable[[int], bytes]) -> int:
        """A per-unit platform object (``dso`` handle or ``atexit`` thunk), made
        once; ``content(address)`` gives its bytes."""
        extras = unit.extras()
        addr = getattr(extras, attr)
        if not addr:
            addr = self.session.arena.pools[pool].alloc(size, align)
            setattr(extras, attr, addr)
            self.synthetic.append((unit, attr, pool, addr, size))
            self.session.arena.write(addr, content(addr))
        return addr

    def _platform_value(self, lo: LinkObject, name: str) -> int:
        unit = lo.unit
        if name == "__dso_handle":
            # like crtbeginS.o's ``__dso_handle: .quad __dso_handle``: code that
            # passes its value (glibc's atexit does) names the unit too
            return self._synthetic(unit, "dso", RODATA, 8, 8, lambda a: struct.pack("<Q", a))
        if name == "atexit":
            dso = self._platform_value(lo, "__dso_handle")
            return self._synthetic(unit, "atexit", CODE, platform.ATEXIT_THUNK_SIZE, 16,
                                   lambda a: platform.atexit_thunk(dso))
        if name == "__cxa_atexit":
            return platform.CXA_ATEXIT
        return lo.got_base   # _GLOBAL_OFFSET_TABLE_

    @staticmethod
    def _address(lo: LinkObject, si: int) -> int:
        obj = lo.obj
        shndx = obj.sym_shndx[si]
        if shndx == _ABS:
            return obj.sym_value[si]
        if shndx == _COMMON:
            return lo.commons.get(si, 0)
        return lo.addr[shndx] + obj.sym_value[si]

    def resolve(self) -> None:
        missing: dict[str, list[str]] = {}
        for lo in self.items:
            self._resolve(lo, missing)
        if missing:
            raise UndefinedSymbolError(missing)

    def _resolve(self, lo: LinkObject, missing: dict[str, list[str]]) -> None:
        obj = lo.obj
        names, shndx, value = obj.sym_name, obj.sym_shndx, obj.sym_value
        addr = lo.addr
        first = obj.first_global
        # locals: section-relative, or absolute
        values = [v if x == _ABS else addr[x] + v if x != _COMMON else 0
                  for x, v in zip(shndx[:first], value[:first])]
        unit = lo.unit
        referenced: set[int] | None = None
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
            if isinstance(d, Pending):
                owner = d.obj
                if owner.unit is unit:
                    values.append(self._address(owner, d.symbol))
                    continue
                key = (owner.library, name)
                entry = self.entries.get(key) if self.entries else None
                values.append(entry.addr if entry is not None else self._address(owner, d.symbol))
                other: Unit | None = owner.unit
            else:
                values.append(d.address)
                other = d.unit
                if other is None or other is unit:
                    continue
                entry = other.library.entry_stubs[name] if d.flags & STUB else None
            # a definition of this object that lost to another unit's makes a
            # dependency only if this object's relocations use it
            if shndx[si] != _UNDEF:
                if referenced is None:
                    referenced = _referenced(lo)
                if si not in referenced:
                    continue
            if entry is not None:
                self.stub_uses.add((unit, entry))
            elif other is not None:
                self.deps.add((unit, other))
        lo.values = values

    def _check_entry_points(self, lo: LinkObject, section: int, fns: list[int]) -> None:
        """Initializers and finalizers must be functions of this link: anything
        else would jump into data or the middle of code."""
        if self._starts is None:
            self._starts = self._function_starts()
        for f in fns:
            if f not in self._starts:
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

    def _acquired(self, unit: Unit) -> Acquired:
        """What ``unit`` takes from the session's GOT and stub tables in this
        link: released by ``abort``, handed to the unit by ``commit``."""
        acq = self.acquired.get(unit)
        if acq is None:
            acq = self.acquired[unit] = Acquired(self.session.tables)
        return acq

    def _size(self, lo: LinkObject, si: int) -> int:
        obj = lo.obj
        if obj.sym_shndx[si] != _UNDEF or si < obj.first_global:
            return obj.sym_size[si]
        d = self.find(lo.library, obj.sym_name[si], pull=False)
        return d.size if d else 0

    def fix_up(self) -> None:
        """Relocations, in two passes over the whole link.  The scan decides
        for every relocated section (placed, ``.eh_frame``, initializer
        arrays) which GOT loads are relaxed, which targets need a GOT entry
        and which branches a far-call stub, and then each unit acquires its
        entries in one batch; the fixups only compute and write."""
        scanners: dict[Unit, Scanner] = {}
        jobs: list[dict[int, tuple[bytes, list[elf.Rela], SectionPlan | None]]] = []
        for lo in self.items:
            GATE.checkpoint()
            obj, values = lo.obj, lo.values
            scanner = scanners.get(lo.unit)
            if scanner is None:
                scanner = scanners[lo.unit] = Scanner()
            job: dict[int, tuple[bytes, list[elf.Rela], SectionPlan | None]] = {}
            for i, role, _ in lo.sections:
                if role == PLACE:
                    if not obj.has_relocations(i) or not obj.sh_size[i] or obj.sh_type[i] == elf.SHT_NOBITS:
                        continue
                    data, relocs = obj.section_bytes(i), obj.relocations(i)
                    base = lo.addr[i]
                elif role == EH_FRAME:
                    data, relocs = lo.eh[i]
                    base = lo.addr[i]
                elif role == INIT and obj.has_relocations(i):
                    data, relocs = obj.section_bytes(i), obj.relocations(i)
                    base = 0                    # read back, never placed
                else:
                    continue
                if relocs:
                    job[i] = (data, relocs, scanner.scan(data, relocs, values, base))
            jobs.append(job)
        for unit, scanner in scanners.items():
            if scanner.got or scanner.stubs:
                self._acquired(unit).acquire(scanner.got, scanner.stubs)
        for lo, job in zip(self.items, jobs):
            GATE.checkpoint()
            self.fixup(lo, job)

    def fixup(self, lo: LinkObject, job: dict[int, tuple[bytes, list[elf.Rela], SectionPlan | None]]) -> None:
        """Write ``lo``'s sections, applying the relocations ``job`` holds
        (section -> its bytes, relocations and the scan's plan)."""
        obj = lo.obj
        arena = self.session.arena
        fixups: Fixups | None = None
        inits: list[tuple[int, list[int]]] = []
        finis: list[tuple[int, list[int]]] = []
        eh_end = 0
        for i, role, _ in lo.sections:
            relocated = job.get(i)
            data: bytes | bytearray
            if relocated is not None:
                if fixups is None:
                    acq = self.acquired.get(lo.unit)
                    fixups = Fixups(obj, lo.values, lo.got_base, acq.got_address if acq else {},
                                    acq.stub_address if acq else {}, lambda si: self._size(lo, si))
                data = buf = bytearray(relocated[0])
                fixups.apply(buf, i, 0 if role == INIT else lo.addr[i], relocated[1], relocated[2])
            if role == PLACE:
                if not obj.sh_size[i]:
                    continue
                if obj.sh_type[i] == elf.SHT_NOBITS:
                    arena.zero(lo.addr[i], obj.sh_size[i])
                    continue
                if relocated is None:
                    data = obj.section_bytes(i)
                arena.write(lo.addr[i], data)
            elif role == EH_FRAME:
                if relocated is None:
                    data = lo.eh[i][0]
                arena.write(lo.addr[i], data)
                eh_end = max(eh_end, lo.addr[i] + len(data))
            elif role == INIT:
                name = obj.section_name(i)
                t = obj.sh_type[i]
                prio, is_init, backwards = platform.init_priority(name) or (
                    (65536 if t != elf.SHT_PREINIT_ARRAY else -1), t != elf.SHT_FINI_ARRAY, False)
                if relocated is None:
                    data = obj.section_bytes(i)
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

    # --- initializing: the last stage that can fail ------------------------

    def initialize(self) -> None:
        """Register unwind info, then run initializers, newest unit last.

        A C++ exception escaping a constructor is caught natively (it must
        never unwind into ctypes); the destructors that the unit's finished
        constructors registered run at once, and the link is aborted.
        """
        for _, addr in self.frames:
            platform.register_frames(addr)
            self.registered.append(addr)
        for unit, attr, _, addr, _ in self.synthetic:
            if attr == "dso":
                platform.bind_dso(addr, unit.extras().handlers)
                self.bound_dsos.append(addr)
        guarded = self.session.guarded_call() if self.inits else None
        for unit, inits, fini_stack in self.inits:
            handlers = unit.extras().handlers
            mark = len(handlers)
            error = platform.run_initializers(inits, handlers, guarded)
            if error is not None:
                self.constructed.append((handlers, mark))
                raise InitializerError(f"unit {unit.name!r} ({unit.library.name}): a static initializer "
                                       f"threw {error}; what it had constructed was destroyed and "
                                       f"nothing was added")
            # finalizers run after (newest first) what the initializers registered
            handlers[mark:mark] = fini_stack
            self.constructed.append((handlers, mark))

    # --- the transaction -------------------------------------------------

    def run(self) -> None:
        """Every stage, then commit; on failure or interrupt, leave no trace."""
        with GATE:
            try:
                self.gather()
                self.place()
                self.resolve()
                self.fix_up()
                self.initialize()
            except BaseException:
                self.abort()
                raise
            self.commit()

    def abort(self) -> None:
        guarded = self.session.guarded_call() if self.constructed else None
        for handlers, mark in reversed(self.constructed):
            extra = handlers[mark:]
            del handlers[mark:]
            platform.run_finalizers(extra, guarded)
        for dso in self.bound_dsos:
            platform.unbind_dso(dso)
        for addr in self.registered:
            platform.deregister_frames(addr)
        arena = self.session.arena
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
        """Make the transaction visible.  Nothing here can fail."""
        self.session.code_changed()
        for unit in self.units:
            unit.library.record_unit(unit)
        for lo in self.items:
            eh = lo.eh_block
            lo.unit.blocks.extend(pack_block(p, a, n, a == eh) for p, a, n in lo.blocks)
        for unit, _attr, pool, addr, size in self.synthetic:
            unit.blocks.append(pack_block(pool, addr, size))
        for unit, acq in self.acquired.items():
            if acq.got_targets or acq.stub_targets:
                extras = unit.extras()
                extras.got += acq.got_targets
                extras.stubs += acq.stub_targets
        for user, used in self.deps | self.stub_uses:   # used: a unit, or an entry stub
            if user.deps is None:
                user.deps = set()
            user.deps.add(used)
            if used.users is None:
                used.users = set()
            used.users.add(user)
        for lib, claimed in self.comdats.items():
            for sig, unit in claimed.items():
                lib.claim_comdat(sig, unit)
        for unit, offset in self.pulled:
            unit.library.consume_member(unit, offset)
        for unit in self.archives:
            unit.library.offer(unit)
        address = self._address
        entries = self.entries
        published: dict[Unit, list[str]] = {}
        for lib, defs in self.pending.items():
            for name, (lo, si, flags, size) in defs.items():
                entry = entries.get((lib, name)) if entries else None
                old_target = 0
                if entry is None:
                    sym = Definition(address(lo, si), lo.unit, flags, size)
                else:   # the slot swings to the new code, then the stub is published
                    old_target = patch.target(entry)
                    patch.point(entry, address(lo, si))
                    entry.unit = lo.unit
                    lib.entry_stubs[name] = entry
                    sym = Definition(entry.addr, lo.unit, flags | STUB, size)
                lib.publish(name, sym, self.replacing, old_target)
                published.setdefault(lo.unit, []).append(name)
        for lib, name, (lo, si, flags, size) in self.shadowed:
            lib.shadow(name, Definition(address(lo, si), lo.unit, flags, size))
        for unit, names in published.items():
            unit.names += tuple(names)
