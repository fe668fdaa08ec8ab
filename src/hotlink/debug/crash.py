"""Crash reports: which JIT function a fatal signal hit.

``hotlink.enable_crash_report()`` (or ``HOTLINK_CRASH_REPORT=1``, read when
the first session is made) installs a native handler for SIGSEGV, SIGBUS,
SIGILL, SIGFPE and SIGABRT.  When the faulting instruction, or a return
address found on the interrupted stack, lies in live JIT code, it writes to
stderr::

    hotlink: fatal signal SIGSEGV (11) at address 0x0; JIT frames:
      #0 0x7f3c2a4b0013 crash:crash_here+0x13 (crash.o)
      #1 0x7f3c2a4b1009 crash:outer+0x9 (outer.o)

and hands the signal on: it puts the previous handler back and, for a fault
the kernel raised, returns so the instruction faults again into it (a
signal sent with ``kill``/``raise``, as ``abort`` does, is raised again).
Python's ``faulthandler``, core dumps and the exit status (-11) stay as
they were.  The handler reports the first fatal signal only.

The handler is async-signal-safe: LLVM IR compiled by llvmlite and linked
by hotlink into a small session of its own, it calls only ``write``,
``getpid``, ``process_vm_readv`` (to read the stack without faulting),
``sigaction`` and ``raise``, and reads a native table of function ranges
that link and unlink keep up to date (``CrashTable``: entries are filled
before they are published, a removal clears an entry's start first, and a
larger table is published with one pointer store).

JIT frames are found by scanning the interrupted stack (64 KiB at most) for
words that point into live JIT code just after a call instruction, so a
stale return address may show up as an extra frame; frames of code without
frame pointers are found all the same.
"""
from __future__ import annotations

import ctypes
import signal
import struct
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .. import libc
from . import FunctionSymbol, Observer, functions, open_sessions, published, session_hooks

if TYPE_CHECKING:
    from ..graph import LinkObject
    from ..library import Unit
    from ..session import Session

SIGNALS = (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT)
SA_SIGINFO, SA_ONSTACK = 0x4, 0x08000000
SIGACTION_SIZE = 152          # glibc's struct sigaction on x86-64
ENTRY = struct.Struct("<QQQQ")   # start, end, "library:symbol", "unit"
HEADER = 16                   # count, capacity

