"""The call gate: grace-period bookkeeping and the removed-code check, in
native code, around every call from Python into JIT code.

A hotlink callable is a ctypes function pointer (its ``__call__`` is ctypes'
C code, no Python frame) aimed at a 16-byte *trampoline* of this gate rather
than at the function: ``lea DATA(%rip), %r10; jmp *hotlink_gate_call``,
where ``DATA`` is the trampoline's ``{target, lane, message}``.  The callable
is made with ctypes' ``FUNCFLAG_PYTHONAPI``: ctypes keeps the GIL and checks
for a Python error after the call, and ``hotlink_gate_call`` lets the GIL go
itself::

    (GIL held)  target = DATA.target        0: the code was removed ->
                                            PyErr_SetString(SessionClosedError), return
                slot.lanes[lane][epoch & 1] += 1     inside, for this epoch
                tstate = PyEval_SaveThread()         the GIL goes, as ctypes would let it
                call *target
                PyEval_RestoreThread(tstate)
    (GIL held)  slot.lanes[lane][epoch & 1] -= 1     outside

which is what ``qsbr.Reclaimer.enter/exit`` do for Python callers, with the
counters in native memory that the reclaimer reads: memory retired at epoch
E is freed once both parities have drained after E.  (A callable is also a
ctypes pointer, so it can reach native code as a function pointer; called
from there, without the GIL (``PyGILState_Check``), the gate can neither
count nor raise and forwards the call as the function's address would.)
Every read and write
of a counter and of ``DATA.target`` happens under the GIL, as does
everything the reclaimer and ``call.disable`` do, so they need no atomic
instructions or fences, and removal cannot race a call: a call either reads
the live target first (and is counted before the code can be retired) or
finds 0 and raises.

ABI facts relied on (System V x86-64):

* ``rax`` (``al`` only counts vector registers of a *variadic* call),
  ``r10`` and ``r11`` carry no arguments, so the gate may use them; the
  argument registers (``rdi rsi rdx rcx r8 r9``, ``xmm0-7``) are saved
  around ``PyEval_SaveThread``, and what a scalar result comes back in
  (``rax``, ``rdx``, ``xmm0``, ``xmm1``) around ``PyEval_RestoreThread``.
* A function that takes no stack arguments cannot tell the gate's call from
  its caller's.  So only signatures with at most 6 integer/pointer and 8
  floating-point arguments, no structures by value, no varargs and no
  ``long double`` take the gate (``call.fast_signature``); the others keep
  the Python path.

The native code lives in a small shared object hotlink writes and loads
itself (``dso.py``), so debuggers and profilers see named functions with a
frame-pointer prologue (gdb unwinds through ``hotlink_gate_call`` into
ctypes).  Its data words (``TPOFF``, ``SAVE``, ... in the listing) sit in
the object's data, reached RIP-relative; ``TPOFF`` is written by ld.so, as
the object also holds the one 8-byte *initial-exec thread-local*: the
thread's slot address (static TLS, so every thread has it at one offset).

Process-wide, because threads and thread-local storage are process-wide and
a callable may outlive its session:

* 4096 per-thread *slots* of 256 bytes: ``state`` (1 while a thread owns
  it) and 15 *lanes* of two parity counters, one lane per open session that
  made fast callables (a 16th session gets the Python path until one
  closes).  A thread's first call claims a slot (``hotlink_gate_register``,
  which keeps every argument register); the slot goes back at thread exit
  through a pthread key's destructor (``hotlink_gate_release``).  Past 4096
  threads the rest share one overflow slot (exact all the same: the GIL
  orders its updates; only ``Lane.inside`` cannot tell its threads apart);
* trampolines in chunks of 255 (one code page written once, then
  read-execute; only their data words change), back on a free list when
  their callable is collected.

None of this is ever unmapped: a callable of a closed session still runs its
trampoline safely (and raises).  Mappings are private, so a forked child has
its own copy; ``after_fork`` frees every slot but the forking thread's.
Free-threaded Python builds (no GIL) take the Python path.
"""
from __future__ import annotations

import ctypes
import os
import struct
import sys
import threading
from collections import deque

from . import dso, libc
from .errors import LinkError, SessionClosedError
from .x86_64 import Reloc

