"""The session: the arena, the libraries, and symbol resolution outside them."""
from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import os
import threading
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from . import patch, platform, runtime
from .elf import ObjectFile
from .linker import Job
from .arena import POOL_NAMES, Arena, pack_block, unpack_block
from .errors import DependencyError, LinkError, SessionClosedError, SymbolNotFoundError
from .library import Library, Unit
from .qsbr import Reclaimer
from .tables import Tables, release_all

_libc = ctypes.CDLL(None)
_dlsym = _libc.dlsym
_dlsym.restype = ctypes.c_void_p
_dlsym.argtypes = (ctypes.c_void_p, ctypes.c_char_p)

_open_sessions: weakref.WeakSet[Session] = weakref.WeakSet()


@atexit.register
def _close_open_sessions() -> None:
    for s in list(_open_sessions):
        s.close()


@dataclass
class LibraryMemory:
    units: int = 0
    used: int = 0
    symbols: int = 0


@dataclass
class MemoryStats:
    """Arena figures in bytes: ``mapped`` (chunks handed to pools), ``used``
    (allocated blocks), ``retired`` (removed but not yet freed), ``resident``
    (pages the arena's memfd holds), and per library."""
    mapped: int = 0
    used: int = 0
    retired: int = 0
    resident: int = 0
    pools: dict[str, tuple[int, int]] = field(default_factory=dict)
    got_entries: int = 0
    stubs: int = 0
    libraries: dict[str, LibraryMemory] = field(default_factory=dict)


