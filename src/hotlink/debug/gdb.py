"""The GDB JIT interface (gdb manual, "JIT Interface"; gdb/jit.c).

gdb looks, in every object the process has loaded, for a function
``__jit_debug_register_code`` (it puts a breakpoint there) and a
``__jit_debug_descriptor``::

    struct jit_code_entry { jit_code_entry *next, *prev; const char *symfile_addr; uint64_t symfile_size; };
    struct jit_descriptor { uint32_t version;        /* 1 */
                            uint32_t action_flag;    /* JIT_NOACTION 0, JIT_REGISTER_FN 1, JIT_UNREGISTER_FN 2 */
                            jit_code_entry *relevant_entry, *first_entry; };

To register an object file image, the JIT links an entry into the doubly
linked list, points ``relevant_entry`` at it, sets ``action_flag`` and
calls ``__jit_debug_register_code``; gdb, stopped there, reads the image
(``image.py``) from the process's memory.  Unregistering unlinks the entry
the same way.

gdb finds those two symbols only in an object loaded from a file it can
read (it reads the symbol table from the path).  They are not in any
library Python loads, and hotlink needs no C compiler: it writes a tiny
shared object with ``dso.py`` (the function is a single ``ret``, the
descriptor 24 bytes of data) into a directory of the user's own under the
temporary directory (or ``~/.cache/hotlink``), named after its contents,
and ``dlopen``s it.  One
descriptor serves every session of the process.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import stat
import struct
import tempfile
import threading
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .. import dso, libc
from ..errors import LinkError
from . import Observer
from .image import elf_image

if TYPE_CHECKING:
    from ..graph import LinkObject
    from ..library import Unit
    from ..session import Session

JIT_NOACTION, JIT_REGISTER_FN, JIT_UNREGISTER_FN = 0, 1, 2
ENTRY = struct.Struct("<QQQQ")            # next, prev, symfile_addr, symfile_size
RTLD_NOW = 2


class Descriptor(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("action_flag", ctypes.c_uint32),
                ("relevant_entry", ctypes.c_uint64), ("first_entry", ctypes.c_uint64)]


def registration_object() -> bytes:
    """The shared object defining ``__jit_debug_register_code`` and ``__jit_debug_descriptor``."""
    code = b"\xc3"                                    # ret: gdb's breakpoint does the work
    image, _ = dso.build("libhotlink-gdb-jit.so", text=code, data=struct.pack("<IIQQ", 1, JIT_NOACTION, 0, 0),
                         symbols=(dso.Symbol("__jit_debug_register_code", "func", 0, len(code)),
                                  dso.Symbol("__jit_debug_descriptor", "object", 0, ctypes.sizeof(Descriptor))))
    return image


def _private_directory(path: str) -> str:
    """``path``, made 0700 and checked to be this user's own directory (not
    a link someone else planted)."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise LinkError(f"debug info: {path} is not a private directory of this user; "
                        f"cannot write the GDB registration object there")
    return path


def _write_once(directory: str, image: bytes) -> str:
    """The object's path, written under a name that is its hash: a file
    another process has loaded is never truncated or rewritten."""
    path = os.path.join(directory, f"libhotlink-gdb-jit-{hashlib.sha256(image).hexdigest()[:16]}.so")
    try:
        with open(path, "rb") as f:
            if f.read() == image:
                return path
    except OSError:
        pass
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".so.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(image)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


class GdbJit:
    """The process's descriptor and its list of registered images."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # the temporary directory, or the user's cache where /tmp is mounted noexec
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        image, problems, handle = registration_object(), [], None
        for directory in (os.path.join(tempfile.gettempdir(), f"hotlink-{os.getuid()}"),
                          os.path.join(cache, "hotlink")):
            try:
                path = _write_once(_private_directory(directory), image)
            except (OSError, LinkError) as e:
                problems.append(str(e))
                continue
            handle = libc.dlopen(path.encode(), RTLD_NOW)
            if handle:
                break
            problems.append(f"cannot load {path}: {(libc.dlerror() or b'').decode()}")
        if not handle:
            raise LinkError("debug info: no GDB registration object could be loaded: " + "; ".join(problems))
        self.path = path
        register = libc.dlsym(handle, b"__jit_debug_register_code")
        descriptor = libc.dlsym(handle, b"__jit_debug_descriptor")
        if not register or not descriptor:
            raise LinkError(f"debug info: {path} lacks the GDB JIT interface symbols")
        self.descriptor = Descriptor.from_address(descriptor)
        self.register_code = ctypes.CFUNCTYPE(None)(register)

    def register(self, image: bytes) -> ctypes.Array[ctypes.c_char]:
        """Hand ``image`` to the debugger; the returned buffer (entry and
        image) must live until ``unregister``."""
        buf = ctypes.create_string_buffer(ENTRY.size + len(image))
        entry = ctypes.addressof(buf)
        ctypes.memmove(entry + ENTRY.size, image, len(image))
        with self.lock:
            d = self.descriptor
            first = d.first_entry
            ENTRY.pack_into(buf, 0, first, 0, entry + ENTRY.size, len(image))
            if first:
                ctypes.c_uint64.from_address(first + 8).value = entry     # first->prev
            d.first_entry = entry
            d.relevant_entry = entry
            d.action_flag = JIT_REGISTER_FN
            self.register_code()
            d.action_flag = JIT_NOACTION
        return buf

    def unregister(self, buf: ctypes.Array[ctypes.c_char]) -> None:
        entry = ctypes.addressof(buf)
        with self.lock:
            d = self.descriptor
            nxt, prev, _, _ = ENTRY.unpack_from(buf, 0)
            if prev:
                ctypes.c_uint64.from_address(prev).value = nxt            # prev->next
            else:
                d.first_entry = nxt
            if nxt:
                ctypes.c_uint64.from_address(nxt + 8).value = prev        # next->prev
            d.relevant_entry = entry
            d.action_flag = JIT_UNREGISTER_FN
            self.register_code()
            d.action_flag = JIT_NOACTION
            d.relevant_entry = 0

    def entries(self) -> int:
        """How many images the descriptor's list holds now (what gdb would read)."""
        n, at = 0, self.descriptor.first_entry
        while at:
            n += 1
            at = ctypes.c_uint64.from_address(at).value
        return n


_jit: GdbJit | None = None
_jit_lock = threading.Lock()


def gdb_jit() -> GdbJit:
    """The process's GDB JIT interface, loaded on first use."""
    global _jit
    with _jit_lock:
        if _jit is None:
            _jit = GdbJit()
        return _jit


class GdbObserver(Observer):
    """Registers an image per linked object; a removed unit's images go."""

    def __init__(self, session: Session):
        self.jit = gdb_jit()
        self.images: dict[Unit, list[ctypes.Array[ctypes.c_char]]] = {}

    def linked(self, objects: Sequence[LinkObject]) -> None:
        for lo in objects:
            try:
                image = elf_image(lo)
            except Exception as e:     # a link's commit cannot fail: the debugger loses, not the program
                warnings.warn(f"hotlink: no debug info for {lo.obj.name}: {e}", RuntimeWarning, stacklevel=2)
                continue
            self.images.setdefault(lo.unit, []).append(self.jit.register(image))

    def unlinked(self, unit: Unit) -> None:
        for buf in self.images.pop(unit, ()):
            self.jit.unregister(buf)

    def memory(self) -> int:
        return sum(ctypes.sizeof(b) for bufs in self.images.values() for b in bufs)
