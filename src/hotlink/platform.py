"""What the C runtime would do for a loaded object: initializers, finalizers,
``__cxa_atexit``/``atexit``, ``__dso_handle`` and unwind-info registration.

* ``.init_array``/``.ctors`` run at add and ``.fini_array``/``.dtors`` at
  remove, by priority like ld orders them (``.ctors`` run backwards, as
  crtstuff walks them).
* Every unit that mentions ``__dso_handle`` gets its own, and hotlink's
  ``__cxa_atexit`` files a handler under the unit owning the handle, so it
  runs when that unit is removed instead of at process exit.  ``atexit`` is
  not exported by glibc (it lives in ``libc_nonshared.a``): each unit that
  calls it gets a 24-byte thunk that adds the unit's handle and jumps to
  ``__cxa_atexit``; ``at_quick_exit`` and ``pthread_atfork`` likewise, and
  removing a unit drops its fork handlers (``__cxa_finalize`` with its handle).
* ``.eh_frame`` is handed to libgcc's ``__register_frame`` (the unwinder
  libstdc++ uses) and taken back with ``__deregister_frame`` at remove
  (``ehframe.py`` checks and prunes it before).
"""
from __future__ import annotations

import ctypes
import struct
import threading
from collections.abc import Callable
from typing import TypeAlias

from . import libc

_VOID_FN = ctypes.CFUNCTYPE(None)
_VOID_FN_ARG = ctypes.CFUNCTYPE(None, ctypes.c_void_p)

# A unit's exit handlers: (fn, arg), newest last; arg None means a void(void) finalizer.
Handlers: TypeAlias = list[tuple[int, int | None]]

# dso handle address -> the owner's handlers
_handlers_by_dso: dict[int, Handlers] = {}
_current = threading.local()   # the handler list of the unit whose initializers are running
_registered = 0                # eh_frame tables registered minus deregistered here (register_frames...)
_frames_lock = threading.Lock()
_natively_registered = ctypes.c_int64()    # and by native code itself (quickcore.py), counted atomically
# address -> the handler list of the live unit whose memory holds it (set by session.py)
handlers_at: Callable[[int], Handlers | None] = lambda addr: None


def owner_handlers(fn: int, arg: int, dso: int) -> Handlers | None:
    """The handler list an exit handler belongs to: the unit whose code holds
    ``fn`` (whatever ``dso`` says), else the unit owning ``dso``, else the
    unit holding ``arg`` (a static object's destructor from a shared library,
    such as ``std::string::~string``), else the unit whose initializers are
    running; None: not JIT code's business, libc keeps it."""
    handlers = handlers_at(fn) if fn else None
    if handlers is None and dso:
        handlers = _handlers_by_dso.get(dso)
    if handlers is None and arg:
        handlers = handlers_at(arg)
    if handlers is None:
        current: Handlers | None = getattr(_current, "handlers", None)
        handlers = current
    return handlers


def _cxa_atexit(fn: int | None, arg: int | None, dso: int | None) -> int:
    handlers = owner_handlers(fn or 0, arg or 0, dso or 0)
    if handlers is None:
        return libc.cxa_atexit(fn, arg, dso)
    handlers.append((fn or 0, arg or 0))   # (fn, None) would mean a void(void) finalizer
    return 0


# hotlink's __cxa_atexit as a C function (the callback object lives as long as the module)
_cxa_atexit_fn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)(_cxa_atexit)
CXA_ATEXIT: int = ctypes.cast(_cxa_atexit_fn, ctypes.c_void_p).value or 0


_MOVABS = {"rsi": b"\x48\xbe", "rdx": b"\x48\xba", "rcx": b"\x48\xb9"}


def dso_thunk(dso: int, target: int, dso_register: str, zero_rsi: bool = False) -> bytes:
    """A function that adds the unit's ``__dso_handle`` as the argument in
    ``dso_register`` and jumps to ``target``: how ``libc_nonshared.a``'s
    ``atexit``/``at_quick_exit``/``pthread_atfork`` pass the caller's handle."""
    return (_MOVABS[dso_register] + struct.pack("<Q", dso)
            + (b"\x31\xf6" if zero_rsi else b"")                 # xor %esi, %esi
            + b"\x48\xb8" + struct.pack("<Q", target)             # movabs $target, %rax
            + b"\xff\xe0")                                      # jmp *%rax


THUNK_SIZE = 24


def _libc_function(name: str) -> int:
    return ctypes.cast(getattr(libc.LIBC, name), ctypes.c_void_p).value or 0


# The functions ``libc_nonshared.a`` gives a static link, as thunks over what
# libc.so exports: name -> (target, register that gets the unit's handle, xor %esi).
# A unit's fork and quick-exit handlers are unregistered by ``__cxa_finalize``
# with its handle when it is removed (``forget_dso``).
DSO_THUNKS: dict[str, tuple[Callable[[], int], str, bool]] = {
    "atexit": (lambda: CXA_ATEXIT, "rdx", True),                      # __cxa_atexit(fn, 0, dso)
    "at_quick_exit": (lambda: _libc_function("__cxa_at_quick_exit"), "rsi", False),   # (fn, dso)
    "pthread_atfork": (lambda: _libc_function("__register_atfork"), "rcx", False),   # (p, pa, c, dso)
}


def _cpu_features() -> int:
    # static glibc's name for the CPU feature table that libm.a's IFUNC
    # resolvers read; in a dynamic process ld.so owns the table (same glibc,
    # same layout: libc6-dev ships with the libc6 that runs)
    get = libc.dlsym(None, b"_dl_x86_get_cpu_features")
    return (ctypes.CFUNCTYPE(ctypes.c_void_p)(get)() or 0) if get else 0