PAGE = 4096
SLOT_SIZE = 256                 # state + 15 lanes x 2 parities + 1 spare word
NSLOTS = 4096
LANES = 15
TRAMPOLINE_SIZE = 16
DATA_SIZE = 32                  # per trampoline: target, lane descriptor, message, spare
PER_CHUNK = PAGE // TRAMPOLINE_SIZE - 1
CHUNK_HEADER = 32               # the chunk's data starts with hotlink_gate_call's address
CHUNK_DATA = 2 * PAGE
PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
MAP_PRIVATE, MAP_ANONYMOUS, MAP_NORESERVE = 0x02, 0x20, 0x4000
MAP_FAILED = ctypes.c_void_p(-1).value

# --- machine code (assembled by GNU as; the rel32 fields hotlink fills are zero) ------

# hotlink_gate_call (r10: the trampoline's data; entered with the GIL held, from ctypes)
CALL = bytes.fromhex(
    "55"                        # 000 push %rbp
    "4889e5"                    # 001 mov %rsp,%rbp                     frame-pointer prologue: debuggers unwind through
    "4881ecd0000000"            # 004 sub $0xd0,%rsp                    the arguments, kept for every path
    "4c899424c8000000"          # 00b mov %r10,0xc8(%rsp)
    "4889bc2480000000"          # 013 mov %rdi,0x80(%rsp)
    "4889b42488000000"          # 01b mov %rsi,0x88(%rsp)
    "4889942490000000"          # 023 mov %rdx,0x90(%rsp)
    "48898c2498000000"          # 02b mov %rcx,0x98(%rsp)
    "4c898424a0000000"          # 033 mov %r8,0xa0(%rsp)
    "4c898c24a8000000"          # 03b mov %r9,0xa8(%rsp)
    "0f290424"                  # 043 movaps %xmm0,(%rsp)
    "0f294c2410"                # 047 movaps %xmm1,0x10(%rsp)
    "0f29542420"                # 04c movaps %xmm2,0x20(%rsp)
    "0f295c2430"                # 051 movaps %xmm3,0x30(%rsp)
    "0f29642440"                # 056 movaps %xmm4,0x40(%rsp)
    "0f296c2450"                # 05b movaps %xmm5,0x50(%rsp)
    "0f29742460"                # 060 movaps %xmm6,0x60(%rsp)
    "0f297c2470"                # 065 movaps %xmm7,0x70(%rsp)
    "ff1500000000"              # 06a call *X(%rip)                     *GILCHECK: PyGILState_Check()
    "85c0"                      # 070 test %eax,%eax
    "0f8425010000"              # 072 je 19d <nogil>                    je nogil: called by native code
    "4c8b9424c8000000"          # 078 mov 0xc8(%rsp),%r10
    "4c8b1d00000000"            # 080 mov X(%rip),%r11                  TPOFF: this thread's slot, from TLS
    "644d8b1b"                  # 087 mov %fs:(%r11),%r11
    "4d85db"                    # 08b test %r11,%r11
    "0f84ff000000"              # 08e je 193 <slow>                     je slow: its first call claims a slot
    "498b02"                    # 094 mov (%r10),%rax                   again: the target, read once, under the GIL
    "4885c0"                    # 097 test %rax,%rax
    "0f84de000000"              # 09a je 17e <removed>                  je removed: 0 once the code was removed
    "48898424b8000000"          # 0a0 mov %rax,0xb8(%rsp)
    "4d8b5208"                  # 0a8 mov 0x8(%r10),%r10                the lane: {epoch, its offset in a slot}
    "418b02"                    # 0ac mov (%r10),%eax
    "83e001"                    # 0af and $0x1,%eax                     the epoch's parity
    "4d035a08"                  # 0b2 add 0x8(%r10),%r11
    "4d8d1cc3"                  # 0b6 lea (%r11,%rax,8),%r11            &slot.lanes[lane][parity]
    "49ff03"                    # 0ba incq (%r11)                       inside (under the GIL)
    "4c899c24b0000000"          # 0bd mov %r11,0xb0(%rsp)
    "ff1500000000"              # 0c5 call *X(%rip)                     *SAVE: PyEval_SaveThread(), the GIL goes
    "48898424c0000000"          # 0cb mov %rax,0xc0(%rsp)               the thread state
    "488bbc2480000000"          # 0d3 mov 0x80(%rsp),%rdi
    "488bb42488000000"          # 0db mov 0x88(%rsp),%rsi
    "488b942490000000"          # 0e3 mov 0x90(%rsp),%rdx
    "488b8c2498000000"          # 0eb mov 0x98(%rsp),%rcx
    "4c8b8424a0000000"          # 0f3 mov 0xa0(%rsp),%r8
    "4c8b8c24a8000000"          # 0fb mov 0xa8(%rsp),%r9
    "0f280424"                  # 103 movaps (%rsp),%xmm0
    "0f284c2410"                # 107 movaps 0x10(%rsp),%xmm1
    "0f28542420"                # 10c movaps 0x20(%rsp),%xmm2
    "0f285c2430"                # 111 movaps 0x30(%rsp),%xmm3
    "0f28642440"                # 116 movaps 0x40(%rsp),%xmm4
    "0f286c2450"                # 11b movaps 0x50(%rsp),%xmm5
    "0f28742460"                # 120 movaps 0x60(%rsp),%xmm6
    "0f287c2470"                # 125 movaps 0x70(%rsp),%xmm7
    "ff9424b8000000"            # 12a call *0xb8(%rsp)
    "4889842480000000"          # 131 mov %rax,0x80(%rsp)
    "4889942488000000"          # 139 mov %rdx,0x88(%rsp)
    "0f290424"                  # 141 movaps %xmm0,(%rsp)
    "0f294c2410"                # 145 movaps %xmm1,0x10(%rsp)
    "488bbc24c0000000"          # 14a mov 0xc0(%rsp),%rdi
    "ff1500000000"              # 152 call *X(%rip)                     *RESTORE: PyEval_RestoreThread(tstate)
    "4c8b9c24b0000000"          # 158 mov 0xb0(%rsp),%r11
    "49ff0b"                    # 160 decq (%r11)                       outside (the GIL is back)
    "488b842480000000"          # 163 mov 0x80(%rsp),%rax
    "488b942488000000"          # 16b mov 0x88(%rsp),%rdx
    "0f280424"                  # 173 movaps (%rsp),%xmm0
    "0f284c2410"                # 177 movaps 0x10(%rsp),%xmm1
    "c9"                        # 17c leave
    "c3"                        # 17d ret
    "488b3d00000000"            # 17e mov X(%rip),%rdi                  removed: ERROR, SessionClosedError
    "498b7210"                  # 185 mov 0x10(%r10),%rsi               the callable's message
    "ff1500000000"              # 189 call *X(%rip)                     *SETSTRING: ctypes raises what it sets
    "31c0"                      # 18f xor %eax,%eax
    "c9"                        # 191 leave
    "c3"                        # 192 ret
    "e888000000"                # 193 call 220 <hotlink_gate_register>  slow: the slot in r11, arguments kept
    "e9f7feffff"                # 198 jmp 94 <again>
    "4c8b9424c8000000"          # 19d mov 0xc8(%rsp),%r10               nogil: no bookkeeping without the GIL
    "488bbc2480000000"          # 1a5 mov 0x80(%rsp),%rdi
    "488bb42488000000"          # 1ad mov 0x88(%rsp),%rsi
    "488b942490000000"          # 1b5 mov 0x90(%rsp),%rdx
    "488b8c2498000000"          # 1bd mov 0x98(%rsp),%rcx
    "4c8b8424a0000000"          # 1c5 mov 0xa0(%rsp),%r8
    "4c8b8c24a8000000"          # 1cd mov 0xa8(%rsp),%r9
    "0f280424"                  # 1d5 movaps (%rsp),%xmm0
    "0f284c2410"                # 1d9 movaps 0x10(%rsp),%xmm1
    "0f28542420"                # 1de movaps 0x20(%rsp),%xmm2
    "0f285c2430"                # 1e3 movaps 0x30(%rsp),%xmm3
    "0f28642440"                # 1e8 movaps 0x40(%rsp),%xmm4
    "0f286c2450"                # 1ed movaps 0x50(%rsp),%xmm5
    "0f28742460"                # 1f2 movaps 0x60(%rsp),%xmm6
    "0f287c2470"                # 1f7 movaps 0x70(%rsp),%xmm7
    "498b02"                    # 1fc mov (%r10),%rax                   the target
    "c9"                        # 1ff leave
    "4885c0"                    # 200 test %rax,%rax
    "7402"                      # 203 je 207 <nogil+0x6a>
    "ffe0"                      # 205 jmp *%rax                         a tail call, as to its address
    "31c0"                      # 207 xor %eax,%eax                     removed: 0 (nothing can raise)
    "c3"                        # 209 ret
)
# hotlink_gate_register: claim a free slot (the overflow slot if none is), raise the
# high-water mark, file the slot under the pthread key and store it in the thread-local.
# Called with the caller's arguments live: keeps all of them.
REGISTER = bytes.fromhex(
    "57"                        # 180 push %rdi
    "56"                        # 181 push %rsi
    "52"                        # 182 push %rdx
    "51"                        # 183 push %rcx
    "4150"                      # 184 push %r8
    "4151"                      # 186 push %r9
    "50"                        # 188 push %rax
    "4152"                      # 189 push %r10
    "4881ec88000000"            # 18b sub $0x88,%rsp
    "f30f7f0424"                # 192 movdqu %xmm0,(%rsp)
    "f30f7f4c2410"              # 197 movdqu %xmm1,0x10(%rsp)
    "f30f7f542420"              # 19d movdqu %xmm2,0x20(%rsp)
    "f30f7f5c2430"              # 1a3 movdqu %xmm3,0x30(%rsp)
    "f30f7f642440"              # 1a9 movdqu %xmm4,0x40(%rsp)
    "f30f7f6c2450"              # 1af movdqu %xmm5,0x50(%rsp)
    "f30f7f742460"              # 1b5 movdqu %xmm6,0x60(%rsp)
    "f30f7f7c2470"              # 1bb movdqu %xmm7,0x70(%rsp)
    "488b0d00000000"            # 1c1 mov X(%rip),%rcx                  SLOTS
    "488b1500000000"            # 1c8 mov X(%rip),%rdx                  END: the overflow slot
    "be01000000"                # 1cf mov $0x1,%esi
    "31c0"                      # 1d4 xor %eax,%eax
    "f0480fb131"                # 1d6 lock cmpxchg %rsi,(%rcx)          state 0 -> 1: claimed
    "740e"                      # 1db je 1eb <hotlink_gate_register+0x6b>
    "4881c100010000"            # 1dd add $0x100,%rcx
    "4839d1"                    # 1e4 cmp %rdx,%rcx
    "72eb"                      # 1e7 jb 1d4 <hotlink_gate_register+0x54>
    "eb36"                      # 1e9 jmp 221 <hotlink_gate_register+0xa1>none free: the overflow slot
    "488db900010000"            # 1eb lea 0x100(%rcx),%rdi
    "4c8d0500000000"            # 1f2 lea X(%rip),%r8                   HWM: raise the high-water mark
    "498b00"                    # 1f9 mov (%r8),%rax
    "4839f8"                    # 1fc cmp %rdi,%rax
    "7307"                      # 1ff jae 208 <hotlink_gate_register+0x88>
    "f0490fb138"                # 201 lock cmpxchg %rdi,(%r8)
    "75f4"                      # 206 jne 1fc <hotlink_gate_register+0x7c>
    "51"                        # 208 push %rcx
    "4883ec08"                  # 209 sub $0x8,%rsp
    "8b3d00000000"              # 20d mov X(%rip),%edi                  KEY
    "4889ce"                    # 213 mov %rcx,%rsi
    "ff1500000000"              # 216 call *X(%rip)                     *SETSPECIFIC: freed at thread exit
    "4883c408"                  # 21c add $0x8,%rsp
    "59"                        # 220 pop %rcx
    "488b0500000000"            # 221 mov X(%rip),%rax                  TPOFF
    "64488908"                  # 228 mov %rcx,%fs:(%rax)               the thread-local: this thread's slot
    "4989cb"                    # 22c mov %rcx,%r11
    "f30f6f0424"                # 22f movdqu (%rsp),%xmm0
    "f30f6f4c2410"              # 234 movdqu 0x10(%rsp),%xmm1
    "f30f6f542420"              # 23a movdqu 0x20(%rsp),%xmm2
    "f30f6f5c2430"              # 240 movdqu 0x30(%rsp),%xmm3
    "f30f6f642440"              # 246 movdqu 0x40(%rsp),%xmm4
    "f30f6f6c2450"              # 24c movdqu 0x50(%rsp),%xmm5
    "f30f6f742460"              # 252 movdqu 0x60(%rsp),%xmm6
    "f30f6f7c2470"              # 258 movdqu 0x70(%rsp),%xmm7
    "4881c488000000"            # 25e add $0x88,%rsp
    "415a"                      # 265 pop %r10
    "58"                        # 267 pop %rax
    "4159"                      # 268 pop %r9
    "4158"                      # 26a pop %r8
    "59"                        # 26c pop %rcx
    "5a"                        # 26d pop %rdx
    "5e"                        # 26e pop %rsi
    "5f"                        # 26f pop %rdi
    "c3"                        # 270 ret
)
# hotlink_gate_release: the key's destructor at thread exit (rdi: the slot)
RELEASE = bytes.fromhex(
    "488b0500000000"            # 280 mov X(%rip),%rax                  TPOFF
    "6448c70000000000"          # 287 movq $0x0,%fs:(%rax)              forget the slot (a later call claims another)
    "48c70700000000"            # 28f movq $0x0,(%rdi)                  state = 0: free
    "c3"                        # 296 ret
)
# hotlink_gate_own_slot: this thread's slot, for Python
OWN = bytes.fromhex(
    "488b0500000000"            # 2a0 mov X(%rip),%rax                  TPOFF
    "64488b00"                  # 2a7 mov %fs:(%rax),%rax
    "c3"                        # 2ab ret
)
# name, offset in the text, size, code
FUNCTIONS = (("hotlink_gate_call", 0x000, 0x220, CALL), ("hotlink_gate_register", 0x220, 0x100, REGISTER),
             ("hotlink_gate_release", 0x320, 0x20, RELEASE), ("hotlink_gate_own_slot", 0x340, 0x10, OWN))
