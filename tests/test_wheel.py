"""hotlink installs as a wheel and works outside the repository.

``python -m build`` makes the sdist and the wheel from a copy of the source
tree (so the checkout gets no build/ or egg-info); the wheel goes into a fresh
virtualenv in a temporary directory, and there, from another temporary
directory, ``hotlink demo --quick``, ``hotlink run`` on a C file, the API (a C
declaration, an inferred signature, a buffer) and the ``%%hotlink`` magic on an
IPython shell all work. Display dependencies are extras: the base install has
no rich and no matplotlib, and the benchmarks are not part of the package.
"""
from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow       # a build, a venv and installs from the package index: tens of seconds

PROG = r"""
#include <stdio.h>
int main(int argc, char **argv) {
    printf("hello from %s with %d args\n", argv[0], argc - 1);
    return 7;
}
"""

API = r"""
import ctypes, hotlink, sys
from pathlib import Path
assert Path(hotlink.__file__).is_relative_to(sys.prefix), hotlink.__file__     # the installed copy
assert (Path(hotlink.__file__).parent / "py.typed").is_file()
with hotlink.Session() as s:
    lib = s.library("k", patchable=True)
    u = lib.add("void up(char *s, long n) { for (long i = 0; i < n; i++) s[i] -= 32; }\n"
                "int add(int a, int b) { return a + b; }", language="c")
    buf = bytearray(b"wheel")
    lib.function("up", "void(char *, long)")(buf, 5)
    print(buf.decode(), lib.function("add")(40, 2), lib.function("add").signature)
"""

MAGIC = r"""
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
ip.run_line_magic("load_ext", "hotlink")
assert ip.run_cell("%%hotlink\nint sq(int x) { return x * x; }\n").success
old = ip.user_ns["sq"]
assert ip.run_cell("%%hotlink\nint sq(int x) { return -x; }\n").success
print("magic", ip.user_ns["sq"](3), old(3))
"""


def run(cmd: list[str | Path], cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return p


def must(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode == 0, f"{p.args} exited {p.returncode}\n--- stdout\n{p.stdout[-3000:]}\n--- stderr\n{p.stderr[-3000:]}"
    return p.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "source"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HOTLINK_CACHE_DIR"] = str(tmp / "cache")
    must(run([sys.executable, "-m", "build", "--outdir", tmp / "dist", src], tmp, env))
    wheels = list((tmp / "dist").glob("hotlink-*.whl"))
    sdists = list((tmp / "dist").glob("hotlink-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list((tmp / "dist").iterdir())
    venv = tmp / "venv"
    must(run([sys.executable, "-m", "venv", venv], tmp, env))
    # the [jupyter] extra brings IPython, for the magic; nothing else comes from the checkout
    must(run([venv / "bin" / "python", "-m", "pip", "install", "-q", f"{wheels[0]}[jupyter]"], tmp, env))
    work = tmp / "elsewhere"
    work.mkdir()
    return {"wheel": wheels[0], "sdist": sdists[0], "venv": venv, "work": work, "env": env}  # type: ignore[dict-item]


def test_wheel_contents_and_metadata(built):
    with zipfile.ZipFile(built["wheel"]) as z:
        names = set(z.namelist())
        meta = email.message_from_bytes(z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))))
    assert {"hotlink/__init__.py", "hotlink/py.typed", "hotlink/ipython.py", "hotlink/signature.py",
            "hotlink/frontend/prototypes.py"} <= names
    assert not any("bench" in n for n in names)                      # benchmarks live in the repository
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    assert meta["License-Expression"] == "MIT" and meta["Requires-Python"] == ">=3.10"
    requires = meta.get_all("Requires-Dist")
    base = [r for r in requires if "extra ==" not in r]
    assert sorted(r.split(">")[0].split("=")[0] for r in base) == ["llvmlite", "numpy", "pycparser"]
    assert {"display", "jupyter", "test"} <= set(meta.get_all("Provides-Extra"))
    assert any(r.startswith("rich") and 'extra == "display"' in r for r in requires)
    assert "Typing :: Typed" in meta.get_all("Classifier")
    with tarfile.open(built["sdist"]) as t:
        members = {m.split("/", 1)[1] for m in t.getnames() if "/" in m}
    assert {"pyproject.toml", "README.md", "LICENSE", "src/hotlink/py.typed"} <= members


def test_installed_demo_quick(built):
    p = run([built["venv"] / "bin" / "hotlink", "demo", "--quick"], built["work"], built["env"])
    out = must(p)
    assert "5 patches applied" in out and " 0 wrong results" in out and "still retired: 0" in out
    # no rich in the base install: the plain-text table
    assert "variant" in out and "winner:" in out and "[bold" not in out


def test_installed_run_on_a_c_file(built):
    c = built["work"] / "prog.c"
    c.write_text(PROG)
    p = run([built["venv"] / "bin" / "hotlink", "run", c, "--", "a", "b"], built["work"], built["env"])
    assert p.returncode == 7, p.stderr
    assert p.stdout == f"hello from {c} with 2 args\n"
    p = run([built["venv"] / "bin" / "hotlink", "bench"], built["work"], built["env"])
    assert p.returncode == 2 and "invalid choice: 'bench'" in p.stderr


def test_installed_api_and_magic(built):
    py = built["venv"] / "bin" / "python"
    out = must(run([py, "-c", API], built["work"], built["env"]))
    assert out.split() == ["WHEEL", "42", "int(int", "a,", "int", "b)"]
    assert must(run([py, "-c", MAGIC], built["work"], built["env"])).split()[-3:] == ["magic", "-3", "-3"]
    p = run([py, "-c", "import rich"], built["work"], built["env"])
    assert p.returncode != 0                                          # display extras are not installed
