"""Front-end options and jobs: what to compile, described as plain picklable
data so the same job runs in this process or in a worker process."""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .source import ClassifiedSource, classify, normalize_language

CRASH_MODES = ("abort", "segv", "exit", "hang")


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
        if not options:
            return _DEFAULTS                          # the common case: every add of an object
        kw = dict(options)
        if "_crash" in kw:
            kw["crash"] = kw.pop("_crash")
        unknown = set(kw) - set(cls.__dataclass_fields__) - {"crash"}
        if unknown:
            raise TypeError(f"unknown front-end option(s): {', '.join(sorted(unknown))}; "
                            f"expected {', '.join(f for f in cls.__dataclass_fields__ if f != 'crash')}")
        if "language" in kw:
            kw["language"] = normalize_language(kw["language"])
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


_DEFAULTS = Options()


def _flags(flags: object) -> tuple[str, ...]:
    if flags is None:
        return ()
    if isinstance(flags, str):
        return tuple(flags.split())
    if isinstance(flags, (bytes, bytearray)) or not isinstance(flags, Iterable):
        raise TypeError(f"flags={flags!r}: expected a list of compiler flags or one string of them")
    return tuple(map(str, flags))


_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(i?b?)\s*", re.IGNORECASE)


def parse_size(value: object, what: str) -> int:
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

    def __init__(self, source: object, **options: Any):
        Options.parse(options)                       # reject bad options here, not later
        self.source = source
        self.options: dict[str, Any] = options

    def __repr__(self) -> str:
        opts = "".join(f", {k}={v!r}" for k, v in self.options.items())
        return f"Source({str(self.source)[:40]!r}{opts})"


@dataclass(frozen=True)
class CompileJob:
    """One source to compile: its language, its bytes, and where it came from
    (plain picklable data, for worker processes)."""
    language: str               # "llvm", "c" or "c++"
    data: bytes                 # IR text (UTF-8), bitcode, or C/C++ text
    origin: str                 # a path or a description, for messages
    path: str | None            # C/C++ from a file: compiled in place (its #includes)
    options: Options

    @classmethod
    def from_source(cls, source: ClassifiedSource, options: Options) -> CompileJob:
        """The job that compiles ``source`` (anything but an object or archive)."""
        language = source.language
        if language is None:
            raise ValueError(f"{source.origin}: an {source.kind.value} needs no compiling")
        # C/C++ from a regular file is compiled in place (its own directory for
        # #include "..."); from a pipe (/dev/fd/N), already drained, from the bytes.
        in_place = source.path is not None and language != "llvm" and os.path.isfile(source.path)
        return cls(language, source.data, source.origin, source.path if in_place else None, options)


def make_job(source: object, options: Options) -> CompileJob:
    """The job for ``source`` (a path, text, bytes or llvmlite module that needs
    compiling), classified with ``options.language``."""
    return CompileJob.from_source(classify(source, options.language), options)