TEXT_SIZE = 0x350
# the data words, by offset in the object's data
(W_TPOFF, W_SAVE, W_RESTORE, W_SETSTRING, W_ERROR, W_SETSPECIFIC, W_SLOTS, W_END, W_HWM,
 W_KEY, W_GILCHECK) = range(0, 88, 8)
DATA_WORDS = 88
# rel32 fields of the text: offset -> the data word they reach
FIELDS = ((0x06C, W_GILCHECK), (0x083, W_TPOFF), (0x0C7, W_SAVE), (0x154, W_RESTORE), (0x181, W_ERROR),
          (0x18B, W_SETSTRING), (0x264, W_SLOTS), (0x26B, W_END), (0x295, W_HWM), (0x2AF, W_KEY),
          (0x2B8, W_SETSPECIFIC), (0x2C4, W_TPOFF), (0x323, W_TPOFF), (0x343, W_TPOFF))

# One trampoline, in a chunk's code page.  Fields (rel32): its data, the chunk's header.
TRAMPOLINE = bytes.fromhex(
    "4c8d1500000000"            # 0 lea DATA(%rip), %r10
    "ff2500000000"              # 7 jmp *HEADER(%rip)                 hotlink_gate_call
).ljust(TRAMPOLINE_SIZE, b"\xcc")
T_DATA, T_HEADER = 3, 9

