"""Libraries (namespaces of symbols with a link order) and units (what one
``add`` brought in, the unit of removal)."""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import call, quick
from .archive import Archive, is_archive
from .call import Function
from .elf import ObjectFile, is_elf
from .errors import DependencyError, LinkError, SessionClosedError, SymbolNotFoundError
from .frontend import load_source  # the one source classifier: a file is read once, objects pass through
from .frontend.prototypes import CompiledObject, Declarations
from .graph import STUB, THREAD, WEAK, Definition
from .interrupts import GATE
from .linker import LinkTransaction
from .patch import EntryStub
from .signature import Signature, SignatureError
from .signature import parse as parse_signature

if TYPE_CHECKING:
    from .session import Session
    from .tls import TlsModule


INFER: Any = object()         # Library.function(sym) without a signature: infer it


class UnitExtras:
    """Bookkeeping most units never need, kept out of Unit to keep tiny units small."""

    __slots__ = ("got", "stubs", "handlers", "platform", "members", "comdats", "shadows", "tls", "declarations")

    def __init__(self) -> None:
        self.got: list[int] = []          # GOT targets acquired
        self.stubs: list[int] = []        # far-call stub targets acquired
        self.handlers: list = []          # finalizers and atexit handlers, newest last
        self.platform: dict[str, int] = {}   # its __dso_handle and libc_nonshared thunks, by name
        self.members: set[int] = set()    # archive members pulled
        self.comdats: list[str] = []      # COMDAT groups this unit provides
        self.shadows: list[str] = []      # names where a definition of this unit is shadowed
        self.tls: list[TlsModule] | None = None   # its thread-local storage, one module per link (tls.py)
        self.declarations: Declarations | None = None   # compiled from source: its signatures (prototypes.py)


class Unit:
    """What one ``Library.add`` brought in; removable on its own.

    A tiny unit must cost well under a kilobyte, so the layout is lean: blocks
    are packed ints (arena.pack_block), names a tuple, and rarely needed
    bookkeeping lives in ``UnitExtras``, created on first use.
    """

    __slots__ = ("_name", "library", "alive", "seq", "names", "blocks", "deps", "users",
                 "archive", "extra", "__weakref__")

    def __init__(self, library: Library, name: str | None, seq: int, archive: Archive | None = None):
        self._name = name                                # None: "unit<seq>"
        self.library = library
        self.alive = True
        self.seq = seq
        self.names: tuple[str, ...] = ()              # names this unit published
        self.blocks: list[int] = []                     # arena.pack_block(...) each
        self.deps: set | None = None                    # units and entry stubs this one references
        self.users: set[Unit] | None = None             # units referencing this one
        self.archive = archive
        self.extra: UnitExtras | None = None

    @property
    def name(self) -> str:
        return self._name or f"unit{self.seq}"

    def extras(self) -> UnitExtras:
        if self.extra is None:
            self.extra = UnitExtras()
        return self.extra

    @property
    def symbols(self) -> list[str]:
        """The names this unit defines (for an archive: of the members pulled so far)."""
        return list(self.names)

    @property
    def dependents(self) -> list[Unit]:
        """Live units that reference this one: directly, or through the entry
        stubs of functions it provides."""
        users = {u for u in self.users or () if u.alive}
        for entry in self.own_entry_stubs():
            users.update(entry.live_users())
        users.discard(self)
        return sorted(users, key=lambda u: u.seq)

    def own_entry_stubs(self) -> list:
        """The entry stubs (patchable libraries) whose slots point into this unit."""
        entries = self.library.entry_stubs
        if not entries:
            return []
        return [e for e in map(entries.get, self.names) if e is not None and e.unit is self]

    def remove(self, cascade: bool = False) -> None:
        """Unload this unit: destructors, unwind info, symbols, memory.

        Raises DependencyError if live units still reference it, unless
        ``cascade`` removes them too (every unit that depends on it,
        transitively, newest first).
        """
        session = self.library.session
        with session.lock:
            if not self.alive:
                raise SessionClosedError(f"unit {self.name!r} was already removed")
            users = self.dependents
            if users and not cascade:
                names = ", ".join(f"{u.library.name}:{u.name}" for u in users)
                raise DependencyError(f"cannot remove unit {self.name!r}: still used by {names} "
                                      f"(remove those first, or pass cascade=True)")
            doomed = {self}
            todo = list(users)
            while todo:                     # iterative: chains may be thousands deep
                u = todo.pop()
                if u not in doomed:
                    doomed.add(u)
                    todo.extend(u.dependents)
            session.unlink_units(sorted(doomed, key=lambda u: -u.seq))

    def __repr__(self) -> str:
        state = "" if self.alive else " removed"
        return f"<hotlink.Unit {self.library.name}:{self.name}{state}>"


