"""Buffers for pointer parameters: numpy arrays, ``bytearray``, ``memoryview``,
``array.array``, ctypes arrays and structures, ``bytes`` (read-only): anything
exposing the buffer protocol.

Each buffer argument stays exported for the duration of the call (so a
``bytearray`` cannot be resized and an exporter cannot free its memory while
native code uses it) and is released when the call returns.
Before the call hotlink checks what C cannot: the buffer must be C-contiguous,
writable unless the pointee is ``const``, and hold items of the pointee's type
(``double *`` takes float64 items, ``int *`` int32 items; ``void *`` and
pointers to structs take any bytes).  Each violation is a ``TypeError`` that
names the function, the parameter and what was passed.

Also accepted, unchecked: ``None`` (NULL), an ``int`` (an address), and ctypes
pointers, ``byref()`` results, ``c_void_p``/``c_char_p`` values and function
pointers, which ctypes passes as it always does.
"""
from __future__ import annotations

import ctypes
from typing import Any

from .signature import Element, Param

PyBUF_RECORDS_RO = 0x001C            # PyBUF_STRIDES | PyBUF_FORMAT: shape, strides and item format


class PyBuffer(ctypes.Structure):
    """CPython's ``Py_buffer`` (stable since 3.3)."""
    _fields_ = [("buf", ctypes.c_void_p), ("obj", ctypes.c_void_p), ("len", ctypes.c_ssize_t),
                ("itemsize", ctypes.c_ssize_t), ("readonly", ctypes.c_int), ("ndim", ctypes.c_int),
                ("format", ctypes.c_char_p), ("shape", ctypes.c_void_p), ("strides", ctypes.c_void_p),
                ("suboffsets", ctypes.c_void_p), ("internal", ctypes.c_void_p)]


_api = ctypes.pythonapi      # holds the GIL and raises the Python error a failed call sets
_get_buffer = _api.PyObject_GetBuffer
_get_buffer.argtypes = [ctypes.py_object, ctypes.POINTER(PyBuffer), ctypes.c_int]
_get_buffer.restype = ctypes.c_int
release = _api.PyBuffer_Release
release.argtypes = [ctypes.POINTER(PyBuffer)]
release.restype = None

# ctypes values that hold a pointer (their own buffer is the pointer, not the pointee): passed as they are
PASS_THROUGH: tuple[type, ...] = (
    ctypes.POINTER(ctypes.c_int).__bases__[0],      # ctypes._Pointer
    ctypes.c_void_p, ctypes.c_char_p, ctypes.c_wchar_p,
    type(ctypes.byref(ctypes.c_int())),               # what byref() returns
    ctypes.CFUNCTYPE(None).__bases__[0],              # ctypes._CFuncPtr
)

# struct-module item codes -> element kind
_KINDS = {**dict.fromkeys("bhilqn", "i"), **dict.fromkeys("BHILQN", "u"), **dict.fromkeys("efdg", "f"),
          "?": "b", "c": "c"}
_NUMPY_NAMES = {("i", 1): "int8", ("i", 2): "int16", ("i", 4): "int32", ("i", 8): "int64",
                ("u", 1): "uint8", ("u", 2): "uint16", ("u", 4): "uint32", ("u", 8): "uint64",
                ("f", 2): "float16", ("f", 4): "float32", ("f", 8): "float64", ("f", 16): "longdouble",
                ("b", 1): "bool", ("c", 1): "char"}


def item_kind(fmt: str) -> str | None:
    """The element kind of a buffer format (``"<d"`` -> ``"f"``); None for
    structured or big-endian items, which match only untyped pointers."""
    if fmt[:1] in ("@", "=", "<"):       # native or little-endian: this machine's order
        fmt = fmt[1:]
    return _KINDS.get(fmt) if len(fmt) == 1 else None


def matches(element: Element, kind: str | None, itemsize: int) -> bool:
    if element.kind == "c":           # char *: bytes-like, any 1-byte integer
        return kind in ("c", "i", "u") and itemsize == 1
    return kind == element.kind and itemsize == element.size


