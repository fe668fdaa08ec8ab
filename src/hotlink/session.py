"""The session: the arena, the libraries, and symbol resolution outside them."""
from __future__ import annotations

import atexit
import bisect
import ctypes
import ctypes.util
import os
import threading
import time
import warnings
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import debug, forkcopy, platform, runtime, tls, unlink
from .arena import MAX_LOW_SIZE, Arena, unpack_block
from .errors import DependencyError, LinkError, SessionClosedError, SymbolNotFoundError
from .interrupts import GATE
from .libc import dlerror, dlopen
from .libc import dlsym as _dlsym
from .library import Library, Unit
from .qsbr import Reclaimer
from .tables import SharedTables

_open_sessions: weakref.WeakSet[Session] = weakref.WeakSet()


@atexit.register
def _close_open_sessions() -> None:
    for s in list(_open_sessions):
        s._close_quietly()


def _handlers_at(addr: int) -> list | None:
    """The exit-handler list of the live unit (of any session) holding ``addr``."""
    for s in list(_open_sessions):
        unit = s._unit_at(addr)
        if unit is not None:
            return unit.extras().handlers
    return None


platform.handlers_at = _handlers_at


# fork(): the child gets a private copy of every session's arena (so nothing
# it does reaches the parent) and may go on using its sessions; see
# Session._fork_prepare.
def _fork_prepare() -> None:
    for s in list(_open_sessions):
        s._fork_prepare()
    forks = forkcopy.table()
    if forks is not None:       # the native handlers copy and map what the sessions listed
        forks.arm()


def _fork_parent() -> None:
    for s in list(_open_sessions):
        s._fork_done(child=False)
    _disarm()


def _fork_child() -> None:
    try:
        for s in list(_open_sessions):
            s._fork_done(child=True)
    finally:
        _disarm()


def _disarm() -> None:
    forks = forkcopy.table()
    if forks is not None:
        forks.disarm()


os.register_at_fork(before=_fork_prepare, after_in_parent=_fork_parent, after_in_child=_fork_child)


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
    debug: int = 0          # held by debug features (GDB images, symbol tables); 0 when they are off


