"""hotlink's own native runtime: the functions JIT code and native threads
call to take part in grace periods.

    int  hotlink_thread_online(void);   claim a slot for this thread (0, or -1 if full)
    void hotlink_quiescent(void);       "I hold no pointer into retired code now"
    void hotlink_thread_offline(void);  release the slot (an offline thread never delays frees)

A thread that exits while online gives its slot back through the pthread
key's destructor (``hotlink_thread_exit``), so it never blocks reclamation.

A second, optional part (``CXX_IR``) is linked only where a C++ runtime is
loaded: ``hotlink_guarded_call`` calls an initializer, finalizer or exit
handler and catches any C++ exception it throws, which must never unwind
into ctypes (that terminates the process).

The runtime is LLVM IR compiled by llvmlite (so it needs no C compiler) once
per process and linked by hotlink itself into a hidden library of each
session that uses it.  Each thread finds its slot through a pthread key; a
slot is one cache line: ``state`` (1 while online) and ``seen``, the global
epoch the thread last reported.  Python bumps ``hotlink_epoch`` when it
retires memory and frees it once every online slot has seen the new value.
"""
from __future__ import annotations

import ctypes
import struct
import threading

from . import libc
from .arena import Arena
from .platform import GuardedCall

NSLOTS = 256
THREAD_SLOT_SIZE = 64
NAMES = ("hotlink_quiescent", "hotlink_thread_online", "hotlink_thread_offline")

IR = r"""
%slot = type { i64, i64, [6 x i64] }
@hotlink_epoch = global i64 1, align 64
@hotlink_slots = global [256 x %slot] zeroinitializer, align 64
@hotlink_key = global i32 0
declare i8* @pthread_getspecific(i32)
declare i32 @pthread_setspecific(i32, i8*)

define internal i8* @own_slot() {
  %k = load i32, i32* @hotlink_key
  %p = call i8* @pthread_getspecific(i32 %k)
  ret i8* %p
}

define void @hotlink_quiescent() {
  %p = call i8* @own_slot()
  %null = icmp eq i8* %p, null
  br i1 %null, label %out, label %report
report:
  %s = bitcast i8* %p to %slot*
  %seen = getelementptr %slot, %slot* %s, i32 0, i32 1
  %e = load atomic i64, i64* @hotlink_epoch acquire, align 8
  store atomic i64 %e, i64* %seen release, align 8
  br label %out
out:
  ret void
}

define i32 @hotlink_thread_online() {
entry:
  %k = load i32, i32* @hotlink_key
  %p = call i8* @pthread_getspecific(i32 %k)
  %have = icmp ne i8* %p, null
  br i1 %have, label %done, label %loop
loop:
  %i = phi i64 [0, %entry], [%i1, %next]
  %state = getelementptr [256 x %slot], [256 x %slot]* @hotlink_slots, i64 0, i64 %i, i32 0
  %seen = getelementptr [256 x %slot], [256 x %slot]* @hotlink_slots, i64 0, i64 %i, i32 1
  %r = cmpxchg i64* %state, i64 0, i64 1 seq_cst seq_cst
  %ok = extractvalue { i64, i1 } %r, 1
  br i1 %ok, label %claim, label %next
claim:
  %e = load atomic i64, i64* @hotlink_epoch seq_cst, align 8
  store atomic i64 %e, i64* %seen seq_cst, align 8
  %sp = bitcast i64* %state to i8*
  %rc = call i32 @pthread_setspecific(i32 %k, i8* %sp)
  br label %done
next:
  %i1 = add i64 %i, 1
  %more = icmp ult i64 %i1, 256
  br i1 %more, label %loop, label %full
full:
  ret i32 -1
done:
  ret i32 0
}

define void @hotlink_thread_exit(i8* %p) {
  %s = bitcast i8* %p to i64*
  store atomic i64 0, i64* %s release, align 8
  ret void
}

define void @hotlink_thread_offline() {
  %p = call i8* @own_slot()
  %null = icmp eq i8* %p, null
  br i1 %null, label %out, label %leave
leave:
  call void @hotlink_thread_exit(i8* %p)
  %k = load i32, i32* @hotlink_key
  %rc = call i32 @pthread_setspecific(i32 %k, i8* null)
  br label %out
out:
  ret void
}
"""

