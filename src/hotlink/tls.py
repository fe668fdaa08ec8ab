"""Thread-local storage: the unit's ``.tdata``/``.tbss`` as a real TLS module.

Only the dynamic loader can give a block of thread-local storage to every
thread, existing and future, and a module ID that ``__tls_get_addr``
knows.  So each unit with thread-locals gets a minimal shared object
(``dso.py``) whose ``PT_TLS`` is the unit's TLS image, loaded with
``dlopen``; ld.so writes its module ID and thread-pointer offset into the
object's data words, where hotlink reads them:

* general and local dynamic (``TLSGD``, ``TLSLD``, ``DTPOFF32/64``): a
  ``{module, offset}`` pair in the unit's memory for ``__tls_get_addr``;
  ld.so allocates each thread's block on first use and frees it at thread
  exit, and at ``dlclose`` when the unit is released after its grace period;
* initial and local exec (``GOTTPOFF``, ``TPOFF32/64``) and TLS
  descriptors (relaxed to initial exec, as ``ld`` does): the object is
  marked ``DF_STATIC_TLS``, so ld.so places its block at one offset from the
  thread pointer in every thread, existing ones included (``.tdata`` copied
  in).  That space is glibc's static TLS reserve, sized by the tunable
  ``glibc.rtld.optional_static_tls``.

References to the TLS of shared objects (libc's ``errno``, libstdc++'s
``__once_callable``) are looked up the same way: a shared object holding
relocations against the name, once per name, kept for the process.  An
initial-exec reference makes ld.so move that object's TLS into static TLS
if it can.

A TLS symbol's value in a link is its offset in its unit's TLS image.
"""
from __future__ import annotations

import struct
import threading
from typing import NamedTuple

from . import dso, elf
from .errors import LinkError, UndefinedSymbolError, UnsupportedRelocationError
from .x86_64 import Reloc

# kinds that need the variable at a fixed thread-pointer offset
STATIC_KINDS = frozenset((Reloc.GOTTPOFF, Reloc.TPOFF32, Reloc.TPOFF64, Reloc.GOTPC32_TLSDESC,
                          Reloc.TLSDESC_CALL, Reloc.TLSDESC))
STATIC_GRANULE = 16     # static TLS blocks: size and alignment a multiple of this (TlsModule)
TUNABLE_HINT = ("glibc's static TLS reserve is full: start the process with "
                "GLIBC_TUNABLES=glibc.rtld.optional_static_tls=<bytes> (e.g. 131072), or compile "
                "with -ftls-model=global-dynamic")


class StaticTlsFull(LinkError):
    """glibc's static TLS reserve has no room for a module's block."""


class TlsTarget(NamedTuple):
    """Where a thread-local variable lives, in every thread."""
    module: int             # TLS module ID (for __tls_get_addr)
    offset: int             # in the module's block (DTPOFF)
    tpoff: int | None       # from the thread pointer (TPOFF), if its block is static


class TlsModule:
    """A unit's TLS image, loaded as a module of its own."""

    __slots__ = ("so", "module", "tpoff", "size", "names", "closed")

    def __init__(self, name: str, image: bytes, size: int, align: int, static: bool):
        if static:
            # glibc takes static TLS back only from the top, block by block,
            # and a gap of alignment padding between two blocks stops it:
            # blocks that are whole multiples of one alignment pack without gaps
            align = max(align, STATIC_GRANULE)
            size = (size + align - 1) & -align
        relocs = [dso.Relocation(0, Reloc.DTPMOD64, None)]
        if static:
            relocs.append(dso.Relocation(8, Reloc.TPOFF64, None))
        data, data_at = dso.build(f"hotlink-tls:{name}", data=bytes(16), relocations=tuple(relocs),
                                  tls=dso.TlsImage(image, size, align), static_tls=static)
        try:
            self.so = dso.SharedObject(data, data_at, name=f"hotlink-tls:{name}")
        except LinkError as e:
            if static and "static TLS" in str(e):
                raise StaticTlsFull(f"unit {name!r}: {size} bytes of initial-exec thread-locals: "
                                    f"{TUNABLE_HINT}") from None
            raise
        self.module = self.so.word(0)
        self.tpoff = _signed(self.so.word(8)) if static else None
        self.size = size
        self.names: dict[str, int] = {}     # global thread-locals defined here -> offset
        self.closed = False
        if static:
            with _static_lock:
                _static.append(self)

    def target(self, offset: int) -> TlsTarget:
        return TlsTarget(self.module, offset, None if self.tpoff is None else self.tpoff + offset)

    def close(self) -> None:
        """Unload the module, freeing every thread's block of it.  glibc gives
        static TLS back only from the top of its reserve, so static modules
        are unloaded newest first: one closed under a live newer one waits."""
        if self.tpoff is None:
            self.so.close()
            return
        with _static_lock:      # releases run in whichever thread ends a grace period
            self.closed = True
            while _static and _static[-1].closed:
                _static.pop().so.close()


