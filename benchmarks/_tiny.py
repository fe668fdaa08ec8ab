"""Shared helpers for the memory benchmarks (churn.py, footprint.py).

Tiny units: ``int f_NNNNN(int x){return x*K+1;}`` with K = 1000003 + 2*i.

Compiling thousands of these with gcc takes minutes, so gcc compiles ONE
template and the variants are made by patching bytes: every name has the same
length (``f_00000``..``f_99999``), so a new name overwrites the old one in the
string tables, and K is the imm32 of the ``imul`` in ``.text``.  For shared
objects the SysV ``.hash`` table (built with ``-Wl,--hash-style=sysv``) is
rebuilt for the new name; a GNU hash table would need the dynsym re-sorted.
``self_check`` compiles a few object variants for real and asserts that the
patched bytes are identical to gcc's, so the shortcut changes nothing but
speed.  (ld orders a .so's dynsym by its own hash of the names, so patched
.so files are not byte-identical to real builds; instead every loaded .so is
checked through dlsym, which goes through the rebuilt hash table, and a call.)
"""
from __future__ import annotations

import ctypes
import json
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if (ROOT / "src" / "hotlink").is_dir():
    sys.path.insert(1, str(ROOT / "src"))    # benchmark this checkout

PAGE = os.sysconf("SC_PAGE_SIZE")
K0 = 1000003
CFLAGS = ["-O2"]
SOFLAGS = ["-O2", "-shared", "-fPIC", "-Wl,--hash-style=sysv", "-Wl,--build-id=none"]


def name(i: int) -> str:
    return f"f_{i:05d}"


def k_of(i: int) -> int:
    return K0 + 2 * i


def expected(i: int, x: int = 7) -> int:
    return ctypes.c_int32(x * k_of(i) + 1).value


def c_source(i: int) -> str:
    return f"int {name(i)}(int x){{return x*{k_of(i)}+1;}}\n"


def ir_source(i: int, triple: str) -> str:
    """The same function as LLVM IR (for MCJIT, which takes modules, not objects)."""
    return (f'target triple = "{triple}"\n'
            f"define i32 @{name(i)}(i32 %x) {{\n"
            f"  %m = mul i32 %x, {k_of(i)}\n  %r = add i32 %m, 1\n  ret i32 %r\n}}\n")


def gcc(i: int, flags: list[str], suffix: str) -> bytes:
    """Compile variant ``i`` for real (always from a file named t.c, so the
    STT_FILE symbol is the same for every variant)."""
    with tempfile.TemporaryDirectory() as d:
        Path(d, "t.c").write_text(c_source(i))
        out = "t" + suffix
        cmd = ["gcc", *flags, *(["-c"] if suffix == ".o" else []), "t.c", "-o", out]
        subprocess.run(cmd, cwd=d, check=True)
        return Path(d, out).read_bytes()


# --- ELF patching ------------------------------------------------------------

def _offsets(data: bytes, needle: bytes) -> list[int]:
    out, at = [], data.find(needle)
    while at >= 0:
        out.append(at)
        at = data.find(needle, at + 1)
    return out


def _elf_hash(s: bytes) -> int:
    h = 0
    for c in s:
        h = ((h << 4) + c) & 0xFFFFFFFF
        g = h & 0xF0000000
        if g:
            h ^= g >> 24
        h &= ~g & 0xFFFFFFFF
    return h


def _sysv_hash_fixer(data: bytes):
    """Return a function that rebuilds the SysV .hash of a patched copy of ``data``."""
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    secs = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + k * shentsize) for k in range(shnum)]
    hashes = [s for s in secs if s[1] == 5]            # SHT_HASH
    if len(hashes) != 1:
        raise RuntimeError("template .so needs exactly one SysV .hash section (-Wl,--hash-style=sysv)")
    h = hashes[0]
    dynsym = secs[h[6]]
    dynstr = secs[dynsym[6]]
    hoff, symoff, stroff = h[4], dynsym[4], dynstr[4]
    nbucket, nchain = struct.unpack_from("<II", data, hoff)

    def fix(buf: bytearray) -> None:
        buckets, chains = [0] * nbucket, [0] * nchain
        for k in range(1, nchain):                     # the same insertion order as ld
            st_name, = struct.unpack_from("<I", buf, symoff + 24 * k)
            s = bytes(buf[stroff + st_name: buf.index(0, stroff + st_name)])
            b = _elf_hash(s) % nbucket
            chains[k], buckets[b] = buckets[b], k
        struct.pack_into(f"<{nbucket + nchain}I", buf, hoff + 8, *buckets, *chains)
    return fix