CXX_IR = r"""
declare i32 @__gxx_personality_v0(...)
declare ptr @__cxa_begin_catch(ptr)
declare void @__cxa_end_catch()
declare ptr @__cxa_current_exception_type()
declare ptr @strncpy(ptr, ptr, i64)
declare i32 @llvm.eh.typeid.for.p0(ptr)
@_ZTISt9exception = external constant ptr

; 0: returned normally; 1: threw (type name and, for std::exception, what()
; copied to the buffers, each len bytes, which the caller zeroes)
define i32 @hotlink_guarded_call(ptr %fn, ptr %arg, i32 %with_arg, ptr %type_buf, ptr %what_buf, i64 %len)
    personality ptr @__gxx_personality_v0 {
entry:
  %has = icmp ne i32 %with_arg, 0
  br i1 %has, label %witharg, label %noarg
witharg:
  invoke void %fn(ptr %arg) to label %ok unwind label %lpad
noarg:
  invoke void %fn() to label %ok unwind label %lpad
ok:
  ret i32 0
lpad:
  %lp = landingpad { ptr, i32 } catch ptr @_ZTISt9exception catch ptr null
  %ex = extractvalue { ptr, i32 } %lp, 0
  %sel = extractvalue { ptr, i32 } %lp, 1
  %tid = call i32 @llvm.eh.typeid.for.p0(ptr @_ZTISt9exception)
  %obj = call ptr @__cxa_begin_catch(ptr %ex)
  %ti = call ptr @__cxa_current_exception_type()
  %tiok = icmp ne ptr %ti, null
  br i1 %tiok, label %name, label %classify
name:
  %np = getelementptr i8, ptr %ti, i64 8
  %n = load ptr, ptr %np
  %r1 = call ptr @strncpy(ptr %type_buf, ptr %n, i64 %len)
  br label %classify
classify:
  %isstd = icmp eq i32 %sel, %tid
  br i1 %isstd, label %what, label %done
what:
  %vt = load ptr, ptr %obj
  %wp = getelementptr ptr, ptr %vt, i64 2
  %wf = load ptr, ptr %wp
  %w = call ptr %wf(ptr %obj)
  %r2 = call ptr @strncpy(ptr %what_buf, ptr %w, i64 %len)
  br label %done
done:
  call void @__cxa_end_catch()
  ret i32 1
}
"""
CXX_NAMES = ("__gxx_personality_v0", "__cxa_begin_catch", "__cxa_end_catch", "__cxa_current_exception_type")

# C++ ``thread_local`` destructors (``__cxa_thread_atexit``), for JIT code:
# each goes to glibc wrapped in a record that counts it against its unit, so
# the unit (its code and TLS module) is released only once every thread that
# holds such an object has run its destructor (unlink.py waits for zero).
THREAD_ATEXIT_IR = r"""
declare ptr @malloc(i64)
declare void @free(ptr)
declare i32 @__cxa_thread_atexit_impl(ptr, ptr, ptr)

define internal void @hotlink_run_thread_dtor(ptr %rec) {
  %fn = load ptr, ptr %rec
  %objp = getelementptr ptr, ptr %rec, i64 1
  %obj = load ptr, ptr %objp
  %cp = getelementptr ptr, ptr %rec, i64 2
  %counter = load ptr, ptr %cp
  call void %fn(ptr %obj)
  %old = atomicrmw sub ptr %counter, i64 1 seq_cst
  call void @free(ptr %rec)
  ret void
}

; (destructor, object, the unit's counter): the unit's __cxa_thread_atexit
; thunk puts its counter where the dso handle was
define i32 @hotlink_thread_atexit(ptr %fn, ptr %obj, ptr %counter) {
  %rec = call ptr @malloc(i64 24)
  %none = icmp eq ptr %rec, null
  br i1 %none, label %fail, label %ok
ok:
  store ptr %fn, ptr %rec
  %objp = getelementptr ptr, ptr %rec, i64 1
  store ptr %obj, ptr %objp
  %cp = getelementptr ptr, ptr %rec, i64 2
  store ptr %counter, ptr %cp
  %old = atomicrmw add ptr %counter, i64 1 seq_cst
  %r = call i32 @__cxa_thread_atexit_impl(ptr @hotlink_run_thread_dtor, ptr %rec, ptr @hotlink_run_thread_dtor)
  ret i32 %r
fail:
  ret i32 -1
}
"""