class Library:
    """A namespace of symbols: what its units define, searched before its link order.

    Other modules change a library only through its small internal API:
    ``publish``/``shadow``/``unpublish`` for definitions, ``offer``/
    ``consume_member``/``withdraw`` for archive members, ``claim_comdat``/
    ``release_comdats`` for COMDAT groups.
    """

    def __init__(self, session: Session, name: str, link_order: Sequence[Library] = (),
                 patchable: bool = False):
        self.session = session
        self.name = name
        self.link_order = tuple(link_order)
        self.patchable = patchable
        self.alive = True
        self.definitions: dict[str, Definition] = {}
        self._shadowed: dict[str, list[Definition]] = {}     # definitions that lost, for when the winner goes
        self.lazy: dict[str, tuple[Unit, int]] = {}     # name -> (archive unit, member offset)
        self.comdats: dict[str, Unit] = {}
        self._units: list[Unit] = []
        self._archives: list[Unit] = []     # archive units, oldest first (they may offer members again)
        self.entry_stubs: dict[str, EntryStub] = {}      # patchable libraries: function -> entry stub
        self.changes = 0        # bumped by every commit and unlink touching it (PendingReplace checks it)

    @property
    def units(self) -> list[Unit]:
        return list(self._units)

    def record_unit(self, unit: Unit) -> None:
        """A committed link's new unit joins the library."""
        self._units.append(unit)

    def forget_unit(self, unit: Unit) -> None:
        if unit in self._units:
            self._units.remove(unit)

    def check_open(self) -> None:
        if not self.alive:
            raise SessionClosedError(f"library {self.name!r} was removed")
        self.session.check_open()

    # --- the internal API: definitions -------------------------------------

    def publish(self, name: str, sym: Definition, replacing: Unit | None = None, old_target: int = 0) -> None:
        """Make ``sym`` the definition of ``name``; one it displaces from another
        live unit is kept as shadowed, to come back when ``sym``'s unit goes
        (``old_target``: where the name's entry stub jumped before, if it has one)."""
        old = self.definitions.get(name)
        self.definitions[name] = sym
        if old is not None and old.unit is not sym.unit and old.unit is not replacing \
                and old.unit is not None and old.unit.alive:
            if old.flags & STUB:
                old = old._replace(flags=old.flags & ~STUB, address=old_target)
            self.shadow(name, old)
        self.lazy.pop(name, None)

    def shadow(self, name: str, sym: Definition) -> None:
        self._shadowed.setdefault(name, []).append(sym)
        _owner(sym).extras().shadows.append(name)

    def unpublish(self, unit: Unit) -> None:
        """Take away ``unit``'s definitions and lazy members; what they
        shadowed comes back (a weak definition, or an archive's member)."""
        table = self.definitions
        freed = []
        for name in unit.names:
            d = table.get(name)
            if d is not None and d.unit is unit:
                del table[name]
                freed.append(name)
        x = unit.extra
        if x is not None and x.shadows:
            for name in x.shadows:
                rest = [d for d in self._shadowed.get(name, ()) if d.unit is not unit]
                if rest:
                    self._shadowed[name] = rest
                else:
                    self._shadowed.pop(name, None)
        if unit.archive is not None:
            self.withdraw(unit)
        for name in freed:
            self._restore(name)

    def _restore(self, name: str) -> None:
        """What a fresh link without the removed unit would find for ``name``:
        a strong shadowed definition, else the oldest weak one, else an
        archive member not yet pulled."""
        cands = [d for d in self._shadowed.get(name, ()) if _owner(d).alive]
        if cands:
            best = min(cands, key=lambda d: (d.flags & WEAK, _owner(d).seq))
            cands.remove(best)
            if cands:
                self._shadowed[name] = cands
            else:
                del self._shadowed[name]
            self.definitions[name] = best
            owner = _owner(best)
            if name not in owner.names:
                owner.names += (name,)
            return
        self._shadowed.pop(name, None)
        for unit in self._archives:
            if unit.alive:
                off = _archive(unit).index.get(name)
                if off is not None and (unit.extra is None or off not in unit.extra.members):
                    self.lazy.setdefault(name, (unit, off))
                    return

    # --- the internal API: archive members and COMDAT groups ----------------

    def offer(self, unit: Unit) -> None:
        """Make an archive unit's members available for lazy pulling."""
        self._archives.append(unit)
        lazy, table = self.lazy, self.definitions
        for sym, off in _archive(unit).index.items():
            if sym not in table:
                lazy.setdefault(sym, (unit, off))

    def consume_member(self, unit: Unit, offset: int) -> None:
        """A member was pulled: it is part of ``unit`` now, no longer offered."""
        unit.extras().members.add(offset)
        lazy = self.lazy
        for name in _archive(unit).member_symbols(offset):
            if lazy.get(name) == (unit, offset):
                del lazy[name]

    def withdraw(self, unit: Unit) -> None:
        if unit in self._archives:
            self._archives.remove(unit)
        lazy = self.lazy
        for name, off in _archive(unit).index.items():
            if lazy.get(name) == (unit, off):
                del lazy[name]

    def claim_comdat(self, signature: str, unit: Unit) -> None:
        self.comdats[signature] = unit
        unit.extras().comdats.append(signature)

    def release_comdats(self, unit: Unit) -> None:
        for sig in unit.extra.comdats if unit.extra is not None else ():
            if self.comdats.get(sig) is unit:
                del self.comdats[sig]

    # --- the public API -------------------------------------------------------

    def add(self, source: Any, *, name: str | None = None, **options: Any) -> Unit:
        """Link ``source`` and return its unit.

        ``source`` is an object (``.o``) or archive (``.a``) as a path or
        bytes, or LLVM IR / C for the front ends (``.ll``/``.bc``/``.c`` paths,
        IR text or bitcode, llvmlite modules, C text with ``language="c"``);
        ``options`` go to the front end (``language``, ``opt``, ``cpu``, ``flags``).
        """
        if type(source) is bytes and not options and is_elf(source):    # the common tiny add: nothing to load
            with self.session.lock:
                self.check_open()
                return quick.link(self, source, name) or self._link([(source, name)], None)[0]
        data, origin = load_source(self.session, source, options)
        return self.link_sources([(data, _unit_name(name, origin))])[0]

    def add_many(self, sources: Sequence[Any], **options: Any) -> list[Unit]:
        """Link several sources as one transaction, like a static link: objects
        may reference each other in any order.  Each source becomes its own
        unit; if anything fails, none is added.  Sources that need compiling
        are compiled in parallel worker processes."""
        from .frontend import load_many
        loaded = load_many(self.session, sources, options)
        return self.link_sources([(data, _unit_name(None, origin)) for data, origin in loaded])

    def link_sources(self, loaded: list[tuple[bytes, str | None]], replacing: Unit | None = None) -> list[Unit]:
        """The one path that links sources into this library: each (bytes,
        unit name) becomes a unit, in one transaction."""
        with self.session.lock:
            self.check_open()
            if len(loaded) == 1 and replacing is None:    # most adds: one small self-contained object
                data, uname = loaded[0]
                unit = quick.link(self, data, uname)
                if unit is not None:
                    if isinstance(data, CompiledObject):
                        unit.extras().declarations = data.declarations
                    return [unit]
            return self._link(loaded, replacing)

    def _link(self, loaded: list[tuple[bytes, str | None]], replacing: Unit | None) -> list[Unit]:
        """The general link transaction (the caller holds the session lock)."""
        job, units = self._transaction(loaded, replacing)
        job.run()
        return units

    def _transaction(self, loaded: list[tuple[bytes, str | None]],
                     replacing: Unit | None) -> tuple[LinkTransaction, list[Unit]]:
        session = self.session
        job = LinkTransaction(session, replacing)
        units = []
        for data, uname in loaded:
            unit = session.new_unit(self, uname)
            if isinstance(data, CompiledObject):     # what its source declares, for function(sym)
                unit.extras().declarations = data.declarations
            if is_archive(data):
                job.add_archive(self, unit, Archive(data, unit.name))
            elif is_elf(data):
                job.add_object(self, ObjectFile(data, unit.name), unit)
            else:
                raise LinkError(f"{uname or '<bytes>'}: not an ELF object or an ar archive")
            units.append(unit)
        return job, units

    def replace(self, unit: Unit, source: Any, *, name: str | None = None, **options: Any) -> Unit:
        """Link ``source`` and swap it in for ``unit`` as one step: lookups from
        other threads see the old definition or the new one, never neither.

        If linking fails nothing changes.  Units that reference ``unit``
        directly would be left pointing at freed code, so they make this a
        DependencyError.
        """
        data, origin = load_source(self.session, source, options)
        with GATE:      # an interrupt cancels the link (which polls for it) or comes after the swap, never between
            pending = self._prepare_replace(unit, data, origin, name)
            pending._defer = False
            return pending.commit()

    def prepare_replace(self, unit: Unit, source: Any, *, name: str | None = None,
                        **options: Any) -> PendingReplace:
        """Link ``source`` as ``unit``'s replacement, run its initializers, and
        stop short of the swap: ``.commit()`` swaps it in (a few stores: slots,
        symbols) and retires ``unit``; ``.abort()`` drops it.  An autotuner
        prepares off its hot path and commits when it chooses."""
        data, origin = load_source(self.session, source, options)
        pending = None
        try:
            with GATE:      # until the prepared replacement exists to be aborted
                pending = self._prepare_replace(unit, data, origin, name)
        except BaseException:
            if pending is not None:     # an interrupt noted meanwhile, delivered as the gate closed
                pending.abort()
            raise
        return pending

    def _prepare_replace(self, unit: Unit, data: bytes, origin: str, name: str | None) -> PendingReplace:
        session = self.session
        with session.lock:
            self.check_open()
            if unit.library is not self or not unit.alive:
                raise LinkError(f"replace: {unit!r} is not a live unit of library {self.name!r}")
            direct = sorted({u for u in unit.users or () if u.alive and u is not unit}, key=lambda u: u.seq)
            if direct:
                raise DependencyError(
                    f"cannot replace unit {unit.name!r}: "
                    + ", ".join(f"{u.library.name}:{u.name}" for u in direct)
                    + " reference it directly (reach it through a patchable library instead)")
            uname = _unit_name(name, origin) or unit._name
            if is_archive(data):
                if unit.dependents:
                    raise DependencyError(f"cannot replace unit {unit.name!r} by an archive while others call it")
            elif is_elf(data):
                self._check_stubs_kept(unit, ObjectFile(data, uname or "<bytes>"))
            job, units = self._transaction([(data, uname)], unit)
            job.prepare()
            return PendingReplace(self, unit, units[0], job)

    def _check_stubs_kept(self, unit: Unit, obj: ObjectFile) -> None:
        """Entry stubs others call must survive a replace: the new object has
        to define each of those names, as code."""
        lost = {}
        for e in unit.own_entry_stubs():
            users = e.live_users()
            if not users:
                continue
            si = obj.global_index(e.name)
            if si is None or not obj.is_code_symbol(si):
                lost[e.name] = (users, "does not define" if si is None else "defines as data")
        if lost:
            raise DependencyError(
                f"cannot replace unit {unit.name!r}: the new code "
                + "; ".join(f"{how} {n} (called by {', '.join(f'{u.library.name}:{u.name}' for u in us)})"
                            for n, (us, how) in sorted(lost.items())))

    def address(self, symbol: str) -> int:
        """Address of ``symbol`` defined in this library, pulling archive members if needed."""
        d = self.definitions.get(symbol)
        if d is None:
            d = self._pull(symbol)
        if d.flags & THREAD:
            raise LinkError(f"library {self.name!r}: {symbol!r} is thread-local: each thread has its own "
                            f"copy at its own address (take it in the thread, from JIT code)")
        return d.address

    def _definition(self, symbol: str) -> Definition:
        d = self.definitions.get(symbol)
        return d if d is not None else self._pull(symbol)

    def _pull(self, symbol: str) -> Definition:
        session = self.session
        with session.lock:
            self.check_open()
            d = self.definitions.get(symbol)
            if d is not None:
                return d
            z = self.lazy.get(symbol)
            if z is None:
                raise SymbolNotFoundError(f"library {self.name!r} does not define {symbol!r}")
            job = LinkTransaction(session)
            job.pull(*z)
            job.run()
            d = self.definitions.get(symbol)
            if d is None:
                raise SymbolNotFoundError(
                    f"library {self.name!r}: archive member pulled for {symbol!r} does not define it")
            return d

    def function(self, symbol: str, restype: Any = INFER, argtypes: Sequence[Any] = ()) -> Function:
        """A callable for ``symbol``; it raises once the defining unit is removed.

        ``function("dot", "double(double *, const double *, long)")`` takes a C
        declaration (pointer parameters then accept numpy arrays and other
        buffers); ``function("dot")`` infers it for code hotlink compiled from
        C or LLVM IR; ``function("dot", ctypes.c_double, [...])`` is the ctypes form.
        """
        d = self._definition(symbol)
        guard = self.entry_stubs.get(symbol) if self.patchable else None   # survives replace
        if restype is INFER or isinstance(restype, str):
            if argtypes:
                raise TypeError(f"{symbol}: argtypes go with a ctypes restype, not with a C declaration")
            sig = parse_signature(restype, symbol) if isinstance(restype, str) else inferred_signature(d, symbol)
            return call.with_signature(symbol, d.address, guard or d.unit, sig, self.session.reclaimer)
        return call.function(symbol, d.address, guard or d.unit, restype, argtypes, self.session.reclaimer)

    def remove(self) -> None:
        self.session.remove_library(self)

    def __contains__(self, symbol: str) -> bool:
        return symbol in self.definitions or symbol in self.lazy

    def __repr__(self) -> str:
        return f"<hotlink.Library {self.name!r} units={len(self._units)}>"


