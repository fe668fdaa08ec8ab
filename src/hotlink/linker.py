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

import ctypes
import struct
from collections.abc import Callable
from itertools import repeat
from typing import TYPE_CHECKING, Any

from . import ehframe, elf, forkcopy, layout, patch, platform, tls, vector
from .arena import CODE, DATA, RODATA, pack_block
from .errors import (
    DuplicateSymbolError,
    InitializerError,
    LinkError,
    MalformedObjectError,
    UndefinedSymbolError,
    UnsupportedRelocationError,
)
from .graph import (
    EH_FRAME,
    FUNC,
    HAS_IFUNC,
    HAS_TLS,
    HIDDEN,
    INIT,
    PLACE,
    STUB,
    THREAD,
    THREAD_LOCAL,
    WEAK,
    Definition,
    LinkObject,
    Pending,
)
from .interrupts import GATE
from .tables import Acquired
from .vector import numpy
from .x86_64 import TLS_KINDS, ColumnPlan, Fixups, Reloc, Scanner, SectionPlan, kind_name

if TYPE_CHECKING:
    from .archive import Archive
    from .library import Library, Unit
    from .session import Session

Found = Pending | Definition
_Relocs = list[elf.Rela] | elf.RelaColumns
# what the scan found for one object: section -> (its bytes, relocations, the plan)
_Job = dict[int, tuple[bytes, _Relocs, SectionPlan | None]]

_LOCAL, _WEAK, _UNDEF, _ABS, _COMMON = elf.STB_LOCAL, elf.STB_WEAK, elf.SHN_UNDEF, elf.SHN_ABS, elf.SHN_COMMON
_WEAK_BINDS = (elf.STB_WEAK, elf.STB_GNU_UNIQUE)
_HIDDEN_VIS = (elf.STV_HIDDEN, elf.STV_INTERNAL)
_MASK64 = (1 << 64) - 1
# Names the platform provides per unit, found before anything else.
PLATFORM_NAMES = frozenset(("__dso_handle", "__cxa_atexit", "_GLOBAL_OFFSET_TABLE_", *platform.DSO_THUNKS,
                            *platform.THREAD_ATEXIT_NAMES, *platform.FORK_HANDLER_NAMES))


