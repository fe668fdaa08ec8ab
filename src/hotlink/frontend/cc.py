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
from .jobs import Job

_ids: dict[tuple[str, ...], str] = {}      # compiler identity, per compiler binary and mtime


def compiler(language: str) -> list[str]:
    """The compiler command for ``language``, honouring $CC / $CXX (which may carry arguments)."""
    var, default = ("CXX", "c++") if language == "c++" else ("CC", "cc")
    return shlex.split(os.environ.get(var) or default) or [default]


def _base_args(job: Job) -> list[str]:
    o = job.options
    march = ["-march=native"] if o.cpu == "host" else ([f"-march={o.cpu}"] if o.cpu else [])
    # -x: the language does not depend on the file name (C text, or language= on any file)
    return ["-fPIC", f"-O{o.opt}", *march, *o.flags, "-x", job.language]


def _run(cmd: list[str], job: Job, stdin: bytes | None, what: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(cmd, input=stdin, capture_output=True)
    except FileNotFoundError:
        var = "CXX" if job.language == "c++" else "CC"
        raise CompileError(f"{job.origin}: {what}: compiler {cmd[0]!r} not found (set ${var})",
                           f"{cmd[0]}: command not found") from None
    except OSError as e:
        raise CompileError(f"{job.origin}: {what}: cannot run {cmd[0]!r}: {e}") from None


def compile_c(job: Job) -> bytes:
    """The object for ``job``; CompileError with the compiler's diagnostics."""
    with tempfile.TemporaryDirectory(prefix="hotlink-cc-") as tmp:
        out = os.path.join(tmp, "out.o")
        src = job.path if job.path is not None else "-"
        cmd = [*compiler(job.language), *_base_args(job), "-c", src, "-o", out]
        proc = _run(cmd, job, None if job.path is not None else job.data, "compile")
        if proc.returncode != 0:
            raise CompileError(f"{job.origin}: the {job.language.upper()} compiler failed "
                               f"(exit status {proc.returncode}): {shlex.join(cmd)}",
                               proc.stderr.decode("utf-8", "replace").strip())
        with open(out, "rb") as f:
            return f.read()


def preprocess(job: Job) -> bytes | None:
    """The preprocessed source, for the cache key (headers included, so a
    changed header is a different key); None if preprocessing fails (the
    compile will then report the error)."""
    src = job.path if job.path is not None else "-"
    cmd = [*compiler(job.language), *_base_args(job), "-E", src]
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
