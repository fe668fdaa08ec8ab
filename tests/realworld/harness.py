"""The life cycle every real-world archive goes through, run in a fresh
interpreter per archive (``main(["realworld.test_x:CASE", ...])``, started by
conftest.py), so a crash in linked code or a fork handler fails one test, not
the run:

1. a session; what ``memory()`` shows before anything is added (the baseline);
2. ``lib.add(archive)`` for each archive of the case (members are pulled
   lazily as the check looks functions up), then any test-built objects;
3. the case's ``check`` runs against the hotlink build and against the shared
   build of the same library (``ctypes.CDLL``); both must return the same
   results, and each check also asserts against Python's own equivalent;
4. the library is removed: ``used`` back to the baseline (but for hotlink's
   own runtime parts linked on first use, a few hundred bytes), ``retired``
   zero; a second round (add, check, remove) comes back to exactly the same
   ``used``/``retired``/GOT/stub figures;
5. ``os.fork()``: fork handlers run in parent and child; the child links the
   archive again and repeats the check, the parent checks the child's status.

The last stdout line is ``REALWORLD {json}`` with a few figures.
"""
from __future__ import annotations

import argparse
import ctypes
import importlib
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LIBDIR = Path("/usr/lib/x86_64-linux-gnu")
MARKER = "REALWORLD "


def real_archives(path: Path) -> list[Path]:
    """The archives behind ``path``: itself, or, when it is a GNU ld script
    (libm.a is ``GROUP ( libm-2.36.a libmvec.a )``), the archives it names."""
    data = path.read_bytes()
    if data.startswith(b"!<arch>\n"):
        return [path]
    text = re.sub(r"/\*.*?\*/", " ", data.decode("ascii"), flags=re.S)
    m = re.search(r"\b(?:GROUP|INPUT)\s*\(([^)]*)\)", text)
    if m is None:
        raise ValueError(f"{path}: neither an archive nor a linker script with GROUP/INPUT")
    names = [w for w in m.group(1).replace(",", " ").split() if w not in ("AS_NEEDED", "(", ")")]
    out: list[Path] = []
    for n in names:
        p = Path(n) if n.startswith("/") else path.parent / n
        out += real_archives(p)
    return out


class Api:
    """Binds C functions by name in a hotlink library or a ctypes.CDLL, so one
    check runs unchanged against both builds."""

    def __init__(self, target: Any, kind: str, forked: bool = False):
        self.target = target
        self.kind = kind                  # "hotlink" or "shared"
        self.forked = forked              # in the child of a fork after the parent ran the check
        self.keep: list[Any] = []         # callbacks handed to C stay alive with the Api

    def __call__(self, name: str, restype: Any, *argtypes: Any) -> Callable[..., Any]:
        if self.kind == "hotlink":
            return self.target.function(name, restype, list(argtypes))
        f = getattr(self.target, name)
        f.restype, f.argtypes = restype, list(argtypes)
        return f

    def callback(self, restype: Any, *argtypes: Any) -> Callable[[Callable[..., Any]], Any]:
        """Decorator: a C function pointer for a Python function, kept alive."""
        def wrap(fn: Callable[..., Any]) -> Any:
            cb = ctypes.CFUNCTYPE(restype, *argtypes)(fn)
            self.keep.append(cb)
            return cb
        return wrap


@dataclass(frozen=True)
class Case:
    """A real-world archive and how to check it.

    ``archives``: file names in /usr/lib/x86_64-linux-gnu, added in order to one
    library (linker scripts are followed). ``reference``: soname of the shared
    build for ctypes.CDLL, or ``None`` when the test builds it (a C++ shim
    linked against the .so, passed with ``--reference``). ``shared``: objects
    hotlink should search (``Session.load_shared``), e.g. libstdc++.so.6.
    ``check(api)`` returns results that must match between the two builds.
    """
    name: str
    archives: tuple[str, ...]
    reference: str | None
    check: Callable[[Api], Any]
    shared: tuple[str, ...] = ()
    package: str = ""                       # the Debian -dev package that ships the archives
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def case(name: str, archives: str | Sequence[str], reference: str | None, *, shared: Sequence[str] = (),
         package: str = "", notes: str = "") -> Callable[[Callable[[Api], Any]], Case]:
    def wrap(check: Callable[[Api], Any]) -> Case:
        arch = (archives,) if isinstance(archives, str) else tuple(archives)
        return Case(name, arch, reference, check, tuple(shared), package, notes)
    return wrap


