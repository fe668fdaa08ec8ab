"""Native helpers for the inner loops of big links that no vector operation
expresses: walking the length-prefixed records of an ``.eh_frame`` and
decoding the CFA programs of its FDEs.  (Relocations and the checks of
record fields are numpy columns, ``vector.py``.)

The helpers are LLVM IR compiled by llvmlite once per process, the way
``forkcopy.py`` makes its handlers: self-contained code (no calls out, no
jump tables, so no relocations), copied into a page of its own that is then
made executable.  They read only inside the buffers the caller passes and
decide nothing on their own: whatever they do not vouch for is checked again
by the Python code, which accepts more and says what is wrong.  If llvmlite
cannot compile them, ``helpers()`` is None and everything runs in Python.

    hotlink_eh_records(data, n, out, cap, stop) -> count, or -1
        the offset of every record of the section ``data[:n]`` into ``out``
        (room for ``cap``), up to the zero terminator or the end; ``*stop``
        is where the walk stopped.  -1 if a record is odd (64-bit, shorter
        than its id, past the end) or ``cap`` is too small.
    hotlink_cfa_check(data, starts, ends, count, ok)
        ``ok[k]`` = 1 if the CFA program ``data[starts[k]:ends[k]]`` decodes
        into instructions that ``ehframe._program`` accepts without an
        address, expression or register above 16 where the unwinder reads
        one (the programs gcc and LLVM emit), else 0.
"""
from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence
from typing import Any

from . import libc