class Session:
    """Owns the code arena, the libraries and symbol resolution.

    ``close()`` (or leaving a ``with`` block) unloads everything, newest unit first.
    """

    def __init__(self, *, arena_size: int = 256 << 20, debug_info: bool | None = None,
                 perf_map: bool | None = None, jitdump: bool | None = None,
                 low_arena_size: int = MAX_LOW_SIZE):
        """``debug_info`` (GDB JIT interface), ``perf_map`` and ``jitdump``:
        None leaves each to its ``HOTLINK_*`` environment variable (debug/).
        ``low_arena_size``: how much address space below 2 GiB non-PIC objects
        may take (reserved only while such objects are loaded; 0: none)."""
        self._closed = True      # until the arena exists: __del__ of a failed Session does nothing
        self.lock = threading.RLock()
        self.arena = Arena(arena_size, low_arena_size)
        self.tables = SharedTables(self.arena)
        self._libraries: dict[str, Library] = {}
        self._defines: dict[str, int] = {}
        self._shared: list[tuple[str, int]] = []   # (path, dlopen handle)
        self._process_cache: dict[str, int] = {}
        self.reclaimer = Reclaimer()
        self.compile_pool: Any = None            # the front ends' worker processes, started on first use
        self._runtimes: dict[str, Library] = {}   # hotlink's native runtime parts, linked on first use
        self.pending_replacements: weakref.WeakSet[Any] = weakref.WeakSet()   # aborted by close()
        self._guarded: platform.GuardedCall | None = None
        self._code_index: tuple[list[int], list[tuple[int, Unit]]] | None = None
        self._forking = False
        self._seq = 0
        # notified of every link commit and unit removal; empty unless a debug feature is on
        self.observers: list[debug.Observer] = debug.observers_for(
            self, debug_info=debug_info, perf_map=perf_map, jitdump=jitdump)
        self._closed = False
        _open_sessions.add(self)

    # --- context manager --------------------------------------------------

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_open(self) -> None:
        if self._closed:
            raise SessionClosedError("the session is closed")

    # --- libraries --------------------------------------------------------

    def library(self, name: str, *, link_order: Sequence[Library] = (), patchable: bool = False) -> Library:
        """Create a library; names are unique among live libraries."""
        with self.lock:
            self.check_open()
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
        with self.lock:
            self.check_open()
            if not lib.alive:
                raise SessionClosedError(f"library {lib.name!r} was already removed")
            for other in self._libraries.values():
                if other is not lib and lib in other.link_order:
                    raise LinkError(f"library {lib.name!r} is in the link order of {other.name!r}")
            mine = set(lib.units)
            for unit in reversed(lib.units):
                outside = [u for u in unit.dependents if u not in mine]
                if outside:
                    raise DependencyError(
                        f"cannot remove library {lib.name!r}: unit {unit.name!r} is used by "
                        + ", ".join(f"{u.library.name}:{u.name}" for u in outside))
            with GATE:
                self.unlink_units(sorted(lib.units, key=lambda u: -u.seq))
                lib.alive = False
                del self._libraries[lib.name]

    # --- external symbols -------------------------------------------------

    def define(self, mapping: Mapping[str, int]) -> None:
        """Absolute symbols visible to every library (searched after the link order)."""
        with self.lock:
            self.check_open()
            for name, addr in mapping.items():
                if not isinstance(addr, int):
                    raise TypeError(f"define: address of {name!r} must be an int, not {type(addr).__name__}")
                self._defines[name] = addr

    def load_shared(self, name_or_path: str) -> None:
        """Also search this shared object (after defines, before the process)."""
        with self.lock:
            self.check_open()
            path = name_or_path
            if os.sep not in path and not path.startswith("lib"):
                path = ctypes.util.find_library(path) or path
            handle = dlopen(os.fsencode(path), os.RTLD_NOW | os.RTLD_GLOBAL)
            if not handle:
                why = (dlerror() or b"").decode("utf-8", "replace")
                raise LinkError(f"load_shared: cannot load {name_or_path!r}: {why}")
            self._shared.append((path, handle))
            if "libstdc++" in path:
                tls.pin_cxx_runtime()     # before anything uses its thread-locals
            # names found in the process before may now come from this object
            # (searched first), as in a fresh session
            self._process_cache.clear()

    def resolve_external(self, name: str) -> int | None:
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
        for _, handle in self._shared:
            addr = _dlsym(handle, bname)
            if addr:
                self._process_cache[name] = addr
                return addr
        addr = _dlsym(None, bname) or platform.implicit_symbol(name)
        if addr:
            self._process_cache[name] = addr
            return addr
        return None

    def _runtime_library(self, name: str, ir: str) -> Library:
        """One part of hotlink's runtime, linked into a hidden library on first use."""
        lib = self._runtimes.get(name)
        if lib is None:
            lib = Library(self, name)      # hidden: not in self._libraries
            lib.link_sources([(runtime.runtime_object(ir), "runtime")])
            self._runtimes[name] = lib
        return lib

    def _runtime_address(self, name: str) -> int:
        """Address of a runtime function, linking the runtime on first use."""
        lib = self._runtimes.get("hotlink.runtime")
        if lib is None:
            lib = self._runtime_library("hotlink.runtime", runtime.IR)
            sym = lib.definitions
            self.reclaimer.native = runtime.NativeThreads(
                self.arena, sym["hotlink_epoch"].address, sym["hotlink_slots"].address,
                sym["hotlink_key"].address, sym["hotlink_thread_exit"].address)
        return lib.definitions[name].address

    def guarded_call(self) -> platform.GuardedCall | None:
        """Calls that catch C++ exceptions, where a C++ runtime is loaded
        (without one, nothing can throw a C++ exception)."""
        if self._guarded is None and all(self.resolve_external(n) for n in runtime.CXX_NAMES):
            lib = self._runtime_library("hotlink.runtime.cxx", runtime.CXX_IR)
            self._guarded = runtime.guarded_caller(lib.definitions["hotlink_guarded_call"].address)
        return self._guarded

    def thread_atexit(self) -> int:
        """Address of the runtime's ``hotlink_thread_atexit`` (linked on first use)."""
        lib = self._runtime_library("hotlink.runtime.thread_atexit", runtime.THREAD_ATEXIT_IR)
        return lib.definitions["hotlink_thread_atexit"].address

    def runtime_function(self, name: str, restype: Any = None, argtypes: Sequence[Any] = ()) -> Any:
        """A ctypes function for one of hotlink's runtime functions (e.g. for
        Python threads that run native loops: ``hotlink_thread_online``)."""
        if name not in runtime.NAMES:
            raise SymbolNotFoundError(f"{name!r} is not a hotlink runtime function")
        with self.lock:
            self.check_open()
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

    def new_unit(self, lib: Library, name: str | None) -> Unit:
        self._seq += 1
        return Unit(lib, name, self._seq)

    def unlink_units(self, units: list[Unit], defer: bool = False) -> None:
        """Remove ``units``, in this order; the caller holds the lock and checked dependents."""
        unlink.unlink(self, units, defer)

    def code_changed(self) -> None:
        """Units were committed or unlinked: the address index is stale."""
        self._code_index = None

    def _unit_at(self, addr: int) -> Unit | None:
        """The live unit whose memory holds ``addr``."""
        if self._closed:
            return None
        index = self._code_index
        if index is None:
            spans = []
            libs = [*self._libraries.values(), *self._runtimes.values()]
            for lib in libs:
                for u in lib.units:
                    for b in u.blocks:
                        _, a, n, _ = unpack_block(b)
                        spans.append((a, a + n, u))
            spans.sort(key=lambda t: t[0])
            index = self._code_index = ([t[0] for t in spans], [(t[1], t[2]) for t in spans])
        starts, rest = index
        i = bisect.bisect_right(starts, addr) - 1
        if i >= 0 and addr < rest[i][0] and rest[i][1].alive:
            return rest[i][1]
        return None

    def symbolize(self, address: int) -> debug.Symbolized | None:
        """The library, unit, symbol and offset of an address in live JIT code
        (an entry stub names the function it leads to); None elsewhere."""
        with self.lock:
            return debug.symbolize(self, address, self._unit_at(address))

    # --- state --------------------------------------------------------------

    def memory(self) -> MemoryStats:
        with self.lock:
            arena = self.arena
            if not self._closed:
                arena.flush()
            stats = MemoryStats()
            for name, pool in arena.named_pools():
                stats.pools[name] = (pool.mapped, pool.used)
                stats.mapped += pool.mapped
                stats.used += pool.used
            stats.resident = arena.resident() if not self._closed else 0
            stats.retired = self.reclaimer.retired_bytes
            stats.got_entries, stats.stubs = self.tables.counts()
            stats.debug = sum(o.memory() for o in self.observers)
            for name, lib in self._libraries.items():
                m = LibraryMemory(units=len(lib.units), symbols=len(lib.definitions))
                for u in lib.units:
                    m.used += sum(((b >> 50) + 15) & -16 for b in u.blocks)
                stats.libraries[name] = m
            return stats

    def synchronize(self, timeout: float | None = None) -> bool:
        """Wait until everything retired is freed (True), or ``timeout`` seconds (False).

        Raises LinkError at once when called from inside a call into JIT code
        (it would wait for itself)."""
        done = self.reclaimer.synchronize(timeout)
        if done and not self._closed:
            with self.lock:
                self.arena.flush()
        return done

    def close(self, timeout: float = 10.0) -> None:
        """Unload every unit newest first (running destructors), wait for the
        grace period, then unmap the arena.

        If a thread is still inside JIT code (a call through a hotlink
        callable, or a native thread registered with ``hotlink_thread_online``)
        after ``timeout`` seconds, nothing is unloaded or freed: the session
        is marked closed and its code stays mapped, leaked rather than pulled
        from under that thread.  Raises LinkError when called from inside a
        call into JIT code.
        """
        self.reclaimer.check_not_waiting_for_self("close()")
        self._close(timeout)

    def _close_quietly(self) -> None:
        """At interpreter exit, or when the session is garbage: never wait,
        never raise, never free code a thread may be running."""
        try:
            self.reclaimer.check_not_waiting_for_self("close()")
        except LinkError:
            self._abandon()
            return
        self._close(0.0, warn=False)

    def _close(self, timeout: float, warn: bool = True) -> None:
        with self.lock:
            if self._closed:
                return
            reclaimer = self.reclaimer
            deadline = time.monotonic() + timeout
            while reclaimer.busy() and time.monotonic() < deadline:
                time.sleep(0.001)
            if reclaimer.busy():
                self._abandon(warn)
                return
            drained = False
            try:
                for pending in list(self.pending_replacements):
                    pending.abort()
                units = [u for lib in self._libraries.values() for u in lib.units]
                self.unlink_units(sorted(units, key=lambda u: -u.seq))
                # the runtime last: finalizers above may call through it (or link it)
                self._guarded = None
                units = [u for lib in self._runtimes.values() for u in lib.units]
                self.unlink_units(sorted(units, key=lambda u: -u.seq))
                drained = reclaimer.synchronize(timeout) and not reclaimer.busy()
            finally:
                with GATE:      # closing completes, whatever interrupts it
                    self._mark_closed()
                    if drained:
                        reclaimer.close()       # its native thread key and call gate lane
                        self.arena.close()
                    elif warn:
                        warnings.warn("hotlink: threads are still running JIT code; the session's "
                                      "arena stays mapped", RuntimeWarning, stacklevel=4)

    def _abandon(self, warn: bool = True) -> None:
        """Close without unloading: a thread may still run this code."""
        with self.lock:
            if self._closed:
                return
            self._mark_closed()
            if warn:
                warnings.warn("hotlink: threads are still running JIT code; the session is closed "
                              "without running destructors and its code stays mapped",
                              RuntimeWarning, stacklevel=4)

    def _mark_closed(self) -> None:
        if self.compile_pool is not None:
            self.compile_pool.close()
            self.compile_pool = None
        for lib in (*self._libraries.values(), *self._runtimes.values()):
            lib.alive = False
        self._libraries.clear()
        self._closed = True
        self.reclaimer.closed = True
        _open_sessions.discard(self)

    def __del__(self) -> None:
        # unreferenced: no Python object can call its code any more; free it
        # unless a native thread is running it
        if not getattr(self, "_closed", True):
            try:
                self._close_quietly()
            except Exception:
                pass

    # --- fork ---------------------------------------------------------------

    def _fork_prepare(self) -> None:
        """Before fork: no link, unlink or free is halfway, and the arena is
        snapshotted for the child."""
        self.lock.acquire()
        self._forking = True
        self.arena.fork_prepare()

    def _fork_done(self, child: bool) -> None:
        if not self._forking:
            return
        self._forking = False
        try:
            if child:
                self.compile_pool = None      # the parent's compiler workers are not ours
                try:
                    self.arena.fork_child()
                finally:
                    self.reclaimer.after_fork()
            else:
                self.arena.fork_parent()
        finally:
            self.lock.release()

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return f"<hotlink.Session libraries={list(self._libraries)}{' closed' if self._closed else ''}>"