def _referenced(lo: LinkObject) -> set[int]:
    """Indices of the symbols that the relocations of ``lo``'s sections use."""
    obj = lo.obj
    return {si for i, _, _ in lo.sections for _, _, si, _ in obj.relocations(i)}


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
        self.touched: set[Library] = set()  # the libraries it publishes into or pulls from (set by prepare)
        self.low: dict[Unit, str] = {}      # units placed below 2 GiB (non-PIC) -> the object that needs it
        # IFUNCs defined here: (object, symbol) -> the stub every reference of
        # this link goes through, pointed at the implementation once the code
        # is written and the resolver can run (``resolve_ifuncs``)
        self.iplt: dict[tuple[LinkObject, int], patch.EntryStub] = {}
        self.ifunc_impl: dict[tuple[LinkObject, int], int] = {}
        # thread-locals: each unit's TLS sections of this link, and the module they became
        self.tls_sections: dict[Unit, list[tuple[LinkObject, int]]] = {}
        self.tls_modules: dict[Unit, tls.TlsModule] = {}
        self.tls_blocks: list[tuple[Unit, int, int]] = []    # (unit, address, size) of TLS index pairs
        self.targets: dict[LinkObject, Any] = {}     # big objects' values as numpy arrays (fix_up)

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
                    obj.section_bytes(i), obj.relocation_columns(i) or obj.relocations(i),
                    f"{obj.name}:{obj.section_name(i)}",
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
        if len(names) - obj.first_global >= vector.MIN_ROWS and self._define_all(lo, pend, published):
            return
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
                     | (HIDDEN if obj.sym_other[si] & 3 in _HIDDEN_VIS else 0)
                     | (THREAD if info[si] & 15 == elf.STT_TLS else 0))
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

    @staticmethod
    def _define_all(lo: LinkObject, pend: dict[str, Pending], published: dict[str, Definition]) -> bool:
        """``_define`` for an object with many globals, as numpy columns, when
        none of its names is defined already (in this link or the library)
        and none twice: they all just become pending.  False (nothing done)
        otherwise, or without numpy: then ``_define`` goes name by name."""
        np = numpy()
        if np is None:
            return False
        obj = lo.obj
        first = obj.first_global
        value, shndx, info, other = obj.symbol_columns()
        x, bind, typ = shndx[first:], info[first:] >> 4, info[first:] & 15
        defined = x != _UNDEF
        if lo.dropped:
            defined &= ~np.isin(x, list(lo.dropped))
        sh_flags = np.array(obj.sh_flags, np.int64)
        inside = x < obj.shnum
        flags_x = sh_flags[np.where(inside, x, 0)]
        if (defined & inside & (flags_x & elf.SHF_ALLOC == 0)).any():
            return False        # one in a section that is not loaded: the loop names it
        # as _define: an untyped symbol in code (assembly without .type) is a function too
        code = (typ == elf.STT_FUNC) | (typ == elf.STT_GNU_IFUNC) | (
            (typ == elf.STT_NOTYPE) & (x > 0) & (x < elf.SHN_LORESERVE) & inside & (flags_x & elf.SHF_EXECINSTR != 0))
        vis = other[first:] & 3
        flags = (np.where((bind == elf.STB_WEAK) | (bind == elf.STB_GNU_UNIQUE) | (x == _COMMON), WEAK, 0)
                 | np.where(code, FUNC, 0) | np.where((vis == elf.STV_HIDDEN) | (vis == elf.STV_INTERNAL), HIDDEN, 0)
                 | np.where(typ == elf.STT_TLS, THREAD, 0))
        names = obj.sym_name
        at = [si for si in (np.flatnonzero(defined) + first).tolist() if names[si]]
        chosen = [names[si] for si in at]
        if len(set(chosen)) != len(chosen) or not pend.keys().isdisjoint(chosen) \
                or not published.keys().isdisjoint(chosen):
            return False
        sizes = obj.sym_size
        pend.update(zip(chosen, map(Pending, repeat(lo), at, flags[np.array(at, np.int64) - first].tolist(),
                                    [sizes[si] for si in at])))
        return True

    def pull(self, unit: Unit, offset: int) -> None:
        key = (unit, offset)
        if key not in self.pulled:
            self.pulled.add(key)
            assert unit.archive is not None    # only archive units offer members
            self.add(unit.archive.load_member(offset), unit)

    def find(self, lib: Library, name: str, pull: bool, external: bool = True) -> Found | None:
        """The definition ``name`` binds to from ``lib``: this transaction's,
        a library's, or (``external``) an external address; None if there is
        none.  Thread-locals are never looked up externally here: a ``dlsym``
        of one allocates it dynamically in this thread, after which glibc
        cannot move it into static TLS (tls.py looks them up instead)."""
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
                    return self.find(lib, name, pull, external)
        if not external:
            return None
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
                    self.find(lo.library, names[si], pull=True, external=not self._is_tls(lo, si))

    # --- placing ----------------------------------------------------------

    def place(self) -> None:
        arena = self.session.arena
        self.low = layout.low_units(self.items)
        for lo in self.items:
            layout.place(lo, arena, self.low.get(lo.unit, ""))
            if lo.special & HAS_TLS:
                for i, role, _ in lo.sections:
                    if role == THREAD_LOCAL:
                        self.tls_sections.setdefault(lo.unit, []).append((lo, i))
        for sections in self.tls_sections.values():
            # a TLS symbol's value is its offset in its unit's TLS image
            offsets, _, _ = tls.layout(self._tls_shapes(sections))
            for (lo, i), offset in zip(sections, offsets):
                lo.addr[i] = offset
        self._entry_stubs()

    @staticmethod
    def _tls_shapes(sections: list[tuple[LinkObject, int]]) -> list[tuple[int, int, int, bool]]:
        return [(i, lo.obj.sh_size[i], lo.obj.sh_align[i], lo.obj.sh_type[i] == elf.SHT_NOBITS)
                for lo, i in sections]

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
                        entry = patch.allocate(self.session.arena, name, d.obj.unit in self.low)
                        self.new_entries.append(entry)
                    self.entries[(lib, name)] = entry

    # --- resolution and fixups -------------------------------------------

    def _synthetic(self, unit: Unit, name: str, pool: int, size: int, align: int,
                   content: Callable[[int], bytes]) -> int:
        """A per-unit platform object (``dso`` handle or a thunk), made once;
        ``content(address)`` gives its bytes."""
        objects = unit.extras().platform
        addr = objects.get(name)
        if not addr:
            addr = objects[name] = self.session.arena.zone(unit in self.low)[pool].alloc(size, align)
            self.synthetic.append((unit, name, pool, addr, size))
            self.session.arena.write(addr, content(addr))
        return addr

    def _platform_value(self, lo: LinkObject, name: str) -> int:
        unit = lo.unit
        if name == "__dso_handle":
            # like crtbeginS.o's ``__dso_handle: .quad __dso_handle``: code that
            # passes its value (glibc's atexit does) names the unit too
            return self._synthetic(unit, name, RODATA, 8, 8, lambda a: struct.pack("<Q", a))
        if name in platform.FORK_HANDLER_NAMES:
            forkcopy.install()      # before this unit can register fork handlers of its own
        thunk = platform.DSO_THUNKS.get(name)
        if thunk is not None:
            dso = self._platform_value(lo, "__dso_handle")
            function, register, zero_rsi = thunk
            return self._synthetic(unit, name, CODE, platform.THUNK_SIZE, 16,
                                   lambda a: platform.dso_thunk(dso, function(), register, zero_rsi))
        if name in platform.THREAD_ATEXIT_NAMES:
            counter = self._synthetic(unit, "thread_dtors", DATA, 8, 8, lambda a: bytes(8))
            runtime = self.session.thread_atexit()
            return self._synthetic(unit, "__cxa_thread_atexit", CODE, platform.THUNK_SIZE, 16,
                                   lambda a: platform.dso_thunk(counter, runtime, "rdx"))
        if name == "__cxa_atexit":
            return platform.CXA_ATEXIT
        if name == "__register_atfork":
            return platform.REGISTER_ATFORK
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
        values = self._local_values(lo) if first >= vector.MIN_ROWS else None
        if values is None:
            values = [v if x == _ABS else addr[x] + v if x != _COMMON else 0
                      for x, v in zip(shndx[:first], value[:first])]
        if lo.special & HAS_IFUNC:
            for si in range(first):
                if obj.sym_info[si] & 15 == elf.STT_GNU_IFUNC and shndx[si]:
                    values[si] = self._ifunc_stub(lo, si)
        unit = lo.unit
        referenced: set[int] | None = None
        # this object's own definitions that won (most of a big object's
        # globals): what find() would return, without its search
        own = self.pending.get(lo.library) if not lo.special & HAS_IFUNC else None
        commons = lo.commons
        for si in range(first, len(names)):
            name = names[si]
            if name in PLATFORM_NAMES and (shndx[si] == _UNDEF or name == "_GLOBAL_OFFSET_TABLE_"):
                values.append(self._platform_value(lo, name))
                continue
            if own is not None:
                mine = own.get(name)
                if mine is not None and mine.obj is lo:
                    x = shndx[mine.symbol]
                    values.append(value[mine.symbol] if x == _ABS else commons.get(mine.symbol, 0)
                                  if x == _COMMON else addr[x] + value[mine.symbol])
                    continue
            thread_local = self._is_tls(lo, si)
            d = self.find(lo.library, name, pull=False, external=not thread_local) if name else None
            if d is None:
                if shndx[si] != _UNDEF and shndx[si] not in lo.dropped:  # unnamed global: itself
                    values.append(self._address(lo, si))
                    continue
                if thread_local:        # a shared object's, found (or missed) by thread_locals()
                    values.append(0)
                    continue
                if obj.sym_info[si] >> 4 != _WEAK:
                    missing.setdefault(name, []).append(obj.name)
                values.append(0)
                continue
            if isinstance(d, Pending):
                owner = d.obj
                if owner.obj.sym_info[d.symbol] & 15 == elf.STT_GNU_IFUNC:
                    target = self._ifunc_stub(owner, d.symbol)
                else:
                    target = self._address(owner, d.symbol)
                if owner.unit is unit:
                    values.append(target)
                    continue
                key = (owner.library, name)
                entry = self.entries.get(key) if self.entries else None
                values.append(entry.addr if entry is not None else target)
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

    @staticmethod
    def _local_values(lo: LinkObject) -> list[int] | None:
        """The values of a big object's local symbols, as numpy columns (as
        ``_resolve`` computes them); None without numpy, or if a value could
        pass 2**64, where only Python's integers are right."""
        np = numpy()
        if np is None:
            return None
        obj = lo.obj
        first = obj.first_global
        value, shndx, _, _ = obj.symbol_columns()
        v, x = value[:first], shndx[:first]
        addr = np.array([*lo.addr, 0], np.uint64)
        if int(v.max(initial=0)) >> 62 or int(addr.max()) >> 62:
            return None
        out: list[int] = np.where(x == _ABS, v, np.where(x == _COMMON, np.uint64(0),
                                                         addr[np.minimum(x, obj.shnum)] + v)).tolist()
        return out

    def _ifunc_stub(self, lo: LinkObject, si: int) -> int:
        """The stub the references of this link to an IFUNC go through, as a
        static link's ``.iplt`` entry (later links bind to the implementation)."""
        stub = self.iplt.get((lo, si))
        if stub is None:
            stub = self.iplt[(lo, si)] = patch.allocate(self.session.arena, lo.obj.symbol_name(si),
                                                        lo.unit in self.low)
        return stub.addr

    def resolve_ifuncs(self) -> None:
        """Call each IFUNC's resolver, once its code is written, as ld.so does
        for ``R_X86_64_IRELATIVE``: the result is what the name means from now on."""
        for (lo, si), stub in self.iplt.items():
            impl = ctypes.CFUNCTYPE(ctypes.c_void_p)(self._address(lo, si))() or 0
            if not impl:
                raise LinkError(f"{lo.obj.name}: the IFUNC resolver of {lo.obj.symbol_name(si)!r} "
                                f"returned NULL")
            patch.point(stub, impl)
            self.ifunc_impl[(lo, si)] = impl

    def _final_address(self, lo: LinkObject, si: int) -> int:
        """What a definition means once linked: an IFUNC's implementation; an
        address modulo 2**64, as ld computes it (a malformed symbol value can
        pass 2**64 once its section's address is added)."""
        if self.ifunc_impl:
            impl = self.ifunc_impl.get((lo, si))
            if impl is not None:
                return impl
        return self._address(lo, si) & _MASK64

    # --- thread-locals (tls.py) ----------------------------------------------

    def thread_locals(self) -> None:
        """Load each unit's TLS image as a module and compute what the TLS
        relocations write: offsets, module IDs, GOT words and index pairs."""
        refs: list[tuple[LinkObject, list[tuple[int, int, tuple]]]] = []
        static: set[Unit] = set()
        for lo in self.items:
            if not lo.special & HAS_TLS:
                continue
            obj = lo.obj
            found = []
            for i, role, _ in lo.sections:
                if role == PLACE and obj.has_relocations(i):
                    for _, kind, si, _ in obj.relocations(i):
                        if kind in TLS_KINDS:
                            owner = self._tls_owner(lo, si)
                            found.append((kind, si, owner))
                            if kind in tls.STATIC_KINDS and owner[3] and owner[0] is not None:
                                static.add(owner[0])
            refs.append((lo, found))
        for unit, sections in self.tls_sections.items():
            GATE.checkpoint()
            offsets, size, align = tls.layout(self._tls_shapes(sections))
            image = bytearray(size)
            for (lo, i), offset in zip(sections, offsets):
                obj = lo.obj
                if obj.sh_type[i] != elf.SHT_NOBITS:
                    image[offset:offset + obj.sh_size[i]] = obj.section_bytes(i)
                    if obj.has_relocations(i):
                        tls.relocate_image(obj, i, image, offset, lo.values)
            end = max((o + lo.obj.sh_size[i] for (lo, i), o in zip(sections, offsets)
                       if lo.obj.sh_type[i] != elf.SHT_NOBITS), default=0)
            args = (unit.name, bytes(image[:end]), size, align, unit in static)
            try:
                self.tls_modules[unit] = tls.TlsModule(*args)
            except tls.StaticTlsFull:
                # removed units may still hold static TLS in their grace period
                if not self._wait_for_grace_periods():
                    raise
                self.tls_modules[unit] = tls.TlsModule(*args)
        for defs in self.pending.values():
            for name, (lo, si, _, _) in defs.items():
                module = self.tls_modules.get(lo.unit)
                if module is not None and lo.obj.sym_info[si] & 15 == elf.STT_TLS:
                    module.names[name] = self._address(lo, si)
        for lo, found in refs:
            self._tls_values(lo, found)

    def _wait_for_grace_periods(self, timeout: float = 2.0) -> bool:
        """Let removed units' grace periods end (False if this thread may not wait)."""
        try:
            self.session.reclaimer.synchronize(timeout)
        except LinkError:       # called back from JIT code, or an online thread
            return False
        return True

    @staticmethod
    def _is_tls(lo: LinkObject, si: int) -> bool:
        return bool(lo.special & HAS_TLS) and lo.obj.sym_info[si] & 15 == elf.STT_TLS

    def _tls_owner(self, lo: LinkObject, si: int) -> tuple[Unit | None, int, str, bool]:
        """(unit whose module holds it, offset, name, whether this link
        defines it): the unit is None for the TLS of a shared object, and
        the offset then unknown."""
        obj = lo.obj
        name = obj.sym_name[si]
        if si < obj.first_global:
            return lo.unit, lo.values[si], name, True
        d = self.find(lo.library, name, pull=False, external=False)
        if isinstance(d, Pending):
            return d.obj.unit, self._address(d.obj, d.symbol), name, True
        if d is not None and d.unit is not None:
            return d.unit, d.address, name, False
        return None, 0, name, False

    def _tls_target(self, lo: LinkObject, kind: int, owner: tuple[Unit | None, int, str, bool]) -> tls.TlsTarget:
        unit, offset, name, new = owner
        if unit is None:
            return tls.external(name, kind in tls.STATIC_KINDS, lo.obj.name)
        if new:
            module = self.tls_modules[unit]
        else:                   # defined by an earlier link of the unit (an archive's earlier pulls)
            found = [m for m in unit.extras().tls or () if name in m.names]
            if not found:
                raise UnsupportedRelocationError(f"{lo.obj.name}: {name!r} is not a thread-local variable")
            module = found[0]
        target = module.target(offset)
        if kind in tls.STATIC_KINDS and target.tpoff is None:
            raise UnsupportedRelocationError(
                f"{lo.obj.name}: initial-exec reference ({kind_name(kind)}) to the thread-local "
                f"{name!r} of unit {unit.name!r}, whose thread-locals are dynamic (no initial-exec "
                f"access was linked with them): compile {lo.obj.name} with -ftls-model=global-dynamic")
        return target

    def _tls_values(self, lo: LinkObject, found: list[tuple[int, int, tuple]]) -> None:
        values = lo.tls
        pairs: dict[tuple[int, int], int] = {}       # {module, offset} -> its index in the block
        words: list[int] = []
        for kind, si, owner in found:
            t = self._tls_target(lo, kind, owner)
            if kind == Reloc.TPOFF32 or kind == Reloc.TPOFF64:
                values[(kind, si)] = t.tpoff or 0
            elif kind == Reloc.GOTTPOFF or kind == Reloc.GOTPC32_TLSDESC:
                words.append((t.tpoff or 0) & 0xFFFFFFFFFFFFFFFF)
                values[(kind, si)] = words[-1]          # the GOT entry's address, below
            elif kind == Reloc.TLSGD:
                values[(kind, si)] = pairs.setdefault((t.module, t.offset), len(pairs))
            elif kind == Reloc.TLSLD:
                values[(kind, si)] = pairs.setdefault((t.module, 0), len(pairs))
            elif kind == Reloc.DTPOFF32 or kind == Reloc.DTPOFF64:
                values[(kind, si)] = t.offset
            elif kind == Reloc.DTPMOD64:
                values[(kind, si)] = t.module
            elif kind == Reloc.TLSDESC_CALL:
                values[(kind, si)] = 0
        if words:
            acq = self._acquired(lo.unit)
            acq.acquire(words, ())
            for key, v in values.items():
                if key[0] == Reloc.GOTTPOFF or key[0] == Reloc.GOTPC32_TLSDESC:
                    values[key] = acq.got_address[v]
        if pairs:
            size = 16 * len(pairs)
            block = self.session.arena.zone(lo.unit in self.low)[RODATA].alloc(size, 16)
            self.tls_blocks.append((lo.unit, block, size))
            self.session.arena.write(block, b"".join(struct.pack("<QQ", m, o) for m, o in pairs))
            for key, v in values.items():
                if key[0] == Reloc.TLSGD or key[0] == Reloc.TLSLD:
                    values[key] = block + 16 * v

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
            acq = self.acquired[unit] = Acquired(self.session.tables, unit in self.low)
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
        jobs: list[_Job] = []
        for lo in self.items:
            GATE.checkpoint()
            obj, values = lo.obj, lo.values
            rela = obj.rela_sections             # sections with relocations
            job: _Job = {}
            relocs: _Relocs
            for i, role, _ in lo.sections:
                if role == EH_FRAME:
                    data, relocs = lo.eh[i]
                    base = lo.addr[i]
                elif i not in rela:
                    continue
                elif role == PLACE:
                    if not obj.sh_size[i] or obj.sh_type[i] == elf.SHT_NOBITS:
                        continue
                    data = obj.section_bytes(i)
                    relocs = obj.relocation_columns(i, vector.MIN_FIXUP_ROWS) or obj.relocations(i)
                    base = lo.addr[i]
                elif role == INIT:
                    data, relocs = obj.section_bytes(i), obj.relocations(i)
                    base = 0                    # read back, never placed
                else:
                    continue
                if not relocs:
                    continue
                scanner = scanners.get(lo.unit)
                if scanner is None:
                    scanner = scanners[lo.unit] = Scanner()
                if isinstance(relocs, elf.RelaColumns):     # a big section: by kind, as numpy columns
                    targets = self._targets(lo)
                    plan = None if targets is None else scanner.scan_columns(data, relocs, targets, values, base)
                    if plan is not None:
                        job[i] = (data, relocs, plan)
                        continue
                    relocs = relocs.rows()
                job[i] = (data, relocs, scanner.scan(data, relocs, values, base))
            jobs.append(job)
        for unit, scanner in scanners.items():
            if scanner.got or scanner.stubs:
                self._acquired(unit).acquire(scanner.got, scanner.stubs)
        for lo, job in zip(self.items, jobs):
            GATE.checkpoint()
            self.fixup(lo, job)

    def _targets(self, lo: LinkObject) -> Any:
        """``lo.values`` as a numpy uint64 array, for the vector fixups of its
        big sections (None if a value does not fit one: those go row by row)."""
        if lo not in self.targets:
            np = numpy()
            try:
                self.targets[lo] = None if np is None else np.array(lo.values, np.uint64)
            except (OverflowError, ValueError):
                self.targets[lo] = None
        return self.targets[lo]

    def fixup(self, lo: LinkObject, job: _Job) -> None:
        """Write ``lo``'s sections, applying the relocations ``job`` holds
        (section -> its bytes, relocations and the scan's plan)."""
        obj = lo.obj
        arena = self.session.arena
        sizes, addr = obj.sh_size, lo.addr
        fixups: Fixups | None = None
        inits: list[tuple[int, list[int]]] = []
        finis: list[tuple[int, list[int]]] = []
        eh_end = 0
        for i, role, _ in lo.sections:
            relocated = job.get(i) if job else None
            data: bytes | bytearray
            if relocated is not None:
                if fixups is None:
                    acq = self.acquired.get(lo.unit)
                    fixups = Fixups(obj, lo.values, lo.got_base, acq.got_address if acq else {},
                                    acq.stub_address if acq else {}, lambda si: self._size(lo, si), lo.tls)
                data = buf = bytearray(relocated[0])
                relocs, plan = relocated[1], relocated[2]
                if isinstance(plan, ColumnPlan) and isinstance(relocs, elf.RelaColumns):
                    fixups.apply_columns(buf, i, 0 if role == INIT else addr[i], relocs, plan)
                else:
                    fixups.apply(buf, i, 0 if role == INIT else addr[i],
                                 relocs if isinstance(relocs, list) else relocs.rows(), plan)
            if role == PLACE:
                if not sizes[i]:
                    continue
                if relocated is None:
                    if obj.sh_type[i] == elf.SHT_NOBITS:
                        arena.zero(addr[i], sizes[i])
                        continue
                    data = obj.section_bytes(i)
                arena.write(addr[i], data)
            elif role == EH_FRAME:
                if relocated is None:
                    data = lo.eh[i][0]
                arena.write(addr[i], data)
                if addr[i] + len(data) > eh_end:
                    eh_end = addr[i] + len(data)
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
        for unit, name, _, addr, _ in self.synthetic:
            if name == "__dso_handle":
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
            self.prepare()
            self.commit()

    def prepare(self) -> None:
        """Every stage up to commit; on failure or interrupt, leave no trace."""
        with GATE:
            try:
                self.gather()
                self.place()
                self.resolve()
                if self.tls_sections or any(lo.special & HAS_TLS for lo in self.items):
                    self.thread_locals()
                self.fix_up()
                if self.iplt:
                    self.resolve_ifuncs()
                self.initialize()
            except BaseException:
                self.abort()
                raise
        self.touched = {*self.pending, *(u.library for u in self.units), *(u.library for u, _ in self.pulled)}

    def dead_dependency(self) -> str | None:
        """A unit or entry stub this transaction binds to that is gone (a
        prepared transaction waits; the world may move on meanwhile)."""
        for _, used in self.deps:
            if not used.alive:
                return f"unit {used.name!r}"
        for _, entry in self.stub_uses:
            if not entry.alive:
                return f"entry stub {entry.name!r}"
        return None

    def abort(self) -> None:
        guarded = self.session.guarded_call() if self.constructed else None
        for handlers, mark in reversed(self.constructed):
            extra = handlers[mark:]
            del handlers[mark:]
            platform.run_finalizers(extra, guarded)
        for dso in self.bound_dsos:
            platform.forget_dso(dso)
        for addr in self.registered:
            platform.deregister_frames(addr)
        arena = self.session.arena
        for lo in self.items:
            layout.release(lo, arena)
        for acq in self.acquired.values():
            acq.release()
        for unit, name, pool, addr, size in self.synthetic:
            del unit.extras().platform[name]
            arena.pools[pool].free(addr, size)
        for module in self.tls_modules.values():
            module.close()
        for _, addr, size in self.tls_blocks:
            arena.pools[RODATA].free(addr, size)
        for entry in (*self.new_entries, *self.iplt.values()):
            for pool, addr, size in patch.blocks(entry):
                arena.pools[pool].free(addr, size)

    def _commit_extras(self) -> None:
        """What most links do not have: platform objects, IFUNC stubs, TLS, GOT and stub entries."""
        for unit, _name, pool, addr, size in self.synthetic:
            unit.blocks.append(pack_block(pool, addr, size))
        for (lo, _), stub in self.iplt.items():
            lo.unit.blocks.extend(pack_block(p, a, n) for p, a, n in patch.blocks(stub))
        for unit, addr, size in self.tls_blocks:
            unit.blocks.append(pack_block(RODATA, addr, size))
        for unit, module in self.tls_modules.items():
            extras = unit.extras()
            extras.tls = [*(extras.tls or ()), module]
        for unit, acq in self.acquired.items():
            if acq.got_targets or acq.stub_targets:
                extras = unit.extras()
                extras.got += acq.got_targets
                extras.stubs += acq.stub_targets

    def commit(self) -> None:
        """Make the transaction visible.  Nothing here can fail."""
        self.session.code_changed()
        for lib in self.touched:
            lib.changes += 1
        for unit in self.units:
            unit.library.record_unit(unit)
        for lo in self.items:
            eh = lo.eh_block
            lo.unit.blocks += [pack_block(p, a, n, a == eh) for p, a, n in lo.blocks]
        if self.synthetic or self.iplt or self.tls_blocks or self.tls_modules or self.acquired:
            self._commit_extras()
        for user, used in self.deps | self.stub_uses if self.deps or self.stub_uses else ():
            if user.deps is None:       # used: a unit, or an entry stub
                user.deps = set()
            user.deps.add(used)
            if used.users is None:
                used.users = set()
            used.users.add(user)
        if self.comdats or self.pulled or self.archives:
            for lib, claimed in self.comdats.items():
                for sig, unit in claimed.items():
                    lib.claim_comdat(sig, unit)
            for unit, offset in self.pulled:
                unit.library.consume_member(unit, offset)
            for unit in self.archives:
                unit.library.offer(unit)
        address = self._final_address
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
        for o in self.session.observers:    # debuggers and profilers (debug/) learn of the new code
            o.linked(self.items)