IR = r"""
%iovec = type { ptr, i64 }

@hotlink_crash_table = global ptr null, align 8
@hotlink_crash_old = global [65 x [152 x i8]] zeroinitializer, align 16
@hotlink_crash_busy = global i32 0, align 4

@s_ill = private constant [7 x i8] c"SIGILL\00"
@s_abrt = private constant [8 x i8] c"SIGABRT\00"
@s_bus = private constant [7 x i8] c"SIGBUS\00"
@s_fpe = private constant [7 x i8] c"SIGFPE\00"
@s_segv = private constant [8 x i8] c"SIGSEGV\00"
@s_signal = private constant [7 x i8] c"signal\00"
@names = private constant [12 x ptr] [ptr null, ptr null, ptr null, ptr null, ptr @s_ill, ptr null,
                                      ptr @s_abrt, ptr @s_bus, ptr @s_fpe, ptr null, ptr null, ptr @s_segv]
@s_head = private constant [23 x i8] c"hotlink: fatal signal \00"
@s_open = private constant [3 x i8] c" (\00"
@s_close = private constant [2 x i8] c")\00"
@s_at = private constant [13 x i8] c" at address \00"
@s_frames = private constant [15 x i8] c"; JIT frames:\0A\00"
@s_hash = private constant [4 x i8] c"  #\00"
@s_space = private constant [2 x i8] c" \00"
@s_plus = private constant [2 x i8] c"+\00"
@s_unit_open = private constant [3 x i8] c" (\00"
@s_unit_close = private constant [3 x i8] c")\0A\00"
@s_not_jit = private constant [16 x i8] c"(not JIT code)\0A\00"

declare i64 @write(i32, ptr, i64)
declare i32 @sigaction(i32, ptr, ptr)
declare i32 @raise(i32)
declare i32 @getpid()
declare i64 @process_vm_readv(i32, ptr, i64, ptr, i64, i64)

define internal void @puts2(ptr %s) #0 {
entry:
  br label %loop
loop:
  %i = phi i64 [0, %entry], [%i1, %next]
  %p = getelementptr i8, ptr %s, i64 %i
  %c = load volatile i8, ptr %p
  %z = icmp eq i8 %c, 0
  br i1 %z, label %done, label %next
next:
  %i1 = add i64 %i, 1
  br label %loop
done:
  %r = call i64 @write(i32 2, ptr %s, i64 %i)
  ret void
}

; v in base 16 ("0x..."), or base 10
define internal void @put_num(i64 %v, i64 %base) #0 {
entry:
  %buf = alloca [24 x i8], align 8
  br label %loop
loop:
  %pos = phi i64 [24, %entry], [%pos1, %loop]
  %x = phi i64 [%v, %entry], [%x1, %loop]
  %d = urem i64 %x, %base
  %lt = icmp ult i64 %d, 10
  %c0 = add i64 %d, 48
  %c1 = add i64 %d, 87
  %c = select i1 %lt, i64 %c0, i64 %c1
  %c8 = trunc i64 %c to i8
  %pos1 = sub i64 %pos, 1
  %p = getelementptr i8, ptr %buf, i64 %pos1
  store volatile i8 %c8, ptr %p
  %x1 = udiv i64 %x, %base
  %more = icmp ne i64 %x1, 0
  br i1 %more, label %loop, label %prefix
prefix:
  %hex = icmp eq i64 %base, 16
  br i1 %hex, label %ox, label %emit
ox:
  %q = sub i64 %pos1, 2
  %pq = getelementptr i8, ptr %buf, i64 %q
  store volatile i8 48, ptr %pq
  %q1 = add i64 %q, 1
  %pq1 = getelementptr i8, ptr %buf, i64 %q1
  store volatile i8 120, ptr %pq1
  br label %emit
emit:
  %start = phi i64 [%pos1, %prefix], [%q, %ox]
  %ps = getelementptr i8, ptr %buf, i64 %start
  %n = sub i64 24, %start
  %r = call i64 @write(i32 2, ptr %ps, i64 %n)
  ret void
}

; the table entry whose range holds a, or null
define internal ptr @lookup(i64 %a) #0 {
entry:
  %t = load atomic ptr, ptr @hotlink_crash_table acquire, align 8
  %null = icmp eq ptr %t, null
  br i1 %null, label %none, label %start
start:
  %n = load volatile i64, ptr %t
  br label %loop
loop:
  %i = phi i64 [0, %start], [%i1, %next]
  %more = icmp ult i64 %i, %n
  br i1 %more, label %body, label %none
body:
  %off = mul i64 %i, 32
  %off16 = add i64 %off, 16
  %e = getelementptr i8, ptr %t, i64 %off16
  %s = load volatile i64, ptr %e
  %ep = getelementptr i8, ptr %e, i64 8
  %en = load volatile i64, ptr %ep
  %nz = icmp ne i64 %s, 0
  %ge = icmp uge i64 %a, %s
  %lt = icmp ult i64 %a, %en
  %in1 = and i1 %nz, %ge
  %in = and i1 %in1, %lt
  br i1 %in, label %found, label %next
next:
  %i1 = add i64 %i, 1
  br label %loop
found:
  ret ptr %e
none:
  ret ptr null
}

; read len bytes at src into dst without faulting: the byte count read, or -1
define internal i64 @peek(ptr %dst, i64 %src, i64 %len) #0 {
  %local = alloca %iovec, align 8
  %remote = alloca %iovec, align 8
  %lb = getelementptr %iovec, ptr %local, i32 0, i32 0
  store ptr %dst, ptr %lb
  %ll = getelementptr %iovec, ptr %local, i32 0, i32 1
  store i64 %len, ptr %ll
  %rp = inttoptr i64 %src to ptr
  %rb = getelementptr %iovec, ptr %remote, i32 0, i32 0
  store ptr %rp, ptr %rb
  %rl = getelementptr %iovec, ptr %remote, i32 0, i32 1
  store i64 %len, ptr %rl
  %pid = call i32 @getpid()
  %r = call i64 @process_vm_readv(i32 %pid, ptr %local, i64 1, ptr %remote, i64 1, i64 0)
  ret i64 %r
}

; byte k of w is 0xff and the next one a ModRM with reg field 2: call r/m64
define internal i1 @ff2(i64 %w, i64 %k) #0 {
  %sh = mul i64 %k, 8
  %b = lshr i64 %w, %sh
  %b0 = and i64 %b, 255
  %b1s = lshr i64 %b, 8
  %b1 = and i64 %b1s, 56
  %is_ff = icmp eq i64 %b0, 255
  %is_2 = icmp eq i64 %b1, 16
  %r = and i1 %is_ff, %is_2
  ret i1 %r
}

; whether the 8 bytes before ra end with a call instruction
define internal i1 @after_call(i64 %ra) #0 {
entry:
  %w = alloca i64, align 8
  %from = sub i64 %ra, 8
  %n = call i64 @peek(ptr %w, i64 %from, i64 8)
  %ok = icmp eq i64 %n, 8
  br i1 %ok, label %decode, label %no
decode:
  %v = load i64, ptr %w
  %b3s = lshr i64 %v, 24
  %b3 = and i64 %b3s, 255
  %rel = icmp eq i64 %b3, 232
  %k6 = call i1 @ff2(i64 %v, i64 6)
  %k5 = call i1 @ff2(i64 %v, i64 5)
  %k4 = call i1 @ff2(i64 %v, i64 4)
  %k2 = call i1 @ff2(i64 %v, i64 2)
  %k1 = call i1 @ff2(i64 %v, i64 1)
  %a = or i1 %rel, %k6
  %b = or i1 %a, %k5
  %c = or i1 %b, %k4
  %d = or i1 %c, %k2
  %e = or i1 %d, %k1
  ret i1 %e
no:
  ret i1 false
}

; return addresses into JIT code on the stack from sp up (64 KiB at most), into frames[31]
define internal i64 @scan(i64 %sp, ptr %frames) #0 {
entry:
  %buf = alloca [64 x i64], align 8
  %sp8 = and i64 %sp, -8
  br label %loop
loop:
  %w = phi i64 [0, %entry], [%w1, %next]
  %nf = phi i64 [0, %entry], [%nf2, %next]
  %end = icmp uge i64 %w, 8192
  %full = icmp uge i64 %nf, 31
  %stop = or i1 %end, %full
  br i1 %stop, label %out, label %check
check:
  %slot = and i64 %w, 63
  %fresh = icmp eq i64 %slot, 0
  br i1 %fresh, label %read, label %word
read:
  %off = shl i64 %w, 3
  %addr = add i64 %sp8, %off
  %r = call i64 @peek(ptr %buf, i64 %addr, i64 512)
  %ok = icmp eq i64 %r, 512
  br i1 %ok, label %word, label %out
word:
  %wp = getelementptr i64, ptr %buf, i64 %slot
  %v = load volatile i64, ptr %wp
  %v1 = sub i64 %v, 1            ; a call may be a function's last instruction (noreturn callee)
  %e = call ptr @lookup(i64 %v1)
  %isjit = icmp ne ptr %e, null
  br i1 %isjit, label %callchk, label %next
callchk:
  %c = call i1 @after_call(i64 %v)
  br i1 %c, label %record, label %next
record:
  %fp = getelementptr i64, ptr %frames, i64 %nf
  store i64 %v, ptr %fp
  %nf1 = add i64 %nf, 1
  br label %next
next:
  %nf2 = phi i64 [%nf1, %record], [%nf, %word], [%nf, %callchk]
  %w1 = add i64 %w, 1
  br label %loop
out:
  ret i64 %nf
}

; frame k at pc; a return address (k > 0) is looked up one byte back, inside its call
define internal void @frame(i64 %k, i64 %pc) #0 {
entry:
  call void @puts2(ptr @s_hash)
  call void @put_num(i64 %k, i64 10)
  call void @puts2(ptr @s_space)
  call void @put_num(i64 %pc, i64 16)
  call void @puts2(ptr @s_space)
  %ret = icmp ne i64 %k, 0
  %back = zext i1 %ret to i64
  %at = sub i64 %pc, %back
  %e = call ptr @lookup(i64 %at)
  %none = icmp eq ptr %e, null
  br i1 %none, label %notjit, label %jit
notjit:
  call void @puts2(ptr @s_not_jit)
  ret void
jit:
  %start = load volatile i64, ptr %e
  %np = getelementptr i8, ptr %e, i64 16
  %name = load volatile ptr, ptr %np
  %up = getelementptr i8, ptr %e, i64 24
  %unit = load volatile ptr, ptr %up
  call void @puts2(ptr %name)
  call void @puts2(ptr @s_plus)
  %off = sub i64 %pc, %start
  call void @put_num(i64 %off, i64 16)
  call void @puts2(ptr @s_unit_open)
  call void @puts2(ptr %unit)
  call void @puts2(ptr @s_unit_close)
  ret void
}

define void @hotlink_crash_handler(i32 %sig, ptr %info, ptr %ctx) #0 {
entry:
  %frames = alloca [32 x i64], align 8
  %prev = atomicrmw xchg ptr @hotlink_crash_busy, i32 1 seq_cst
  %first = icmp eq i32 %prev, 0
  %codep = getelementptr i8, ptr %info, i64 8
  %code = load i32, ptr %codep
  br i1 %first, label %look, label %chain
look:
  %ripp = getelementptr i8, ptr %ctx, i64 168
  %rip = load i64, ptr %ripp
  %rspp = getelementptr i8, ptr %ctx, i64 160
  %rsp = load i64, ptr %rspp
  %e0 = call ptr @lookup(i64 %rip)
  %n = call i64 @scan(i64 %rsp, ptr %frames)
  %pcjit = icmp ne ptr %e0, null
  %any = icmp ne i64 %n, 0
  %report = or i1 %pcjit, %any
  br i1 %report, label %print, label %chain
print:
  call void @puts2(ptr @s_head)
  %sig64 = sext i32 %sig to i64
  %known = icmp ult i64 %sig64, 12
  br i1 %known, label %named, label %unnamed
named:
  %np = getelementptr [12 x ptr], ptr @names, i64 0, i64 %sig64
  %nm = load ptr, ptr %np
  %hasname = icmp ne ptr %nm, null
  %nm2 = select i1 %hasname, ptr %nm, ptr @s_signal
  br label %signame
unnamed:
  br label %signame
signame:
  %label = phi ptr [%nm2, %named], [@s_signal, %unnamed]
  call void @puts2(ptr %label)
  call void @puts2(ptr @s_open)
  call void @put_num(i64 %sig64, i64 10)
  call void @puts2(ptr @s_close)
  %kernel = icmp sgt i32 %code, 0
  br i1 %kernel, label %addr, label %list
addr:
  call void @puts2(ptr @s_at)
  %ap = getelementptr i8, ptr %info, i64 16
  %fault = load i64, ptr %ap
  call void @put_num(i64 %fault, i64 16)
  br label %list
list:
  call void @puts2(ptr @s_frames)
  call void @frame(i64 0, i64 %rip)
  br label %floop
floop:
  %i = phi i64 [0, %list], [%i1, %fbody]
  %more = icmp ult i64 %i, %n
  br i1 %more, label %fbody, label %chain
fbody:
  %fp = getelementptr i64, ptr %frames, i64 %i
  %ra = load i64, ptr %fp
  %i1 = add i64 %i, 1
  call void @frame(i64 %i1, i64 %ra)
  br label %floop
chain:
  %sigi = sext i32 %sig to i64
  %old = getelementptr [65 x [152 x i8]], ptr @hotlink_crash_old, i64 0, i64 %sigi
  %rc = call i32 @sigaction(i32 %sig, ptr %old, ptr null)
  %sent = icmp sle i32 %code, 0
  br i1 %sent, label %again, label %done
again:
  %rr = call i32 @raise(i32 %sig)
  br label %done
done:
  ret void
}

attributes #0 = { "no-builtins" nounwind }
"""


