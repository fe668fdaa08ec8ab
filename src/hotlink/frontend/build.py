"""From sources to objects: pass objects through, look compiled ones up in
the cache, compile the rest (C in threads, each running the compiler as its
own process; IR in worker processes, or here when there is only one)."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

from ..archive import is_archive
from ..elf import is_elf
from ..errors import CompileError
from .cache import ObjectCache, job_key
from .jobs import Job, Options, Source, make_job, read_path
from .worker import message, run_job

def compile_sources(session: Any, sources: Sequence[Any], options: dict[str, Any],
                    parallel: bool) -> list[Any]:
    """(object bytes, origin) or a CompileError per source, in order.

    ``parallel``: compile IR in worker processes even if only one needs it.
    """
    opts = Options.parse(options)
    out: list[Any] = [None] * len(sources)
    jobs: list[tuple[int, Job]] = []
    for i, source in enumerate(sources):
        own = opts
        if isinstance(source, Source):
            own = Options.parse({**options, **source.options}) if source.options else opts
            source = source.source
        data = _read(source) if own.language is None else None
        if data is not None and (is_elf(data) or is_archive(data)):
            out[i] = (data, os.fspath(source) if isinstance(source, (str, os.PathLike)) else "<bytes>")
            continue
        jobs.append((i, make_job(source, own, data)))
    for (i, job), r in zip(jobs, compile_jobs(session, [j for _, j in jobs], opts, parallel)):
        out[i] = r if isinstance(r, CompileError) else (r, job.name)
    return out


def _read(source: Any) -> bytes | None:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, os.PathLike) or (isinstance(source, str) and "\n" not in source
                                           and len(source) < 4096 and os.path.isfile(source)):
        return read_path(source)
    return None


def compile_jobs(session: Any, jobs: list[Job], opts: Options, parallel: bool) -> list[bytes | CompileError]:
    cache = ObjectCache.for_options(opts)
    results: list[Any] = [None] * len(jobs)
    workers = max(1, opts.workers or os.cpu_count() or 1)
    c_jobs = [i for i, j in enumerate(jobs) if j.language != "llvm"]
    ir_jobs = [i for i, j in enumerate(jobs) if j.language == "llvm"]
    threads = ThreadPoolExecutor(min(workers, len(c_jobs))) if len(c_jobs) > 1 else None
    futures = {i: threads.submit(_compile_here, jobs[i], cache) for i in c_jobs} if threads else {}
    try:
        keys: dict[int, str | None] = {}
        misses = []
        for i in ir_jobs:
            keys[i] = job_key(jobs[i]) if cache else None
            hit = cache.get(keys[i]) if cache and keys[i] else None
            if hit is not None:
                results[i] = hit
            else:
                misses.append(i)
        isolate = parallel or opts.isolate or len(misses) > 1 or any(jobs[i].options.crash for i in misses)
        if misses and isolate:
            from .pool import get_pool
            done = get_pool(session).run([jobs[i] for i in misses], workers)
        else:
            done = [_run(jobs[i]) for i in misses]
        for i, r in zip(misses, done):
            results[i] = r
            key = keys[i]
            if cache and key and not isinstance(r, CompileError):
                cache.put(key, r)
        for i in c_jobs:
            results[i] = futures[i].result() if threads else _compile_here(jobs[i], cache)
    finally:
        if threads:
            threads.shutdown()
    if cache and cache.stored:
        cache.trim()                          # only when it grew: a scan costs ~1 ms per 1000 entries
    return results


def _run(job: Job) -> bytes | CompileError:
    try:
        return run_job(job)
    except CompileError as e:
        return e


def _compile_here(job: Job, cache: ObjectCache | None) -> bytes | CompileError:
    """Look up and compile one job in this process (C: the compiler is a process of its own)."""
    try:
        key = job_key(job) if cache else None   # C: runs the preprocessor, which may be missing
    except CompileError as e:
        return e
    if cache and key:
        hit = cache.get(key)
        if hit is not None:
            return hit
    r = _run(job)
    if cache and key and not isinstance(r, CompileError):
        cache.put(key, r)
    return r


def raise_first(results: Sequence[Any]) -> None:
    """Raise the first CompileError in ``results``, naming the others that failed too."""
    errors = [r for r in results if isinstance(r, CompileError)]
    if not errors:
        return
    if len(errors) == 1:
        raise errors[0]
    first = errors[0]
    others = ", ".join(message(e).split(":", 1)[0] for e in errors[1:])
    raise CompileError(f"{message(first)} (and {len(errors) - 1} more failed: {others})", first.diagnostics)