_i32 = struct.Struct("<i")
_REMOVED = ctypes.create_string_buffer(b"a hotlink callable: its code was removed")   # discarded trampolines


class GateError(LinkError):
    """The call gate could not be set up (no static TLS room, no memory)."""


def _map(size: int) -> int:
    addr = libc.mmap(None, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
    if addr is None or addr == MAP_FAILED:
        raise GateError(f"call gate: mmap of {size} bytes failed: {os.strerror(ctypes.get_errno())}")
    return addr


def _process_symbol(name: str) -> int:
    addr = libc.dlsym(None, name.encode())
    if not addr:
        raise GateError(f"call gate: {name} not found in the process")
    return addr


def _text_offset(image: bytes) -> int:
    """Where dso.build put ``.text`` (section 6) in ``image``."""
    shoff = struct.unpack_from("<Q", image, 0x28)[0]
    return struct.unpack_from("<Q", image, shoff + 64 * 6 + 24)[0]


def _eh_frame(start: int) -> ctypes.Array[ctypes.c_char]:
    """Unwind info for ``hotlink_gate_call`` at ``start`` (absolute pointers),
    so libgcc's unwinder (exceptions, ``backtrace()``, thread cancellation)
    walks through it as gdb does: after ``push %rbp; mov %rsp, %rbp`` the
    frame is rbp-based, which covers every call it makes."""
    def entry(body: bytes) -> bytes:
        body = body.ljust((len(body) + 4 + 7) // 8 * 8 - 4, b"\0")      # DW_CFA_nop padding
        return struct.pack("<I", len(body)) + body
    cie = entry(struct.pack("<I", 0) + b"\x01zR\0" + bytes([1, 0x78, 16, 1, 0x00])   # absptr pointers
                + bytes([0x0C, 7, 8, 0x90, 1]))               # CFA = rsp + 8, rip at CFA - 8
    fde_at = len(cie)
    fde = entry(struct.pack("<IQQ", fde_at + 4, start, FUNCTIONS[0][2]) + b"\0"
                + bytes([0x41, 0x0E, 16, 0x86, 2,               # push %rbp: CFA = rsp + 16, rbp at CFA - 16
                         0x43, 0x0D, 6]))                       # mov %rsp, %rbp: CFA = rbp + 16
    return ctypes.create_string_buffer(cie + fde + bytes(4), len(cie) + len(fde) + 4)


def _object() -> tuple[bytes, int, int]:
    """The gate's shared object: its image, and the offsets of its data and text."""
    text = bytearray(TEXT_SIZE)
    for _, at, size, code in FUNCTIONS:
        text[at:at + size] = code.ljust(size, b"\xcc")
    symbols = tuple(dso.Symbol(name, "func", at, size) for name, at, size, _ in FUNCTIONS)

    def build() -> tuple[bytes, int]:
        return dso.build("hotlink-gate", text=bytes(text), data=bytes(DATA_WORDS), symbols=symbols,
                         relocations=(dso.Relocation(W_TPOFF, Reloc.TPOFF64, None),),
                         tls=dso.TlsImage(bytes(8), 8, 8), static_tls=True)
    image, data_at = build()            # to learn the layout, which the code's bytes do not change
    text_at = _text_offset(image)
    for field, word in FIELDS:
        _i32.pack_into(text, field, (data_at + word) - (text_at + field + 4))
    image, again = build()
    assert again == data_at and _text_offset(image) == text_at
    return image, data_at, text_at


class Lane:
    """One session's column of counters in every thread's slot."""

    def __init__(self, gate: Gate, index: int):
        self.gate = gate
        self.index = index
        self.descriptor = gate.globals + 64 * (1 + index)      # {epoch, offset in a slot}, own cache line
        self._epoch = ctypes.c_uint64.from_address(self.descriptor)
        ctypes.c_uint64.from_address(self.descriptor + 8).value = 8 + 16 * index
        self._word = 1 + 2 * index          # parity 0's counter, in 8-byte words from a slot's start

    def set_epoch(self, epoch: int) -> None:
        """The epoch new calls count against (their parity is what they read)."""
        self._epoch.value = epoch

    def active(self, parity: int) -> bool:
        """Is any thread inside a call that counted against ``parity``?"""
        return self.gate.any_counter(self._word + parity)

    def busy(self) -> bool:
        return self.active(0) or self.active(1)

    def inside(self) -> bool:
        """Is this thread inside a call through this lane (a callback)?"""
        slot = self.gate.own_slot()
        if not slot:
            return False
        counters = (ctypes.c_int64 * 2).from_address(slot + 8 * self._word)
        return bool(counters[0] or counters[1])

    def trampoline(self, target: int, message: int) -> tuple[int, int]:
        """A trampoline calling ``target`` and counting in this lane, and its
        generation; ``message`` (a C string) is what it raises once disabled."""
        return self.gate.trampoline(target, self.descriptor, message)

    def release(self) -> None:
        """Back to the gate for another session (its session is closed and drained)."""
        self.gate.release_lane(self.index)


class Gate:
    """The process's call gate (``process_gate()``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        image, data_at, text_at = _object()
        try:    # kept loaded for the process
            self.so = so = dso.SharedObject(image, data_at, name="hotlink-gate")
        except LinkError as e:      # glibc's static TLS reserve is full, most likely
            raise GateError(f"call gate: {e}") from None
        text = so.base + text_at
        self.call = text
        self._eh_frame = _eh_frame(text)       # registered for the process, like the object
        libc.register_frame(ctypes.addressof(self._eh_frame))
        tpoff = so.word(W_TPOFF)
        self.tpoff = tpoff - (1 << 64) if tpoff >> 63 else tpoff
        self.globals = g = _map(PAGE + (NSLOTS + 1) * SLOT_SIZE)   # lane descriptors, then the slots
        self.slots = g + PAGE
        self.overflow = self.slots + NSLOTS * SLOT_SIZE
        self._hwm = ctypes.c_uint64.from_address(so.data + W_HWM)
        words = (NSLOTS + 1) * SLOT_SIZE // 8
        self._counters = memoryview((ctypes.c_int64 * words).from_address(self.slots)).cast("B").cast("q")
        key = ctypes.c_uint(0)
        if libc.pthread_key_create(ctypes.byref(key), text + FUNCTIONS[2][1]) != 0:
            raise GateError("call gate: pthread_key_create failed")
        for word, value in ((W_GILCHECK, _process_symbol("PyGILState_Check")),
                            (W_SAVE, _process_symbol("PyEval_SaveThread")),
                            (W_RESTORE, _process_symbol("PyEval_RestoreThread")),
                            (W_SETSTRING, _process_symbol("PyErr_SetString")),
                            (W_ERROR, id(SessionClosedError)),      # a class of hotlink: never freed
                            (W_SETSPECIFIC, _process_symbol("pthread_setspecific")),
                            (W_SLOTS, self.slots), (W_END, self.overflow), (W_HWM, self.slots),
                            (W_KEY, key.value)):
            ctypes.c_uint64.from_address(so.data + word).value = value
        self._own = ctypes.CFUNCTYPE(ctypes.c_void_p)(text + FUNCTIONS[3][1])
        self._free: list[int] = []                  # trampolines ready for use
        self._dead: deque[int] = deque()            # trampolines of collected callables (no lock: __del__)
        self._data: dict[int, int] = {}             # trampoline -> its data words
        self._generation: dict[int, int] = {}       # trampoline -> how many times it was handed out
        self._lanes = list(range(LANES - 1, -1, -1))
        # no prepare hook: Python operations are atomic under the GIL, which
        # the forking thread holds, so the lists here are never half changed
        os.register_at_fork(after_in_child=self.after_fork)

    # --- trampolines -----------------------------------------------------------

    def trampoline(self, target: int, lane: int, message: int) -> tuple[int, int]:
        """A trampoline to ``target`` counting in ``lane`` (a lane descriptor),
        and its generation (for ``disable``)."""
        with self._lock:
            while self._dead:
                self._free.append(self._dead.popleft())
            if not self._free:
                self._new_chunk()
            addr = self._free.pop()
            generation = self._generation[addr] = self._generation.get(addr, 0) + 1
            data = self._data[addr]
            ctypes.c_uint64.from_address(data + 8).value = lane
            ctypes.c_uint64.from_address(data + 16).value = message
            ctypes.c_uint64.from_address(data).value = target
        return addr, generation

    def disable(self, trampoline: int, generation: int) -> None:
        """Calls through the trampoline raise from now on (an aligned store,
        under the GIL), unless it went to another callable since."""
        with self._lock:
            if self._generation.get(trampoline) == generation:
                ctypes.c_uint64.from_address(self._data[trampoline]).value = 0

    def current(self, trampoline: int, generation: int) -> bool:
        """Is the trampoline still the one handed out as ``generation``?"""
        return self._generation.get(trampoline) == generation

    def discard(self, trampoline: int) -> None:
        """Its callable was collected, so no call runs through it: reuse it.
        Called from ``__del__``, so it takes no lock."""
        data = self._data[trampoline]
        ctypes.c_uint64.from_address(data).value = 0
        ctypes.c_uint64.from_address(data + 16).value = ctypes.addressof(_REMOVED)
        self._dead.append(trampoline)

    def _new_chunk(self) -> None:
        """One code page of trampolines, then its data pages: the header
        (hotlink_gate_call's address), then each trampoline's data words."""
        base = _map(PAGE + CHUNK_DATA)
        data = base + PAGE
        ctypes.c_uint64.from_address(data).value = self.call
        code = bytearray(PAGE)
        new = []
        for i in range(PER_CHUNK):
            at = i * TRAMPOLINE_SIZE
            words = data + CHUNK_HEADER + DATA_SIZE * i
            code[at:at + TRAMPOLINE_SIZE] = TRAMPOLINE
            _i32.pack_into(code, at + T_DATA, words - (base + at + T_DATA + 4))
            _i32.pack_into(code, at + T_HEADER, data - (base + at + T_HEADER + 4))
            ctypes.c_uint64.from_address(words + 16).value = ctypes.addressof(_REMOVED)
            self._data[base + at] = words
            new.append(base + at)
        ctypes.memmove(base, bytes(code), PAGE)
        if libc.mprotect(base, PAGE, PROT_READ | PROT_EXEC) != 0:    # never writable again
            raise GateError(f"call gate: mprotect failed: {os.strerror(ctypes.get_errno())}")
        self._free.extend(reversed(new))

    # --- lanes and slots -------------------------------------------------------

    def claim_lane(self) -> Lane | None:
        with self._lock:
            if not self._lanes:
                return None
            index = self._lanes.pop()
        return Lane(self, index)

    def release_lane(self, index: int) -> None:
        self._lanes.append(index)       # no lock: called under a session's lock (list.append is atomic)

    def any_counter(self, word: int) -> bool:
        """Is the counter at ``word`` non-zero in any claimed slot or the overflow slot?"""
        stride = SLOT_SIZE // 8
        n = (self._hwm.value - self.slots) // SLOT_SIZE * stride
        c = self._counters
        return bool(c[NSLOTS * stride + word]) or any(c[word:n:stride])

    def own_slot(self) -> int:
        """This thread's slot address (0 before its first call through a trampoline)."""
        return self._own() or 0

    def trampolines(self) -> int:
        """Trampolines made so far (in use or free)."""
        return len(self._data)

    def slots_in_use(self) -> int:
        """Slots owned by live threads (for tests and statistics)."""
        stride = SLOT_SIZE // 8
        n = (self._hwm.value - self.slots) // SLOT_SIZE
        return sum(1 for i in range(n) if self._counters[i * stride])

    def after_fork(self) -> None:
        """In a forked child only the forking thread exists: every other slot
        is free, with its counts (the forking thread's own calls stay counted:
        a callback that forked is still inside its call)."""
        self._lock = threading.Lock()
        mine = self.own_slot()
        end = self.overflow + SLOT_SIZE
        if self.slots <= mine < end:
            ctypes.memset(self.slots, 0, mine - self.slots)
            ctypes.memset(mine + SLOT_SIZE, 0, end - mine - SLOT_SIZE)
        else:
            ctypes.memset(self.slots, 0, end - self.slots)


_gate: Gate | None = None
_gate_error: BaseException | None = None
_gate_lock = threading.Lock()


def process_gate() -> Gate | None:
    """The call gate, set up on first use; None if it cannot be (then
    callables take the Python path)."""
    global _gate, _gate_error
    if _gate is not None or _gate_error is not None:
        return _gate
    with _gate_lock:
        if _gate is None and _gate_error is None:
            if not getattr(sys, "_is_gil_enabled", lambda: True)():
                _gate_error = GateError("call gate: this Python runs without a GIL")
            else:
                try:
                    _gate = Gate()
                except LinkError as e:
                    _gate_error = e
        return _gate