class CrashTable:
    """The native table the handler reads: ``{count, capacity, entries[]}``,
    each entry ``{start, end, "library:symbol", "unit"}``, published through
    the handler's ``hotlink_crash_table`` pointer."""

    def __init__(self, root: int):
        self.root = ctypes.c_uint64.from_address(root)
        self.lock = threading.Lock()
        self.blocks: list[ctypes.Array[ctypes.c_char]] = []   # every table published: one may be in use
        self.count = 0
        self.capacity = 0
        self.base = 0
        self.free: list[int] = []
        self.strings: dict[int, tuple[bytes, bytes]] = {}    # slot -> the strings it points at

    def _grow(self) -> None:
        capacity = max(256, self.capacity * 2)
        block = ctypes.create_string_buffer(HEADER + capacity * ENTRY.size)
        base = ctypes.addressof(block)
        if self.count:
            ctypes.memmove(base + HEADER, self.base + HEADER, self.count * ENTRY.size)
        struct.pack_into("<QQ", block, 0, self.count, capacity)
        self.blocks.append(block)
        self.root.value = base           # one aligned store publishes the larger table
        self.base, self.capacity = base, capacity

    def add(self, start: int, end: int, name: bytes, unit: bytes) -> int:
        with self.lock:
            if self.free:
                slot = self.free.pop()
            else:
                if self.count == self.capacity:
                    self._grow()
                slot = self.count
            at = self.base + HEADER + slot * ENTRY.size
            name_z, unit_z = name + b"\0", unit + b"\0"
            self.strings[slot] = (name_z, unit_z)      # bytes never move while referenced
            ctypes.c_uint64.from_address(at + 8).value = end
            ctypes.c_uint64.from_address(at + 16).value = _address_of(name_z)
            ctypes.c_uint64.from_address(at + 24).value = _address_of(unit_z)
            ctypes.c_uint64.from_address(at).value = start       # published last
            if slot == self.count:
                self.count += 1
                ctypes.c_uint64.from_address(self.base).value = self.count
            return slot

    def remove(self, slot: int) -> None:
        with self.lock:
            ctypes.c_uint64.from_address(self.base + HEADER + slot * ENTRY.size).value = 0
            self.free.append(slot)
            # the strings stay until the slot is reused: a handler may be reading them now

    def entries(self) -> int:
        return self.count - len(self.free)


