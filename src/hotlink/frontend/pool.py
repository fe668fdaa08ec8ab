"""Worker processes that compile LLVM IR in parallel.

llvmlite serializes every LLVM call behind one lock, so threads cannot
compile in parallel; processes can. Each worker is a fresh interpreter
started with ``subprocess`` (fork + exec), not ``multiprocessing``: forking
this process, with the JIT arena mapped and threads running, is unsafe, and
the ``spawn``/``forkserver`` start methods re-import the user's ``__main__``,
which breaks scripts without an ``if __name__ == "__main__"`` guard.

A worker compiles one job at a time, so when one dies (a crash inside LLVM)
exactly one job was running in it: that job gets a CompileError with the
signal and the worker's last stderr output, the worker is replaced, and every
other job carries on. Workers are kept between calls (on ``session.compile_pool``)
and stopped by ``Session.close()``. If this process dies without closing
them (SIGKILL), each worker notices within ``worker.PARENT_POLL`` seconds and
kills itself and any compiler it started (its process group).
"""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any, cast

import hotlink

from ..errors import CompileError, SessionClosedError
from .build import filled, load_sources, raise_first
from .jobs import CompileJob, Options

if TYPE_CHECKING:
    from ..session import Session

# Runs in the worker: find this hotlink (whatever sys.path found it here), serve;
# sys.argv[2] is our pid, which the worker watches so it dies with us (worker.py).
_BOOT = "import sys; sys.path.insert(0, sys.argv[1]); from hotlink.frontend.worker import main; main()"
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(hotlink.__file__)))
_STDERR_TAIL = 16384


class Worker:
    """One worker process and the pipes to it."""

    def __init__(self) -> None:
        job_r, job_w = os.pipe()              # non-inheritable: other workers never hold our ends
        res_r, res_w = os.pipe()
        self.stderr = tempfile.TemporaryFile(prefix="hotlink-worker-")
        try:
            self.proc = subprocess.Popen([sys.executable, "-c", _BOOT, _PACKAGE_PARENT, str(os.getpid())],
                                         stdin=job_r, stdout=res_w, stderr=self.stderr,
                                         start_new_session=True)   # Ctrl-C goes to us, not them
        except BaseException:
            os.close(job_w)
            os.close(res_r)
            self.stderr.close()
            raise
        finally:
            os.close(job_r)
            os.close(res_w)
        self.jobs = Connection(job_w, readable=False)
        self.results = Connection(res_r, writable=False)
        self._stderr_mark = 0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def submit(self, job: CompileJob) -> bool:
        """Send ``job``; False if the worker is already gone (not the job's fault)."""
        self._stderr_mark = os.fstat(self.stderr.fileno()).st_size
        try:
            self.jobs.send_bytes(pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL))
            return True
        except OSError:
            return False

    def death(self, job: CompileJob, why: str | None = None) -> CompileError:
        """The error for ``job``, which was running when this worker died."""
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            rc = None
        if why is None:
            if rc is not None and rc < 0:
                try:
                    why = f"killed by {signal.Signals(-rc).name}"
                except ValueError:
                    why = f"killed by signal {-rc}"
            else:
                why = f"exited with status {rc}"
        return CompileError(f"{job.origin}: the compiler worker process died ({why}) while compiling it; "
                            f"other sources are not affected", self._stderr_since_submit())

    def _stderr_since_submit(self) -> str:
        fd = self.stderr.fileno()
        end = os.fstat(fd).st_size
        start = max(self._stderr_mark, end - _STDERR_TAIL)
        return os.pread(fd, end - start, start).decode("utf-8", "replace").strip()

    def stop(self, kill: bool = False) -> None:
        """Close its input (it exits at EOF); kill it if asked or if it lingers."""
        if self.stderr.closed:
            return
        for conn in (self.jobs, self.results):
            try:
                conn.close()
            except OSError:
                pass
        if kill:
            self.proc.kill()
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


