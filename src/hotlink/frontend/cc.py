"""C and C++ to an ELF object with the system compiler (``$CC``/``cc``,
``$CXX``/``c++``).

Always ``-fPIC``: the arena sits within ±2 GiB of libc, far above 2 GiB, so
the absolute 32-bit relocations of non-PIC code could not be satisfied.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile

from ..errors import CompileError
from .jobs import CompileJob
from .source import is_bitcode

_ids: dict[tuple[str, ...], str] = {}      # compiler identity, per compiler binary and mtime


# Flags after which the compiler writes no ELF object to ``-o``: it stops
# early (-fsyntax-only, -E, -S, -M...), only prints (-###, --help, -print-*),
# or writes IR for a link-time optimizer (-flto, clang's -emit-llvm).
_NO_OBJECT_FLAGS = frozenset(("-fsyntax-only", "-E", "-S", "-M", "-MM", "-###", "--help", "-help",
                              "--version", "--target-help", "-dumpversion", "-dumpfullversion",
                              "-dumpmachine", "-dumpspecs", "-emit-llvm", "-flto"))
_NO_OBJECT_PREFIXES = ("-print-", "--print-", "--help=", "-flto=")


def compiler(language: str, origin: str | None = None) -> list[str]:
    """The compiler command for ``language``, honouring $CC / $CXX (which may carry arguments);
    ``origin`` names the source in the error if the variable cannot be parsed."""
    var, default = ("CXX", "c++") if language == "c++" else ("CC", "cc")
    raw = os.environ.get(var) or default
    try:
        return shlex.split(raw) or [default]
    except ValueError as e:                   # unbalanced quotes: say which variable
        where = f"{origin}: " if origin else ""
        raise CompileError(f"{where}${var}={raw!r} is not a valid command line ({e})") from None


def base_args(job: CompileJob) -> list[str]:
    o = job.options
    march = ["-march=native"] if o.cpu == "host" else ([f"-march={o.cpu}"] if o.cpu else [])
    # -x: the language does not depend on the file name (C text, or language= on any file)
    return ["-fPIC", f"-O{o.opt}", *march, *o.flags, "-x", job.language]


def _run(cmd: list[str], job: CompileJob, stdin: bytes | None, what: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(cmd, input=stdin, capture_output=True)
    except FileNotFoundError:
        var = "CXX" if job.language == "c++" else "CC"
        raise CompileError(f"{job.origin}: {what}: compiler {cmd[0]!r} not found (set ${var})",
                           f"{cmd[0]}: command not found") from None
    except OSError as e:
        raise CompileError(f"{job.origin}: {what}: cannot run {cmd[0]!r}: {e}") from None


def compile_c(job: CompileJob) -> bytes:
    """The object for ``job``; CompileError with the compiler's diagnostics."""
    with tempfile.TemporaryDirectory(prefix="hotlink-cc-") as tmp:
        out = os.path.join(tmp, "out.o")
        src = job.path if job.path is not None else "-"
        cmd = [*compiler(job.language, job.origin), *base_args(job), "-c", src, "-o", out]
        proc = _run(cmd, job, None if job.path is not None else job.data, "compile")
        if proc.returncode != 0:
            raise CompileError(f"{job.origin}: the {job.language.upper()} compiler failed "
                               f"(exit status {proc.returncode}): {shlex.join(cmd)}",
                               proc.stderr.decode("utf-8", "replace").strip())
        try:
            with open(out, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            data = None
        problem = _not_an_object(data)
        if problem:
            raise _no_object_error(job, cmd, problem, proc)
        assert data is not None
        return data


def _not_an_object(data: bytes | None) -> str | None:
    """Why ``data`` (what the compiler wrote to ``-o``, None: nothing) is no
    object the linker can use, or None if it is one."""
    if data is None:
        return "wrote no output file"
    if is_bitcode(data):
        return "wrote LLVM bitcode, not an ELF object"
    if data[:4] != b"\x7fELF":
        kind = "text (preprocessed source, assembly or dependencies)" if b"\0" not in data[:4096] else "data"
        return f"wrote {kind}, not an ELF object" if data else "wrote an empty file"
    if b"\0__gnu_lto_slim\0" in data and b".gnu.lto_" in data:   # gcc's marker symbol and sections
        return "wrote a slim LTO object (GCC's IR only, no machine code)"
    return None


def _no_object_error(job: CompileJob, cmd: list[str], problem: str,
                     proc: subprocess.CompletedProcess[bytes]) -> CompileError:
    suspects = [f for f in cmd if f in _NO_OBJECT_FLAGS or f.startswith(_NO_OBJECT_PREFIXES)]
    if suspects:
        many = len(suspects) > 1
        where = "flags" if all(f in job.options.flags for f in suspects) else \
            f"flags or ${'CXX' if job.language == 'c++' else 'CC'}"
        why = (f"flag{'s' if many else ''} {' '.join(suspects)} {'are' if many else 'is'} likely responsible; "
               f"drop {'them' if many else 'it'} from {where}")
        if any(f == "-flto" or f.startswith("-flto=") for f in suspects):
            why += " (or add -ffat-lto-objects)"
    else:
        why = "check flags and $CXX" if job.language == "c++" else "check flags and $CC"
    out = (proc.stdout + proc.stderr).decode("utf-8", "replace").strip()
    return CompileError(f"{job.origin}: the {job.language.upper()} compiler produced no object file "
                        f"(it exited with status 0 but {problem}; {why}): {shlex.join(cmd)}", out[-4096:])


def preprocess(job: CompileJob) -> bytes | None:
    """The preprocessed source, for the cache key (headers included, so a
    changed header is a different key); None if preprocessing fails (the
    compile will then report the error)."""
    src = job.path if job.path is not None else "-"
    cmd = [*compiler(job.language, job.origin), *base_args(job), "-E", src]
    proc = _run(cmd, job, None if job.path is not None else job.data, "preprocess")
    return proc.stdout if proc.returncode == 0 else None


def toolchain_id(language: str) -> str:
    """``cc --version`` and ``-dumpmachine`` of the compiler, memoized by binary and mtime."""
    cmd = compiler(language)
    exe = shutil.which(cmd[0]) or cmd[0]
    try:
        stamp = str(os.stat(exe).st_mtime_ns)
    except OSError:
        stamp = "?"
    key = (*cmd, exe, stamp)
    if key not in _ids:
        try:
            version = subprocess.run([*cmd, "--version"], capture_output=True).stdout
            machine = subprocess.run([*cmd, "-dumpmachine"], capture_output=True).stdout
            _ids[key] = f"{exe} {stamp} {version.decode(errors='replace')} {machine.decode(errors='replace')}"
        except OSError:
            _ids[key] = f"{exe} missing"
    return _ids[key]


def host_cpu_id() -> str:
    """What ``-march=native`` depends on: the CPU model and flags."""
    try:
        with open("/proc/cpuinfo", "rb") as f:
            text = f.read(65536).decode(errors="replace")
    except OSError:
        return "unknown"
    keep = [ln for ln in text.split("\n\n", 1)[0].splitlines()
            if ln.split(":")[0].strip() in ("vendor_id", "cpu family", "model", "model name", "flags")]
    return "\n".join(keep)
