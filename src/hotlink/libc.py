"""The C library functions hotlink calls, declared once each.

One handle on the process (``dlopen(NULL)``, opened with ``use_errno=True``
so that ``ctypes.get_errno()`` reads what the last call through it left) and
one on libgcc's unwinder.  ctypes caches one function object per name and
handle, so a prototype (``argtypes``/``restype``) set in two places would be
one setting overwriting the other: every function hotlink calls is declared
here, once, with the Python type of its arguments and result.

An argument typed ``int | None`` is a ``void *`` (None is NULL); a result
typed ``int | None`` is a ``void *`` that may be NULL.
"""
from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # names typeshed gives ctypes' internal classes
    from ctypes import _CArgObject, _CDataType, _CFunctionType, _NamedFuncPointer

__all__ = [
    "LIBC", "LIBGCC", "PHDR_CALLBACK", "PhdrInfo", "cxa_atexit", "cxa_demangle", "cxa_finalize",
    "deregister_frame", "dl_iterate_phdr", "dladdr1", "dlclose", "dlinfo", "dlsym", "dlvsym", "fallocate", "fflush",
    "free", "libc_address", "libgcc_symbol", "mmap", "mprotect", "munmap", "pthread_getspecific", "pthread_key_create",
    "pthread_key_delete", "register_atfork", "register_frame", "sigaction",
]

LIBC = ctypes.CDLL(None, use_errno=True)     # the process: libc and every global object
LIBGCC = ctypes.CDLL("libgcc_s.so.1")        # the unwinder libstdc++ uses


def _declare(lib: ctypes.CDLL, name: str, restype: type[_CDataType] | None,
             *argtypes: type[_CDataType]) -> _NamedFuncPointer:
    """``lib.name`` with its prototype set (the one place it is set).  ``getattr``
    returns the function object the handle caches, the one ``lib.name`` gives."""
    fn: _NamedFuncPointer = getattr(lib, name)
    fn.restype = restype
    fn.argtypes = argtypes
    return fn


_void_p, _int, _uint, _size_t, _long = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint, ctypes.c_size_t, ctypes.c_long

# --- memory (arena.py) ----------------------------------------------------------

# void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off): MAP_FAILED (-1) on error
mmap: Callable[[int | None, int, int, int, int, int], int | None] = _declare(
    LIBC, "mmap", _void_p, _void_p, _size_t, _int, _int, _int, _long)
# int munmap(void *addr, size_t len): 0, or -1 and errno
munmap: Callable[[int, int], int] = _declare(LIBC, "munmap", _int, _void_p, _size_t)
# int mprotect(void *addr, size_t len, int prot): 0, or -1 and errno
mprotect: Callable[[int, int, int], int] = _declare(LIBC, "mprotect", _int, _void_p, _size_t, _int)
# int fallocate(int fd, int mode, off_t offset, off_t len): 0, or -1 and errno (FALLOC_FL_PUNCH_HOLE)
fallocate: Callable[[int, int, int, int], int] = _declare(LIBC, "fallocate", _int, _int, _int, _long, _long)
# void free(void *p): for what libc (or libstdc++, __cxa_demangle) malloc'ed
free: Callable[[int | None], None] = _declare(LIBC, "free", None, _void_p)

# --- symbols (session.py, host.py) -----------------------------------------------

# void *dlsym(void *handle, const char *name): handle None is RTLD_DEFAULT (the global scope)
dlsym: Callable[[int | None, bytes], int | None] = _declare(LIBC, "dlsym", _void_p, _void_p, ctypes.c_char_p)
# void *dlvsym(void *handle, const char *name, const char *version): a non-default version too
dlvsym: Callable[[int | None, bytes, bytes], int | None] = _declare(
    LIBC, "dlvsym", _void_p, _void_p, ctypes.c_char_p, ctypes.c_char_p)
# void *dlopen(const char *path, int mode): NULL on failure, dlerror() says why
dlopen: Callable[[bytes, int], int | None] = _declare(LIBC, "dlopen", _void_p, ctypes.c_char_p, ctypes.c_int)
# int dlclose(void *handle): 0, or non-zero and dlerror() says why
dlclose: Callable[[int], int] = _declare(LIBC, "dlclose", _int, _void_p)
# int dlinfo(void *handle, int request, void *info): RTLD_DI_LINKMAP, RTLD_DI_TLS_MODID (dso.py)
dlinfo: Callable[[int, int, _CArgObject], int] = _declare(LIBC, "dlinfo", _int, _void_p, _int, _void_p)
# int dladdr1(const void *addr, Dl_info *info, void **extra, int flags): non-zero if found;
# RTLD_DL_SYMENT (1) makes *extra the ElfW(Sym) of the symbol (interrupts.py reads its size)
dladdr1: Callable[[int, _CArgObject, _CArgObject, int], int] = _declare(
    LIBC, "dladdr1", _int, _void_p, _void_p, _void_p, _int)
# char *dlerror(void): the last dl* error of this thread
dlerror: Callable[[], bytes | None] = _declare(LIBC, "dlerror", ctypes.c_char_p)


