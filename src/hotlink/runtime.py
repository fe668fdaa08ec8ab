"""hotlink's own native runtime: the functions JIT code and native threads
call to take part in grace periods.

    int  hotlink_thread_online(void);   claim a slot for this thread (0, or -1 if full)
    void hotlink_quiescent(void);       "I hold no pointer into retired code now"
    void hotlink_thread_offline(void);  release the slot (an offline thread never delays frees)

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

NSLOTS = 256
SLOT_SIZE = 64
NAMES = ("hotlink_quiescent", "hotlink_thread_online", "hotlink_thread_offline")

IR = r"""
%slot = type { i64, i64, [6 x i64] }
@hotlink_epoch = global i64 1, align 64
@hotlink_slots = global [256 x %slot] zeroinitializer, align 64
@hotlink_key = global i32 0
declare i8* @pthread_getspecific(i32)
declare i32 @pthread_setspecific(i32, i8*)

define void @hotlink_quiescent() {
  %k = load i32, i32* @hotlink_key
  %p = call i8* @pthread_getspecific(i32 %k)
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

define void @hotlink_thread_offline() {
  %k = load i32, i32* @hotlink_key
  %p = call i8* @pthread_getspecific(i32 %k)
  %null = icmp eq i8* %p, null
  br i1 %null, label %out, label %leave
leave:
  %s = bitcast i8* %p to i64*
  store atomic i64 0, i64* %s release, align 8
  %rc = call i32 @pthread_setspecific(i32 %k, i8* null)
  br label %out
out:
  ret void
}
"""

_object: bytes | None = None
_object_lock = threading.Lock()
_libc = ctypes.CDLL(None)
_SLOT = struct.Struct("<QQ48x")


def runtime_object() -> bytes:
    """The runtime's ELF object, compiled on first use in this process."""
    global _object
    with _object_lock:
        if _object is None:
            from .frontend.llvm import _llvm, target_machine
            _object = target_machine("generic", "", 2).emit_object(_llvm().parse_assembly(IR))
        return _object


class NativeThreads:
    """The Python side of the runtime: epoch bumps and slot scans."""

    def __init__(self, arena, epoch_addr: int, slots_addr: int, key_addr: int):
        self._arena = arena
        self.epoch_addr = epoch_addr
        self.slots_addr = slots_addr
        key = ctypes.c_uint(0)
        if _libc.pthread_key_create(ctypes.byref(key), None) != 0:
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
        data = ctypes.string_at(self.slots_addr, NSLOTS * SLOT_SIZE)
        seen = [s for state, s in _SLOT.iter_unpack(data) if state]
        return min(seen) if seen else 1 << 63

    def online(self) -> int:
        data = ctypes.string_at(self.slots_addr, NSLOTS * SLOT_SIZE)
        return sum(1 for state, _ in _SLOT.iter_unpack(data) if state)

    def close(self) -> None:
        _libc.pthread_key_delete(self.key)