def variants(n: int, shared: bool = False) -> list[bytes]:
    """``n`` distinct tiny objects (or shared objects), by patching one gcc build."""
    if n > 100000:
        raise ValueError("names are f_00000..f_99999")
    suffix = ".so" if shared else ".o"
    tmpl = gcc(0, SOFLAGS if shared else CFLAGS, suffix)
    name_at = _offsets(tmpl, name(0).encode() + b"\0")
    k_at = _offsets(tmpl, struct.pack("<i", k_of(0)))
    if not name_at or len(k_at) != 1:
        raise RuntimeError(f"template: name found {len(name_at)}x, K found {len(k_at)}x (want >=1 and 1)")
    fix = _sysv_hash_fixer(tmpl) if shared else None
    out = []
    for i in range(n):
        buf = bytearray(tmpl)
        nm = name(i).encode()
        for at in name_at:
            buf[at:at + len(nm)] = nm
        buf[k_at[0]:k_at[0] + 4] = struct.pack("<i", k_of(i))
        if fix:
            fix(buf)
        out.append(bytes(buf))
    return out


def self_check(objs: list[bytes]) -> None:
    """Patched objects must equal what gcc produces for that source."""
    for i in sorted({1, len(objs) // 2, len(objs) - 1}):
        if gcc(i, CFLAGS, ".o") != objs[i]:
            raise RuntimeError(f"patched object variant {i} differs from gcc's build")


# --- process memory --------------------------------------------------------------

def rss() -> int:
    """Resident set size in bytes (/proc/self/statm, field 2)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def mappings() -> int:
    """How many memory mappings the process has (the kernel caps this at
    vm.max_map_count, 65,530 by default)."""
    with open("/proc/self/maps", "rb") as f:
        return sum(1 for _ in f)


def max_map_count() -> int:
    with open("/proc/sys/vm/max_map_count") as f:
        return int(f.read())


def rss_detail() -> dict[str, int]:
    """RSS split into anon/file/shmem, plus PSS (bytes).  Pages mapped twice
    in this process (hotlink's memfd arena has a run view and a write view)
    count twice in RSS but once in PSS."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "RssAnon", "RssFile", "RssShmem")):
                k, v = line.split(":")
                out[k] = int(v.split()[0]) * 1024
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                out["Pss"] = int(line.split()[1]) * 1024
    return out


# --- parent side: one subprocess per method -----------------------------------

def emit(record: dict) -> None:
    """Child side: one JSON line on stdout, flushed at once, so the parent
    keeps what was measured even if the child later dies (LLVM aborts)."""
    print(json.dumps(record), flush=True)


def run_child(script: str, method: str, args: list[str]) -> dict:
    """Re-invoke ``script --method method`` and collect its JSON lines: the
    samples it emitted and its final result (the last non-sample line)."""
    cmd = [sys.executable, "-X", "faulthandler", script, "--method", method, *args]
    p = subprocess.run(cmd, capture_output=True, text=True)
    sys.stderr.write(p.stderr)
    records = [json.loads(ln) for ln in p.stdout.splitlines() if ln.startswith("{")]
    samples = [r["sample"] for r in records if "sample" in r]
    final = next((r for r in reversed(records) if "sample" not in r), None)
    if p.returncode == 0 and final is not None:
        return final
    lines = [ln for ln in p.stderr.splitlines() if ln.strip() and not ln.startswith(f"[{method}]")]
    # a Python exception: its last line; a fatal error (LLVM, faulthandler): its first
    why = (lines[-1] if lines[0].startswith("Traceback") else lines[0]) if lines else ""
    status = f"signal {-p.returncode}" if p.returncode < 0 else f"exit status {p.returncode}"
    return {"method": method, "error": f"{status}: {why}".rstrip(": "), "samples": samples}


def investigate(script: str, args: list[str], show) -> dict:
    """Rerun the hotlink child under tracemalloc and print where memory went."""
    tr = run_child(script, "hotlink", args + ["--trace"])
    show(tr)
    return tr


def write_json(path: str | None, out: dict) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(out, f, indent=1)


def markdown_table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[k]) for r in cells)) if cells else len(h) for k, h in enumerate(headers)]
    def line(r):
        return "| " + " | ".join(c.rjust(w) if k else c.ljust(w) for k, (c, w) in enumerate(zip(r, widths))) + " |"
    sep = "|" + "|".join("-" * (w + 1) + ("-" if k == 0 else ":") for k, w in enumerate(widths)) + "|"
    return "\n".join([line(headers), sep, *map(line, cells)])


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)