_objects: dict[str, bytes] = {}
_object_lock = threading.Lock()
_SLOT = struct.Struct("<QQ48x")
_pthread_getspecific = libc.pthread_getspecific


def runtime_object(ir: str = IR) -> bytes:
    """The ELF object of one part of the runtime, compiled on first use in this process."""
    with _object_lock:
        obj = _objects.get(ir)
        if obj is None:
            from .frontend.llvm import binding, target_machine
            obj = _objects[ir] = target_machine("generic", "", 2).emit_object(binding().parse_assembly(ir))
        return obj


_GUARDED = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
                            ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t)
_MSG = 512


def guarded_caller(address: int) -> GuardedCall:
    """A ``platform.GuardedCall`` over the runtime's ``hotlink_guarded_call``."""
    call = _GUARDED(address)
    local = threading.local()

    def guarded(fn: int, arg: int | None) -> str | None:
        bufs = getattr(local, "bufs", None)
        if bufs is None:   # per thread; strncpy(len - 1) never touches the last byte
            bufs = local.bufs = (ctypes.create_string_buffer(_MSG), ctypes.create_string_buffer(_MSG))
        type_buf, what_buf = bufs
        type_buf[0] = what_buf[0] = b"\0"
        if not call(fn, arg or 0, arg is not None, type_buf, what_buf, _MSG - 1):
            return None
        what = what_buf.value.decode("utf-8", "replace")
        return f"{demangle(type_buf.value.decode('ascii', 'replace'))}" + (f": {what}" if what else "")
    return guarded


def demangle(type_name: str) -> str:
    """A C++ type name from its mangled form (as in ``std::type_info::name()``)."""
    name = type_name.lstrip("*")
    out = libc.cxa_demangle(name.encode())
    if out is None:
        return name or "an exception of unknown type"
    return out.decode("utf-8", "replace")


class NativeThreads:
    """The Python side of the runtime: epoch bumps and slot scans."""

    def __init__(self, arena: Arena, epoch_addr: int, slots_addr: int, key_addr: int, exit_addr: int):
        self._arena = arena
        self.epoch_addr = epoch_addr
        self.slots_addr = slots_addr
        key = ctypes.c_uint(0)
        # the destructor gives an exiting thread's slot back
        if libc.pthread_key_create(ctypes.byref(key), exit_addr) != 0:
            raise OSError("pthread_key_create failed")
        self.key = key.value
        arena.write(key_addr, struct.pack("<I", self.key))
        self._epoch = ctypes.c_uint64.from_address(epoch_addr)

    def bump(self) -> int:
        """Advance the epoch; memory retired now is safe once every online thread reports it."""
        e = self._epoch.value + 1
        self._epoch.value = e          # one aligned 8-byte store
        return e

    def oldest_seen(self) -> int:
        """The smallest epoch any online thread has reported (a huge value if none is online)."""
        data = ctypes.string_at(self.slots_addr, NSLOTS * THREAD_SLOT_SIZE)
        seen = [s for state, s in _SLOT.iter_unpack(data) if state]
        return min(seen) if seen else 1 << 63

    def online(self) -> int:
        data = ctypes.string_at(self.slots_addr, NSLOTS * THREAD_SLOT_SIZE)
        return sum(1 for state, _ in _SLOT.iter_unpack(data) if state)

    def own_slot(self) -> int:
        """This thread's slot address, 0 if it is not online."""
        return _pthread_getspecific(self.key) or 0

    def after_fork(self) -> None:
        """In a forked child only the forking thread exists: every other slot is free."""
        mine = self.own_slot()
        for i in range(NSLOTS):
            addr = self.slots_addr + i * THREAD_SLOT_SIZE
            if addr != mine:
                ctypes.c_uint64.from_address(addr).value = 0

    def close(self) -> None:
        libc.pthread_key_delete(self.key)
