"""Front-end options and jobs: what to compile, described as plain picklable
data so the same job runs in this process or in a worker process."""
from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import MalformedObjectError

LANGUAGES = {"llvm": "llvm", "ir": "llvm", "c": "c", "c++": "c++", "cxx": "c++", "cpp": "c++"}
EXTENSIONS = {".ll": "llvm", ".bc": "llvm", ".c": "c",
              ".cc": "c++", ".cpp": "c++", ".cxx": "c++", ".C": "c++"}
BITCODE_MAGIC = (b"BC\xc0\xde", b"\xde\xc0\x17\x0b")    # raw bitcode, bitcode wrapper
CRASH_MODES = ("abort", "segv", "exit", "hang")

# Lines only LLVM IR text starts with (C never does): detection without a language.
_IR_LINE = re.compile(rb"^\s*(?:define\s|declare\s|target\s+(?:triple|datalayout)\s*=|source_filename\s*="
                      rb"|; ModuleID\s*=|[@%][-\w$.\"]+\s*=\s*(?:\w+\s+)*(?:global|constant|type)\b)",
                      re.MULTILINE)


@dataclass(frozen=True)
class Options:
    """Front-end options, from ``Library.add(..., **options)`` and friends."""
    language: str | None = None       # "llvm", "c", "c++"; None: from the extension or content
    opt: int = 2                      # optimisation level 0..3
    cpu: str = "host"                 # LLVM cpu name / gcc -march; "host": this machine's
    features: str = ""                # IR only: extra LLVM target features ("+avx2,-fma")
    flags: tuple[str, ...] = ()       # C/C++ only: extra compiler flags
    cache: bool = True                # use the on-disk object cache
    cache_dir: str | None = None      # default: $HOTLINK_CACHE_DIR, $XDG_CACHE_HOME/hotlink, ~/.cache/hotlink
    cache_size: int | None = None     # bytes; default: $HOTLINK_CACHE_SIZE or 512 MiB
    isolate: bool = False             # compile even a single source in a worker process
    workers: int | None = None        # worker processes for several sources; None: CPU count
    timeout: float | None = None      # seconds per source in a worker; then it is killed
    crash: str | None = field(default=None, repr=False)   # tests: make the worker die

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> Options:
        """Check and normalise ``options``: TypeError for an unknown option or a
        value of the wrong type, ValueError for a value out of range, each
        naming the option and the value."""
        kw = dict(options)
        if "_crash" in kw:
            kw["crash"] = kw.pop("_crash")
        unknown = set(kw) - set(cls.__dataclass_fields__) - {"crash"}
        if unknown:
            raise TypeError(f"unknown front-end option(s): {', '.join(sorted(unknown))}; "
                            f"expected {', '.join(f for f in cls.__dataclass_fields__ if f != 'crash')}")
        if kw.get("language") is not None:
            lang = LANGUAGES.get(str(kw["language"]).lower())
            if lang is None:
                raise ValueError(f"language={kw['language']!r} is not supported: expected 'llvm' (or 'ir'), "
                                 f"'c' or 'c++' (or 'cxx', 'cpp'); compile other languages to an object "
                                 f"file (.o) or archive (.a) and add that")
            kw["language"] = lang
        if "opt" in kw and (not isinstance(kw["opt"], int) or isinstance(kw["opt"], bool)
                            or not 0 <= kw["opt"] <= 3):
            raise ValueError(f"opt={kw['opt']!r}: expected 0, 1, 2 or 3")
        for name in ("cpu", "features"):
            if name in kw and not isinstance(kw[name], str):
                raise TypeError(f"{name}={kw[name]!r}: expected a string")
        if kw.get("cpu") == "native":             # gcc's name for it; LLVM knows only "host"
            kw["cpu"] = "host"
        if "flags" in kw:
            kw["flags"] = _flags(kw["flags"])
        if kw.get("workers") is not None:
            w = kw["workers"]
            if not isinstance(w, int) or isinstance(w, bool):
                raise TypeError(f"workers={w!r}: expected a number of processes (an int) or None")
            if w < 1:
                raise ValueError(f"workers={w!r}: expected at least 1 (or None for the CPU count)")
        if kw.get("timeout") is not None:
            t = kw["timeout"]
            if not isinstance(t, (int, float)) or isinstance(t, bool):
                raise TypeError(f"timeout={t!r}: expected seconds (a number) or None")
            if not t > 0:
                raise ValueError(f"timeout={t!r}: expected a positive number of seconds (or None)")
        if kw.get("cache_size") is not None:
            kw["cache_size"] = parse_size(kw["cache_size"], "cache_size")
        if kw.get("crash") not in (None, *CRASH_MODES):
            raise ValueError(f"_crash={kw['crash']!r}: expected one of {CRASH_MODES}")
        if kw.get("cache_dir") is not None:
            try:
                kw["cache_dir"] = os.fspath(kw["cache_dir"])
            except TypeError:
                raise TypeError(f"cache_dir={kw['cache_dir']!r}: expected a path") from None
        return cls(**kw)


