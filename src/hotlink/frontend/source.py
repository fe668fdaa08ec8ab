"""The one source classifier: what a user passed to ``add``, ``add_many``,
``replace`` or ``compile_many``, described once.

``classify`` takes a path (``str`` or ``os.PathLike``), source text (``str``),
bytes (``bytes``, ``bytearray``, ``memoryview``) or an llvmlite module, with
an optional ``language``, reads a file exactly once, and returns a
``ClassifiedSource``: the bytes, where they came from, and their kind (ELF
object, archive, LLVM IR text, bitcode, C, C++, llvmlite module). Objects and
archives go straight to the linker; everything else becomes a ``CompileJob``
(jobs.py).

The rules, in order:

* ``bytes`` are taken as they are;
* an ``os.PathLike``, or a one-line ``str`` shorter than 4096 characters that
  names a file system entry, is a path: the file is read with one ``open``
  (a directory or an unreadable file is an ``OSError`` that says so; a
  ``str`` that names nothing is text);
* any other ``str`` is source text;
* an llvmlite ``Module``/``ModuleRef`` is IR, whatever ``language`` says;
* with ``language`` the bytes are that language; without it, an ELF or ar
  magic number makes an object or archive (not for text), then a path's
  extension decides (``.ll``/``.bc``, ``.c``, ``.cc``/``.cpp``/``.cxx``/``.C``),
  then the content (bitcode magic, lines only LLVM IR starts with).

What nothing recognises is a ``MalformedObjectError``, except a one-line
string, which most likely is a mistyped path: ``FileNotFoundError``.
"""
from __future__ import annotations

import enum
import errno
import os
import re
from typing import NamedTuple, Protocol, TypeGuard

from ..archive import is_archive
from ..elf import is_elf
from ..errors import MalformedObjectError

LANGUAGES = {"llvm": "llvm", "ir": "llvm", "c": "c", "c++": "c++", "cxx": "c++", "cpp": "c++"}
EXTENSIONS = {".ll": "llvm", ".bc": "llvm", ".c": "c",
              ".cc": "c++", ".cpp": "c++", ".cxx": "c++", ".C": "c++"}
BITCODE_MAGIC = (b"BC\xc0\xde", b"\xde\xc0\x17\x0b")    # raw bitcode, bitcode wrapper
MAX_PATH_TEXT = 4096                                     # a longer str is source text, never a path

# Lines only LLVM IR text starts with (C never does): detection without a language.
_IR_LINE = re.compile(rb"^\s*(?:define\s|declare\s|target\s+(?:triple|datalayout)\s*=|source_filename\s*="
                      rb"|; ModuleID\s*=|[@%][-\w$.\"]+\s*=\s*(?:\w+\s+)*(?:global|constant|type)\b)",
                      re.MULTILINE)


class SourceKind(enum.Enum):
    """What a source is; its value reads well in messages."""
    OBJECT = "ELF object"
    ARCHIVE = "ar archive"
    IR_TEXT = "LLVM IR text"
    BITCODE = "LLVM bitcode"
    C = "C source"
    CXX = "C++ source"
    MODULE = "llvmlite module"

    @property
    def language(self) -> str | None:
        """The front end that compiles it: ``"llvm"``, ``"c"``, ``"c++"``; None for the linker's own input."""
        return _LANGUAGE_OF[self]

    @property
    def linkable(self) -> bool:
        """An object or archive: linked as it is, no front end involved."""
        return self in (SourceKind.OBJECT, SourceKind.ARCHIVE)


_LANGUAGE_OF = {SourceKind.OBJECT: None, SourceKind.ARCHIVE: None, SourceKind.IR_TEXT: "llvm",
                SourceKind.BITCODE: "llvm", SourceKind.MODULE: "llvm", SourceKind.C: "c", SourceKind.CXX: "c++"}


class ClassifiedSource(NamedTuple):
    """One source, classified: its bytes (a file is read once, here), its kind,
    and where it came from. (A NamedTuple: made on every ``add``, it must be cheap.)"""
    kind: SourceKind
    data: bytes                 # the object, archive, IR text (UTF-8), bitcode or C/C++ text
    origin: str                 # for messages: the path, "<bytes>", "<string>", "<llvm module NAME>"
    path: str | None = None     # the file the bytes were read from

    @property
    def language(self) -> str | None:
        return self.kind.language

    @property
    def name(self) -> str:
        """The origin as ``Library.add`` names units: the path, or ``<bytes>``."""
        return self.path if self.path is not None else "<bytes>"


class _LLVMModule(Protocol):
    """What an ``llvmlite.ir.Module`` and a ``llvmlite.binding.ModuleRef`` share
    here (``str()`` gives the IR text of either)."""
    name: str


class _ModuleRef(_LLVMModule, Protocol):
    def as_bitcode(self) -> bytes: ...


def normalize_language(language: object) -> str | None:
    """``"llvm"``, ``"c"`` or ``"c++"`` for ``language`` or one of its aliases
    (``"ir"``, ``"cxx"``, ``"cpp"``, any case); None for None; ValueError otherwise."""
    if language is None:
        return None
    lang = LANGUAGES.get(str(language).lower())
    if lang is None:
        raise ValueError(f"language={language!r} is not supported: expected 'llvm' (or 'ir'), "
                         f"'c' or 'c++' (or 'cxx', 'cpp'); compile other languages to an object "
                         f"file (.o) or archive (.a) and add that")
    return lang