# The CFA program check, shared with the quick link's native core (quickcore.py).
CFA_IR = r"""
; a ULEB128/SLEB128 number of at most 10 bytes at %p, inside %e: where it ends, or -1
define internal i64 @leb(ptr %d, i64 %p, i64 %e) #1 {
entry:
  %lim = add i64 %p, 10
  br label %loop
loop:
  %q = phi i64 [%p, %entry], [%q1, %more]
  %inb = icmp slt i64 %q, %e
  %inl = icmp slt i64 %q, %lim
  %go = and i1 %inb, %inl
  br i1 %go, label %body, label %fail
body:
  %a = getelementptr i8, ptr %d, i64 %q
  %b = load i8, ptr %a
  %q1 = add i64 %q, 1
  %last = icmp sge i8 %b, 0
  br i1 %last, label %done, label %more
more:
  br label %loop
done:
  ret i64 %q1
fail:
  ret i64 -1
}

; a one-byte register number the unwinder can read (0-16) at %p, inside %e: where it ends, or -1
define internal i64 @reg(ptr %d, i64 %p, i64 %e) #1 {
entry:
  %in = icmp slt i64 %p, %e
  br i1 %in, label %read, label %bad
read:
  %a = getelementptr i8, ptr %d, i64 %p
  %b = load i8, ptr %a
  %ok = icmp ule i8 %b, 16
  br i1 %ok, label %good, label %bad
good:
  %q = add i64 %p, 1
  ret i64 %q
bad:
  ret i64 -1
}

define internal i1 @program(ptr %d, i64 %start, i64 %e) #1 {
entry:
  %pp = alloca i64
  %dp = alloca i32
  store i64 %start, ptr %pp
  store i32 0, ptr %dp
  br label %loop
loop:
  %p = load i64, ptr %pp
  %more = icmp slt i64 %p, %e
  br i1 %more, label %decode, label %finish
finish:
  %exact = icmp eq i64 %p, %e
  ret i1 %exact
decode:
  %ap = getelementptr i8, ptr %d, i64 %p
  %b = load i8, ptr %ap
  %op = zext i8 %b to i32
  %p1 = add i64 %p, 1
  store i64 %p1, ptr %pp
  %restore = icmp uge i32 %op, 192            ; DW_CFA_restore
  br i1 %restore, label %loop, label %below_c0
below_c0:
  %offset = icmp uge i32 %op, 128             ; DW_CFA_offset: ULEB128
  br i1 %offset, label %leb1, label %below_80
below_80:
  %advance = icmp uge i32 %op, 64             ; DW_CFA_advance_loc
  br i1 %advance, label %loop, label %low
low:
  switch i32 %op, label %fail [
    i32 0, label %loop
    i32 2, label %fixed1
    i32 3, label %fixed2
    i32 4, label %fixed4
    i32 5, label %leb2
    i32 17, label %leb2
    i32 47, label %leb2
    i32 6, label %leb1
    i32 7, label %leb1
    i32 8, label %leb1
    i32 14, label %leb1
    i32 19, label %leb1
    i32 46, label %leb1
    i32 9, label %lebreg
    i32 12, label %regleb
    i32 18, label %regleb
    i32 20, label %regleb
    i32 21, label %regleb
    i32 13, label %regonly
    i32 10, label %remember
    i32 11, label %restore_state
  ]
fixed1:
  %f1 = add i64 %p1, 1
  store i64 %f1, ptr %pp
  br label %loop
fixed2:
  %f2 = add i64 %p1, 2
  store i64 %f2, ptr %pp
  br label %loop
fixed4:
  %f4 = add i64 %p1, 4
  store i64 %f4, ptr %pp
  br label %loop
leb1:
  %l1 = call i64 @leb(ptr %d, i64 %p1, i64 %e)
  %l1bad = icmp slt i64 %l1, 0
  br i1 %l1bad, label %fail, label %leb1ok
leb1ok:
  store i64 %l1, ptr %pp
  br label %loop
leb2:
  %m1 = call i64 @leb(ptr %d, i64 %p1, i64 %e)
  %m1bad = icmp slt i64 %m1, 0
  br i1 %m1bad, label %fail, label %leb2b
leb2b:
  %m2 = call i64 @leb(ptr %d, i64 %m1, i64 %e)
  %m2bad = icmp slt i64 %m2, 0
  br i1 %m2bad, label %fail, label %leb2ok
leb2ok:
  store i64 %m2, ptr %pp
  br label %loop
lebreg:
  %n1 = call i64 @leb(ptr %d, i64 %p1, i64 %e)
  %n1bad = icmp slt i64 %n1, 0
  br i1 %n1bad, label %fail, label %lebregb
lebregb:
  %n2 = call i64 @reg(ptr %d, i64 %n1, i64 %e)
  %n2bad = icmp slt i64 %n2, 0
  br i1 %n2bad, label %fail, label %lebregok
lebregok:
  store i64 %n2, ptr %pp
  br label %loop
regleb:
  %r1 = call i64 @reg(ptr %d, i64 %p1, i64 %e)
  %r1bad = icmp slt i64 %r1, 0
  br i1 %r1bad, label %fail, label %reglebb
reglebb:
  %r2 = call i64 @leb(ptr %d, i64 %r1, i64 %e)
  %r2bad = icmp slt i64 %r2, 0
  br i1 %r2bad, label %fail, label %reglebok
reglebok:
  store i64 %r2, ptr %pp
  br label %loop
regonly:
  %s1 = call i64 @reg(ptr %d, i64 %p1, i64 %e)
  %s1bad = icmp slt i64 %s1, 0
  br i1 %s1bad, label %fail, label %regonlyok
regonlyok:
  store i64 %s1, ptr %pp
  br label %loop
remember:
  %dv = load i32, ptr %dp
  %dv1 = add i32 %dv, 1
  %deep = icmp ugt i32 %dv1, 64
  br i1 %deep, label %fail, label %remembered
remembered:
  store i32 %dv1, ptr %dp
  br label %loop
restore_state:
  %dw = load i32, ptr %dp
  %none = icmp eq i32 %dw, 0
  br i1 %none, label %fail, label %restored
restored:
  %dw1 = sub i32 %dw, 1
  store i32 %dw1, ptr %dp
  br label %loop
fail:
  ret i1 false
}

"""

