"""perf support: ``/tmp/perf-<pid>.map`` and perf's jitdump.

**perf map** (``Session(perf_map=True)`` / ``HOTLINK_PERF_MAP=1``): one line
``START SIZE name`` (hex) per function as it is linked, the format V8,
LuaJIT and CPython write.  perf 6.1 reads it only for anonymous memory, and
hotlink's run view is a memfd mapping, which perf treats as a file: the map
serves other tools (and perf for code it cannot place otherwise); jitdump is
what perf itself uses.

**jitdump** (``Session(jitdump=True)`` / ``HOTLINK_JITDUMP=1``): perf's
``jit-<pid>.dump`` (tools/perf/Documentation/jitdump-specification.txt) in
``$JITDUMPDIR`` (default ``~/.debug/jit``), in a fresh
``hotlink-jit-DATE-XXXXXX`` directory: a code-load record per function with
its bytes and a ``CLOCK_MONOTONIC`` timestamp.  The file is mapped
executable once, so ``perf record -k mono`` records its path, and
``perf inject --jit`` turns every record into a small ELF file perf
reports against.

Records are never taken back: code that is removed or replaced keeps its
records, so samples taken before the change still resolve; code loaded
later at the same address has a later timestamp and wins after it.

Both files belong to the process (every session with the switch appends to
them); a forked child starts its own on its first write.
"""
from __future__ import annotations

import ctypes
import mmap
import os
import struct
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import FunctionSymbol, Observer, functions

if TYPE_CHECKING:
    from ..graph import LinkObject

JITDUMP_MAGIC = 0x4A695444            # "JiTD" as a little-endian u32
JITDUMP_VERSION = 1
EM_X86_64 = 62
JIT_CODE_LOAD, JIT_CODE_CLOSE = 0, 3
_HEADER = struct.Struct("<IIIIIIQQ")  # magic, version, total_size, elf_mach, pad1, pid, timestamp, flags
_RECORD = struct.Struct("<IIQ")       # id, total_size, timestamp
_LOAD = struct.Struct("<IIQQQQ")      # pid, tid, vma, code_addr, code_size, code_index


def _now() -> int:
    """perf's ``-k mono`` clock."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


class PerfMap:
    """``/tmp/perf-<pid>.map``, appended to by every session of the process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def path(self) -> str:
        return f"/tmp/perf-{os.getpid()}.map"

    def write(self, fns: Sequence[FunctionSymbol]) -> None:
        lines = "".join(f"{f.address:x} {f.size:x} {f.name}\n" for f in fns if f.size)
        with self.lock, open(self.path(), "a", encoding="utf-8", errors="replace") as file:
            file.write(lines)     # opened per link: a forked child writes its own pid's file


class JitDump:
    """perf's ``jit-<pid>.dump``, shared by every session of the process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = 0
        self.fd = -1
        self.marker: mmap.mmap | None = None
        self.index = 0
        self.path = ""

    def _open(self) -> None:
        base = os.environ.get("JITDUMPDIR") or os.path.join(os.path.expanduser("~"), ".debug")
        root = os.path.join(base, "jit")
        os.makedirs(root, exist_ok=True)
        directory = tempfile.mkdtemp(prefix=time.strftime("hotlink-jit-%Y%m%d-"), dir=root)
        pid = os.getpid()
        self.path = os.path.join(directory, f"jit-{pid}.dump")
        fd = os.open(self.path, os.O_CREAT | os.O_TRUNC | os.O_RDWR | os.O_CLOEXEC, 0o644)
        os.write(fd, _HEADER.pack(JITDUMP_MAGIC, JITDUMP_VERSION, _HEADER.size, EM_X86_64, 0, pid, _now(), 0))
        # perf finds the dump through this mapping's MMAP record: it must be executable
        self.marker = mmap.mmap(fd, _HEADER.size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_EXEC)
        self.fd, self.pid, self.index = fd, pid, 0

    def load(self, fns: Sequence[FunctionSymbol]) -> None:
        with self.lock:
            if self.pid != os.getpid():
                self._open()       # first use, or a forked child: the parent's file is not ours
            pid, tid = self.pid, threading.get_native_id()
            out = bytearray()
            for f in fns:
                if not f.size:
                    continue
                name = f.name.encode("utf-8", "replace") + b"\0"
                code = ctypes.string_at(f.address, f.size)
                out += _RECORD.pack(JIT_CODE_LOAD, _RECORD.size + _LOAD.size + len(name) + f.size, _now())
                out += _LOAD.pack(pid, tid, f.address, f.address, f.size, self.index)
                out += name + code
                self.index += 1
            os.write(self.fd, out)


PERF_MAP = PerfMap()
JITDUMP = JitDump()


class PerfObserver(Observer):
    """Writes the perf map and/or the jitdump as code is linked."""

    def __init__(self, *, perf_map: bool, jitdump: bool):
        self.perf_map = perf_map
        self.jitdump = jitdump

    def linked(self, objects: Sequence[LinkObject]) -> None:
        fns = [f for lo in objects for f in functions(lo)]
        if not fns:
            return
        try:
            if self.perf_map:
                PERF_MAP.write(fns)
            if self.jitdump:
                JITDUMP.load(fns)
        except OSError as e:      # a link's commit cannot fail: the profile loses, not the program
            warnings.warn(f"hotlink: perf support switched off for this session: {e}", RuntimeWarning,
                          stacklevel=2)
            self.perf_map = self.jitdump = False