def _flags(flags: Any) -> tuple[str, ...]:
    if flags is None:
        return ()
    if isinstance(flags, str):
        return tuple(flags.split())
    if isinstance(flags, (bytes, bytearray)) or not hasattr(flags, "__iter__"):
        raise TypeError(f"flags={flags!r}: expected a list of compiler flags or one string of them")
    return tuple(map(str, flags))


_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(i?b?)\s*", re.IGNORECASE)


def parse_size(value: Any, what: str) -> int:
    """A size in bytes from an int or a string with an optional unit: ``"1G"``,
    ``"512MiB"``, ``"64k"``, ``"1000000"``, ``"2 GB"`` (units are binary and
    case-insensitive: K = KB = KiB = 1024). ValueError naming ``what`` (an
    option or environment variable) and the value otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"{what}={value!r}: a size cannot be negative")
        return value
    m = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if m is None or m.group(3).lower() not in (("", "b", "ib") if m.group(2) else ("", "b")):
        raise ValueError(f"{what}={value!r}: expected a size in bytes, optionally with a unit "
                         f"K, M, G or T (KiB, MiB, ..., binary; e.g. 512M or 1GiB)")
    return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2).lower() or " "))


class Source:
    """A source with its own front-end options, to mix settings in one
    ``add_many``/``compile_many``: ``Source("fast.c", opt=3, flags=["-ffast-math"])``.
    Its options override the call's."""

    __slots__ = ("source", "options")

    def __init__(self, source: Any, **options: Any):
        Options.parse(options)                       # reject bad options here, not later
        self.source = source
        self.options = options

    def __repr__(self) -> str:
        opts = "".join(f", {k}={v!r}" for k, v in self.options.items())
        return f"Source({str(self.source)[:40]!r}{opts})"


@dataclass(frozen=True)
class Job:
    """One source to compile: its language, its bytes, and where it came from."""
    language: str
    data: bytes                 # IR text (UTF-8), bitcode, or C/C++ text
    origin: str                 # a path or a description, for messages
    path: str | None            # C/C++ from a file: compiled in place (its #includes)
    options: Options

    @property
    def name(self) -> str:
        """The origin as ``Library.add`` names units: a path, or ``<bytes>``."""
        return self.origin if self.path or not self.origin.startswith("<") else "<bytes>"


def is_source_text(data: bytes) -> bool:
    return b"\0" not in data[:4096]


def make_job(source: Any, options: Options, data: bytes | None = None) -> Job:
    """Classify ``source`` (path, text, bytes, llvmlite module) into a Job.

    Raises MalformedObjectError when nothing recognises it.
    """
    lang = options.language
    path: str | None = None
    origin = "<bytes>"
    if _is_llvmlite_module(source):
        data, origin, lang = _module_bytes(source), _module_origin(source), "llvm"
    elif isinstance(source, os.PathLike) or (isinstance(source, str) and _looks_like_path(source)):
        path = os.fspath(source)
        origin = path
        if data is None:
            data = read_path(path)
        lang = lang or EXTENSIONS.get(os.path.splitext(path)[1])
    elif isinstance(source, str):
        data, origin = source.encode(), "<string>"
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        raise TypeError(f"cannot link or compile a {type(source).__name__}: expected a path, bytes, "
                        f"IR or C text, or an llvmlite module")
    assert data is not None
    if lang is None:
        lang = detect_language(data)
    if lang is None and isinstance(source, str) and path is None and "\n" not in source:
        # one line, not an existing file, not IR: most likely a mistyped path
        raise FileNotFoundError(errno.ENOENT, "no such file (and not LLVM IR text)", source)
    if lang is None:
        what = "a file" if path else "the input"
        raise MalformedObjectError(
            f"{origin}: {what} is not an ELF object or ar archive, and not LLVM IR or bitcode "
            f"(for C source pass language='c' or use a .c file)")
    return Job(lang, data, origin, path if lang != "llvm" else None, options)


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


def detect_language(data: bytes) -> str | None:
    if data[:4] in BITCODE_MAGIC:
        return "llvm"
    if is_source_text(data) and _IR_LINE.search(data[:65536]):
        return "llvm"
    return None


def _looks_like_path(text: str) -> bool:
    # Source text has newlines or braces; a path names an existing file.
    return "\n" not in text and len(text) < 4096 and os.path.exists(text)


def _is_llvmlite_module(source: Any) -> bool:
    mod = type(source).__module__
    return mod.startswith("llvmlite.") and type(source).__name__ in ("Module", "ModuleRef")


def _module_bytes(source: Any) -> bytes:
    if type(source).__name__ == "ModuleRef":
        return bytes(source.as_bitcode())     # exact, and cheaper to parse than text
    return str(source).encode()


def _module_origin(source: Any) -> str:
    name = getattr(source, "name", "") or ""
    return f"<llvm module {name}>" if name and name != "<string>" else "<llvm module>"