def _link(s: Any, c: Case, objects: Sequence[str]) -> tuple[Any, list[Any]]:
    lib = s.library(c.name)
    units = []
    for a in c.archives:
        for path in real_archives(LIBDIR / a):
            units.append(lib.add(str(path)))
    for o in objects:
        units.append(lib.add(o))
    return lib, units


def _remove(s: Any, lib: Any) -> Any:
    lib.remove()
    assert s.synchronize(10), "grace period did not end"
    m = s.memory()
    assert lib.name not in m.libraries and m.retired == 0, m
    return m


def _figures(m: Any) -> tuple[int, int, int, int]:
    return (m.used, m.retired, m.got_entries, m.stubs)


def _agrees(child: Any, parent: Any) -> bool:
    """A check may return a dict and leave keys out in a forked child (e.g.
    OpenMP code: libgomp's thread pool does not survive fork); what it
    returns must match."""
    if isinstance(child, dict) and isinstance(parent, dict):
        return bool(child) and all(k in parent and parent[k] == v for k, v in child.items())
    return bool(child == parent)


def run(c: Case, objects: Sequence[str], reference: str | None) -> dict[str, Any]:
    import hotlink

    t0 = time.perf_counter()
    s = hotlink.Session()
    for so in c.shared:
        s.load_shared(so)
    assert s.synchronize(10)
    baseline = s.memory()
    # the shared build first: glibc gives static TLS back only from the top of
    # its reserve, so hotlink's copies (added and removed below) stay above it
    ref_path = reference or c.reference
    assert ref_path, f"{c.name}: no shared build to compare with"
    ref = ctypes.CDLL(ref_path)

    lib, units = _link(s, c, objects)
    jit_results = c.check(Api(lib, "hotlink"))
    t_jit = time.perf_counter() - t0
    mem = s.memory()
    pulled = sum(len(u.extra.members) if u.extra is not None else 0 for u in units)
    assert mem.libraries[c.name].used > 0, "the check pulled no archive member"

    ref_results = c.check(Api(ref, "shared"))
    assert jit_results == ref_results, (
        f"{c.name}: hotlink build and shared build differ\n hotlink: {jit_results!r}\n shared:  {ref_results!r}")

    first = _remove(s, lib)
    # hotlink links parts of its own runtime on first use (the C++ exception
    # guard once a C++ runtime is in the process); they stay for the session
    residue = first.used - baseline.used
    assert 0 <= residue <= 4096, f"{c.name}: {residue} bytes left after removal (baseline {baseline}, now {first})"
    # a second round comes back to exactly the same figures
    lib, _ = _link(s, c, objects)
    assert c.check(Api(lib, "hotlink")) == jit_results
    second = _remove(s, lib)
    assert _figures(second) == _figures(first), (
        f"{c.name}: after removal (used, retired, got, stubs) = {_figures(second)}, before {_figures(first)}")

    # fork after removal: handlers the library registered must be gone with it
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code = 1
        try:
            lib2, _ = _link(s, c, objects)
            again = c.check(Api(lib2, "hotlink", forked=True))
            lib2.remove()
            os.write(w, b"same" if _agrees(again, jit_results) else repr(again).encode()[:4000])
            code = 0
        except BaseException as e:          # report anything to the parent, never run its atexit
            os.write(w, f"{type(e).__name__}: {e}".encode()[:4000])
        finally:
            os._exit(code)
    os.close(w)
    msg = os.read(r, 8192).decode("utf-8", "replace")
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and msg == "same", (
        f"{c.name}: child forked after removal: status {os.waitstatus_to_exitcode(status)}, said {msg!r}")

    s.close()
    return {"case": c.name, "members": pulled, "used": mem.libraries[c.name].used, "residue": residue,
            "hotlink_s": round(t_jit, 3), "total_s": round(time.perf_counter() - t0, 3)}


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="realworld.harness")
    ap.add_argument("case", help="module:name of a Case")
    ap.add_argument("--object", action="append", default=[], help="extra object added after the archives")
    ap.add_argument("--reference", help="path of the shared build (overrides the case's soname)")
    ns = ap.parse_args(argv)
    modname, _, attr = ns.case.partition(":")
    c = getattr(importlib.import_module(modname), attr)
    assert isinstance(c, Case), f"{ns.case} is not a Case"   # run through realworld.harness, not as __main__
    print(MARKER + json.dumps(run(c, ns.object, ns.reference)), flush=True)
