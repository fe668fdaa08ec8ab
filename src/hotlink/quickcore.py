"""The quick link's native core: the reading, checking and writing of
``quick.py`` for one object, as two native functions.

``quick.py`` in Python costs about 2,500 bytecode steps for a one-function
object, more than half of them reading and checking it.  These functions do
that part in one call each, the way ``native.py`` walks big ``.eh_frame``
sections: LLVM IR compiled by llvmlite once per process, code without
relocations copied into a page of its own (``native.relocation_free_code``).

    hotlink_quick_scan(data, n, out) -> 1, or 0
        reads and checks the object ``data[:n]`` as ``quick._plan`` does
        and lays out its sections; ``out`` (``WORDS`` words) receives the
        pools' sizes and alignments, the ``.eh_frame``, the definitions to
        publish and the undefined symbols to bind (see the layout below).
    hotlink_quick_apply(data, n, out) -> 1, or 0
        takes the blocks (code, read-only, data, .eh_frame) at the pools'
        tops as ``Arena.alloc_blocks`` would (``out[BUMP]`` 1: the tops at
        ``out[TOPS:]``, moved up there for Python to set), or uses those
        at ``out[BASES:]``; writes the object there through the write view
        (``address + out[DELTA]``): sections, ``.bss``, relocations, GOT
        loads relaxed, the ``.eh_frame`` and its terminator, which it then
        registers with the unwinder (``out[REGISTER]``: ``__register_frame``,
        counted at ``out[COUNTER]``) as its last step; ``out[IMPORTS:]`` holds the undefined symbols'
        addresses in ``out``'s order, ``out[VALUES:]`` receives every
        symbol's, each definition's entry its value, and ``out[BLOCKS:]``
        the blocks packed for the unit.  Taking the blocks is the Python
        allocator's common case in one pass (a hole to fill first, or no
        room at a top, is Python's to handle: the core then writes nothing).

They accept a subset of what ``quick.py`` accepts and write the same bytes:
0 means "not sure", and the Python quick link takes the object from the
start (which may hand it on to the general transaction).  Where the Python
quick link asks the full ``.eh_frame`` check's caches, the core accepts only
the CIE gcc and LLVM emit (``zR``, pc-relative 4-byte pointers, no
personality, no LSDA) and CFA programs ``native.CFA_IR`` vouches for.
Everything that depends on the library (names already defined, binding)
stays in Python.  ``tests/test_quick.py`` links every object with the core,
with the Python quick link and with the general transaction, and compares.
"""
from __future__ import annotations

import ctypes
import threading

from .native import CFA_IR, relocation_free_code

# --- the layout of ``out`` (int64 words) ----------------------------------
SIZE, ALIGN = 0, 3              # per pool (CODE, RODATA, DATA)
EH, EH_SIZE, NPUB, NIMP, NSYM, SYMOFF, SHNUM, SHOFF, FIRST, NCIE = 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
PLACE = 16                      # per section: pool << 56 | offset in the pool's block, or -1
RELA = 80                       # per section: its relocation section, or 0
CIES = 144                      # positions of the CIEs checked (8)
FDES, RANGES, CLAIMED = 152, 216, 280    # per FDE (64): its pc_begin field, pc_range, relocation found
PUB, PUB_WORDS = 344, 6         # per definition (64): symbol, name offset, name length, flags, size, value
IMP, IMP_WORDS = 728, 4         # per undefined symbol (64): symbol, name offset, name length, weak
BASES, DELTA = 984, 988         # apply's input: the blocks (code, rodata, data, .eh_frame); write - run view
IMPORTS, VALUES = 989, 1053     # apply's input: each undefined symbol's address; its output: every symbol's
REGISTER = 1153                 # apply's input: the address of libgcc's __register_frame (0: do not register)
COUNTER = 1154                  # and of the count it adds one to when it did (platform.NATIVE_FRAME_COUNT)
# apply's input: 1 to take the blocks at the pools' tops itself (then out[BASES:] is its output), each
# pool's top and top's end (code, rodata, data), and the first region's bounds, which the blocks must
# be in; or 0 (out[BASES:] holds blocks allocated before).  Then 1 + the undefined symbol that is
# _GLOBAL_OFFSET_TABLE_, whose address apply sets to the first block's, or 0.
BUMP, TOPS, REGION, GOT_IMPORT = 1155, 1156, 1162, 1164
BLOCKS, NBLOCKS = 1165, 1169    # apply's output: the blocks, packed as arena.pack_block packs them
WORDS = 1170
MAX_SECTIONS = MAX_PUBLISHED = MAX_IMPORTS = 64
MAX_SYMBOLS = 100               # vector.MIN_ROWS: the quick link's limit too