def _address_of(b: bytes) -> int:
    return ctypes.cast(ctypes.c_char_p(b), ctypes.c_void_p).value or 0


class CrashObserver(Observer):
    """Keeps the table's entries for one session's units."""

    def __init__(self, table: CrashTable):
        self.table = table
        self.slots: dict[Unit, list[int]] = {}

    def add(self, unit: Unit, fns: Sequence[FunctionSymbol]) -> None:
        label, uname = unit.library.name.encode(errors="replace"), unit.name.encode(errors="replace")
        slots = self.slots.setdefault(unit, [])
        for f in fns:
            if f.size:
                slots.append(self.table.add(f.address, f.address + f.size,
                                            label + b":" + f.name.encode(errors="replace"), uname))

    def linked(self, objects: Sequence[LinkObject]) -> None:
        for lo in objects:
            self.add(lo.unit, functions(lo))

    def unlinked(self, unit: Unit) -> None:
        for slot in self.slots.pop(unit, ()):
            self.table.remove(slot)

    def memory(self) -> int:
        return sum(len(s) for s in self.slots.values()) * ENTRY.size


class _HandlerGuard(Observer):
    """In the handler's own session: when the handler's code is about to go
    (that session closes at exit), the previous handlers come back first."""

    def unlinked(self, unit: Unit) -> None:
        disable_crash_report()


