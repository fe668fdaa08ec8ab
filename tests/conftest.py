"""Shared fixtures: compile C/C++ fixtures at test time, build archives and
shared objects with the system toolchain, and open hotlink sessions.

Every helper returns a ``pathlib.Path`` inside the test's ``tmp_path`` (or a
module-level temporary directory for module-scoped fixtures).
"""
from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import pytest

import hotlink

FIXTURES = Path(__file__).parent / "fixtures"

LIBZ_A = Path("/usr/lib/x86_64-linux-gnu/libz.a")
LIBLUA_A = Path("/usr/lib/x86_64-linux-gnu/liblua5.4.a")

Flags = str | Sequence[str]


def _flags(flags: Flags | None) -> list[str]:
    if flags is None:
        return []
    if isinstance(flags, str):
        return flags.split()
    return list(flags)


def run_tool(cmd: Sequence[str | os.PathLike[str]], cwd: Path | None = None) -> str:
    """Run a toolchain command; on failure, fail the test with its diagnostics."""
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(
            f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}",
            pytrace=False,
        )
    return proc.stdout


class Toolchain:
    """Compiles sources into a directory with gcc/g++/ar.

    ``flags`` are appended after the defaults (``-O2``), so a later ``-O0``
    or ``-fno-pic`` wins.
    """

    _ids = itertools.count()

    def __init__(self, workdir: Path):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)

    def _name(self, name: str | None, stem: str) -> str:
        return name or f"{stem}{next(self._ids)}"

    def _source(self, source: str | Path, suffix: str, name: str) -> Path:
        if isinstance(source, Path):
            return source
        path = self.workdir / f"{name}{suffix}"
        path.write_text(source)
        return path

    def compile_c(self, source: str | Path, flags: Flags | None = None, *, name: str | None = None) -> Path:
        """Compile C source (text, or a Path to a file) with ``gcc -O2 -c``; return the .o."""
        name = self._name(name, "unit")
        src = self._source(source, ".c", name)
        out = self.workdir / f"{name}.o"
        run_tool(["gcc", "-O2", "-std=gnu11", "-Wall", "-Werror=implicit-function-declaration",
                  *_flags(flags), "-c", src, "-o", out])
        return out

    def compile_cxx(self, source: str | Path, flags: Flags | None = None, *, name: str | None = None) -> Path:
        """Compile C++ source (text, or a Path) with ``g++ -O2 -c``; return the .o."""
        name = self._name(name, "unit")
        src = self._source(source, ".cpp", name)
        out = self.workdir / f"{name}.o"
        run_tool(["g++", "-O2", "-std=c++17", "-Wall", *_flags(flags), "-c", src, "-o", out])
        return out

    def link_exe(self, objects: Iterable[Path], flags: Flags | None = None, *, name: str | None = None,
                 cxx: bool = False) -> Path:
        """Link objects into an executable with the system linker."""
        name = self._name(name, "prog")
        out = self.workdir / name
        run_tool(["g++" if cxx else "gcc", *map(str, objects), *_flags(flags), "-o", out])
        return out

    def shared(self, sources: Iterable[Path], flags: Flags | None = None, *, name: str | None = None,
               cxx: bool = False) -> Path:
        """Build a shared object from sources or objects (``-O2 -shared -fPIC``)."""
        name = self._name(name, "lib")
        out = self.workdir / f"{name}.so"
        compiler = ["g++", "-std=c++17"] if cxx else ["gcc"]
        # flags after the sources: libraries (-lfoo) must follow what needs them
        run_tool([*compiler, "-O2", "-shared", "-fPIC", *map(str, sources), *_flags(flags), "-o", out])
        return out

    def archive(self, objects: Iterable[Path], *, name: str | None = None) -> Path:
        """``ar rcs`` the objects into a static archive."""
        name = self._name(name, "lib")
        out = self.workdir / f"{name}.a"
        out.unlink(missing_ok=True)
        run_tool(["ar", "rcs", out, *map(str, objects)])
        return out


@pytest.fixture
def toolchain(tmp_path: Path) -> Toolchain:
    return Toolchain(tmp_path / "build")


@pytest.fixture
def compile_c(toolchain: Toolchain):
    """``compile_c(source, flags=None, *, name=None) -> Path`` of the .o."""
    return toolchain.compile_c


@pytest.fixture
def compile_cxx(toolchain: Toolchain):
    """``compile_cxx(source, flags=None, *, name=None) -> Path`` of the .o."""
    return toolchain.compile_cxx


@pytest.fixture
def make_archive(toolchain: Toolchain):
    """``make_archive(objects, *, name=None) -> Path`` of the .a."""
    return toolchain.archive


@pytest.fixture
def session() -> Iterator[hotlink.Session]:
    """A fresh session, closed (everything unloaded) after the test."""
    with hotlink.Session() as s:
        yield s


def reloc_types(obj: Path) -> set[str]:
    """Names of the relocation types an object uses (``R_X86_64_*``), via pyelftools.

    Tests use it to check that a fixture really exercises the relocation
    kinds it claims to, independently of hotlink's own ELF reader.
    """
    from elftools.elf.elffile import ELFFile
    from elftools.elf.enums import ENUM_RELOC_TYPE_x64
    from elftools.elf.relocation import RelocationSection

    names = {v: k for k, v in ENUM_RELOC_TYPE_x64.items()}
    found: set[str] = set()
    with open(obj, "rb") as f:
        elf = ELFFile(f)
        for sec in elf.iter_sections():
            if isinstance(sec, RelocationSection):
                for rel in sec.iter_relocations():
                    found.add(names.get(rel["r_info_type"], str(rel["r_info_type"])))
    return found


def elf_symbols(obj: Path) -> dict[str, tuple[str, str | int]]:
    """name -> (binding, section index) of an object's global symbols, via
    pyelftools. GNU_UNIQUE binding shows as ``STB_LOOS``; undefined as
    ``SHN_UNDEF``."""
    from elftools.elf.elffile import ELFFile

    out: dict[str, tuple[str, str | int]] = {}
    with open(obj, "rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        for sym in symtab.iter_symbols():
            if sym.name and sym["st_info"]["bind"] != "STB_LOCAL":
                out[sym.name] = (sym["st_info"]["bind"], sym["st_shndx"])
    return out
