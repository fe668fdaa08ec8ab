"""The child's copy of JIT memory, made where glibc's fork handlers run.

A forked child must get a private copy of the arena (it is shared memfd
memory: the child's writes would reach the parent).  Python's fork hooks
run too early and too late for JIT code's own ``pthread_atfork`` handlers:
the "before" hook runs before their prepare handlers (whose writes the
child must see) and the "after in child" hook after their child handlers
(whose writes must not reach the parent).  So the copy and the remap are
done by two tiny native handlers registered with glibc before any JIT code
can register its own:

* **prepare** (glibc runs prepare handlers newest first, so this one runs
  last, right before ``fork``): copies each used chunk run of the arena into
  the snapshot memfds that Python's "before" hook created and mapped;
* **child** (child handlers run oldest first, so this one runs first, right
  after ``fork``): maps the snapshots over the arena's views with raw
  ``mmap`` system calls, setting a flag if one fails (Python's "after in
  child" hook then falls back to doing it itself, arena.py).

Both read one table that Python fills in its "before" hook; a ``fork()``
not made through Python's ``os.fork`` finds it empty and does nothing.  The
code is LLVM IR compiled by llvmlite with the table's address as a
constant, so it has no relocations: its bytes are copied into a page of
their own, then made executable (never writable and executable at once).
"""
from __future__ import annotations

import ctypes
import threading

from . import libc

HEADER = 4                      # words: copies, maps, failed, armed
CAP_COPIES = CAP_MAPS = 4096
_COPY_WORDS, _MAP_WORDS = 3, 6  # (dst, src, len); (addr, len, prot, flags, fd, offset)
_MAPS_AT = HEADER + _COPY_WORDS * CAP_COPIES

_IR = r"""
define void @hotlink_fork_prepare() {{
entry:
  %t = inttoptr i64 {table} to ptr
  %n = load volatile i64, ptr %t
  br label %loop
loop:
  %i = phi i64 [0, %entry], [%i1, %body]
  %more = icmp ult i64 %i, %n
  br i1 %more, label %body, label %out
body:
  %w = mul i64 %i, 3
  %at = add i64 %w, {header}
  %p = getelementptr i64, ptr %t, i64 %at
  %dst = load volatile i64, ptr %p
  %p1 = getelementptr i64, ptr %p, i64 1
  %src = load volatile i64, ptr %p1
  %p2 = getelementptr i64, ptr %p, i64 2
  %len = load volatile i64, ptr %p2
  %r = call {{ i64, i64, i64 }} asm sideeffect "rep movsb", "{movsb}"(i64 %dst, i64 %src, i64 %len)
  %i1 = add i64 %i, 1
  br label %loop
out:
  ret void
}}

define void @hotlink_fork_child() {{
entry:
  %t = inttoptr i64 {table} to ptr
  %np = getelementptr i64, ptr %t, i64 1
  %n = load volatile i64, ptr %np
  %failed = getelementptr i64, ptr %t, i64 2
  br label %loop
loop:
  %i = phi i64 [0, %entry], [%i1, %next]
  %more = icmp ult i64 %i, %n
  br i1 %more, label %body, label %out
body:
  %w = mul i64 %i, 6
  %at = add i64 %w, {maps_at}
  %p = getelementptr i64, ptr %t, i64 %at
  %addr = load volatile i64, ptr %p
  %p1 = getelementptr i64, ptr %p, i64 1
  %len = load volatile i64, ptr %p1
  %p2 = getelementptr i64, ptr %p, i64 2
  %prot = load volatile i64, ptr %p2
  %p3 = getelementptr i64, ptr %p, i64 3
  %flags = load volatile i64, ptr %p3
  %p4 = getelementptr i64, ptr %p, i64 4
  %fd = load volatile i64, ptr %p4
  %p5 = getelementptr i64, ptr %p, i64 5
  %off = load volatile i64, ptr %p5
  %got = call i64 asm sideeffect "syscall", "{syscall}"(i64 9, i64 %addr, i64 %len, i64 %prot, i64 %flags,
                                                         i64 %fd, i64 %off)
  %ok = icmp eq i64 %got, %addr
  br i1 %ok, label %next, label %fail
fail:
  store volatile i64 1, ptr %failed
  br label %next
next:
  %i1 = add i64 %i, 1
  br label %loop
out:
  ret void
}}
"""


# inline asm constraints: rep movsb (rdi, rsi, rcx consumed); mmap (9) as a raw system call
_MOVSB = "={di},={si},={cx},0,1,2,~{memory},~{dirflag},~{fpsr},~{flags}"
_SYSCALL = "={ax},{ax},{di},{si},{dx},{r10},{r8},{r9},~{rcx},~{r11},~{memory}"


class ForkTable:
    """What the native handlers do at the next fork: filled by Python's
    "before" hook (``arm``), emptied after it (``disarm``)."""

    def __init__(self) -> None:
        self._words = (ctypes.c_uint64 * (_MAPS_AT + _MAP_WORDS * CAP_MAPS))()
        self.address = ctypes.addressof(self._words)
        self.copies: list[tuple[int, int, int]] = []
        self.maps: list[tuple[int, int, int, int, int, int]] = []

    def fits(self, copies: int, maps: int) -> bool:
        return len(self.copies) + copies <= CAP_COPIES and len(self.maps) + maps <= CAP_MAPS

    def arm(self) -> None:
        w = self._words
        copies: list[ctypes.c_uint64 | int] = [x for entry in self.copies for x in entry]
        maps: list[ctypes.c_uint64 | int] = [x & 0xFFFFFFFFFFFFFFFF for entry in self.maps for x in entry]
        w[HEADER:HEADER + len(copies)] = copies
        w[_MAPS_AT:_MAPS_AT + len(maps)] = maps
        w[2] = 0
        w[0], w[1] = len(self.copies), len(self.maps)

    def failed(self) -> bool:
        """Did a remap in the child fail (the Python hook must redo them)?"""
        return bool(self._words[2])

    def disarm(self) -> None:
        self._words[0] = self._words[1] = 0
        self.copies, self.maps = [], []


_table: ForkTable | None = None
_lock = threading.Lock()


def table() -> ForkTable | None:
    """The fork table if the native handlers are installed (else arena.py
    copies in Python hooks, which is right while no JIT code has fork
    handlers of its own)."""
    return _table


def install() -> None:
    """Install the native handlers, once per process: before the first JIT
    unit that can register fork handlers runs (the linker calls this when it
    binds ``pthread_atfork`` or ``__register_atfork``), so they come first in
    glibc's order."""
    global _table
    with _lock:
        if _table is None:
            t = ForkTable()
            _install(t)
            _table = t


def _install(t: ForkTable) -> None:
    from .native import relocation_free_code

    ir = _IR.format(table=t.address, header=HEADER, maps_at=_MAPS_AT, movsb=_MOVSB, syscall=_SYSCALL)
    code = relocation_free_code(ir, "the fork handlers", ("hotlink_fork_prepare", "hotlink_fork_child"))
    prepare, child = code["hotlink_fork_prepare"], code["hotlink_fork_child"]
    # dso NULL: registered for the life of the process, before any JIT code's
    if libc.register_atfork(prepare, None, child, None) != 0:
        raise OSError("__register_atfork failed")