_IR = r"""
define i64 @hotlink_eh_records(ptr %d, i64 %n, ptr %out, i64 %cap, ptr %stop) #0 {
entry:
  br label %loop
loop:
  %pos = phi i64 [0, %entry], [%next, %store]
  %k = phi i64 [0, %entry], [%k1, %store]
  %p4 = add i64 %pos, 4
  %room = icmp sle i64 %p4, %n
  br i1 %room, label %read, label %done
read:
  %a = getelementptr i8, ptr %d, i64 %pos
  %len32 = load i32, ptr %a, align 1
  %zero = icmp eq i32 %len32, 0
  br i1 %zero, label %done, label %check
check:
  %len = zext i32 %len32 to i64
  %next = add i64 %p4, %len
  %short = icmp ult i32 %len32, 4
  %past = icmp sgt i64 %next, %n
  %wide = icmp eq i32 %len32, -1
  %full = icmp sge i64 %k, %cap
  %b1 = or i1 %short, %past
  %b2 = or i1 %b1, %wide
  %bad = or i1 %b2, %full
  br i1 %bad, label %fail, label %store
store:
  %o = getelementptr i64, ptr %out, i64 %k
  store i64 %pos, ptr %o
  %k1 = add i64 %k, 1
  br label %loop
done:
  store i64 %pos, ptr %stop
  ret i64 %k
fail:
  ret i64 -1
}

""" + CFA_IR + r"""
define void @hotlink_cfa_check(ptr %d, ptr %starts, ptr %ends, i64 %count, ptr %ok) #0 {
entry:
  br label %head
head:
  %k = phi i64 [0, %entry], [%k1, %body]
  %more = icmp slt i64 %k, %count
  br i1 %more, label %body, label %out
body:
  %sa = getelementptr i64, ptr %starts, i64 %k
  %s = load i64, ptr %sa
  %ea = getelementptr i64, ptr %ends, i64 %k
  %e = load i64, ptr %ea
  %r = call i1 @program(ptr %d, i64 %s, i64 %e)
  %r8 = zext i1 %r to i8
  %oa = getelementptr i8, ptr %ok, i64 %k
  store i8 %r8, ptr %oa
  %k1 = add i64 %k, 1
  br label %head
out:
  ret void
}

attributes #0 = { nounwind "no-jump-tables"="true" }
attributes #1 = { nounwind alwaysinline "no-jump-tables"="true" }
"""

_NAMES = ("hotlink_eh_records", "hotlink_cfa_check")
_u64 = ctypes.c_uint64


class Helpers:
    """The compiled helpers, as ctypes functions over raw addresses."""

    def __init__(self, addresses: dict[str, int]) -> None:
        self.eh_records = ctypes.CFUNCTYPE(ctypes.c_int64, _u64, ctypes.c_int64, _u64, ctypes.c_int64, _u64)(
            addresses["hotlink_eh_records"])
        self.cfa_check = ctypes.CFUNCTYPE(None, _u64, _u64, _u64, ctypes.c_int64, _u64)(
            addresses["hotlink_cfa_check"])


_lock = threading.Lock()
_helpers: Helpers | None = None
_failed = False


def helpers() -> Helpers | None:
    """The native helpers, compiled on first use in this process; None if
    they cannot be (then callers do the work in Python)."""
    global _helpers, _failed
    if _helpers is None and not _failed:
        with _lock:
            if _helpers is None and not _failed:
                try:
                    _helpers = Helpers(_compile())
                except Exception:       # no llvmlite, no executable memory: Python does the work
                    _failed = True
    return _helpers


def _compile() -> dict[str, int]:
    return relocation_free_code(_IR, "the native helpers", _NAMES)


def relocation_free_code(ir: str, what: str, names: Sequence[str]) -> dict[str, int]:
    """Compile ``ir``, which must need no relocations (constants, no calls
    out), and copy its code into a page of its own, then make that page
    executable (never writable and executable at once): name -> address.
    For helpers that outlive any session (this module's, forkcopy.py's)."""
    from .elf import ObjectFile
    from .frontend.llvm import binding, target_machine

    obj = ObjectFile(target_machine("generic", "", 2).emit_object(binding().parse_assembly(ir)), what)
    text = next(i for i in range(obj.shnum) if obj.section_name(i) == ".text")
    if obj.has_relocations(text):
        raise RuntimeError(f"{what} need relocations")
    code = bytes(obj.section_bytes(text))
    size = (len(code) + 4095) & -4096
    page: Any = libc.mmap(None, size, 3, 0x22, -1, 0)           # PROT_READ|WRITE, MAP_PRIVATE|ANONYMOUS
    if not page or page == ctypes.c_void_p(-1).value:
        raise OSError(f"cannot map {what}")
    ctypes.memmove(page, code, len(code))
    if libc.mprotect(page, size, 5) != 0:                  # PROT_READ|EXEC
        raise OSError(f"cannot protect {what}")
    out = {}
    for name in names:
        si = obj.global_index(name)
        if si is None or obj.sym_shndx[si] != text:
            raise RuntimeError(f"{what} lack {name}")
        out[name] = page + obj.sym_value[si]
    return out
