"""Compile one job, here or in a worker process.

A worker is a fresh interpreter (``python -c ...``, started by pool.py) that
reads pickled jobs from stdin and writes results to its original stdout,
one at a time, until stdin closes. Its fd 1 is pointed at stderr so that
nothing LLVM or a compiler prints can corrupt the result stream.

A worker dies with its parent. It runs in a session of its own (so Ctrl-C
reaches the parent only), which also means nothing kills it when the parent
is killed: a worker busy with a long job, and the compiler it started, would
run on until the job ends. So a daemon thread watches ``os.getppid()``; once
it differs from the parent pid given on the command line (the parent died and
the worker was re-parented to init or a subreaper), it SIGKILLs the worker's
whole process group, which takes any compiler process it started too. Not
``PR_SET_PDEATHSIG``: that fires when the parent *thread* that started the
worker exits, and pooled workers outlive the threads that start them.
"""
from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection

from ..errors import CompileError
from .jobs import CompileJob


def run_job(job: CompileJob) -> bytes:
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


PARENT_POLL = 0.1      # seconds between checks that the parent is still alive


def _die() -> None:
    """Kill this worker and every process it started (compilers), now."""
    if os.getpgrp() == os.getpid():                   # we lead our group (start_new_session)
        os.killpg(0, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)              # not a group leader: at least ourselves


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL)
    _die()


def watch_parent(parent: int) -> threading.Thread:
    """Start the daemon thread that kills this process group once ``parent`` is gone."""
    t = threading.Thread(target=_watch_parent, args=(parent,), name="hotlink-parent-watch", daemon=True)
    t.start()
    return t


def main(parent: int | None = None) -> None:
    """Serve jobs on stdin until EOF. ``parent``: the pid of the process that
    started us (default: the second command-line argument, if any)."""
    if parent is None and len(sys.argv) > 2:
        parent = int(sys.argv[2])
    if parent is not None:
        watch_parent(parent)                          # exits at once if the parent is already gone
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # the parent decides when workers stop
    out = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    inp = Connection(0, writable=False)
    while True:
        try:
            job: CompileJob = pickle.loads(inp.recv_bytes())
        except EOFError:                              # the parent closed us (or died)
            return
        if job.options.crash:
            _crash(job.options.crash)
        try:
            reply: tuple[str, bytes] | tuple[str, str, str] = ("ok", run_job(job))
        except CompileError as e:
            reply = ("error", message(e), e.diagnostics)
        except Exception as e:                        # a front-end bug: report it, keep serving
            reply = ("error", f"{job.origin}: {type(e).__name__}: {e}", "")
        out.send_bytes(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
