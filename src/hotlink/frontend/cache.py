"""The on-disk object cache.

An entry is ``<dir>/<k[:2]>/<k>.o`` where ``k`` hashes everything the object
depends on: the source (for C the *preprocessed* source, so an edited header
is a new key), the options, the target (triple, CPU, features) and the
toolchain (llvmlite/LLVM version, ``cc --version``). Each file starts with a
header holding the object's length and BLAKE2b digest: a torn or corrupted
entry is detected, deleted and recompiled, never loaded. Hits touch the
file's mtime; when the cache outgrows its size bound the least recently used
entries go first.
"""
from __future__ import annotations

import hashlib
import os
import struct
import tempfile

from .jobs import CompileJob, Options, parse_size

FORMAT = b"hotlink-object-cache-1"
MAGIC = b"HLOBJ\x01\r\n"
HEADER = struct.Struct("<8sQ32s")             # magic, object length, blake2b-256 of the object
DEFAULT_SIZE = 512 << 20


def default_dir() -> str:
    explicit = os.environ.get("HOTLINK_CACHE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "hotlink")


def env_size() -> int:
    """``$HOTLINK_CACHE_SIZE`` in bytes (``"1G"``, ``"512MiB"``, plain bytes...), else the default;
    ValueError naming the variable and its value if it is not a size."""
    raw = os.environ.get("HOTLINK_CACHE_SIZE", "").strip()
    return parse_size(raw, "HOTLINK_CACHE_SIZE") if raw else DEFAULT_SIZE


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


class ObjectCache:
    """Compiled objects by key, in ``root``, at most about ``max_bytes``."""

    def __init__(self, root: str, max_bytes: int = DEFAULT_SIZE):
        self.root = root
        self.max_bytes = max_bytes
        self.corrupt = 0                      # entries found damaged and deleted (for tests, stats)
        self.stored = 0                       # entries written by this instance

    @classmethod
    def for_options(cls, o: Options) -> ObjectCache | None:
        if not o.cache or os.environ.get("HOTLINK_CACHE", "").lower() in ("0", "off", "no", "false"):
            return None
        return cls(o.cache_dir or default_dir(), o.cache_size if o.cache_size is not None else env_size())

    def path(self, key: str) -> str:
        return os.path.join(self.root, key[:2], key + ".o")

    def get(self, key: str) -> bytes | None:
        path = self.path(key)
        try:
            with open(path, "rb") as f:
                blob = f.read()
        except OSError:
            return None
        if len(blob) >= HEADER.size:
            magic, length, digest = HEADER.unpack_from(blob)
            data = blob[HEADER.size:]
            if magic == MAGIC and length == len(data) and _digest(data) == digest:
                try:
                    os.utime(path)            # LRU: a hit makes the entry young again
                except OSError:
                    pass
                return data
        self.corrupt += 1
        try:
            os.unlink(path)
        except OSError:
            pass
        return None

    def put(self, key: str, data: bytes) -> None:
        """Store atomically (write a temporary file, then rename); errors are ignored:
        a cache that cannot be written only makes things slower."""
        path = self.path(key)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(HEADER.pack(MAGIC, len(data), _digest(data)))
                    f.write(data)
                os.replace(tmp, path)
                self.stored += 1
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError:
            pass

    def trim(self) -> int:
        """Evict least recently used entries while over the bound (down to 80%,
        so a full cache is not rescanned on every store); returns bytes freed."""
        entries = []
        total = 0
        try:
            shards = list(os.scandir(self.root))
        except OSError:
            return 0
        for shard in shards:
            if not shard.is_dir():
                continue
            for e in os.scandir(shard.path):
                try:
                    st = e.stat()
                except OSError:
                    continue
                entries.append((st.st_mtime_ns, st.st_size, e.path))
                total += st.st_size
        if total <= self.max_bytes:
            return 0
        freed = 0
        for _, size, path in sorted(entries):
            if total - freed <= self.max_bytes * 0.8:
                break
            try:
                os.unlink(path)
                freed += size
            except OSError:
                pass
        return freed


def job_key(job: CompileJob) -> str | None:
    """The cache key of ``job``, or None when it cannot be cached."""
    o = job.options
    h = hashlib.blake2b(digest_size=32)

    def part(x: str | bytes) -> None:
        b = x.encode() if isinstance(x, str) else x
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)

    part(FORMAT)
    part(job.language)
    part(f"opt={o.opt} cpu={o.cpu} features={o.features} flags={' '.join(o.flags)}")
    if job.language == "llvm":
        from . import llvm
        part(" ".join(llvm.target(o.cpu, o.features)))
        part(llvm.toolchain_id())
        part(job.data)
    else:
        from . import cc
        text = cc.preprocess(job)
        if text is None:
            return None
        part(cc.toolchain_id(job.language))
        part(cc.host_cpu_id() if o.cpu == "host" else "")
        part(text)
    return h.hexdigest()
