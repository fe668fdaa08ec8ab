"""Libraries (namespaces of symbols with a link order) and units (what one
``add`` brought in, the unit of removal)."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Sequence, Union

from .archive import Archive, is_archive
from .call import Function
from .elf import ObjectFile, is_elf
from .errors import DependencyError, LinkError, SessionClosedError, SymbolNotFoundError
from .linker import Job
from .patch import EntryStub

if TYPE_CHECKING:
    from .session import Session

Source = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]


class UnitExtras:
    """Bookkeeping most units never need, kept out of Unit to keep tiny units small."""

    __slots__ = ("got", "stubs", "handlers", "dso", "atexit", "members", "comdats")

    def __init__(self) -> None:
        self.got: list[int] = []          # GOT targets acquired
        self.stubs: list[int] = []        # far-call stub targets acquired
        self.handlers: list = []          # finalizers and atexit handlers, newest last
        self.dso = 0                      # this unit's __dso_handle
        self.atexit = 0                   # this unit's atexit thunk
        self.members: set[int] = set()    # archive members pulled
        self.comdats: list[str] = []      # COMDAT groups this unit provides


class Unit:
    """What one ``Library.add`` brought in; removable on its own.

    A tiny unit must cost well under a kilobyte, so the layout is lean: blocks
    are packed ints (arena.pack_block), names a tuple, and rarely needed
    bookkeeping lives in ``UnitExtras``, created on first use.
    """

    __slots__ = ("_name", "library", "alive", "seq", "_symbols", "_blocks", "_deps", "_users",
                 "_archive", "_x", "__weakref__")

    def __init__(self, library: Library, name: str | None, seq: int, archive: Archive | None = None):
        self._name = name                                # None: "unit<seq>"
        self.library = library
        self.alive = True
        self.seq = seq
        self._symbols: tuple[str, ...] = ()              # names this unit published
        self._blocks: list[int] = []                     # arena.pack_block(...) each
        self._deps: set | None = None                    # units and entry stubs this one references
        self._users: set[Unit] | None = None             # units referencing this one
        self._archive = archive
        self._x: UnitExtras | None = None

    @property
    def name(self) -> str:
        return self._name or f"unit{self.seq}"

    def extras(self) -> UnitExtras:
        if self._x is None:
            self._x = UnitExtras()
        return self._x

    @property
    def symbols(self) -> list[str]:
        """The names this unit defines (for an archive: of the members pulled so far)."""
        return list(self._symbols)

    @property
    def dependents(self) -> list[Unit]:
        """Live units that reference this one: directly, or through the entry
        stubs of functions it provides."""
        users = {u for u in self._users or () if u.alive}
        for entry in self._entries():
            users.update(entry.live_users())
        users.discard(self)
        return sorted(users, key=lambda u: u.seq)

    def _entries(self) -> list:
        """The entry stubs (patchable libraries) whose slots point into this unit."""
        entries = self.library._entries
        if not entries:
            return []
        return [e for e in map(entries.get, self._symbols) if e is not None and e.unit is self]

    def remove(self, cascade: bool = False) -> None:
        """Unload this unit: destructors, unwind info, symbols, memory.

        Raises DependencyError if live units still reference it, unless
        ``cascade`` removes them too (newest first).
        """
        session = self.library.session
        with session._lock:
            if not self.alive:
                raise SessionClosedError(f"unit {self.name!r} was already removed")
            users = self.dependents
            if users and not cascade:
                names = ", ".join(f"{u.library.name}:{u.name}" for u in users)
                raise DependencyError(f"cannot remove unit {self.name!r}: still used by {names} "
                                      f"(remove those first, or pass cascade=True)")
            for u in reversed(users):
                if u.alive:
                    u.remove(cascade=True)
            session._unload(self)

    def __repr__(self) -> str:
        state = "" if self.alive else " removed"
        return f"<hotlink.Unit {self.library.name}:{self.name}{state}>"


def read_source(source: Source) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "<bytes>"
    path = os.fspath(source)
    with open(path, "rb") as f:
        return f.read(), path


def load_source(session: Session, source: Any, options: dict[str, Any]) -> tuple[bytes, str]:
    """The object or archive bytes for ``source`` and a name for it; LLVM IR
    and C go through the front ends (``hotlink.frontend``) first."""
    if not options.get("language") and (
            isinstance(source, (bytes, bytearray, memoryview, os.PathLike))
            or (isinstance(source, str) and "\n" not in source and os.path.isfile(source))):
        data, origin = read_source(source)
        if is_elf(data) or is_archive(data):
            return data, origin
    from .frontend import compile_source
    return compile_source(session, source, options)


class Library:
    """A namespace of symbols: what its units define, searched before its link order."""

    def __init__(self, session: Session, name: str, link_order: Sequence[Library] = (),
                 patchable: bool = False):
        self.session = session
        self.name = name
        self.link_order = tuple(link_order)
        self.patchable = patchable
        self.alive = True
        self._symbols: dict[str, tuple[int, Unit | None, int, int]] = {}
        self._lazy: dict[str, tuple[Unit, int]] = {}
        self._comdats: dict[str, Unit] = {}
        self._units: list[Unit] = []
        self._entries: dict[str, EntryStub] = {}      # patchable libraries: function -> entry stub

    @property
    def units(self) -> list[Unit]:
        return list(self._units)

    def _check(self) -> None:
        if not self.alive:
            raise SessionClosedError(f"library {self.name!r} was removed")
        self.session._check()

    def add(self, source: Any, *, name: str | None = None, **options: Any) -> Unit:
        """Link ``source`` and return its unit.

        ``source`` is an object (``.o``) or archive (``.a``) as a path or
        bytes, or LLVM IR / C for the front ends (``.ll``/``.bc``/``.c`` paths,
        IR text or bitcode, llvmlite modules, C text with ``language="c"``);
        ``options`` go to the front end (``language``, ``opt``, ``cpu``, ``flags``).
        """
        session = self.session
        data, origin = load_source(session, source, options)
        with session._lock:
            self._check()
            uname = name or (os.path.basename(origin) if origin != "<bytes>" else None)
            if is_archive(data):
                unit = session._new_unit(self, uname)
                unit._archive = Archive(data, unit.name)
                self._offer(unit)
                self._units.append(unit)
                return unit
            if not is_elf(data):
                raise LinkError(f"{uname or origin}: not an ELF object or an ar archive")
            unit = session._new_unit(self, uname)
            job = Job(session)
            job.add(ObjectFile(data, unit.name), unit)
            job.run()
            self._units.append(unit)
            return unit

    def add_many(self, sources: Sequence[Any], **options: Any) -> list[Unit]:
        """Link several sources as one transaction, like a static link: objects
        may reference each other in any order.  Each source becomes its own
        unit; if anything fails, none is added.  Sources that need compiling
        are compiled in parallel worker processes."""
        session = self.session
        from .frontend import load_many
        loaded = [(data, os.path.basename(origin) if origin != "<bytes>" else None)
                  for data, origin in load_many(session, sources, options)]
        with session._lock:
            self._check()
            units: list[Unit] = []
            archives: list[Unit] = []
            try:
                job = Job(session)
                for data, uname in loaded:
                    if is_archive(data):
                        unit = session._new_unit(self, uname)
                        unit._archive = Archive(data, unit.name)
                        self._offer(unit)
                        archives.append(unit)
                    elif is_elf(data):
                        unit = session._new_unit(self, uname)
                        job.add(ObjectFile(data, unit.name), unit)
                    else:
                        raise LinkError(f"{uname or '<bytes>'}: not an ELF object or an ar archive")
                    units.append(unit)
                job.run()
            except BaseException:
                for unit in archives:
                    for sym, off in unit._archive.index.items():
                        if self._lazy.get(sym) == (unit, off):
                            del self._lazy[sym]
                raise
            self._units.extend(units)
            return units

    def _offer(self, unit: Unit) -> None:
        """Make an archive unit's members available for lazy pulling."""
        lazy = self._lazy
        for sym, off in unit._archive.index.items():
            if sym not in self._symbols:
                lazy.setdefault(sym, (unit, off))

    def replace(self, unit: Unit, source: Any, *, name: str | None = None, **options: Any) -> Unit:
        """Link ``source`` and swap it in for ``unit`` as one step: lookups from
        other threads see the old definition or the new one, never neither.

        If linking fails nothing changes.  Units that reference ``unit``
        directly would be left pointing at freed code, so they make this a
        DependencyError.
        """
        session = self.session
        data, origin = load_source(session, source, options)
        with session._lock:
            self._check()
            if unit.library is not self or not unit.alive:
                raise LinkError(f"replace: {unit!r} is not a live unit of library {self.name!r}")
            direct = sorted({u for u in unit._users or () if u.alive and u is not unit}, key=lambda u: u.seq)
            if direct:
                raise DependencyError(
                    f"cannot replace unit {unit.name!r}: "
                    + ", ".join(f"{u.library.name}:{u.name}" for u in direct)
                    + " reference it directly (reach it through a patchable library instead)")
            uname = name or (os.path.basename(origin) if origin != "<bytes>" else unit._name)
            if is_archive(data):
                if unit.dependents:
                    raise DependencyError(f"cannot replace unit {unit.name!r} by an archive while others call it")
                new = session._new_unit(self, uname)
                new._archive = Archive(data, new.name)
            elif is_elf(data):
                obj = ObjectFile(data, uname or "<bytes>")
                provided = set(obj.defined_globals())
                lost = {e.name: e.live_users() for e in unit._entries()
                        if e.name not in provided and e.live_users()}
                if lost:
                    raise DependencyError(
                        f"cannot replace unit {unit.name!r}: the new code does not define "
                        + "; ".join(f"{n} (called by {', '.join(f'{u.library.name}:{u.name}' for u in us)})"
                                    for n, us in sorted(lost.items())))
                new = session._new_unit(self, uname)
                job = Job(session, replacing=unit)
                job.add(obj, new)
                job.run()
            else:
                raise LinkError(f"{uname or '<bytes>'}: not an ELF object or an ar archive")
            self._units.append(new)
            session._unload(unit)       # unpublishes only names the new unit did not take over
            if new._archive is not None:
                self._offer(new)
            return new

    def address(self, symbol: str) -> int:
        """Address of ``symbol`` defined in this library, pulling archive members if needed."""
        d = self._symbols.get(symbol)
        if d is None:
            d = self._pull(symbol)
        return d[0]

    def _definition(self, symbol: str):
        d = self._symbols.get(symbol)
        return d if d is not None else self._pull(symbol)

    def _pull(self, symbol: str):
        session = self.session
        with session._lock:
            self._check()
            d = self._symbols.get(symbol)
            if d is not None:
                return d
            z = self._lazy.get(symbol)
            if z is None:
                raise SymbolNotFoundError(f"library {self.name!r} does not define {symbol!r}")
            job = Job(session)
            job.pull(*z)
            job.run()
            d = self._symbols.get(symbol)
            if d is None:
                raise SymbolNotFoundError(
                    f"library {self.name!r}: archive member pulled for {symbol!r} does not define it")
            return d

    def function(self, symbol: str, restype: Any = None, argtypes: Sequence[Any] = ()) -> Function:
        """A callable for ``symbol``; it raises once the defining unit is removed."""
        d = self._definition(symbol)
        guard = self._entries.get(symbol) if self.patchable else None   # survives replace
        return Function(symbol, d[0], guard or d[1], restype, argtypes, self.session._reclaimer)

    def remove(self) -> None:
        self.session.remove_library(self)

    def __contains__(self, symbol: str) -> bool:
        return symbol in self._symbols or symbol in self._lazy

    def __repr__(self) -> str:
        return f"<hotlink.Library {self.name!r} units={len(self._units)}>"