_static: list[TlsModule] = []     # static modules loaded, oldest first (see TlsModule.close)
_static_lock = threading.Lock()


def _signed(word: int) -> int:
    return word - (1 << 64) if word >> 63 else word


def layout(sections: list[tuple[int, int, int, bool]]) -> tuple[list[int], int, int]:
    """Offsets of TLS sections (key, size, align, nobits) in one image:
    ``.tdata`` first, then ``.tbss`` (the image's zero tail).  Returns the
    offsets in the order given, the image size and its alignment."""
    offsets = [0] * len(sections)
    size, align = 0, 1
    for nobits in (False, True):
        for n, (_, sz, a, nb) in enumerate(sections):
            if nb == nobits:
                a = max(a, 1)
                size = (size + a - 1) & -a
                offsets[n] = size
                size += sz
                align = max(align, a)
    return offsets, size, align


_external: dict[tuple[str, bool], TlsTarget] = {}
_external_objects: list[dso.SharedObject] = []   # kept loaded: the answers stay valid


def external(name: str, static: bool, referrer: str, needed: tuple[str, ...] = ()) -> TlsTarget:
    """Where the thread-local ``name`` of a loaded shared object lives, as
    ld.so resolves it (once per name and model, for the process); ``needed``:
    objects to look in besides the global scope."""
    key = (name, static)
    found = _external.get(key)
    if found is not None:
        return found
    relocs = [dso.Relocation(0, Reloc.DTPMOD64, name), dso.Relocation(8, Reloc.DTPOFF64, name)]
    if static:
        relocs.append(dso.Relocation(16, Reloc.TPOFF64, name))
    image, data_at = dso.build("hotlink-tls-ref", data=bytes(24), relocations=tuple(relocs),
                               symbols=(dso.Symbol(name, "undefined_tls"),), needed=needed)
    try:
        so = dso.SharedObject(image, data_at, name=f"hotlink-tls-ref:{name}")
    except LinkError as e:
        if "undefined symbol" in str(e):
            raise UndefinedSymbolError({name: [referrer]}) from None
        if "static TLS" in str(e):
            raise StaticTlsFull(f"{referrer}: initial-exec reference to the thread-local {name!r}: "
                                f"{TUNABLE_HINT}; or its object's thread-locals are already in dynamic "
                                f"use in some thread, which glibc cannot move: link this before the "
                                f"object's first use") from None
        raise
    _external_objects.append(so)
    found = _external[key] = TlsTarget(so.word(0), so.word(8), _signed(so.word(16)) if static else None)
    return found


def relocate_image(obj: elf.ObjectFile, section: int, image: bytearray, at: int,
                   values: list[int]) -> None:
    """Apply a ``.tdata`` section's relocations in the image: only absolute
    addresses (``R_X86_64_64``) mean something in an initial image."""
    for off, kind, si, a in obj.relocations(section):
        if kind == Reloc.R64:
            struct.pack_into("<Q", image, at + off, (values[si] + a) & ((1 << 64) - 1))
        elif kind != Reloc.NONE:
            raise UnsupportedRelocationError(
                f"{obj.name}:{obj.section_name(section)}+{off:#x}: relocation kind {kind} against "
                f"{obj.symbol_name(si)} in a thread-local initial image is not supported")


def pin_cxx_runtime() -> None:
    """Move libstdc++'s thread-locals into static TLS now, if it is loaded
    and nothing used them yet: glibc can do that only before their first use
    in any thread (which makes them dynamic for good), and code linked later
    (libre2's ``std::call_once``) may reach them with initial-exec
    relocations.  hotlink calls this before it first runs C++ itself
    (llvmlite: LLVM's initialization uses ``std::call_once``) and when
    ``load_shared`` loads libstdc++.  Best effort: without room, a later
    initial-exec reference gets the clear error."""
    try:
        external("_ZSt15__once_callable", True, "libstdc++.so.6", needed=("libstdc++.so.6",))
    except LinkError:
        pass