_lock = threading.RLock()
_enabling = False
# the handler's session and table, the handler's and the saved actions' addresses, the session hook
_state: tuple[Session, CrashTable, int, int, Callable[[Session, list[Observer]], None]] | None = None


def _attach(session: Session, observers: list[Observer], table: CrashTable, running: bool = False) -> None:
    observer = CrashObserver(table)
    if running:        # a session made before: what it has linked so far
        for lib in session.libraries.values():
            for unit in lib.units:
                observer.add(unit, published(unit))
    observers.append(observer)


def enable_crash_report() -> None:
    """Report fatal signals in JIT code on stderr (see the module's doc);
    idempotent.  ``HOTLINK_CRASH_REPORT=1`` calls it when the first session
    is made."""
    global _enabling, _state
    with _lock:
        if _state is not None or _enabling:
            return
        _enabling = True
        try:
            from ..runtime import runtime_object
            from ..session import Session
            session = Session(arena_size=1 << 20, debug_info=False, perf_map=False, jitdump=False)
            lib = session.library("hotlink.crash")
            lib.add(runtime_object(IR), name="crash-handler")
            table = CrashTable(lib.address("hotlink_crash_table"))
            handler, saved = lib.address("hotlink_crash_handler"), lib.address("hotlink_crash_old")
            action = ctypes.create_string_buffer(SIGACTION_SIZE)
            struct.pack_into("<Q", action, 0, handler)
            struct.pack_into("<i", action, 136, SA_SIGINFO | SA_ONSTACK)
            for sig in SIGNALS:
                if libc.sigaction(sig, ctypes.addressof(action), saved + sig * SIGACTION_SIZE) != 0:
                    raise OSError(ctypes.get_errno(), f"sigaction({sig}) failed")
            session.observers.append(_HandlerGuard())
            hook = lambda s, observers: _attach(s, observers, table)
            _state = (session, table, handler, saved, hook)
            session_hooks.append(hook)
            for s in open_sessions():
                if s is not session:
                    with s.lock:
                        _attach(s, s.observers, table, running=True)
        finally:
            _enabling = False


def disable_crash_report() -> None:
    """Put back the handlers that were there before ``enable_crash_report``
    (where nobody replaced hotlink's since)."""
    global _state
    with _lock:
        if _state is None:
            return
        session, table, handler, saved, hook = _state
        _state = None
        current = ctypes.create_string_buffer(SIGACTION_SIZE)
        for sig in SIGNALS:
            libc.sigaction(sig, None, ctypes.addressof(current))
            if struct.unpack_from("<Q", current, 0)[0] == handler:
                libc.sigaction(sig, saved + sig * SIGACTION_SIZE, None)
        session_hooks.remove(hook)
        for s in open_sessions():
            s.observers[:] = [o for o in s.observers if not (isinstance(o, CrashObserver) and o.table is table)]


def crash_report_enabled() -> bool:
    return _state is not None
