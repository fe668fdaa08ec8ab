"""Compile one job, here or in a worker process.

A worker is a fresh interpreter (``python -c ...``, started by pool.py) that
reads pickled jobs from stdin and writes results to its original stdout,
one at a time, until stdin closes. Its fd 1 is pointed at stderr so that
nothing LLVM or a compiler prints can corrupt the result stream.
"""
from __future__ import annotations

import os
import pickle
import signal
import sys
from multiprocessing.connection import Connection

from ..errors import CompileError
from .jobs import Job


def run_job(job: Job) -> bytes:
    """The object for ``job``; CompileError if the front end rejects it."""
    if job.language == "llvm":
        from .llvm import compile_ir
        return compile_ir(job)
    from .cc import compile_c
    return compile_c(job)


def message(e: CompileError) -> str:
    """The message of ``e`` without the diagnostics CompileError appends to it."""
    text = str(e.args[0]) if e.args else ""
    tail = "\n" + e.diagnostics
    return text[:-len(tail)] if e.diagnostics and text.endswith(tail) else text


def _crash(mode: str) -> None:
    # Test hook: die the way a compiler bug would, mid-job.
    if mode == "abort":
        os.abort()
    elif mode == "segv":
        import ctypes
        ctypes.string_at(0)
    elif mode == "hang":
        import time
        time.sleep(3600)
    os._exit(70)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # the parent decides when workers stop
    out = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    inp = Connection(0, writable=False)
    while True:
        try:
            job: Job = pickle.loads(inp.recv_bytes())
        except EOFError:                              # the parent closed us (or died)
            return
        if job.options.crash:
            _crash(job.options.crash)
        try:
            reply: tuple = ("ok", run_job(job))
        except CompileError as e:
            reply = ("error", message(e), e.diagnostics)
        except Exception as e:                        # a front-end bug: report it, keep serving
            reply = ("error", f"{job.origin}: {type(e).__name__}: {e}", "")
        out.send_bytes(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