_IR = r"""
define internal i64 @u8(ptr %d, i64 %o) #1 {
  %p = getelementptr i8, ptr %d, i64 %o
  %v = load i8, ptr %p, align 1
  %r = zext i8 %v to i64
  ret i64 %r
}
define internal i64 @u16(ptr %d, i64 %o) #1 {
  %p = getelementptr i8, ptr %d, i64 %o
  %v = load i16, ptr %p, align 1
  %r = zext i16 %v to i64
  ret i64 %r
}
define internal i64 @u32(ptr %d, i64 %o) #1 {
  %p = getelementptr i8, ptr %d, i64 %o
  %v = load i32, ptr %p, align 1
  %r = zext i32 %v to i64
  ret i64 %r
}
define internal i64 @u64(ptr %d, i64 %o) #1 {
  %p = getelementptr i8, ptr %d, i64 %o
  %v = load i64, ptr %p, align 1
  ret i64 %v
}
; a field of section %i's header: the 8 bytes (@sh64) or 4 bytes (@sh32) at byte %f
define internal i64 @sh64(ptr %d, i64 %shoff, i64 %i, i64 %f) #1 {
  %h = mul i64 %i, 64
  %a = add i64 %shoff, %h
  %o = add i64 %a, %f
  %v = call i64 @u64(ptr %d, i64 %o)
  ret i64 %v
}
define internal i64 @sh32(ptr %d, i64 %shoff, i64 %i, i64 %f) #1 {
  %h = mul i64 %i, 64
  %a = add i64 %shoff, %h
  %o = add i64 %a, %f
  %v = call i64 @u32(ptr %d, i64 %o)
  ret i64 %v
}
define internal i64 @get(ptr %w, i64 %k) #1 {
  %p = getelementptr i64, ptr %w, i64 %k
  %v = load i64, ptr %p
  ret i64 %v
}
define internal void @put(ptr %w, i64 %k, i64 %v) #1 {
  %p = getelementptr i64, ptr %w, i64 %k
  store i64 %v, ptr %p
  ret void
}

; the length of the NUL-terminated string at %o, which must end before %lim; -1 if it does not
define internal i64 @strlen_in(ptr %d, i64 %o, i64 %lim) #1 {
entry:
  br label %loop
loop:
  %q = phi i64 [%o, %entry], [%q1, %next]
  %in = icmp ult i64 %q, %lim
  br i1 %in, label %body, label %fail
body:
  %c = call i64 @u8(ptr %d, i64 %q)
  %z = icmp eq i64 %c, 0
  br i1 %z, label %done, label %next
next:
  %q1 = add i64 %q, 1
  br label %loop
done:
  %len = sub i64 %q, %o
  ret i64 %len
fail:
  ret i64 -1
}

; whether the %len bytes at %o (inside %lim) are the low bytes of %w0, then of %w1
define internal i1 @starts(ptr %d, i64 %o, i64 %lim, i64 %w0, i64 %w1, i64 %len) #1 {
entry:
  %end = add i64 %o, %len
  %room = icmp ule i64 %end, %lim
  br i1 %room, label %loop, label %no
loop:
  %k = phi i64 [0, %entry], [%k1, %same]
  %more = icmp ult i64 %k, %len
  br i1 %more, label %body, label %yes
body:
  %lo = icmp ult i64 %k, 8
  %word = select i1 %lo, i64 %w0, i64 %w1
  %k8 = and i64 %k, 7
  %sh = shl i64 %k8, 3
  %b0 = lshr i64 %word, %sh
  %b = and i64 %b0, 255
  %at = add i64 %o, %k
  %c = call i64 @u8(ptr %d, i64 %at)
  %eq = icmp eq i64 %c, %b
  %k1 = add i64 %k, 1
  br i1 %eq, label %same, label %no
same:
  br label %loop
yes:
  ret i1 true
no:
  ret i1 false
}

define internal void @copy(i64 %dst, i64 %src, i64 %len) #1 {
  %r = call { i64, i64, i64 } asm sideeffect "rep movsb",
      "={di},={si},={cx},0,1,2,~{memory},~{dirflag},~{fpsr},~{flags}"(i64 %dst, i64 %src, i64 %len)
  ret void
}
define internal void @zero(i64 %dst, i64 %len) #1 {
  %r = call { i64, i64 } asm sideeffect "rep stosb",
      "={di},={cx},0,1,{al},~{memory},~{dirflag},~{fpsr},~{flags}"(i64 %dst, i64 %len, i8 0)
  ret void
}

define i64 @hotlink_quick_scan(ptr %d, i64 %n, ptr %out) #0 {
entry:
  %iv = alloca i64
  %symtab.v = alloca i64
  %eh.v = alloca i64
  %pool.v = alloca i64
  %cnt.v = alloca i64
  %cnt2.v = alloca i64
  %small = icmp ult i64 %n, 64
  br i1 %small, label %no, label %ident

ident:
  %mag = call i64 @u32(ptr %d, i64 0)
  %cls = call i64 @u16(ptr %d, i64 4)
  %ety = call i64 @u16(ptr %d, i64 16)
  %mach = call i64 @u16(ptr %d, i64 18)
  %i1 = icmp ne i64 %mag, 1179403647         ; \x7fELF
  %i2 = icmp ne i64 %cls, 258                 ; ELFCLASS64, ELFDATA2LSB
  %i3 = icmp ne i64 %ety, 1                   ; ET_REL
  %i4 = icmp ne i64 %mach, 62                 ; EM_X86_64
  %i12 = or i1 %i1, %i2
  %i34 = or i1 %i3, %i4
  %ibad = or i1 %i12, %i34
  br i1 %ibad, label %no, label %header

header:
  %shoff = call i64 @u64(ptr %d, i64 40)
  %shent = call i64 @u16(ptr %d, i64 58)
  %shnum = call i64 @u16(ptr %d, i64 60)
  %shstr = call i64 @u16(ptr %d, i64 62)
  %h1 = icmp ne i64 %shent, 64
  %h2 = icmp eq i64 %shnum, 0
  %h3 = icmp ugt i64 %shnum, 64
  %h4 = icmp uge i64 %shstr, %shnum
  %h5 = icmp eq i64 %shoff, 0
  %h6 = icmp ugt i64 %shoff, %n
  %hroom = sub i64 %n, %shoff
  %htab = mul i64 %shnum, 64
  %h7 = icmp ugt i64 %htab, %hroom
  %hb1 = or i1 %h1, %h2
  %hb2 = or i1 %h3, %h4
  %hb3 = or i1 %h5, %h6
  %hb4 = or i1 %hb1, %hb2
  %hb5 = or i1 %hb3, %h7
  %hbad = or i1 %hb4, %hb5
  br i1 %hbad, label %no, label %init

init:
  call void @put(ptr %out, i64 12, i64 %shnum)
  call void @put(ptr %out, i64 13, i64 %shoff)
  call void @put(ptr %out, i64 0, i64 0)
  call void @put(ptr %out, i64 1, i64 0)
  call void @put(ptr %out, i64 2, i64 0)
  call void @put(ptr %out, i64 3, i64 1)
  call void @put(ptr %out, i64 4, i64 1)
  call void @put(ptr %out, i64 5, i64 1)
  store i64 0, ptr %iv
  br label %init.head
init.head:
  %ii = load i64, ptr %iv
  %imore = icmp ult i64 %ii, 64
  br i1 %imore, label %init.body, label %p1
init.body:
  %ipl = add i64 %ii, 16
  call void @put(ptr %out, i64 %ipl, i64 -1)
  %irl = add i64 %ii, 80
  call void @put(ptr %out, i64 %irl, i64 0)
  %ii1 = add i64 %ii, 1
  store i64 %ii1, ptr %iv
  br label %init.head

; pass 1: every section inside the file, alignments, no section type only the general link takes, one symbol table
p1:
  store i64 0, ptr %iv
  store i64 -1, ptr %symtab.v
  br label %p1.head
p1.head:
  %a.i = load i64, ptr %iv
  %a.more = icmp ult i64 %a.i, %shnum
  br i1 %a.more, label %p1.body, label %p1.done
p1.body:
  %a.type = call i64 @sh32(ptr %d, i64 %shoff, i64 %a.i, i64 4)
  %a.off = call i64 @sh64(ptr %d, i64 %shoff, i64 %a.i, i64 24)
  %a.size = call i64 @sh64(ptr %d, i64 %shoff, i64 %a.i, i64 32)
  %a.al = call i64 @sh64(ptr %d, i64 %shoff, i64 %a.i, i64 48)
  %a.e1 = icmp ugt i64 %a.off, %n
  %a.left = sub i64 %n, %a.off
  %a.e2 = icmp ugt i64 %a.size, %a.left
  %a.am1 = sub i64 %a.al, 1
  %a.and = and i64 %a.al, %a.am1
  %a.e3 = icmp ne i64 %a.and, 0
  %a.e4 = icmp ugt i64 %a.al, 4096
  %a.t9 = icmp eq i64 %a.type, 9              ; SHT_REL
  %a.tl = sub i64 %a.type, 14
  %a.e5 = icmp ult i64 %a.tl, 5               ; SHT_INIT_ARRAY .. SHT_SYMTAB_SHNDX
  %a.b1 = or i1 %a.e1, %a.e2
  %a.b2 = or i1 %a.e3, %a.e4
  %a.b3 = or i1 %a.t9, %a.e5
  %a.b4 = or i1 %a.b1, %a.b2
  %a.bad = or i1 %a.b3, %a.b4
  br i1 %a.bad, label %no, label %p1.sym
p1.sym:
  %a.isst = icmp eq i64 %a.type, 2
  br i1 %a.isst, label %p1.st, label %p1.next
p1.st:
  %a.prev = load i64, ptr %symtab.v
  %a.dup = icmp sge i64 %a.prev, 0
  br i1 %a.dup, label %no, label %p1.st2
p1.st2:
  store i64 %a.i, ptr %symtab.v
  br label %p1.next
p1.next:
  %a.i1 = add i64 %a.i, 1
  store i64 %a.i1, ptr %iv
  br label %p1.head
p1.done:
  %symtab = load i64, ptr %symtab.v
  %nost = icmp slt i64 %symtab, 0
  br i1 %nost, label %no, label %strs
strs:
  %ss.type = call i64 @sh32(ptr %d, i64 %shoff, i64 %shstr, i64 4)
  %stroff = call i64 @sh64(ptr %d, i64 %shoff, i64 %shstr, i64 24)
  %strsize = call i64 @sh64(ptr %d, i64 %shoff, i64 %shstr, i64 32)
  %strend = add i64 %stroff, %strsize
  %ss.bad = icmp ne i64 %ss.type, 3
  br i1 %ss.bad, label %no, label %p2

; pass 2: what each allocated section is, its place in its pool's block; relocation sections
p2:
  store i64 1, ptr %iv
  store i64 0, ptr %eh.v
  br label %p2.head
p2.head:
  %b.i = load i64, ptr %iv
  %b.more = icmp ult i64 %b.i, %shnum
  br i1 %b.more, label %p2.body, label %syms
p2.body:
  %b.nameo = call i64 @sh32(ptr %d, i64 %shoff, i64 %b.i, i64 0)
  %b.type = call i64 @sh32(ptr %d, i64 %shoff, i64 %b.i, i64 4)
  %b.flags = call i64 @sh64(ptr %d, i64 %shoff, i64 %b.i, i64 8)
  %b.size = call i64 @sh64(ptr %d, i64 %shoff, i64 %b.i, i64 32)
  %b.link = call i64 @sh32(ptr %d, i64 %shoff, i64 %b.i, i64 40)
  %b.info = call i64 @sh32(ptr %d, i64 %shoff, i64 %b.i, i64 44)
  %b.al = call i64 @sh64(ptr %d, i64 %shoff, i64 %b.i, i64 48)
  %b.alloc = and i64 %b.flags, 2
  %b.isalloc = icmp ne i64 %b.alloc, 0
  br i1 %b.isalloc, label %p2.alloc, label %p2.rela
p2.alloc:
  %b.gen = and i64 %b.flags, 2147484672       ; SHF_TLS | SHF_EXCLUDE
  %b.isgen = icmp ne i64 %b.gen, 0
  br i1 %b.isgen, label %no, label %p2.k1
p2.k1:
  %b.isprog = icmp eq i64 %b.type, 1
  %b.ex = and i64 %b.flags, 4
  %b.isex = icmp ne i64 %b.ex, 0
  %b.code = and i1 %b.isprog, %b.isex
  br i1 %b.code, label %p2.code, label %p2.k2
p2.code:
  store i64 0, ptr %pool.v
  br label %p2.place
p2.k2:
  %b.isnob = icmp eq i64 %b.type, 8
  br i1 %b.isnob, label %p2.data, label %p2.k3
p2.data:
  store i64 2, ptr %pool.v
  br label %p2.place
p2.k3:
  %b.isnote = icmp eq i64 %b.type, 7
  br i1 %b.isnote, label %p2.next, label %p2.k4
p2.k4:
  %b.isuw = icmp eq i64 %b.type, 1879048193   ; SHT_X86_64_UNWIND
  %b.named = or i1 %b.isprog, %b.isuw
  br i1 %b.named, label %p2.name, label %no
p2.name:
  %b.np = add i64 %stroff, %b.nameo
  %b.ninb = icmp ult i64 %b.nameo, %strsize
  br i1 %b.ninb, label %p2.term, label %no
p2.term:
  %b.nlen = call i64 @strlen_in(ptr %d, i64 %b.np, i64 %strend)
  %b.unterm = icmp slt i64 %b.nlen, 0
  br i1 %b.unterm, label %no, label %p2.cls
p2.cls:
  ; ".eh_frame\0"
  %b.iseh0 = call i1 @starts(ptr %d, i64 %b.np, i64 %strend, i64 7881706606887986478, i64 101, i64 10)
  %b.iseh = or i1 %b.iseh0, %b.isuw
  br i1 %b.iseh, label %p2.eh, label %p2.k5
p2.eh:
  %b.preveh = load i64, ptr %eh.v
  %b.haseh = icmp ne i64 %b.preveh, 0
  br i1 %b.haseh, label %no, label %p2.eh2
p2.eh2:
  store i64 %b.i, ptr %eh.v
  br label %p2.next
p2.k5:
  ; ".ctors" and ".dtors": initializers, the general link's
  %b.ct = call i1 @starts(ptr %d, i64 %b.np, i64 %strend, i64 126935333364526, i64 0, i64 6)
  %b.dt = call i1 @starts(ptr %d, i64 %b.np, i64 %strend, i64 126935333364782, i64 0, i64 6)
  %b.init = or i1 %b.ct, %b.dt
  br i1 %b.init, label %no, label %p2.k6
p2.k6:
  ; writable data, except ".data.rel.ro" (written only by relocation): DATA, else RODATA
  %b.relro = call i1 @starts(ptr %d, i64 %b.np, i64 %strend, i64 7309956141274981422, i64 1869753964, i64 12)
  %b.w = and i64 %b.flags, 1
  %b.isw = icmp ne i64 %b.w, 0
  %b.notro = xor i1 %b.relro, true
  %b.isdata = and i1 %b.isw, %b.notro
  %b.pool = select i1 %b.isdata, i64 2, i64 1
  store i64 %b.pool, ptr %pool.v
  br label %p2.place
p2.place:
  %c.pool = load i64, ptr %pool.v
  %c.sz = call i64 @get(ptr %out, i64 %c.pool)
  %c.ak = add i64 %c.pool, 3
  %c.pa = call i64 @get(ptr %out, i64 %c.ak)
  %c.big = icmp ugt i64 %b.al, 1
  br i1 %c.big, label %p2.aligned, label %p2.put
p2.aligned:
  %c.gt = icmp ugt i64 %b.al, %c.pa
  %c.na = select i1 %c.gt, i64 %b.al, i64 %c.pa
  call void @put(ptr %out, i64 %c.ak, i64 %c.na)
  %c.am1 = sub i64 %b.al, 1
  %c.t = add i64 %c.sz, %c.am1
  %c.neg = sub i64 0, %b.al
  %c.o1 = and i64 %c.t, %c.neg
  br label %p2.put
p2.put:
  %c.o = phi i64 [%c.sz, %p2.place], [%c.o1, %p2.aligned]
  %c.w = shl i64 %c.pool, 56
  %c.word = or i64 %c.w, %c.o
  %c.pk = add i64 %b.i, 16
  call void @put(ptr %out, i64 %c.pk, i64 %c.word)
  %c.end = add i64 %c.o, %b.size
  call void @put(ptr %out, i64 %c.pool, i64 %c.end)
  br label %p2.next
p2.rela:
  %r.is = icmp eq i64 %b.type, 4
  br i1 %r.is, label %p2.r1, label %p2.next
p2.r1:
  %r.m = urem i64 %b.size, 24
  %r.b1 = icmp ne i64 %r.m, 0
  %r.b2 = icmp eq i64 %b.info, 0
  %r.b3 = icmp uge i64 %b.info, %shnum
  %r.b4 = icmp ne i64 %b.link, %symtab
  %r.o1 = or i1 %r.b1, %r.b2
  %r.o2 = or i1 %r.b3, %r.b4
  %r.bad = or i1 %r.o1, %r.o2
  br i1 %r.bad, label %no, label %p2.r2
p2.r2:
  %r.k = add i64 %b.info, 80
  %r.cur = call i64 @get(ptr %out, i64 %r.k)
  %r.dup = icmp ne i64 %r.cur, 0
  br i1 %r.dup, label %no, label %p2.r3
p2.r3:
  call void @put(ptr %out, i64 %r.k, i64 %b.i)
  br label %p2.next
p2.next:
  %b.i1 = add i64 %b.i, 1
  store i64 %b.i1, ptr %iv
  br label %p2.head

; the symbol table: locals first; definitions in placed sections; undefined symbols to bind
syms:
  %eh = load i64, ptr %eh.v
  call void @put(ptr %out, i64 6, i64 %eh)
  %soff = call i64 @sh64(ptr %d, i64 %shoff, i64 %symtab, i64 24)
  %ssize = call i64 @sh64(ptr %d, i64 %shoff, i64 %symtab, i64 32)
  %strx = call i64 @sh32(ptr %d, i64 %shoff, i64 %symtab, i64 40)
  %first = call i64 @sh32(ptr %d, i64 %shoff, i64 %symtab, i64 44)
  %count = udiv i64 %ssize, 24
  %s.rem = urem i64 %ssize, 24
  %s.b1 = icmp ne i64 %s.rem, 0
  %s.b2 = icmp eq i64 %count, 0
  %s.b3 = icmp uge i64 %count, 100
  %s.b4 = icmp uge i64 %strx, %shnum
  %s.b5 = icmp eq i64 %first, 0
  %s.b6 = icmp ugt i64 %first, %count
  %s.o1 = or i1 %s.b1, %s.b2
  %s.o2 = or i1 %s.b3, %s.b4
  %s.o3 = or i1 %s.b5, %s.b6
  %s.o4 = or i1 %s.o1, %s.o2
  %s.bad = or i1 %s.o3, %s.o4
  br i1 %s.bad, label %no, label %syms2
syms2:
  %t.type = call i64 @sh32(ptr %d, i64 %shoff, i64 %strx, i64 4)
  %str2 = call i64 @sh64(ptr %d, i64 %shoff, i64 %strx, i64 24)
  %str2size = call i64 @sh64(ptr %d, i64 %shoff, i64 %strx, i64 32)
  %str2end = add i64 %str2, %str2size
  call void @put(ptr %out, i64 10, i64 %count)
  call void @put(ptr %out, i64 11, i64 %soff)
  call void @put(ptr %out, i64 14, i64 %first)
  %t.bad = icmp ne i64 %t.type, 3
  br i1 %t.bad, label %no, label %locals
locals:
  store i64 0, ptr %iv
  br label %l.head
l.head:
  %l.i = load i64, ptr %iv
  %l.more = icmp ult i64 %l.i, %first
  br i1 %l.more, label %l.body, label %globals
l.body:
  %l.e0 = mul i64 %l.i, 24
  %l.e = add i64 %soff, %l.e0
  %l.ei = add i64 %l.e, 4
  %l.info = call i64 @u8(ptr %d, i64 %l.ei)
  %l.ex = add i64 %l.e, 6
  %l.shndx = call i64 @u16(ptr %d, i64 %l.ex)
  %l.b1 = icmp uge i64 %l.info, 16
  %l.typ = and i64 %l.info, 15
  %l.b2 = icmp eq i64 %l.typ, 6               ; STT_TLS
  %l.b3 = icmp eq i64 %l.typ, 10              ; STT_GNU_IFUNC
  %l.far = icmp uge i64 %l.shndx, %shnum
  %l.notabs = icmp ne i64 %l.shndx, 65521     ; SHN_ABS
  %l.b4 = and i1 %l.far, %l.notabs
  ; a value that could pass 2**64 once its section's address is added (Python's integers do not wrap)
  %l.ev = add i64 %l.e, 8
  %l.value = call i64 @u64(ptr %d, i64 %l.ev)
  %l.vbig = icmp ugt i64 %l.value, 281474976710656
  %l.b5 = and i1 %l.vbig, %l.notabs
  %l.o1 = or i1 %l.b1, %l.b2
  %l.o2 = or i1 %l.b3, %l.b4
  %l.o3 = or i1 %l.o1, %l.o2
  %l.bad = or i1 %l.o3, %l.b5
  br i1 %l.bad, label %no, label %l.next
l.next:
  %l.i1 = add i64 %l.i, 1
  store i64 %l.i1, ptr %iv
  br label %l.head
globals:
  store i64 0, ptr %cnt.v
  store i64 0, ptr %cnt2.v
  br label %g.head
g.head:
  %g.i = load i64, ptr %iv
  %g.more = icmp ult i64 %g.i, %count
  br i1 %g.more, label %g.body, label %relocs
g.body:
  %g.e0 = mul i64 %g.i, 24
  %g.e = add i64 %soff, %g.e0
  %g.nameo = call i64 @u32(ptr %d, i64 %g.e)
  %g.ei = add i64 %g.e, 4
  %g.info = call i64 @u8(ptr %d, i64 %g.ei)
  %g.eo = add i64 %g.e, 5
  %g.other = call i64 @u8(ptr %d, i64 %g.eo)
  %g.ex = add i64 %g.e, 6
  %g.shndx = call i64 @u16(ptr %d, i64 %g.ex)
  %g.es = add i64 %g.e, 16
  %g.size = call i64 @u64(ptr %d, i64 %g.es)
  %g.b1 = icmp ult i64 %g.info, 16
  %g.typ = and i64 %g.info, 15
  %g.b2 = icmp eq i64 %g.typ, 6
  %g.b3 = icmp eq i64 %g.typ, 10
  %g.b4 = icmp uge i64 %g.shndx, %shnum
  %g.ev = add i64 %g.e, 8
  %g.value = call i64 @u64(ptr %d, i64 %g.ev)
  %g.b5 = icmp ugt i64 %g.value, 281474976710656
  %g.o1 = or i1 %g.b1, %g.b2
  %g.o2 = or i1 %g.b3, %g.b4
  %g.o3 = or i1 %g.o1, %g.o2
  %g.bad = or i1 %g.o3, %g.b5
  br i1 %g.bad, label %no, label %g.name
g.name:
  %g.np = add i64 %str2, %g.nameo
  %g.ninb = icmp ult i64 %g.nameo, %str2size
  %g.len0 = call i64 @strlen_in(ptr %d, i64 %g.np, i64 %str2end)
  %g.len = select i1 %g.ninb, i64 %g.len0, i64 -1
  %g.undef = icmp eq i64 %g.shndx, 0
  br i1 %g.undef, label %g.import, label %g.def
g.import:
  ; a name, terminated inside the string table, not empty
  %gi.b1 = icmp slt i64 %g.len, 1
  %gi.k = load i64, ptr %cnt2.v
  %gi.b2 = icmp uge i64 %gi.k, 64
  %gi.bad = or i1 %gi.b1, %gi.b2
  br i1 %gi.bad, label %no, label %g.import2
g.import2:
  %gi.w0 = mul i64 %gi.k, 4
  %gi.w = add i64 %gi.w0, 728
  call void @put(ptr %out, i64 %gi.w, i64 %g.i)
  %gi.w1 = add i64 %gi.w, 1
  call void @put(ptr %out, i64 %gi.w1, i64 %g.np)
  %gi.w2 = add i64 %gi.w, 2
  call void @put(ptr %out, i64 %gi.w2, i64 %g.len)
  %gi.bind = lshr i64 %g.info, 4
  %gi.weak = icmp eq i64 %gi.bind, 2
  %gi.wk = zext i1 %gi.weak to i64
  %gi.w3 = add i64 %gi.w, 3
  call void @put(ptr %out, i64 %gi.w3, i64 %gi.wk)
  %gi.k1 = add i64 %gi.k, 1
  store i64 %gi.k1, ptr %cnt2.v
  br label %g.next
g.def:
  %gd.pk = add i64 %g.shndx, 16
  %gd.pl = call i64 @get(ptr %out, i64 %gd.pk)
  %gd.unplaced = icmp slt i64 %gd.pl, 0
  br i1 %gd.unplaced, label %no, label %g.def2
g.def2:
  %gd.hasname = icmp ne i64 %g.nameo, 0
  br i1 %gd.hasname, label %g.def3, label %g.next
g.def3:
  %gd.unterm = icmp slt i64 %g.len, 0
  br i1 %gd.unterm, label %no, label %g.def4
g.def4:
  %gd.empty = icmp eq i64 %g.len, 0             ; an empty name is not published
  br i1 %gd.empty, label %g.next, label %g.pub
g.pub:
  %gp.k = load i64, ptr %cnt.v
  %gp.full = icmp uge i64 %gp.k, 64
  br i1 %gp.full, label %no, label %g.pub2
g.pub2:
  ; flags: WEAK 1 (weak or unique binding), FUNC 2 (a function, or untyped in code), HIDDEN 4
  %gp.bind = lshr i64 %g.info, 4
  %gp.wk1 = icmp eq i64 %gp.bind, 2
  %gp.wk2 = icmp eq i64 %gp.bind, 10
  %gp.wk = or i1 %gp.wk1, %gp.wk2
  %gp.f1 = zext i1 %gp.wk to i64
  %gp.func = icmp eq i64 %g.typ, 2
  %gp.notype = icmp eq i64 %g.typ, 0
  %gp.xflags = call i64 @sh64(ptr %d, i64 %shoff, i64 %g.shndx, i64 8)
  %gp.xex = and i64 %gp.xflags, 4
  %gp.inexec = icmp ne i64 %gp.xex, 0
  %gp.untyped = and i1 %gp.notype, %gp.inexec
  %gp.code = or i1 %gp.func, %gp.untyped
  %gp.f2 = select i1 %gp.code, i64 2, i64 0
  %gp.vis = and i64 %g.other, 3
  %gp.h1 = icmp eq i64 %gp.vis, 1
  %gp.h2 = icmp eq i64 %gp.vis, 2
  %gp.hid = or i1 %gp.h1, %gp.h2
  %gp.f4 = select i1 %gp.hid, i64 4, i64 0
  %gp.f12 = or i64 %gp.f1, %gp.f2
  %gp.flags = or i64 %gp.f12, %gp.f4
  %gp.w0 = mul i64 %gp.k, 6
  %gp.w = add i64 %gp.w0, 344
  call void @put(ptr %out, i64 %gp.w, i64 %g.i)
  %gp.w1 = add i64 %gp.w, 1
  call void @put(ptr %out, i64 %gp.w1, i64 %g.np)
  %gp.w2 = add i64 %gp.w, 2
  call void @put(ptr %out, i64 %gp.w2, i64 %g.len)
  %gp.w3 = add i64 %gp.w, 3
  call void @put(ptr %out, i64 %gp.w3, i64 %gp.flags)
  %gp.w4 = add i64 %gp.w, 4
  call void @put(ptr %out, i64 %gp.w4, i64 %g.size)
  %gp.k1 = add i64 %gp.k, 1
  store i64 %gp.k1, ptr %cnt.v
  br label %g.next
g.next:
  %g.i1 = add i64 %g.i, 1
  store i64 %g.i1, ptr %iv
  br label %g.head

; relocations of the placed sections and the .eh_frame: kinds the quick link writes, symbols in the table
relocs:
  %npub = load i64, ptr %cnt.v
  call void @put(ptr %out, i64 8, i64 %npub)
  %nimp = load i64, ptr %cnt2.v
  call void @put(ptr %out, i64 9, i64 %nimp)
  store i64 1, ptr %iv
  br label %r.head
r.head:
  %x.i = load i64, ptr %iv
  %x.more = icmp ult i64 %x.i, %shnum
  br i1 %x.more, label %r.body, label %ehf
r.body:
  %x.rk = add i64 %x.i, 80
  %x.r = call i64 @get(ptr %out, i64 %x.rk)
  %x.none = icmp eq i64 %x.r, 0
  br i1 %x.none, label %r.next, label %r.target
r.target:
  %x.pk = add i64 %x.i, 16
  %x.pl = call i64 @get(ptr %out, i64 %x.pk)
  %x.placed = icmp sge i64 %x.pl, 0
  %x.iseh = icmp eq i64 %x.i, %eh
  %x.want = or i1 %x.placed, %x.iseh
  br i1 %x.want, label %r.rows, label %r.next
r.rows:
  %x.roff = call i64 @sh64(ptr %d, i64 %shoff, i64 %x.r, i64 24)
  %x.rsize = call i64 @sh64(ptr %d, i64 %shoff, i64 %x.r, i64 32)
  %x.k = udiv i64 %x.rsize, 24
  %x.many = icmp ugt i64 %x.k, 200
  br i1 %x.many, label %no, label %r.rows2
r.rows2:
  store i64 0, ptr %cnt.v
  br label %rr.head
rr.head:
  %y.j = load i64, ptr %cnt.v
  %y.more = icmp ult i64 %y.j, %x.k
  br i1 %y.more, label %rr.body, label %r.next
rr.body:
  %y.e0 = mul i64 %y.j, 24
  %y.e = add i64 %x.roff, %y.e0
  %y.ei = add i64 %y.e, 8
  %y.info = call i64 @u64(ptr %d, i64 %y.ei)
  %y.kind = and i64 %y.info, 4294967295
  %y.sym = lshr i64 %y.info, 32
  %y.k0 = icmp eq i64 %y.kind, 0
  %y.k1 = icmp eq i64 %y.kind, 1
  %y.k2 = icmp eq i64 %y.kind, 2
  %y.k4 = icmp eq i64 %y.kind, 4
  %y.k41 = icmp eq i64 %y.kind, 41
  %y.k42 = icmp eq i64 %y.kind, 42
  %y.o1 = or i1 %y.k0, %y.k1
  %y.o2 = or i1 %y.k2, %y.k4
  %y.o3 = or i1 %y.k41, %y.k42
  %y.o4 = or i1 %y.o1, %y.o2
  %y.ok = or i1 %y.o3, %y.o4
  %y.symok = icmp ult i64 %y.sym, %count
  %y.good = and i1 %y.ok, %y.symok
  br i1 %y.good, label %rr.next, label %no
rr.next:
  %y.j1 = add i64 %y.j, 1
  store i64 %y.j1, ptr %cnt.v
  br label %rr.head
r.next:
  %x.i1 = add i64 %x.i, 1
  store i64 %x.i1, ptr %iv
  br label %r.head

; the .eh_frame: CIEs of the one standard form, FDEs with checked programs, each pc_begin relocated to code
ehf:
  call void @put(ptr %out, i64 7, i64 0)
  %noeh = icmp eq i64 %eh, 0
  br i1 %noeh, label %yes, label %ehf1
ehf1:
  %eoff = call i64 @sh64(ptr %d, i64 %shoff, i64 %eh, i64 24)
  %esize = call i64 @sh64(ptr %d, i64 %shoff, i64 %eh, i64 32)
  store i64 0, ptr %iv
  store i64 0, ptr %cnt.v
  store i64 0, ptr %cnt2.v
  br label %w.head
w.head:
  %w.pos = load i64, ptr %iv
  %w.p4 = add i64 %w.pos, 4
  %w.room = icmp ule i64 %w.p4, %esize
  br i1 %w.room, label %w.len, label %w.done
w.len:
  %w.at = add i64 %eoff, %w.pos
  %w.length = call i64 @u32(ptr %d, i64 %w.at)
  %w.zero = icmp eq i64 %w.length, 0
  br i1 %w.zero, label %w.done, label %w.rec
w.rec:
  %w.end = add i64 %w.p4, %w.length
  %w.short = icmp ult i64 %w.length, 4
  %w.past = icmp ugt i64 %w.end, %esize
  %w.bad = or i1 %w.short, %w.past
  br i1 %w.bad, label %no, label %w.id
w.id:
  %w.ida = add i64 %w.at, 4
  %w.id0 = call i64 @u32(ptr %d, i64 %w.ida)
  %w.endat = add i64 %eoff, %w.end
  %w.iscie = icmp eq i64 %w.id0, 0
  br i1 %w.iscie, label %w.cie, label %w.fde
w.cie:
  ; 01 'z' 'R' 00, code align 1, data align -8, return address 16, augmentation 1 byte: 0x1b
  %ci.p17 = add i64 %w.pos, 17
  %ci.fits = icmp ule i64 %ci.p17, %w.end
  br i1 %ci.fits, label %w.cie2, label %no
w.cie2:
  %ci.a = add i64 %w.at, 8
  %ci.w = call i64 @u64(ptr %d, i64 %ci.a)
  %ci.b = add i64 %w.at, 16
  %ci.enc = call i64 @u8(ptr %d, i64 %ci.b)
  %ci.s1 = icmp eq i64 %ci.w, 76693139361004033
  %ci.s2 = icmp eq i64 %ci.enc, 27
  %ci.std = and i1 %ci.s1, %ci.s2
  %ci.k = load i64, ptr %cnt2.v
  %ci.room = icmp ult i64 %ci.k, 8
  %ci.ok0 = and i1 %ci.std, %ci.room
  br i1 %ci.ok0, label %w.cie3, label %no
w.cie3:
  %ci.prog = add i64 %w.at, 17
  %ci.good = call i1 @program(ptr %d, i64 %ci.prog, i64 %w.endat)
  br i1 %ci.good, label %w.cie4, label %no
w.cie4:
  %ci.slot = add i64 %ci.k, 144
  call void @put(ptr %out, i64 %ci.slot, i64 %w.pos)
  %ci.k1 = add i64 %ci.k, 1
  store i64 %ci.k1, ptr %cnt2.v
  br label %w.next
w.fde:
  ; its CIE: one of those checked; pc_begin, pc_range (below 2 GiB), no augmentation data, a checked program
  %fd.cie = sub i64 %w.p4, %w.id0
  %fd.neg = icmp ugt i64 %w.id0, %w.p4
  %fd.p17 = add i64 %w.pos, 17
  %fd.short = icmp ugt i64 %fd.p17, %w.end
  %fd.b0 = or i1 %fd.neg, %fd.short
  br i1 %fd.b0, label %no, label %w.fcie
w.fcie:
  %fc.n = load i64, ptr %cnt2.v
  store i64 0, ptr %pool.v
  br label %fc.head
fc.head:
  %fc.k = load i64, ptr %pool.v
  %fc.more = icmp ult i64 %fc.k, %fc.n
  br i1 %fc.more, label %fc.body, label %no
fc.body:
  %fc.slot = add i64 %fc.k, 144
  %fc.at = call i64 @get(ptr %out, i64 %fc.slot)
  %fc.hit = icmp eq i64 %fc.at, %fd.cie
  %fc.k1 = add i64 %fc.k, 1
  store i64 %fc.k1, ptr %pool.v
  br i1 %fc.hit, label %w.fde2, label %fc.head
w.fde2:
  %fd.ra = add i64 %w.at, 12
  %fd.range = call i64 @u32(ptr %d, i64 %fd.ra)
  %fd.aa = add i64 %w.at, 16
  %fd.aug = call i64 @u8(ptr %d, i64 %fd.aa)
  %fd.neg2 = icmp uge i64 %fd.range, 2147483648
  %fd.hasaug = icmp ne i64 %fd.aug, 0
  %fd.n = load i64, ptr %cnt.v
  %fd.full = icmp uge i64 %fd.n, 64
  %fd.b1 = or i1 %fd.neg2, %fd.hasaug
  %fd.b2 = or i1 %fd.b1, %fd.full
  br i1 %fd.b2, label %no, label %w.fde3
w.fde3:
  %fd.prog = add i64 %w.at, 17
  %fd.good = call i1 @program(ptr %d, i64 %fd.prog, i64 %w.endat)
  br i1 %fd.good, label %w.fde4, label %no
w.fde4:
  %fd.field = add i64 %w.pos, 8
  %fd.s1 = add i64 %fd.n, 152
  call void @put(ptr %out, i64 %fd.s1, i64 %fd.field)
  %fd.s2 = add i64 %fd.n, 216
  call void @put(ptr %out, i64 %fd.s2, i64 %fd.range)
  %fd.s3 = add i64 %fd.n, 280
  call void @put(ptr %out, i64 %fd.s3, i64 0)
  %fd.n1 = add i64 %fd.n, 1
  store i64 %fd.n1, ptr %cnt.v
  br label %w.next
w.next:
  store i64 %w.end, ptr %iv
  br label %w.head
w.done:
  ; nothing but zeros after the records
  %z.pos = load i64, ptr %iv
  call void @put(ptr %out, i64 7, i64 %z.pos)
  call void @put(ptr %out, i64 15, i64 0)
  br label %z.head
z.head:
  %z.q = phi i64 [%z.pos, %w.done], [%z.q1, %z.next]
  %z.more = icmp ult i64 %z.q, %esize
  br i1 %z.more, label %z.body, label %claims
z.body:
  %z.at = add i64 %eoff, %z.q
  %z.c = call i64 @u8(ptr %d, i64 %z.at)
  %z.nz = icmp ne i64 %z.c, 0
  %z.q1 = add i64 %z.q, 1
  br i1 %z.nz, label %no, label %z.next
z.next:
  br label %z.head

; every relocation of the .eh_frame: PC32 at a pc_begin of its own, to code of this object, range inside
claims:
  %nfde = load i64, ptr %cnt.v
  %m.rk = add i64 %eh, 80
  %m.r = call i64 @get(ptr %out, i64 %m.rk)
  %m.none = icmp eq i64 %m.r, 0
  br i1 %m.none, label %m.norows, label %m.rows
m.norows:
  %m.nofde = icmp eq i64 %nfde, 0
  br i1 %m.nofde, label %yes, label %no
m.rows:
  %m.roff = call i64 @sh64(ptr %d, i64 %shoff, i64 %m.r, i64 24)
  %m.rsize = call i64 @sh64(ptr %d, i64 %shoff, i64 %m.r, i64 32)
  %m.k = udiv i64 %m.rsize, 24
  %m.count = icmp ne i64 %m.k, %nfde
  br i1 %m.count, label %no, label %m.loop
m.loop:
  store i64 0, ptr %cnt2.v
  br label %mr.head
mr.head:
  %mr.j = load i64, ptr %cnt2.v
  %mr.more = icmp ult i64 %mr.j, %m.k
  br i1 %mr.more, label %mr.body, label %yes
mr.body:
  %mr.e0 = mul i64 %mr.j, 24
  %mr.e = add i64 %m.roff, %mr.e0
  %mr.off = call i64 @u64(ptr %d, i64 %mr.e)
  %mr.ei = add i64 %mr.e, 8
  %mr.info = call i64 @u64(ptr %d, i64 %mr.ei)
  %mr.ea = add i64 %mr.e, 16
  %mr.add = call i64 @u64(ptr %d, i64 %mr.ea)
  %mr.kind = and i64 %mr.info, 4294967295
  %mr.sym = lshr i64 %mr.info, 32
  %mr.pc = icmp eq i64 %mr.kind, 2
  br i1 %mr.pc, label %mf.start, label %no
mf.start:
  store i64 0, ptr %pool.v
  br label %mf.head
mf.head:
  %mf.k = load i64, ptr %pool.v
  %mf.more = icmp ult i64 %mf.k, %nfde
  br i1 %mf.more, label %mf.body, label %no
mf.body:
  %mf.s1 = add i64 %mf.k, 152
  %mf.field = call i64 @get(ptr %out, i64 %mf.s1)
  %mf.hit = icmp eq i64 %mf.field, %mr.off
  %mf.k1 = add i64 %mf.k, 1
  store i64 %mf.k1, ptr %pool.v
  br i1 %mf.hit, label %mf.found, label %mf.head
mf.found:
  %mf.s3 = add i64 %mf.k, 280
  %mf.taken = call i64 @get(ptr %out, i64 %mf.s3)
  %mf.dup = icmp ne i64 %mf.taken, 0
  br i1 %mf.dup, label %no, label %mf.target
mf.target:
  call void @put(ptr %out, i64 %mf.s3, i64 1)
  %mt.e0 = mul i64 %mr.sym, 24
  %mt.e = add i64 %soff, %mt.e0
  %mt.ex = add i64 %mt.e, 6
  %mt.x = call i64 @u16(ptr %d, i64 %mt.ex)
  %mt.ev = add i64 %mt.e, 8
  %mt.value = call i64 @u64(ptr %d, i64 %mt.ev)
  %mt.x0 = icmp eq i64 %mt.x, 0
  %mt.xfar = icmp uge i64 %mt.x, %shnum
  %mt.xbad = or i1 %mt.x0, %mt.xfar
  br i1 %mt.xbad, label %no, label %mt.code
mt.code:
  %mt.pk = add i64 %mt.x, 16
  %mt.pl = call i64 @get(ptr %out, i64 %mt.pk)
  %mt.pool = ashr i64 %mt.pl, 56
  %mt.notcode = icmp ne i64 %mt.pool, 0
  ; value and addend small enough that no sum below wraps
  %mt.vbig = icmp ugt i64 %mt.value, 1099511627776
  %mt.abias = add i64 %mr.add, 1099511627776
  %mt.abig = icmp ugt i64 %mt.abias, 2199023255552
  %mt.c1 = or i1 %mt.notcode, %mt.vbig
  %mt.c2 = or i1 %mt.c1, %mt.abig
  br i1 %mt.c2, label %no, label %mt.range
mt.range:
  %mt.start = add i64 %mt.value, %mr.add
  %mt.neg = icmp slt i64 %mt.start, 0
  %mt.s2 = add i64 %mf.k, 216
  %mt.range0 = call i64 @get(ptr %out, i64 %mt.s2)
  %mt.stop = add i64 %mt.start, %mt.range0
  %mt.xsize = call i64 @sh64(ptr %d, i64 %shoff, i64 %mt.x, i64 32)
  %mt.over = icmp sgt i64 %mt.stop, %mt.xsize
  %mt.bad = or i1 %mt.neg, %mt.over
  br i1 %mt.bad, label %no, label %mr.next
mr.next:
  %mr.j1 = add i64 %mr.j, 1
  store i64 %mr.j1, ptr %cnt2.v
  br label %mr.head

yes:
  ret i64 1
no:
  ret i64 0
}

; one relocation section's rows applied to a section written at %dst (run address %p, %size bytes);
; %orig: its bytes in the object (GOT loads are decided on them); 0 where the quick link would not write
define internal i64 @apply_rows(ptr %d, i64 %roff, i64 %k, i64 %dst, i64 %p, i64 %size, i64 %orig, ptr %val) #1 {
entry:
  br label %head
head:
  %j = phi i64 [0, %entry], [%j1, %next]
  %more = icmp ult i64 %j, %k
  br i1 %more, label %body, label %done
body:
  %e0 = mul i64 %j, 24
  %e = add i64 %roff, %e0
  %off = call i64 @u64(ptr %d, i64 %e)
  %ei = add i64 %e, 8
  %info = call i64 @u64(ptr %d, i64 %ei)
  %ea = add i64 %e, 16
  %a = call i64 @u64(ptr %d, i64 %ea)
  %kind = and i64 %info, 4294967295
  %sym = lshr i64 %info, 32
  %sp = getelementptr i64, ptr %val, i64 %sym
  %s = load i64, ptr %sp
  %j1 = add i64 %j, 1
  ; an addend within 2**40 either way, so no sum below wraps
  %abias = add i64 %a, 1099511627776
  %abig = icmp ugt i64 %abias, 2199023255552
  br i1 %abig, label %fail, label %kinds
kinds:
  %isnone = icmp eq i64 %kind, 0
  br i1 %isnone, label %next, label %k1
k1:
  %is64 = icmp eq i64 %kind, 1
  br i1 %is64, label %r64, label %k2
r64:
  %lt8 = icmp ult i64 %size, 8
  %lim8 = sub i64 %size, 8
  %past8 = icmp ugt i64 %off, %lim8
  %bad8 = or i1 %lt8, %past8
  br i1 %bad8, label %fail, label %w64
w64:
  %v64 = add i64 %s, %a
  %at64 = add i64 %dst, %off
  %ptr64 = inttoptr i64 %at64 to ptr
  store i64 %v64, ptr %ptr64, align 1
  br label %next
k2:
  %is32 = icmp eq i64 %kind, 2
  %isplt = icmp eq i64 %kind, 4
  %ispc = or i1 %is32, %isplt
  br i1 %ispc, label %pc, label %k3
pc:
  %sbig = icmp ugt i64 %s, 281474976710656
  br i1 %sbig, label %fail, label %pc2
pc2:
  %t = add i64 %s, %a
  %pp = add i64 %p, %off
  %v = sub i64 %t, %pp
  br label %w32
k3:
  ; GOTPCRELX, REX_GOTPCRELX: relaxed to a direct reference, as x86_64.relax_got_loads decides
  %sz = icmp eq i64 %s, 0
  %sbig2 = icmp ugt i64 %s, 281474976710656
  %lt2 = icmp ult i64 %off, 2
  %lt4 = icmp ult i64 %size, 4
  %lim4 = sub i64 %size, 4
  %past4 = icmp ugt i64 %off, %lim4
  %g1 = or i1 %sz, %sbig2
  %g2 = or i1 %lt2, %lt4
  %g3 = or i1 %g1, %g2
  %g4 = or i1 %g3, %past4
  br i1 %g4, label %fail, label %k3b
k3b:
  %gt = add i64 %s, %a
  %gp = add i64 %p, %off
  %gv = sub i64 %gt, %gp
  %gvb = add i64 %gv, 2147483648
  %gfar = icmp uge i64 %gvb, 4294967296
  br i1 %gfar, label %fail, label %k3c
k3c:
  %o2 = sub i64 %off, 2
  %oa = add i64 %orig, %o2
  %opp = inttoptr i64 %oa to ptr
  %op = load i8, ptr %opp, align 1
  %ob = getelementptr i8, ptr %opp, i64 1
  %modrm = load i8, ptr %ob, align 1
  %ismov = icmp eq i8 %op, -117               ; 0x8b mov
  %mm = and i8 %modrm, -57                     ; 0xc7
  %rip = icmp eq i8 %mm, 5
  %mov = and i1 %ismov, %rip
  br i1 %mov, label %relax_mov, label %k3d
relax_mov:
  %da = add i64 %dst, %o2
  %dp = inttoptr i64 %da to ptr
  store i8 -115, ptr %dp, align 1              ; 0x8d lea (ModRM kept)
  br label %w32g
k3d:
  %isx = icmp eq i64 %kind, 41
  %isff = icmp eq i8 %op, -1
  %call = icmp eq i8 %modrm, 21                ; ff 15: call *foo@GOTPCREL(%rip)
  %jmp = icmp eq i8 %modrm, 37                 ; ff 25: jmp *foo@GOTPCREL(%rip)
  %c1 = and i1 %isx, %isff
  %cc = and i1 %c1, %call
  %cj = and i1 %c1, %jmp
  br i1 %cc, label %relax_call, label %k3e
relax_call:
  %ca = add i64 %dst, %o2
  %cp = inttoptr i64 %ca to ptr
  store i8 103, ptr %cp, align 1               ; 67 e8: addr32 call
  %cp1 = getelementptr i8, ptr %cp, i64 1
  store i8 -24, ptr %cp1, align 1
  br label %w32g
k3e:
  br i1 %cj, label %relax_jmp, label %fail
relax_jmp:
  %ja = add i64 %dst, %o2
  %jp = inttoptr i64 %ja to ptr
  store i8 -112, ptr %jp, align 1              ; 90 e9: nop; jmp
  %jp1 = getelementptr i8, ptr %jp, i64 1
  store i8 -23, ptr %jp1, align 1
  br label %w32g
w32g:
  br label %w32
w32:
  %v32 = phi i64 [%v, %pc2], [%gv, %w32g]
  %lt4b = icmp ult i64 %size, 4
  %lim4b = sub i64 %size, 4
  %past4b = icmp ugt i64 %off, %lim4b
  %vb = add i64 %v32, 2147483648
  %far = icmp uge i64 %vb, 4294967296
  %b1 = or i1 %lt4b, %past4b
  %b2 = or i1 %b1, %far
  br i1 %b2, label %fail, label %store32
store32:
  %at32 = add i64 %dst, %off
  %ptr32 = inttoptr i64 %at32 to ptr
  %tr = trunc i64 %v32 to i32
  store i32 %tr, ptr %ptr32, align 1
  br label %next
next:
  br label %head
done:
  ret i64 1
fail:
  ret i64 0
}

; apply's bump step for one block (slot: 0-2 the pools' blocks, 3 the .eh_frame's): at its pool's
; top out[1156 + 2 * pool], in 16-byte granules, if the top is aligned and the block fits below
; the top's end and in the first region [out[1162], out[1163]); its address goes to out[984 + slot]
define internal i64 @take(ptr %out, i64 %pool, i64 %size, i64 %align, i64 %slot) #1 {
entry:
  %bp = getelementptr i64, ptr %out, i64 984
  %none = icmp eq i64 %size, 0
  br i1 %none, label %empty, label %some
empty:
  call void @put(ptr %bp, i64 %slot, i64 0)
  ret i64 1
some:
  %small = icmp ult i64 %align, 16
  %a = select i1 %small, i64 16, i64 %align
  %t2 = mul i64 %pool, 2
  %ti = add i64 %t2, 1156
  %top = call i64 @get(ptr %out, i64 %ti)
  %ei = add i64 %ti, 1
  %end = call i64 @get(ptr %out, i64 %ei)
  %am = sub i64 %a, 1
  %mis = and i64 %top, %am
  %r0 = add i64 %size, 15
  %r = and i64 %r0, -16
  %nt = add i64 %top, %r
  %lo = call i64 @get(ptr %out, i64 1162)
  %hi = call i64 @get(ptr %out, i64 1163)
  %b1 = icmp ne i64 %mis, 0
  %b2 = icmp ugt i64 %nt, %end
  %b3 = icmp ult i64 %top, %lo
  %b4 = icmp ugt i64 %nt, %hi
  %b12 = or i1 %b1, %b2
  %b34 = or i1 %b3, %b4
  %bad = or i1 %b12, %b34
  br i1 %bad, label %no, label %yes
yes:
  call void @put(ptr %bp, i64 %slot, i64 %top)
  call void @put(ptr %out, i64 %ti, i64 %nt)
  ret i64 1
no:
  ret i64 0
}

; one block as arena.pack_block packs it, at out[1165 + %k] if it has bytes; the next %k
define internal i64 @pack(ptr %out, i64 %k, i64 %pool, i64 %base, i64 %size, i64 %frame) #1 {
entry:
  %none = icmp eq i64 %size, 0
  br i1 %none, label %skip, label %store
skip:
  ret i64 %k
store:
  %p = shl i64 %pool, 47
  %f = shl i64 %frame, 49
  %z = shl i64 %size, 50
  %v0 = or i64 %base, %p
  %v1 = or i64 %v0, %f
  %v = or i64 %v1, %z
  %w = add i64 %k, 1165
  call void @put(ptr %out, i64 %w, i64 %v)
  %k1 = add i64 %k, 1
  ret i64 %k1
}

define i64 @hotlink_quick_apply(ptr %d, i64 %n, ptr %out) #0 {
entry:
  %ehsize = call i64 @get(ptr %out, i64 7)
  %ehz = icmp eq i64 %ehsize, 0
  %ehs4 = add i64 %ehsize, 4
  %ehn = select i1 %ehz, i64 0, i64 %ehs4
  %bump = call i64 @get(ptr %out, i64 1155)
  %isbump = icmp ne i64 %bump, 0
  br i1 %isbump, label %b.take, label %begin
; the blocks at the pools' tops (Python then moves the tops up), or 0 with nothing written
b.take:
  %bs0 = call i64 @get(ptr %out, i64 0)
  %bs1 = call i64 @get(ptr %out, i64 1)
  %bs2 = call i64 @get(ptr %out, i64 2)
  %ba0 = call i64 @get(ptr %out, i64 3)
  %ba1 = call i64 @get(ptr %out, i64 4)
  %ba2 = call i64 @get(ptr %out, i64 5)
  %k0 = call i64 @take(ptr %out, i64 0, i64 %bs0, i64 %ba0, i64 0)
  %k1 = call i64 @take(ptr %out, i64 1, i64 %bs1, i64 %ba1, i64 1)
  %k2 = call i64 @take(ptr %out, i64 2, i64 %bs2, i64 %ba2, i64 2)
  %k3 = call i64 @take(ptr %out, i64 1, i64 %ehn, i64 8, i64 3)
  %k01 = and i64 %k0, %k1
  %k23 = and i64 %k2, %k3
  %kall = and i64 %k01, %k23
  %kbad = icmp eq i64 %kall, 0
  br i1 %kbad, label %fail, label %begin
begin:
  ; _GLOBAL_OFFSET_TABLE_, if the object refers to it, is its first block (as the general link has it)
  %gk = call i64 @get(ptr %out, i64 1164)
  %hasg = icmp ne i64 %gk, 0
  br i1 %hasg, label %g.set, label %start
g.set:
  %gb0 = call i64 @get(ptr %out, i64 984)
  %gb1 = call i64 @get(ptr %out, i64 985)
  %gb2 = call i64 @get(ptr %out, i64 986)
  %gb3 = call i64 @get(ptr %out, i64 987)
  %gz2 = icmp ne i64 %gb2, 0
  %gf2 = select i1 %gz2, i64 %gb2, i64 %gb3
  %gz1 = icmp ne i64 %gb1, 0
  %gf1 = select i1 %gz1, i64 %gb1, i64 %gf2
  %gz0 = icmp ne i64 %gb0, 0
  %gf0 = select i1 %gz0, i64 %gb0, i64 %gf1
  %gi = add i64 %gk, 988
  call void @put(ptr %out, i64 %gi, i64 %gf0)
  br label %start
start:
  %bases = getelementptr i64, ptr %out, i64 984
  %delta = call i64 @get(ptr %out, i64 988)
  %imp = getelementptr i64, ptr %out, i64 989
  %val = getelementptr i64, ptr %out, i64 1053
  %shnum = call i64 @get(ptr %out, i64 12)
  %shoff = call i64 @get(ptr %out, i64 13)
  %eh = call i64 @get(ptr %out, i64 6)
  %count = call i64 @get(ptr %out, i64 10)
  %soff = call i64 @get(ptr %out, i64 11)
  %nimp = call i64 @get(ptr %out, i64 9)
  %npub = call i64 @get(ptr %out, i64 8)
  %ehb = call i64 @get(ptr %bases, i64 3)
  br label %v.head
; every symbol's value: absolute, or its section's address plus its value (0 for sections not loaded)
v.head:
  %vi = phi i64 [0, %start], [%vi1, %v.store]
  %vmore = icmp ult i64 %vi, %count
  br i1 %vmore, label %v.body, label %imports
v.body:
  %ve0 = mul i64 %vi, 24
  %ve = add i64 %soff, %ve0
  %vex = add i64 %ve, 6
  %vx = call i64 @u16(ptr %d, i64 %vex)
  %vev = add i64 %ve, 8
  %vv = call i64 @u64(ptr %d, i64 %vev)
  %vabs = icmp eq i64 %vx, 65521
  br i1 %vabs, label %v.store, label %v.sec
v.sec:
  %vpk = add i64 %vx, 16
  %vpl = call i64 @get(ptr %out, i64 %vpk)
  %vplaced = icmp sge i64 %vpl, 0
  br i1 %vplaced, label %v.placed, label %v.other
v.placed:
  %vpool = lshr i64 %vpl, 56
  %vo = and i64 %vpl, 72057594037927935
  %vbase = call i64 @get(ptr %bases, i64 %vpool)
  %vaddr = add i64 %vbase, %vo
  br label %v.add
v.other:
  %visx = icmp eq i64 %vx, %eh
  %vnz = icmp ne i64 %vx, 0
  %viseh = and i1 %visx, %vnz
  %vaddr2 = select i1 %viseh, i64 %ehb, i64 0
  br label %v.add
v.add:
  %va = phi i64 [%vaddr, %v.placed], [%vaddr2, %v.other]
  %vsum = add i64 %va, %vv
  br label %v.store
v.store:
  %vres = phi i64 [%vv, %v.body], [%vsum, %v.add]
  %vp = getelementptr i64, ptr %val, i64 %vi
  store i64 %vres, ptr %vp
  %vi1 = add i64 %vi, 1
  br label %v.head
imports:
  br label %m.head
m.head:
  %mi = phi i64 [0, %imports], [%mi1, %m.body]
  %mmore = icmp ult i64 %mi, %nimp
  br i1 %mmore, label %m.body, label %sections
m.body:
  %mw0 = mul i64 %mi, 4
  %mw = add i64 %mw0, 728
  %msym = call i64 @get(ptr %out, i64 %mw)
  %maddr = call i64 @get(ptr %imp, i64 %mi)
  %mp = getelementptr i64, ptr %val, i64 %msym
  store i64 %maddr, ptr %mp
  %mi1 = add i64 %mi, 1
  br label %m.head
; the placed sections, written and relocated in file order
sections:
  br label %s.head
s.head:
  %si = phi i64 [1, %sections], [%si1, %s.next]
  %smore = icmp ult i64 %si, %shnum
  br i1 %smore, label %s.body, label %frames
s.body:
  %spk = add i64 %si, 16
  %spl = call i64 @get(ptr %out, i64 %spk)
  %ssize = call i64 @sh64(ptr %d, i64 %shoff, i64 %si, i64 32)
  %sunplaced = icmp slt i64 %spl, 0
  %sempty = icmp eq i64 %ssize, 0
  %sskip = or i1 %sunplaced, %sempty
  br i1 %sskip, label %s.next, label %s.write
s.write:
  %spool = lshr i64 %spl, 56
  %so = and i64 %spl, 72057594037927935
  %sbase = call i64 @get(ptr %bases, i64 %spool)
  %saddr = add i64 %sbase, %so
  %sdst = add i64 %saddr, %delta
  %stype = call i64 @sh32(ptr %d, i64 %shoff, i64 %si, i64 4)
  %snob = icmp eq i64 %stype, 8
  br i1 %snob, label %s.zero, label %s.copy
s.zero:
  call void @zero(i64 %sdst, i64 %ssize)
  br label %s.next
s.copy:
  %sfoff = call i64 @sh64(ptr %d, i64 %shoff, i64 %si, i64 24)
  %dint = ptrtoint ptr %d to i64
  %ssrc = add i64 %dint, %sfoff
  call void @copy(i64 %sdst, i64 %ssrc, i64 %ssize)
  %srk = add i64 %si, 80
  %sr = call i64 @get(ptr %out, i64 %srk)
  %snorel = icmp eq i64 %sr, 0
  br i1 %snorel, label %s.next, label %s.rel
s.rel:
  %rroff = call i64 @sh64(ptr %d, i64 %shoff, i64 %sr, i64 24)
  %rrsize = call i64 @sh64(ptr %d, i64 %shoff, i64 %sr, i64 32)
  %rk = udiv i64 %rrsize, 24
  %rok = call i64 @apply_rows(ptr %d, i64 %rroff, i64 %rk, i64 %sdst, i64 %saddr, i64 %ssize, i64 %ssrc, ptr %val)
  %rfail = icmp eq i64 %rok, 0
  br i1 %rfail, label %fail, label %s.next
s.next:
  %si1 = add i64 %si, 1
  br label %s.head
; the .eh_frame records and their terminator
frames:
  %fnone = icmp eq i64 %ehsize, 0
  br i1 %fnone, label %publish, label %f.write
f.write:
  %ffoff = call i64 @sh64(ptr %d, i64 %shoff, i64 %eh, i64 24)
  %fdint = ptrtoint ptr %d to i64
  %fsrc = add i64 %fdint, %ffoff
  %fdst = add i64 %ehb, %delta
  call void @copy(i64 %fdst, i64 %fsrc, i64 %ehsize)
  %fend = add i64 %fdst, %ehsize
  %fendp = inttoptr i64 %fend to ptr
  store i32 0, ptr %fendp, align 1
  %frk = add i64 %eh, 80
  %fr = call i64 @get(ptr %out, i64 %frk)
  %fnorel = icmp eq i64 %fr, 0
  br i1 %fnorel, label %publish, label %f.rel
f.rel:
  %frroff = call i64 @sh64(ptr %d, i64 %shoff, i64 %fr, i64 24)
  %frrsize = call i64 @sh64(ptr %d, i64 %shoff, i64 %fr, i64 32)
  %frk2 = udiv i64 %frrsize, 24
  %fok = call i64 @apply_rows(ptr %d, i64 %frroff, i64 %frk2, i64 %fdst, i64 %ehb, i64 %ehsize, i64 %fsrc, ptr %val)
  %ffail = icmp eq i64 %fok, 0
  br i1 %ffail, label %fail, label %publish
; the published definitions' values
publish:
  br label %p.head
p.head:
  %pi = phi i64 [0, %publish], [%pi1, %p.body]
  %pmore = icmp ult i64 %pi, %npub
  br i1 %pmore, label %p.body, label %done
p.body:
  %pw0 = mul i64 %pi, 6
  %pw = add i64 %pw0, 344
  %psym = call i64 @get(ptr %out, i64 %pw)
  %pp = getelementptr i64, ptr %val, i64 %psym
  %pv = load i64, ptr %pp
  %pw5 = add i64 %pw, 5
  call void @put(ptr %out, i64 %pw5, i64 %pv)
  %pi1 = add i64 %pi, 1
  br label %p.head
done:
  ; the blocks, packed for the unit
  %pb0 = call i64 @get(ptr %bases, i64 0)
  %pb1 = call i64 @get(ptr %bases, i64 1)
  %pb2 = call i64 @get(ptr %bases, i64 2)
  %ps0 = call i64 @get(ptr %out, i64 0)
  %ps1 = call i64 @get(ptr %out, i64 1)
  %ps2 = call i64 @get(ptr %out, i64 2)
  %pk1 = call i64 @pack(ptr %out, i64 0, i64 0, i64 %pb0, i64 %ps0, i64 0)
  %pk2 = call i64 @pack(ptr %out, i64 %pk1, i64 1, i64 %pb1, i64 %ps1, i64 0)
  %pk3 = call i64 @pack(ptr %out, i64 %pk2, i64 2, i64 %pb2, i64 %ps2, i64 0)
  %pk4 = call i64 @pack(ptr %out, i64 %pk3, i64 1, i64 %ehb, i64 %ehn, i64 1)
  call void @put(ptr %out, i64 1169, i64 %pk4)
  ; the last step, when nothing can fail any more: the unwinder learns of the records
  %rf = call i64 @get(ptr %out, i64 1153)
  %rfnone = icmp eq i64 %rf, 0
  %noframes = icmp eq i64 %ehsize, 0
  %skip = or i1 %rfnone, %noframes
  br i1 %skip, label %ok, label %register
register:
  %rfp = inttoptr i64 %rf to ptr
  %ehbp = inttoptr i64 %ehb to ptr
  call void %rfp(ptr %ehbp)
  %rc = call i64 @get(ptr %out, i64 1154)
  %rcp = inttoptr i64 %rc to ptr
  %rc0 = atomicrmw add ptr %rcp, i64 1 seq_cst
  br label %ok
ok:
  ret i64 1
fail:
  ret i64 0
}

attributes #0 = { nounwind "no-jump-tables"="true" }
attributes #1 = { nounwind alwaysinline "no-jump-tables"="true" }
"""

_NAMES = ("hotlink_quick_scan", "hotlink_quick_apply")


class Core:
    """The compiled core, as ctypes functions over raw addresses."""

    def __init__(self, addresses: dict[str, int]) -> None:
        i64 = ctypes.c_int64
        self.scan = ctypes.CFUNCTYPE(i64, ctypes.c_char_p, i64, ctypes.c_void_p)(addresses["hotlink_quick_scan"])
        self.apply = ctypes.CFUNCTYPE(i64, ctypes.c_char_p, i64, ctypes.c_void_p)(addresses["hotlink_quick_apply"])


_lock = threading.Lock()
compiled: Core | None = None        # once compiled
_failed = False


def core() -> Core | None:
    """The core, compiled on first use in this process; None if it cannot
    be (then the quick link runs in Python)."""
    global compiled, _failed
    if compiled is None and not _failed:
        with _lock:
            if compiled is None and not _failed:
                try:
                    compiled = Core(relocation_free_code(_IR + CFA_IR, "the quick link's native core", _NAMES))
                except Exception:       # no llvmlite, no executable memory: Python does the work
                    _failed = True
    return compiled