class PendingReplace:
    """A replacement linked and initialized by ``Library.prepare_replace``,
    not yet visible.  ``commit()`` fails (and aborts) if the session changed
    under it in a way that matters: the old unit went away, a unit it binds
    to was removed, or a library it publishes into changed."""

    def __init__(self, library: Library, old: Unit, new: Unit, job: LinkTransaction):
        self.library = library
        self.old = old
        self.unit = new
        self._job: LinkTransaction | None = job
        self._seen = {lib: lib.changes for lib in job.touched}
        self._defer = True      # the swap does not pay for freeing the old code (replace() does)
        library.session.pending_replacements.add(self)

    @property
    def pending(self) -> bool:
        return self._job is not None

    def commit(self) -> Unit:
        """Swap the new unit in and retire the old one, as one step."""
        session = self.library.session
        with session.lock:
            job = self._job
            if job is None:
                raise LinkError(f"replacement of {self.old.name!r} was already committed or aborted")
            stale = self._stale()
            if stale:
                self.abort()
                raise LinkError(f"replacement of {self.old.name!r}: {stale} since prepare_replace; "
                                f"nothing changed, prepare it again")
            self._job = None
            with GATE:      # the new unit is committed and the old one unlinked as one step
                job.commit()
                session.unlink_units([self.old], defer=self._defer)
            return self.unit

    def abort(self) -> None:
        """Drop the prepared replacement (its destructors run, its memory is freed)."""
        with self.library.session.lock:
            job, self._job = self._job, None
            if job is not None:
                with GATE:
                    job.abort()

    def _stale(self) -> str | None:
        if not self.old.alive:
            return f"unit {self.old.name!r} was removed"
        for lib, seen in self._seen.items():
            if lib.changes != seen or not lib.alive:
                return f"library {lib.name!r} changed"
        assert self._job is not None
        dead = self._job.dead_dependency()
        return f"{dead}, which it binds to, was removed" if dead else None

    def __del__(self) -> None:
        if getattr(self, "_job", None) is not None:
            warnings.warn(f"hotlink: a prepared replacement of {self.old.name!r} was dropped without "
                          f"commit() or abort(); it is aborted", ResourceWarning, stacklevel=2)
            try:
                self.abort()
            except Exception:       # a closed session, or an interpreter shutting down
                pass

    def __repr__(self) -> str:
        state = "pending" if self._job is not None else "done"
        return f"<hotlink.PendingReplace {self.old.name!r} -> {self.unit.name!r} ({state})>"


def inferred_signature(d: Definition, symbol: str) -> Signature:
    """The signature the defining unit's source declares for ``symbol``."""
    x = d.unit.extra if d.unit is not None else None
    if x is None or x.declarations is None:
        where = f"unit {d.unit.name!r}" if d.unit is not None else "its definition"
        raise SignatureError(f"{symbol}: no signature known ({where} was not compiled from C or LLVM IR by "
                             f"hotlink); pass a C declaration, e.g. function({symbol!r}, \"int(int)\")")
    return x.declarations.signature(symbol)


def _owner(d: Definition) -> Unit:
    """The unit of a definition a library holds (only external ones have none)."""
    assert d.unit is not None
    return d.unit


def _archive(unit: Unit) -> Archive:
    assert unit.archive is not None, f"{unit!r} is not an archive unit"
    return unit.archive


def _unit_name(name: str | None, origin: str) -> str | None:
    return name or (os.path.basename(origin) if origin != "<bytes>" else None)
