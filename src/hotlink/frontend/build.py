"""From sources to objects: classify each source once (``source.classify``),
pass objects and archives through, look compiled ones up in the cache,
compile the rest (C in threads, each running the compiler as its own
process; IR in worker processes, or here when there is only one)."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import CompileError
from .cache import ObjectCache, job_key
from .jobs import CompileJob, Options, Source
from .prototypes import with_declarations
from .source import ClassifiedSource, classify
from .worker import message, run_job

if TYPE_CHECKING:
    from ..session import Session

Loaded = tuple[bytes, str]      # an object or archive, and its origin: a path, or "<bytes>"
T = TypeVar("T")


def load_source(session: Session, source: object, options: Mapping[str, Any]) -> Loaded:
    """The object or archive for one source and its origin (a path, or
    ``<bytes>``): ``Library.add`` and ``Library.replace``. IR is compiled in
    this process (unless ``isolate=True``); CompileError if that fails."""
    opts = Options.parse(options)
    src, own = _classify(source, options, opts)
    if src.kind.linkable:
        return src.data, src.name
    job = CompileJob.from_source(src, own)
    r = compile_jobs(session, [job], opts, parallel=False)[0]
    if isinstance(r, CompileError):
        raise r
    return with_declarations(r, job), src.name     # the unit keeps what its source declares


def load_sources(session: Session, sources: Sequence[object], options: Mapping[str, Any],
                 parallel: bool) -> list[Loaded | CompileError]:
    """(object bytes, origin) or a CompileError per source, in order.

    Each source (or ``Source(source, **own_options)``) is classified once;
    objects and archives pass through without any front-end work.
    ``parallel``: compile IR in worker processes even if only one needs it.
    Classification errors (TypeError, OSError, MalformedObjectError) are
    raised at once, before anything is compiled.
    """
    opts = Options.parse(options)
    out: list[Loaded | CompileError | None] = [None] * len(sources)
    jobs: list[tuple[int, str, CompileJob]] = []      # (place, name, job)
    for i, item in enumerate(sources):
        src, own = _classify(item, options, opts)
        if src.kind.linkable:
            out[i] = (src.data, src.name)
        else:
            jobs.append((i, src.name, CompileJob.from_source(src, own)))
    if jobs:
        for (i, name, job), r in zip(jobs, compile_jobs(session, [j for _, _, j in jobs], opts, parallel)):
            out[i] = r if isinstance(r, CompileError) else (with_declarations(r, job), name)
    return filled(out)


def _classify(item: object, options: Mapping[str, Any], opts: Options) -> tuple[ClassifiedSource, Options]:
    """``item`` classified, and the options it is compiled with (a ``Source``'s own override the call's)."""
    if isinstance(item, Source):
        own = Options.parse({**options, **item.options}) if item.options else opts
        return classify(item.source, own.language), own
    return classify(item, opts.language), opts


def compile_jobs(session: Session, jobs: Sequence[CompileJob], opts: Options,
                 parallel: bool) -> list[bytes | CompileError]:
    """The object or the CompileError for each job, in order: cache hits, then
    IR (here, or in worker processes), C/C++ in threads meanwhile."""
    cache = ObjectCache.for_options(opts)
    results: list[bytes | CompileError | None] = [None] * len(jobs)
    workers = max(1, opts.workers or os.cpu_count() or 1)
    c_jobs = [i for i, j in enumerate(jobs) if j.language != "llvm"]
    ir_jobs = [i for i, j in enumerate(jobs) if j.language == "llvm"]
    threads = ThreadPoolExecutor(min(workers, len(c_jobs))) if len(c_jobs) > 1 else None
    futures: dict[int, Future[bytes | CompileError]] = \
        {i: threads.submit(_compile_here, jobs[i], cache) for i in c_jobs} if threads else {}
    try:
        keys: dict[int, str | None] = {}
        misses: list[int] = []
        for i in ir_jobs:
            key = keys[i] = job_key(jobs[i]) if cache else None
            hit = cache.get(key) if cache and key else None
            if hit is not None:
                results[i] = hit
            else:
                misses.append(i)
        isolate = parallel or opts.isolate or len(misses) > 1 or any(jobs[i].options.crash for i in misses)
        done: list[bytes | CompileError]
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
    return filled(results)


def filled(results: list[T | None]) -> list[T]:
    """``results`` once every slot holds a result."""
    out = [r for r in results if r is not None]
    if len(out) != len(results):
        raise RuntimeError("hotlink front end: a source was left without a result")
    return out


def _run(job: CompileJob) -> bytes | CompileError:
    try:
        return run_job(job)
    except CompileError as e:
        return e


def _compile_here(job: CompileJob, cache: ObjectCache | None) -> bytes | CompileError:
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


def raise_first(results: Sequence[T | CompileError]) -> list[T]:
    """``results`` if none is a CompileError; else raise the first, naming the others that failed too."""
    errors = [r for r in results if isinstance(r, CompileError)]
    if not errors:
        return [r for r in results if not isinstance(r, CompileError)]
    if len(errors) == 1:
        raise errors[0]
    first = errors[0]
    others = ", ".join(message(e).split(":", 1)[0] for e in errors[1:])
    raise CompileError(f"{message(first)} (and {len(errors) - 1} more failed: {others})", first.diagnostics)