class PhdrInfo(ctypes.Structure):
    """The head of ``struct dl_phdr_info`` (the fields hotlink reads)."""

    _fields_ = [("dlpi_addr", ctypes.c_uint64), ("dlpi_name", ctypes.c_char_p),
                ("dlpi_phdr", ctypes.c_void_p), ("dlpi_phnum", ctypes.c_uint16)]


# int (*callback)(struct dl_phdr_info *info, size_t size, void *data): non-zero stops the walk
PHDR_CALLBACK = ctypes.CFUNCTYPE(_int, ctypes.POINTER(PhdrInfo), _size_t, _void_p)
# int dl_iterate_phdr(callback, void *data): calls back once per loaded object, the executable first
dl_iterate_phdr: Callable[[_CFunctionType, int | None], int] = _declare(
    LIBC, "dl_iterate_phdr", _int, PHDR_CALLBACK, _void_p)


def libgcc_symbol(name: str, version: str | None = None) -> int:
    """``name`` in libgcc_s (``version``: a non-default one, e.g. ``GCC_4.8.0``); 0 if absent."""
    bname = name.encode("utf-8", "surrogateescape")
    found = dlsym(_LIBGCC_HANDLE, bname) if version is None else dlvsym(_LIBGCC_HANDLE, bname, version.encode())
    return found or 0


_LIBGCC_HANDLE = dlopen(b"libgcc_s.so.1", 2)    # RTLD_NOW; the object LIBGCC holds (reference counted)


def libc_address() -> int:
    """An address inside libc's text (``memcpy``'s): the anchor the arena stays near."""
    return ctypes.cast(LIBC.memcpy, ctypes.c_void_p).value or 0


# --- threads (runtime.py) ----------------------------------------------------------

# int pthread_key_create(pthread_key_t *key, void (*destructor)(void *)): 0, or an error number
pthread_key_create: Callable[[_CArgObject, int | None], int] = _declare(
    LIBC, "pthread_key_create", _int, ctypes.POINTER(_uint), _void_p)
# int pthread_key_delete(pthread_key_t key): 0, or an error number
pthread_key_delete: Callable[[int], int] = _declare(LIBC, "pthread_key_delete", _int, _uint)
# void *pthread_getspecific(pthread_key_t key): this thread's value, NULL if none
pthread_getspecific: Callable[[int], int | None] = _declare(LIBC, "pthread_getspecific", _void_p, _uint)

# --- exit handlers and stdio (platform.py, cli.py) ------------------------------------

# int __cxa_atexit(void (*fn)(void *), void *arg, void *dso_handle): libc's own, for handlers
# that are not JIT code's (platform.py interposes its own __cxa_atexit)
cxa_atexit: Callable[[int | None, int | None, int | None], int] = _declare(
    LIBC, "__cxa_atexit", _int, _void_p, _void_p, _void_p)
# void __cxa_finalize(void *dso): runs libc's exit handlers filed under dso and drops its fork
# and quick-exit handlers (never call it with NULL: that runs every handler of the process)
cxa_finalize: Callable[[int], None] = _declare(LIBC, "__cxa_finalize", None, _void_p)
# int __register_atfork(prepare, parent, child, void *dso): fork handlers, dso NULL for the process's
register_atfork: Callable[[int | None, int | None, int | None, int | None], int] = _declare(
    LIBC, "__register_atfork", _int, _void_p, _void_p, _void_p, _void_p)
# int fflush(FILE *stream): None flushes every output stream
fflush: Callable[[int | None], int] = _declare(LIBC, "fflush", _int, _void_p)
# int sigaction(int sig, const struct sigaction *act, struct sigaction *old): 0, or -1 and errno
# (debug/crash.py passes the structs as addresses: the saved ones live in native memory)
sigaction: Callable[[int, int | None, int | None], int] = _declare(LIBC, "sigaction", _int, _int, _void_p, _void_p)

# --- unwind info (platform.py) -----------------------------------------------------

# void __register_frame(void *eh_frame): libgcc keeps the table (zero-terminated) until deregistered
register_frame: Callable[[int], None] = _declare(LIBGCC, "__register_frame", None, _void_p)
# void __deregister_frame(void *eh_frame): forget a table registered before (aborts if unknown)
deregister_frame: Callable[[int], None] = _declare(LIBGCC, "__deregister_frame", None, _void_p)

# --- C++ (runtime.py) ----------------------------------------------------------------

# char *__cxa_demangle(const char *mangled, char *buf, size_t *len, int *status): malloc'ed, or NULL
# with status != 0.  It lives in libstdc++, which may be loaded (RTLD_GLOBAL) only later: looked up
# on first use, and again while it is missing.
_demangle: Callable[[bytes, int | None, int | None, _CArgObject], int | None] | None = None


def cxa_demangle(mangled: bytes) -> bytes | None:
    """The demangled form of ``mangled`` (a C++ symbol or type name); None when
    it is not a valid mangled name or no C++ runtime is loaded."""
    global _demangle
    if _demangle is None:
        try:
            _demangle = _declare(LIBC, "__cxa_demangle", _void_p,
                                 ctypes.c_char_p, _void_p, _void_p, ctypes.POINTER(_int))
        except AttributeError:
            return None
    status = ctypes.c_int(0)
    out = _demangle(mangled, None, None, ctypes.byref(status))
    if not out:
        return None
    try:
        return ctypes.string_at(out) if status.value == 0 else None
    finally:
        free(out)
