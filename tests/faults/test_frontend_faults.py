"""Front-end faults: compiler workers die with their parent, and bad options,
flags, environment variables and paths give errors that say what is wrong.

The parent-death test SIGKILLs a scenario process while its workers are busy
(one blocked on purpose, one running gcc on a source that takes minutes at
-O2) and checks that every worker and compiler process it had is gone within
a few seconds.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time

import pytest

DEATH_GRACE = 5.0          # seconds the orphans get to notice (they should take ~0.1 s)


# -- /proc helpers ---------------------------------------------------------------

def _stat(pid: int) -> tuple[str, str, int] | None:
    """(comm, state, ppid) of ``pid``, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    comm = text[text.index("(") + 1:text.rindex(")")]
    state, ppid = text[text.rindex(")") + 2:].split()[:2]
    return comm, state, int(ppid)


def _running(pid: int) -> bool:
    """Exists and is not a zombie (a killed orphan may wait a moment for init to reap it)."""
    st = _stat(pid)
    return st is not None and st[1] not in ("Z", "X")


def _descendants(root: int) -> dict[int, str]:
    """pid -> comm of every live process below ``root``."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                children.setdefault(st[2], []).append(int(name))
    out: dict[int, str] = {}
    todo = [root]
    while todo:
        for c in children.get(todo.pop(), []):
            st = _stat(c)
            if st is not None and st[1] not in ("Z", "X"):
                out[c] = st[0]
                todo.append(c)
    return out


def _scenario_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("HOTLINK_CACHE_DIR", None)
    env["HOTLINK_CACHE"] = "0"
    env["PYTHONFAULTHANDLER"] = "1"
    return env


# -- workers die with their parent ------------------------------------------------

BUSY_WORKERS = r"""
import os, sys, threading, time
import hotlink
from hotlink.frontend.jobs import CompileJob, Options
from hotlink.frontend.pool import get_pool

# gcc needs minutes for this at -O2 (one function, 20000 interdependent statements)
n = 20000
decl = "".join(f"unsigned long x{j} = a[{j}];\n" for j in range(64))
body = "".join(f"x{i % 64} = x{i * 7 % 64} * {i | 1} + (x{i * 13 % 64} >> {i % 5 + 1}) ^ a[{i % 256}];\n"
               f"if (x{i % 64} & {i % 7 + 1}) a[{i * 3 % 256}] += x{i * 5 % 64};\n" for i in range(n))
slow_c = ("unsigned long slow(unsigned long *a) {\n" + decl + body
          + "return " + "+".join(f"x{j}" for j in range(64)) + ";\n}\n").encode()

s = hotlink.Session()
pool = get_pool(s)
# Start the workers from a thread that then ends: they must not depend on it.
starter = threading.Thread(target=pool.warm, args=(2,))
starter.start()
starter.join()
workers = pool.pids()
assert len(workers) == 2, workers

def hang():
    s.compile_many(["define void @h() {\n  ret void\n}\n"], _crash="hang", workers=1, cache=False)

def gcc():
    # the product compiles C in this process; a C job sent to a worker runs its gcc there
    pool.run([CompileJob("c", slow_c, "<slow.c>", None, Options(opt=2, cache=False))], 1)

for f in (hang, gcc):
    threading.Thread(target=f, daemon=True).start()

def cc1_under(pid):
    kids = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                text = open(f"/proc/{name}/stat").read()
            except OSError:
                continue
            kids.setdefault(int(text[text.rindex(")") + 2:].split()[1]), []).append(int(name))
    todo, found = [pid], False
    while todo:
        for c in kids.get(todo.pop(), []):
            try:
                found |= open(f"/proc/{c}/comm").read().strip() == "cc1"
            except OSError:
                pass
            todo.append(c)
    return found

deadline = time.monotonic() + 60
while not (pool.idle == 0 and any(cc1_under(w) for w in workers)):
    assert time.monotonic() < deadline, "the workers never got busy"
    time.sleep(0.05)
