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
  ``__cxa_atexit``.
* ``.eh_frame`` is handed to libgcc's ``__register_frame`` (the unwinder
  libstdc++ uses) and taken back with ``__deregister_frame`` at remove.
  FDEs of COMDAT functions whose group was discarded are pruned first, as
  ld does.
"""
from __future__ import annotations

import bisect
import ctypes
import struct
import threading
from typing import Callable

from .errors import MalformedObjectError

_libgcc = ctypes.CDLL("libgcc_s.so.1")
_register_frame = _libgcc.__register_frame
_register_frame.argtypes = (ctypes.c_void_p,)
_register_frame.restype = None
_deregister_frame = _libgcc.__deregister_frame
_deregister_frame.argtypes = (ctypes.c_void_p,)
_deregister_frame.restype = None

_libc = ctypes.CDLL(None)
_libc_cxa_atexit = _libc.__cxa_atexit
_libc_cxa_atexit.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
_libc_cxa_atexit.restype = ctypes.c_int

_VOID_FN = ctypes.CFUNCTYPE(None)
_VOID_FN_ARG = ctypes.CFUNCTYPE(None, ctypes.c_void_p)

# dso handle address -> the owner's list of (fn, arg) handlers, newest last
_handlers_by_dso: dict[int, list] = {}
_current = threading.local()   # the handler list of the unit whose initializers are running
registered_frames = 0          # how many eh_frame tables hotlink has registered right now
_frames_lock = threading.Lock()


@ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
def _cxa_atexit(fn, arg, dso):
    handlers = _handlers_by_dso.get(dso or 0)
    if handlers is None and not dso:
        handlers = getattr(_current, "handlers", None)
    if handlers is None:
        return _libc_cxa_atexit(fn, arg, dso)
    handlers.append((fn, arg))
    return 0


CXA_ATEXIT = ctypes.cast(_cxa_atexit, ctypes.c_void_p).value


def atexit_thunk(dso: int) -> bytes:
    return (b"\x48\xba" + struct.pack("<Q", dso)           # movabs $dso, %rdx
            + b"\x31\xf6"                                   # xor %esi, %esi
            + b"\x48\xb8" + struct.pack("<Q", CXA_ATEXIT)    # movabs $__cxa_atexit, %rax
            + b"\xff\xe0")                                  # jmp *%rax


ATEXIT_THUNK_SIZE = 24


def bind_dso(dso: int, handlers: list) -> None:
    _handlers_by_dso[dso] = handlers


def unbind_dso(dso: int) -> None:
    _handlers_by_dso.pop(dso, None)


def run_initializers(fns: list[int], handlers: list) -> None:
    _current.handlers = handlers
    try:
        for fn in fns:
            _VOID_FN(fn)()
    finally:
        _current.handlers = None


def run_finalizers(handlers: list) -> None:
    """Run (fn, arg) handlers newest first; arg None means a plain void(void) finalizer."""
    while handlers:
        fn, arg = handlers.pop()
        if arg is None:
            _VOID_FN(fn)()
        else:
            _VOID_FN_ARG(fn)(arg)


def register_frames(addr: int) -> None:
    global registered_frames
    _register_frame(addr)
    with _frames_lock:
        registered_frames += 1


def deregister_frames(addr: int) -> None:
    global registered_frames
    _deregister_frame(addr)
    with _frames_lock:
        registered_frames -= 1


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


# --- .eh_frame -----------------------------------------------------------

_u32 = struct.Struct("<I")
_i32 = struct.Struct("<i")


def prune_eh_frame(data: bytes, relocs: list, where: str,
                   dropped: Callable[[int], bool] | None = None) -> tuple[bytes, list]:
    """Check the record structure of an ``.eh_frame`` section (lengths inside
    the section, every FDE pointing back at a CIE) so the unwinder never walks
    off it, and remove FDEs whose ``pc_begin`` points into a discarded section.

    Returns the section bytes and relocations, moved to match when FDEs were removed.
    """
    pc_reloc = {off: si for off, _k, si, _a in relocs} if dropped else None
    keep: list[tuple[int, int]] = []   # kept records as (start, end)
    cies = set()
    pos, n = 0, len(data)
    while pos + 4 <= n:
        (length,) = _u32.unpack_from(data, pos)
        if length == 0:
            break
        if length == 0xFFFFFFFF:
            raise MalformedObjectError(f"{where}+{pos:#x}: 64-bit .eh_frame records are not supported")
        end = pos + 4 + length
        if end > n or length < 4:
            raise MalformedObjectError(f"{where}+{pos:#x}: .eh_frame record of length {length} runs past the section")
        (cie_id,) = _u32.unpack_from(data, pos + 4)
        if cie_id == 0:
            cies.add(pos)
        elif pos + 4 - cie_id not in cies:
            raise MalformedObjectError(f"{where}+{pos:#x}: FDE points at {pos + 4 - cie_id:#x}, which is no CIE")
        if not (cie_id and pc_reloc is not None and dropped(pc_reloc.get(pos + 8, 0)) and pos + 8 in pc_reloc):
            keep.append((pos, end))
        pos = end
    if pos != n and any(data[pos:]):
        raise MalformedObjectError(f"{where}+{pos:#x}: trailing bytes after the .eh_frame terminator")
    if dropped is None or sum(e - s for s, e in keep) == pos:
        return data, relocs
    new_pos: dict[int, int] = {}
    out = bytearray()
    for s, e in keep:
        new_pos[s] = len(out)
        out += data[s:e]
    for s, e in keep:   # FDEs point back at their CIE relative to the id field
        (cie_id,) = _u32.unpack_from(data, s + 4)
        if cie_id:
            _u32.pack_into(out, new_pos[s] + 4, new_pos[s] + 4 - new_pos[s + 4 - cie_id])
    starts = [s for s, _ in keep]
    moved = []
    for off, kind, si, a in relocs:
        j = bisect.bisect_right(starts, off) - 1
        if j >= 0 and off < keep[j][1]:
            moved.append((off - starts[j] + new_pos[starts[j]], kind, si, a))
    return bytes(out), moved