class WorkerPool:
    """Idle workers kept for reuse; each ``run`` checks out the workers it needs."""

    def __init__(self, max_idle: int | None = None):
        self.max_idle = max_idle or os.cpu_count() or 2
        self.started = 0                      # workers ever started: reuse and restarts show here
        self._idle: list[Worker] = []
        self.lock = threading.Lock()
        self._closed = False

    def _start(self) -> Worker:
        self.started += 1
        return Worker()

    def _checkout(self, n: int) -> list[Worker]:
        with self.lock:
            if self._closed:
                raise SessionClosedError("the compiler pool is closed")
            dead = [w for w in self._idle if not w.alive()]     # died while idle: replace quietly
            live = [w for w in self._idle if w.alive()]
            taken, self._idle = live[:n], live[n:]
        for w in dead:
            w.stop()
        while len(taken) < n:
            taken.append(self._start())
        return taken

    def _checkin(self, workers: list[Worker]) -> None:
        extra = []
        with self.lock:
            for w in workers:
                if not self._closed and w.alive() and len(self._idle) < self.max_idle:
                    self._idle.append(w)
                else:
                    extra.append(w)
        for w in extra:
            w.stop()

    @property
    def idle(self) -> int:
        return len(self._idle)

    def pids(self) -> list[int]:
        """Process ids of the idle workers (tests use them to check reuse)."""
        with self.lock:
            return [w.proc.pid for w in self._idle]

    def run(self, jobs: Sequence[CompileJob], workers: int) -> list[bytes | CompileError]:
        """Compile ``jobs`` on up to ``workers`` processes; one result or error per job."""
        results: list[bytes | CompileError | None] = [None] * len(jobs)
        if not jobs:
            return []
        pending = deque(range(len(jobs)))
        idle = self._checkout(max(1, min(workers, len(jobs))))
        busy: dict[Connection, tuple[Worker, int, float | None]] = {}
        failed_sends = 0
        try:
            while pending or busy:
                while pending and idle:
                    w, i = idle.pop(), pending[0]
                    if not w.submit(jobs[i]):
                        failed_sends += 1
                        if failed_sends > 3:           # workers cannot even start: give up on this job
                            pending.popleft()
                            results[i] = w.death(jobs[i], "it could not be started")
                        w.stop(kill=True)
                        idle.append(self._start())
                        continue
                    pending.popleft()
                    t = jobs[i].options.timeout
                    busy[w.results] = (w, i, time.monotonic() + t if t else None)
                deadlines = [d for _, _, d in busy.values() if d is not None]
                timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
                ready = wait(list(busy), timeout)
                now = time.monotonic()
                for conn in list(busy):
                    w, i, deadline = busy[conn]
                    if conn in ready:
                        del busy[conn]
                        try:
                            reply = pickle.loads(conn.recv_bytes())
                        except (EOFError, OSError, pickle.UnpicklingError):
                            results[i] = w.death(jobs[i])
                            w.stop(kill=True)
                            if pending:
                                idle.append(self._start())      # restart: the pool keeps its size
                            continue
                        results[i] = reply[1] if reply[0] == "ok" else CompileError(reply[1], reply[2])
                        idle.append(w)
                    elif deadline is not None and now >= deadline:
                        del busy[conn]
                        w.proc.kill()
                        results[i] = w.death(jobs[i], f"killed after the {jobs[i].options.timeout} s timeout")
                        w.stop()
                        if pending:
                            idle.append(self._start())
        finally:
            for w, _, _ in busy.values():      # interrupted mid-job: their state is unknown
                w.stop(kill=True)
            self._checkin(idle)
        return filled(results)

    def warm(self, workers: int) -> None:
        """Start ``workers`` processes and wait until each has LLVM loaded."""
        job = CompileJob("llvm", b"define void @hotlink_warm() {\n  ret void\n}\n", "<warm-up>", None,
                         Options(opt=0))
        for r in self.run([job] * workers, workers):
            if isinstance(r, CompileError):
                raise r

    def close(self) -> None:
        with self.lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for w in idle:                         # EOF to all first, so they exit in parallel
            w.jobs.close()
        for w in idle:
            w.stop()


def get_pool(session: Session) -> WorkerPool:
    """The session's pool, started on first use."""
    with session.lock:
        session.check_open()
        pool: WorkerPool | None = session.compile_pool      # Session types it Any (it imports no front end)
        if pool is None:
            pool = session.compile_pool = WorkerPool()
        return pool


def compile_many(session: Session, sources: Sequence[object], workers: int | None,
                 options: Mapping[str, Any]) -> list[bytes]:
    """``Session.compile_many``: objects for ``sources``, compiling in worker processes.

    Objects and archives pass through. With ``return_exceptions=True`` a
    source that fails gives its CompileError in the list; otherwise the first
    failure is raised once every other source is done (and cached).
    """
    options = dict(options)
    return_exceptions = bool(options.pop("return_exceptions", False))
    if workers is not None:
        options["workers"] = workers
    out = load_sources(session, sources, options, parallel=True)
    if return_exceptions:
        # CompileErrors in their places, as documented; the annotation is Session.compile_many's
        return cast("list[bytes]", [r if isinstance(r, CompileError) else r[0] for r in out])
    return [data for data, _ in raise_first(out)]