_from_buffer = ctypes.c_char.from_buffer
_addressof = ctypes.addressof
_POINTER_ITEMS = ("P", "z", "Z")        # item codes of ctypes pointer values (c_void_p, c_char_p, ...)


class PointerArg:
    """Converts the arguments of one pointer parameter (made once per callable;
    the verdict on each buffer format is remembered)."""

    __slots__ = ("param", "where", "const", "element", "_formats")

    def __init__(self, param: Param, where: str):
        self.param = param
        self.where = where
        self.const = param.type.const
        self.element = param.type.element
        self._formats: dict[tuple[str, int], str | None] = {}     # (format, itemsize) -> error or None

    def __call__(self, arg: Any, keep: list[Any]) -> Any:
        """What to pass for ``arg``: the address of its buffer (kept exported
        through ``keep`` until ``release_all(keep)``), or ``arg`` itself (None,
        an int, a ctypes pointer). TypeError if unfit."""
        if arg is None or type(arg) is int:
            return arg
        try:
            m = memoryview(arg)
        except TypeError:
            if isinstance(arg, PASS_THROUGH):       # byref(): no buffer of its own
                return arg
            raise TypeError(f"{self.where}: expected a buffer (numpy array, bytearray, memoryview, ...), an "
                            f"address (int) or None for {self.param.type.spelling}, got "
                            f"{type(arg).__name__}") from None
        fmt = m.format
        if (fmt[-1:] in _POINTER_ITEMS or fmt[:1] in ("&", "X")) and isinstance(arg, PASS_THROUGH):
            return arg                               # a ctypes pointer: its buffer is the pointer itself
        readonly = m.readonly
        if readonly and not self.const:
            raise TypeError(f"{self.where}: a read-only buffer ({type(arg).__name__}) cannot be passed as "
                            f"{self.param.type.spelling}: the function may write through a non-const pointer; "
                            f"pass a writable buffer (bytearray, a writable numpy array) or declare the "
                            f"pointee const")
        if not m.c_contiguous:
            raise TypeError(f"{self.where}: the {type(arg).__name__} is not C-contiguous (a strided or "
                            f"transposed view?): {self.param.type.spelling} needs its items next to each "
                            f"other; pass a contiguous copy (numpy.ascontiguousarray)")
        if self.element is not None:
            key = (fmt, m.itemsize)
            problem = self._formats.get(key, "?")
            if problem == "?":
                problem = self._formats[key] = self._format_problem(fmt, m.itemsize)
            if problem is not None:
                raise TypeError(f"{self.where}: {self.param.type.spelling} needs {problem}, got a "
                                f"{type(arg).__name__} of " + _items(fmt, m.itemsize))
        if not readonly and m.nbytes:
            c = _from_buffer(m)           # the common case, and the fast one: holds the export while alive
            keep.append(c)
            return _addressof(c)
        # read-only or empty: ctypes cannot take it, CPython's buffer API gives the address
        view = PyBuffer()
        _get_buffer(m, view, PyBUF_RECORDS_RO)
        keep.append(view)
        return view.buf

    def _format_problem(self, fmt: str, itemsize: int) -> str | None:
        assert self.element is not None
        return None if matches(self.element, item_kind(fmt), itemsize) else self.element.describe()


def _items(fmt: str, itemsize: int) -> str:
    kind = item_kind(fmt)
    got = _NUMPY_NAMES.get((kind, itemsize), "structured") if kind else "structured or big-endian"
    return f"{got} items (format {fmt!r}, {itemsize} byte{'s' if itemsize != 1 else ''} each)"


def release_all(keep: list[Any]) -> None:
    """Give back the buffers ``PointerArg`` exported.  The list is emptied: a
    frame kept alive by a traceback must not keep the buffers exported."""
    for v in keep:
        if type(v) is PyBuffer:
            release(v)
    keep.clear()