class Session:
    """Owns the code arena, the libraries and symbol resolution.

    ``close()`` (or leaving a ``with`` block) unloads everything, newest unit first.
    """

    def __init__(self, *, arena_size: int = 256 << 20):
        self._lock = threading.RLock()
        self._arena = Arena(arena_size)
        self._tables = Tables(self._arena)
        self._libraries: dict[str, Library] = {}
        self._defines: dict[str, int] = {}
        self._shared: list[tuple[str, Any]] = []
        self._process_cache: dict[str, int] = {}
        self._reclaimer = Reclaimer()
        self._pool: Any = None            # the front ends' worker processes, started on first use
        self._runtime: Library | None = None   # hotlink's native runtime, linked on first use
        self._seq = 0
        self._closed = False
        _open_sessions.add(self)

    # --- context manager --------------------------------------------------

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self) -> None:
        if self._closed:
            raise SessionClosedError("the session is closed")

    # --- libraries --------------------------------------------------------

    def library(self, name: str, *, link_order: Sequence[Library] = (), patchable: bool = False) -> Library:
        """Create a library; names are unique among live libraries."""
        with self._lock:
            self._check()
            if name in self._libraries:
                raise LinkError(f"a library named {name!r} already exists in this session")
            for lib in link_order:
                if lib.session is not self or not lib.alive:
                    raise LinkError(f"link order of {name!r}: {lib.name!r} is not a live library of this session")
            lib = Library(self, name, link_order, patchable)
            self._libraries[name] = lib
            return lib

    @property
    def libraries(self) -> dict[str, Library]:
        return dict(self._libraries)

    def remove_library(self, lib: Library) -> None:
        """Remove every unit of ``lib`` (newest first); its name becomes free."""
        with self._lock:
            self._check()
            if not lib.alive:
                raise SessionClosedError(f"library {lib.name!r} was already removed")
            for other in self._libraries.values():
                if other is not lib and lib in other.link_order:
                    raise LinkError(f"library {lib.name!r} is in the link order of {other.name!r}")
            mine = set(lib._units)
            for unit in reversed(lib._units):
                outside = [u for u in unit.dependents if u not in mine]
                if outside:
                    raise DependencyError(
                        f"cannot remove library {lib.name!r}: unit {unit.name!r} is used by "
                        + ", ".join(f"{u.library.name}:{u.name}" for u in outside))
            for unit in sorted(lib._units, key=lambda u: -u.seq):
                if unit.alive:
                    self._unload(unit)
            lib.alive = False
            del self._libraries[lib.name]

    # --- external symbols -------------------------------------------------

    def define(self, mapping: Mapping[str, int]) -> None:
        """Absolute symbols visible to every library (searched after the link order)."""
        with self._lock:
            self._check()
            for name, addr in mapping.items():
                if not isinstance(addr, int):
                    raise TypeError(f"define: address of {name!r} must be an int, not {type(addr).__name__}")
                self._defines[name] = addr

    def load_shared(self, name_or_path: str) -> None:
        """Also search this shared object (after defines, before the process)."""
        with self._lock:
            self._check()
            path = name_or_path
            if os.sep not in path and not path.startswith("lib"):
                path = ctypes.util.find_library(path) or path
            try:
                lib = ctypes.CDLL(path, mode=os.RTLD_NOW | os.RTLD_GLOBAL)
            except OSError as e:
                raise LinkError(f"load_shared: cannot load {name_or_path!r}: {e}") from None
            self._shared.append((path, lib))

    def _external(self, name: str) -> int | None:
        """hotlink's runtime, defines, then shared objects, then the process (dlsym RTLD_DEFAULT)."""
        if name in runtime.NAMES:
            return self._runtime_address(name)
        addr = self._defines.get(name)
        if addr is not None:
            return addr
        addr = self._process_cache.get(name)
        if addr is not None:
            return addr
        bname = name.encode("utf-8", "surrogateescape")
        for _, lib in self._shared:
            addr = _dlsym(lib._handle, bname)
            if addr:
                self._process_cache[name] = addr
                return addr
        addr = _dlsym(None, bname)
        if addr:
            self._process_cache[name] = addr
            return addr
        return None

    def _runtime_address(self, name: str) -> int:
        """Address of a runtime function, linking the runtime on first use."""
        if self._runtime is None:
            lib = Library(self, "hotlink.runtime")      # hidden: not in self._libraries
            unit = self._new_unit(lib, "runtime")
            job = Job(self)
            job.add(ObjectFile(runtime.runtime_object(), "hotlink-runtime"), unit)
            job.run()
            lib._units.append(unit)
            sym = lib._symbols
            self._reclaimer.native = runtime.NativeThreads(
                self._arena, sym["hotlink_epoch"][0], sym["hotlink_slots"][0], sym["hotlink_key"][0])
            self._runtime = lib
        return self._runtime._symbols[name][0]

    def runtime_function(self, name: str, restype: Any = None, argtypes: Sequence[Any] = ()) -> Any:
        """A ctypes function for one of hotlink's runtime functions (e.g. for
        Python threads that run native loops: ``hotlink_thread_online``)."""
        if name not in runtime.NAMES:
            raise SymbolNotFoundError(f"{name!r} is not a hotlink runtime function")
        with self._lock:
            self._check()
            return ctypes.CFUNCTYPE(restype, *argtypes)(self._runtime_address(name))

    # --- front ends and the host ---------------------------------------------

    def compile_many(self, sources: Sequence[Any], workers: int | None = None, **options: Any) -> list[bytes]:
        """Compile LLVM IR / C sources to objects in parallel worker processes
        (llvmlite serializes LLVM behind one lock, so threads would not help).
        Objects and archives pass through unchanged."""
        from .frontend.pool import compile_many
        return compile_many(self, list(sources), workers, options)

    def host_symbols(self, library: str | None = None, include_local: bool = True) -> dict[str, int]:
        """Name -> address from the ELF symbol tables (``.symtab`` too) of the
        executable (``library=None``) or of a loaded shared object."""
        from .host import host_symbols
        return host_symbols(library, include_local)

    # --- units ------------------------------------------------------------

    def _new_unit(self, lib: Library, name: str | None) -> Unit:
        self._seq += 1
        return Unit(lib, name, self._seq)

    def _unload(self, unit: Unit) -> None:
        """Tear one unit down; the caller holds the lock and checked dependencies.

        Destructors run now; the unit's symbols disappear now; its memory,
        unwind info and GOT/stub entries are retired and freed once no call
        that might be running its code is left.
        """
        unit.alive = False
        lib = unit.library
        extras = unit._x
        try:
            if extras is not None and extras.handlers:
                platform.run_finalizers(extras.handlers)
        finally:
            table = lib._symbols
            blocks = unit._blocks
            for entry in unit._entries():     # patchable functions nobody took over
                entry.alive = False
                del lib._entries[entry.name]
                blocks += [pack_block(p, a, n) for p, a, n in patch.blocks(entry)]
            for name in unit._symbols:
                d = table.get(name)
                if d is not None and d[1] is unit:
                    del table[name]
            if unit._archive is not None:
                lazy = lib._lazy
                for name, off in unit._archive.index.items():
                    if lazy.get(name) == (unit, off):
                        del lazy[name]
            for sig in extras.comdats if extras is not None else ():
                if lib._comdats.get(sig) is unit:
                    del lib._comdats[sig]
            for dep in unit._deps or ():
                dep._users.discard(unit)
            if extras is not None and extras.dso:
                platform.unbind_dso(extras.dso)
            if unit in lib._units:
                lib._units.remove(unit)
            got, stubs = (extras.got, extras.stubs) if extras is not None else ((), ())
            unit._deps = unit._x = None
            unit._blocks, unit._symbols = [], ()
            self._reclaimer.retire(sum(b >> 50 for b in blocks),
                                   lambda: self._release(blocks, got, stubs))

    def _release(self, blocks: list[int], got, stubs) -> None:
        """Free what a unit left behind; runs in whichever thread ends its grace
        period, so it takes only the arena's lock, never the session's."""
        unpacked = [unpack_block(b) for b in blocks]
        for _, addr, _, frame in unpacked:
            if frame:
                platform.deregister_frames(addr)
        arena = self._arena
        with arena.lock:
            if got or stubs:
                release_all(self._tables, got, stubs)
            for pool, addr, size, _ in unpacked:
                arena.pools[pool].free(addr, size)

    # --- state --------------------------------------------------------------

    def memory(self) -> MemoryStats:
        with self._lock:
            arena = self._arena
            if not self._closed:
                arena.flush()
            stats = MemoryStats()
            for name, pool in zip(POOL_NAMES, arena.pools):
                stats.pools[name] = (pool.mapped, pool.used)
                stats.mapped += pool.mapped
                stats.used += pool.used
            stats.resident = arena.resident() if not self._closed else 0
            stats.retired = self._reclaimer.retired_bytes
            stats.got_entries = len(self._tables.got_table.entries)
            stats.stubs = len(self._tables.stub_table.entries)
            for name, lib in self._libraries.items():
                m = LibraryMemory(units=len(lib._units), symbols=len(lib._symbols))
                for u in lib._units:
                    m.used += sum(((b >> 50) + 15) & -16 for b in u._blocks)
                stats.libraries[name] = m
            return stats

    def synchronize(self, timeout: float | None = None) -> bool:
        """Wait until everything retired is freed (True), or ``timeout`` seconds (False)."""
        done = self._reclaimer.synchronize(timeout)
        if done and not self._closed:
            with self._lock:
                self._arena.flush()
        return done

    def close(self, timeout: float = 10.0) -> None:
        """Unload every unit newest first (running destructors), wait for the
        grace period, then unmap the arena.

        If a thread is still inside JIT code (or still registered with
        ``hotlink_thread_online``) after ``timeout`` seconds, the arena is
        left mapped, leaked rather than pulled from under that thread.
        """
        with self._lock:
            if self._closed:
                return
            drained = False
            try:
                units = [u for lib in self._libraries.values() for u in lib._units]
                if self._runtime is not None:
                    units += self._runtime._units
                for unit in sorted(units, key=lambda u: -u.seq):
                    if unit.alive:
                        self._unload(unit)
                native = self._reclaimer.native
                drained = self._reclaimer.synchronize(timeout) and not (native and native.online())
            finally:
                if self._pool is not None:
                    self._pool.close()
                    self._pool = None
                for lib in self._libraries.values():
                    lib.alive = False
                self._libraries.clear()
                self._closed = True
                self._reclaimer.closed = True
                _open_sessions.discard(self)
                if drained:
                    if self._reclaimer.native is not None:
                        self._reclaimer.native.close()
                    self._arena.close()
                else:
                    warnings.warn("hotlink: threads are still running JIT code; the session's "
                                  "arena stays mapped", RuntimeWarning, stacklevel=2)

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return f"<hotlink.Session libraries={list(self._libraries)}{' closed' if self._closed else ''}>"