def classify(source: object, language: str | None = None) -> ClassifiedSource:
    """Describe ``source``: read it if it is a path (once), and decide its kind.

    TypeError for something that is no source at all, an OSError naming the
    path for a file that cannot be read, MalformedObjectError (or
    FileNotFoundError for a one-line string) when nothing recognises it.
    """
    lang = normalize_language(language)
    if isinstance(source, (bytes, bytearray, memoryview)):       # first: the common case of a tiny add
        data = source if isinstance(source, bytes) else bytes(source)   # a CompiledObject keeps its declarations
        kind = _kind(data, lang, magic=lang is None)
        origin = "<bytes>"
    elif isinstance(source, os.PathLike):
        path = os.fsdecode(source)
        return _file(path, read_path(path), lang)
    elif isinstance(source, str):
        file = _read_if_path(source)
        if file is not None:
            return _file(source, file, lang)
        data = source.encode()
        kind = _kind(data, lang, magic=False)
        if kind is None and "\n" not in source:
            # one line, not an existing file, not IR: most likely a mistyped path
            raise FileNotFoundError(errno.ENOENT, "no such file (and not LLVM IR text)", source)
        origin = "<string>"
    elif is_llvmlite_module(source):
        return ClassifiedSource(SourceKind.MODULE, _module_bytes(source), _module_origin(source))
    else:
        raise TypeError(f"cannot link or compile a {type(source).__name__}: expected a path, bytes, "
                        f"IR or C text, or an llvmlite module")
    if kind is None:
        raise MalformedObjectError(
            f"{origin}: the input is not an ELF object or ar archive, and not LLVM IR or bitcode "
            f"(for C source pass language='c' or use a .c file)")
    return ClassifiedSource(kind, data, origin)


def _file(path: str, data: bytes, lang: str | None) -> ClassifiedSource:
    kind = _kind(data, lang or EXTENSIONS.get(os.path.splitext(path)[1]), magic=lang is None)
    if kind is None:
        raise MalformedObjectError(f"{path}: a file is not an ELF object or ar archive, and not LLVM IR "
                                   f"or bitcode (for C source pass language='c' or use a .c file)")
    return ClassifiedSource(kind, data, path, path)


def _read_if_path(text: str) -> bytes | None:
    """The bytes of the file ``text`` names, or None if it names none: it has
    a newline, is too long, or there is no such file (one ``open``, no
    ``stat`` first). A file that exists but cannot be read is an OSError."""
    if "\n" in text or len(text) >= MAX_PATH_TEXT:
        return None
    try:
        return read_path(text)
    except ValueError:                        # a NUL character: not a path
        return None
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG):
            return None
        raise


def _kind(data: bytes, language: str | None, magic: bool) -> SourceKind | None:
    """The kind of ``data``: by its magic number (if ``magic``), else by
    ``language`` (given, or from a file's extension), else by its content."""
    if magic:
        if is_elf(data):
            return SourceKind.OBJECT
        if is_archive(data):
            return SourceKind.ARCHIVE
    if language is None:
        language = detect_language(data)
    if language == "llvm":
        return SourceKind.BITCODE if is_bitcode(data) else SourceKind.IR_TEXT
    if language == "c":
        return SourceKind.C
    if language == "c++":
        return SourceKind.CXX
    return None


def read_path(path: str | os.PathLike[str]) -> bytes:
    """The bytes of the source file ``path``; an OSError saying it is a source
    that cannot be read (a directory, no permission, ...) otherwise."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except IsADirectoryError:
        raise IsADirectoryError(errno.EISDIR, "source is a directory, not a file", os.fspath(path)) from None
    except OSError as e:
        if e.errno is None:
            raise
        raise OSError(e.errno, f"cannot read source file ({e.strerror})", os.fspath(path)) from None


def is_bitcode(data: bytes) -> bool:
    return data[:4] in BITCODE_MAGIC


def is_source_text(data: bytes) -> bool:
    return b"\0" not in data[:4096]


def detect_language(data: bytes) -> str | None:
    """``"llvm"`` for bitcode or LLVM IR text, None for anything else (C cannot be told apart)."""
    if is_bitcode(data):
        return "llvm"
    if is_source_text(data) and _IR_LINE.search(data[:65536]):
        return "llvm"
    return None


def is_llvmlite_module(source: object) -> TypeGuard[_LLVMModule]:
    """An ``llvmlite.ir.Module`` or ``llvmlite.binding.ModuleRef`` (checked by
    name: importing llvmlite to ask would cost every ``add`` of an object)."""
    t = type(source)
    return t.__module__.startswith("llvmlite.") and t.__name__ in ("Module", "ModuleRef")


def _is_module_ref(module: _LLVMModule) -> TypeGuard[_ModuleRef]:
    return type(module).__name__ == "ModuleRef"


def _module_bytes(module: _LLVMModule) -> bytes:
    if _is_module_ref(module):
        return bytes(module.as_bitcode())     # exact, and cheaper to parse than text
    return str(module).encode()


def _module_origin(module: _LLVMModule) -> str:
    name = getattr(module, "name", "") or ""
    return f"<llvm module {name}>" if name and name != "<string>" else "<llvm module>"