def _libgcc_versioned(name: str, version: str) -> int:
    return libc.libgcc_symbol(name, version)


# What a static link gets implicitly (libc_nonshared.a, libgcc.a, static
# glibc) and a dynamic process names differently or keeps hidden:
# name -> its address, looked up when the process does not have the name.
IMPLICIT: dict[str, Callable[[], int]] = {
    "_dl_x86_cpu_features": _cpu_features,
    "__stack_chk_fail_local": lambda: _libc_function("__stack_chk_fail"),
    # __builtin_cpu_supports/__builtin_cpu_init (compat-versioned in libgcc_s)
    "__cpu_model": lambda: _libgcc_versioned("__cpu_model", "GCC_4.8.0"),
    "__cpu_features2": lambda: _libgcc_versioned("__cpu_features2", "GCC_7.0.0"),
    "__cpu_indicator_init": lambda: _libgcc_versioned("__cpu_indicator_init", "GCC_4.8.0"),
}


def implicit_symbol(name: str) -> int | None:
    """``name`` from what a static linker adds implicitly: the table above,
    then libgcc's helpers (``__udivti3``, ``__popcountdi2`` ...), which
    ``libgcc_s.so.1`` exports, then glibc's internal ``__`` aliases."""
    make = IMPLICIT.get(name)
    if make is not None:
        return make() or None
    found = libc.libgcc_symbol(name)
    if not found and name.startswith("__") and not name.startswith("___"):
        # static glibc's archives (libm.a) call libc by internal aliases
        # (``__frexp`` for ``frexp``) that libc.so exports under the plain name
        found = _libc_function(name[2:]) if hasattr(libc.LIBC, name[2:]) else 0
    return found or None


# What JIT code registers fork handlers with (forkcopy.py must be installed first)
FORK_HANDLER_NAMES = ("pthread_atfork", "__register_atfork")
REGISTER_ATFORK: int = _libc_function("__register_atfork")

# C++ thread_local destructors: g++ calls libstdc++'s __cxa_thread_atexit (which
# passes on to glibc's __cxa_thread_atexit_impl); for JIT code it goes to
# runtime.THREAD_ATEXIT_IR, which calls glibc's itself
THREAD_ATEXIT_NAMES = ("__cxa_thread_atexit",)


def forget_dso(dso: int) -> None:
    """Drop what libc keeps under a removed unit's handle: fork handlers
    (``pthread_atfork``) and quick-exit handlers.  Its exit handlers were run
    by hotlink; libc holds none of them (``_cxa_atexit`` files them)."""
    _handlers_by_dso.pop(dso, None)
    libc.cxa_finalize(dso)


def bind_dso(dso: int, handlers: Handlers) -> None:
    _handlers_by_dso[dso] = handlers


# A guarded call: (function, argument or None) -> None, or a description of
# the C++ exception it threw (caught natively, see runtime.py).
GuardedCall = Callable[[int, "int | None"], "str | None"]


def _direct_call(fn: int, arg: int | None) -> None:
    if arg is None:
        _VOID_FN(fn)()
    else:
        _VOID_FN_ARG(fn)(arg)
    return None


def run_initializers(fns: list[int], handlers: Handlers, guarded: GuardedCall | None = None) -> str | None:
    """Run ``fns`` in order; exit handlers they register go to ``handlers``.
    Stops at the first that throws and returns what it threw."""
    call = guarded or _direct_call
    _current.handlers = handlers
    try:
        for fn in fns:
            error = call(fn, None)
            if error is not None:
                return error
        return None
    finally:
        _current.handlers = None


def run_finalizers(handlers: Handlers, guarded: GuardedCall | None = None) -> list[str]:
    """Run (fn, arg) handlers newest first; arg None means a plain void(void)
    finalizer.  A handler that throws does not stop the others; what each
    threw is returned."""
    call = guarded or _direct_call
    errors: list[str] = []
    while handlers:
        fn, arg = handlers.pop()
        error = call(fn, arg)
        if error is not None:
            errors.append(error)
    return errors


def register_frames(addr: int) -> None:
    global _registered
    libc.register_frame(addr)
    with _frames_lock:
        _registered += 1


# For native code that registers tables itself (quickcore.py): __register_frame's address, and
# the count it adds one to for each table (an int64, atomically)
REGISTER_FRAME: int = ctypes.cast(libc.register_frame, ctypes.c_void_p).value or 0  # type: ignore[arg-type]
NATIVE_FRAME_COUNT: int = ctypes.addressof(_natively_registered)


def deregister_frames(addr: int) -> None:
    global _registered
    libc.deregister_frame(addr)
    with _frames_lock:
        _registered -= 1


def __getattr__(name: str) -> int:
    if name == "registered_frames":     # how many eh_frame tables hotlink has registered right now
        return _registered + _natively_registered.value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- initializer sections ------------------------------------------------

def init_priority(name: str) -> tuple[int, bool, bool] | None:
    """(priority, is_init, runs_backwards) for an initializer/finalizer section, else None."""
    for prefix, is_init, backwards, invert in ((".init_array", True, False, False),
                                               (".ctors", True, True, True),
                                               (".fini_array", False, False, False),
                                               (".dtors", False, True, True),
                                               (".preinit_array", True, False, False)):
        if name == prefix:
            return (65536 if prefix != ".preinit_array" else -1), is_init, backwards
        if name.startswith(prefix + "."):
            try:
                p = int(name[len(prefix) + 1:])
            except ValueError:
                return None
            return (65535 - p if invert else p), is_init, backwards
    return None