time.sleep(0.5)                       # the hang job is surely past its recv by now
print(" ".join(map(str, workers)), flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_busy_workers_and_their_compiler_die_when_the_parent_is_killed(scenario):
    env = _scenario_env()
    env["CC"] = "gcc"
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(BUSY_WORKERS)], cwd=scenario.workdir,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    orphans: dict[int, str] = {}
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 90)
        line = proc.stdout.readline() if ready else ""
        if not line:
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"scenario did not get its workers busy (exit {proc.returncode})\n{err}", pytrace=False)
        workers = [int(p) for p in line.split()]
        orphans = _descendants(proc.pid)
        assert set(workers) <= set(orphans), (workers, orphans)
        assert "cc1" in orphans.values(), orphans          # gcc's compiler proper, a grandchild of a worker
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed = time.monotonic()
        while time.monotonic() - killed < DEATH_GRACE and any(_running(p) for p in orphans):
            time.sleep(0.05)
        took = time.monotonic() - killed
        left = {p: c for p, c in orphans.items() if _running(p)}
        assert not left, f"still running {DEATH_GRACE} s after the parent was killed: {left}"
        assert took < 2.0, f"the orphans took {took:.2f} s to die"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid, comm in orphans.items():          # a failed run must not leave gcc running for minutes
            st = _stat(pid)
            if st is not None and st[0] == comm:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.slow
def test_idle_workers_outlive_the_thread_that_started_them(scenario):
    # PR_SET_PDEATHSIG would kill them when that thread ends; pooled workers must stay.
    scenario.expect_ok("""
        import threading, time
        import hotlink
        from hotlink.frontend.pool import get_pool
        with hotlink.Session() as s:
            pool = get_pool(s)
            t = threading.Thread(target=pool.warm, args=(2,))
            t.start(); t.join()
            before = pool.pids()
            time.sleep(0.5)
            out = s.compile_many([f"define i32 @f{i}() {{\\n  ret i32 {i}\\n}}\\n" for i in range(4)],
                                 workers=2, cache=False)
            assert len(out) == 4
            assert pool.started == 2, pool.started
            assert sorted(pool.pids()) == sorted(before), (before, pool.pids())
    """, env={"HOTLINK_CACHE": "0"})


def test_worker_whose_parent_is_already_gone_exits_at_once():
    from hotlink.frontend.pool import _BOOT, _PACKAGE_PARENT
    # pid 1 (or a subreaper) is never the process that starts a worker here
    proc = subprocess.Popen([sys.executable, "-c", _BOOT, _PACKAGE_PARENT, "1"], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        rc = proc.wait(timeout=30)                 # stdin stays open: only the watchdog ends it
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail("the worker kept running with its parent pid gone")
    finally:
        proc.stdin.close()
        proc.stderr.close()
    assert rc == -signal.SIGKILL


# -- clear errors ------------------------------------------------------------------

@pytest.mark.parametrize("flags, culprit, problem", [
    (["-fsyntax-only"], "-fsyntax-only", "wrote no output file"),
    (["-E"], "-E", "not an ELF object"),
    (["-S"], "-S", "not an ELF object"),
    (["-Wall", "-###"], "-###", "wrote no output file"),
    (["-flto"], "-flto", "slim LTO object|LLVM bitcode"),        # gcc | clang
])
@pytest.mark.slow
def test_flags_that_make_no_object_are_a_compile_error(scenario, flags, culprit, problem):
    scenario.expect_ok(f"""
        import hotlink
        open("k.c", "w").write("int k(void) {{ return 7; }}\\n")
        with hotlink.Session() as s:
            lib = s.library("x")
            for cache in (False, True):
                try:
                    lib.add("k.c", flags={flags!r}, cache=cache, cache_dir="cache")
                except hotlink.CompileError as e:
                    msg = str(e)
                else:
                    raise AssertionError("no error")
                assert "produced no object file" in msg, msg
                assert any(p in msg for p in {problem!r}.split("|")), msg
                assert "k.c" in msg, msg
                assert "flag {culprit} is likely responsible" in msg, msg
            assert s.compile_many(["k.c"], cache=False)          # the same source without them is fine
    """)


def test_cache_size_accepts_units_and_names_a_bad_value(scenario):
    scenario.expect_ok("""
        import os
        import hotlink
        from hotlink.frontend.cache import ObjectCache
        from hotlink.frontend.jobs import Options
        sizes = {"1G": 1 << 30, "1g": 1 << 30, "1GiB": 1 << 30, "512M": 512 << 20, "512mib": 512 << 20,
                 "64K": 64 << 10, "64KiB": 64 << 10, "1000": 1000, " 2048 ": 2048}
        for text, n in sizes.items():
            os.environ["HOTLINK_CACHE_SIZE"] = text
            assert ObjectCache.for_options(Options()).max_bytes == n, text
            assert ObjectCache.for_options(Options.parse({"cache_size": text})).max_bytes == n, text
        os.environ["HOTLINK_CACHE_SIZE"] = "1G"
        open("k.c", "w").write("int k(void) { return 7; }\\n")
        with hotlink.Session() as s:
            assert s.compile_many(["k.c"], cache_dir="cache")
            for bad in ("lots", "1Q", "-5", "1.5.2G", "G"):
                os.environ["HOTLINK_CACHE_SIZE"] = bad
                try:
                    s.compile_many(["k.c"], cache_dir="cache")
                except ValueError as e:
                    assert "HOTLINK_CACHE_SIZE" in str(e) and repr(bad) in str(e), e
                else:
                    raise AssertionError(bad)
            del os.environ["HOTLINK_CACHE_SIZE"]
            for bad in ("lots", -1):
                try:
                    s.compile_many(["k.c"], cache_dir="cache", cache_size=bad)
                except ValueError as e:
                    assert "cache_size" in str(e) and repr(bad) in str(e), e
                else:
                    raise AssertionError(bad)
    """, env={"HOTLINK_CACHE": "1"})


@pytest.mark.slow
def test_bad_options_name_the_option(scenario):
    scenario.expect_ok("""
        import hotlink
        IR = "define void @g() {\\n  ret void\\n}\\n"
        open("k.c", "w").write("int k(void) { return 7; }\\n")
        cases = [
            (dict(language="fortran"), ValueError, "language='fortran' is not supported"),
            (dict(timeout="5"), TypeError, "timeout='5'"),
            (dict(timeout=0), ValueError, "timeout=0"),
            (dict(workers="2"), TypeError, "workers='2'"),
            (dict(workers=0), ValueError, "workers=0"),
            (dict(flags=5), TypeError, "flags=5"),
            (dict(cpu=None), TypeError, "cpu=None"),
            (dict(opt=True), ValueError, "opt=True"),
            (dict(optimize=3), TypeError, "unknown front-end option(s): optimize"),
        ]
        with hotlink.Session() as s:
            lib = s.library("x")
            for kw, exc, text in cases:
                for call in (lambda: lib.add("k.c", **kw), lambda: s.compile_many([IR, "k.c"], **kw),
                             lambda: hotlink.Source("k.c", **kw)):
                    try:
                        call()
                    except exc as e:
                        assert text in str(e), (kw, e)
                    else:
                        raise AssertionError(kw)
            assert s.compile_many([IR], flags=None, cache=False)      # no flags: fine
            assert s.compile_many(["k.c"], cpu="native", cache=False) # gcc's name for "host"
            assert s.compile_many([IR], cpu="native", cache=False)
    """)


@pytest.mark.slow
def test_unknown_llvm_cpu_or_feature_is_a_compile_error_not_a_dead_process(scenario):
    # LLVM only warns about an unknown CPU and then exits the process with
    # "LLVM ERROR: 64-bit code requested on a subtarget that doesn't support it!"
    proc = scenario.expect_ok("""
        import hotlink
        IR = "define void @g() {\\n  ret void\\n}\\n"
        with hotlink.Session() as s:
            lib = s.library("x")
            for kw, text in ((dict(cpu="bogus"), "processor 'bogus'"),
                             (dict(cpu="skylake", features="+avx2,+nonsense"), "feature '+nonsense'")):
                for call in (lambda: lib.add(IR, cache=False, **kw),                          # in this process
                             lambda: s.compile_many([IR], cache=False, workers=1, **kw)):     # in a worker
                    try:
                        call()
                    except hotlink.CompileError as e:
                        assert text in str(e) and "LLVM does not know" in str(e), e
                    else:
                        raise AssertionError(kw)
            lib.add(IR, cpu="x86-64", features="+avx2", cache=False)
            print("survived")
    """)
    assert "survived" in proc.stdout
    assert "LLVM ERROR" not in proc.stderr


def test_compiler_environment_errors_are_compile_errors(scenario):
    scenario.expect_ok("""
        import os
        import hotlink
        open("k.c", "w").write("int k(void) { return 7; }\\n")
        with hotlink.Session() as s:
            for cc, text in (("no-such-cc-hotlink", "compiler 'no-such-cc-hotlink' not found (set $CC)"),
                             ('gcc "-O2', "$CC='gcc \\"-O2' is not a valid command line")):
                os.environ["CC"] = cc
                for cache in (False, True):
                    try:
                        s.compile_many(["k.c"], cache=cache, cache_dir="cache")
                    except hotlink.CompileError as e:
                        assert text in str(e) and "k.c" in str(e), e
                    else:
                        raise AssertionError(cc)
                    # several sources: each failure in its place, not one exception for all
                    out = s.compile_many(["k.c", "k.c"], cache=cache, cache_dir="cache", return_exceptions=True)
                    assert all(isinstance(r, hotlink.CompileError) and text in str(r) for r in out), out
    """)


def test_unreadable_source_paths_say_so(scenario):
    scenario.expect_ok("""
        import os, pathlib
        import hotlink
        os.mkdir("dir.c")
        with hotlink.Session() as s:
            for src in ("dir.c", pathlib.Path("dir.c")):
                try:
                    s.compile_many([src], cache=False)
                except IsADirectoryError as e:
                    assert "source is a directory" in str(e) and "dir.c" in str(e), e
                else:
                    raise AssertionError(src)
            try:
                s.compile_many([pathlib.Path("missing.c")], cache=False)
            except FileNotFoundError as e:
                assert "missing.c" in str(e), e
            else:
                raise AssertionError("missing.c")
            if os.geteuid() != 0:                  # root reads anything
                open("secret.c", "w").write("int k(void) { return 7; }\\n")
                os.chmod("secret.c", 0)
                try:
                    s.compile_many(["secret.c"], cache=False)
                except PermissionError as e:
                    assert "cannot read source file" in str(e) and "secret.c" in str(e), e
                else:
                    raise AssertionError("secret.c")
    """)


def test_bind_to_host_names_a_bad_side_table_entry_and_bad_input():
    import hotlink
    ir = "@g = internal global i32 0\ndefine i32 @f() {\n  %v = load i32, ptr @g\n  ret i32 %v\n}\n"
    with pytest.raises(TypeError, match=r"side_table\['g'\] = None: expected an address"):
        hotlink.bind_to_host(ir, {"g": None})
    with pytest.raises(hotlink.CompileError, match="neither bitcode nor UTF-8 text"):
        hotlink.bind_to_host(b"\xff\xfe not IR", {})
    assert hotlink.bind_to_host(ir, {"g": 4096}).bound == {"g": 4096}
