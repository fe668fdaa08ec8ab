"""The ``%%hotlink`` cell magic's pieces, in this process: option parsing,
diagnostics with cell line numbers, which unit a re-run cell replaces, and
the magics on an in-process IPython shell. (The notebook test runs the magic
on a real kernel.)"""
from __future__ import annotations

import numpy as np
import pytest

import hotlink
from hotlink.ipython import CellCompileError, CellError, CellLinker, CellOptions, MemoryTable, cell_diagnostics


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HOTLINK_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def linker():
    cl = CellLinker()
    yield cl
    cl.close()


def test_options():
    o = CellOptions.parse("")
    assert (o.language, o.library, o.opt, o.flags) == ("c", "cells", None, [])
    o = CellOptions.parse("c++ --library kern -O3 -ffast-math -DN=4")
    assert (o.language, o.library, o.opt, o.flags) == ("c++", "kern", 3, ["-ffast-math", "-DN=4"])
    assert CellOptions.parse("llvm -O1 --library=ir").front_end() == {"language": "llvm", "opt": 1}
    with pytest.raises(ValueError, match="do not apply to LLVM IR"):
        CellOptions.parse("llvm -ffast-math")
    with pytest.raises(ValueError, match="language=.fortran. is not supported"):
        CellOptions.parse("fortran")
    with pytest.raises(ValueError, match="unexpected 'c'"):
        CellOptions.parse("-O2 c")
    with pytest.raises(ValueError, match="--library needs a NAME"):
        CellOptions.parse("--library")


def test_diagnostics_get_cell_line_numbers():
    gcc = "<stdin>: In function 'f':\n<stdin>:2:13: error: expected expression"
    assert cell_diagnostics(gcc) == "<cell>: In function 'f':\n<cell>:3:13: error: expected expression"
    assert cell_diagnostics("<string>:7:1: error: x", first_line=1) == "<cell>:7:1: error: x"


def test_rerun_replaces_by_function_names(linker):
    r1 = linker.run_cell("", "int answer(void) { return 1; }")
    f1 = r1.functions["answer"]
    assert r1.replaced is None and f1() == 1
    r2 = linker.run_cell("-O0", "int answer(void) { return 2; }")
    assert r2.replaced is r1.unit and not r1.unit.alive and r2.unit.name == r1.unit.name
    assert r2.functions["answer"]() == 2 and f1() == 2          # through the entry stub
    assert len(linker.library().units) == 1
    assert "replaced cells:cell1" in r2.summary()


def test_rerun_replaces_by_cell_id_even_when_renamed(linker):
    r1 = linker.run_cell("", "int before(void) { return 1; }", cell_id="abc")
    r2 = linker.run_cell("", "int after(void) { return 2; }", cell_id="abc")
    assert r2.replaced is r1.unit and r2.functions["after"]() == 2
    assert "before" not in linker.library()
    r3 = linker.run_cell("", "int other(void) { return 3; }", cell_id="xyz")
    assert r3.replaced is None and len(linker.library().units) == 2


def test_cell_redefining_two_cells_is_refused(linker):
    linker.run_cell("", "int f(void) { return 1; }")
    linker.run_cell("", "int g(void) { return 2; }")
    with pytest.raises(CellError, match=r"defines names of several earlier cells \(cell1, cell2\)"):
        linker.run_cell("", "int f(void) { return 3; }\nint g(void) { return 4; }")


def test_a_data_only_cell_is_replaced_too(linker):
    r1 = linker.run_cell("", "int table[4] = {1, 2, 3, 4};")
    r2 = linker.run_cell("", "int table[4] = {5, 6, 7, 8};")
    assert r2.replaced is r1.unit and r2.functions == {}
    assert linker.library().units == [r2.unit]


def test_failures_leave_the_previous_version_running(linker):
    r1 = linker.run_cell("", "double half(double x) { return x / 2; }")
    half = r1.functions["half"]
    with pytest.raises(CellCompileError) as e:
        linker.run_cell("", "double half(double x) {\n  return x / ;\n}")
    assert isinstance(e.value, hotlink.CompileError)
    assert "<cell>:3:" in e.value.diagnostics and "error" in e.value.diagnostics
    assert e.value._render_traceback_()[0].startswith("hotlink: the C compiler rejected the cell")
    with pytest.raises(CellError, match=r"did not link: .*undefined symbol.*nowhere_defined"):
        linker.run_cell("", "extern double nowhere_defined(double);\n"
                            "double half(double x) { return nowhere_defined(x); }")
    assert half(3.0) == 1.5 and r1.unit.alive


def test_a_cell_calling_another_cell_keeps_working_across_its_edits(linker):
    linker.run_cell("", "double base(double x) { return x + 1; }", cell_id="base")
    user = linker.run_cell("", "double base(double);\ndouble twice_base(double x) { return 2 * base(x); }")
    assert user.functions["twice_base"](1.0) == 4.0
    linker.run_cell("", "double base(double x) { return x + 10; }", cell_id="base")
    assert user.functions["twice_base"](1.0) == 22.0          # the caller reaches base through its stub
    with pytest.raises(CellError, match=r"did not link: .*does not define base \(called by cells:cell2\)"):
        linker.run_cell("", "double renamed(double x) { return x; }", cell_id="base")
    assert user.functions["twice_base"](1.0) == 22.0


def test_buffers_llvm_and_cxx_cells(linker):
    r = linker.run_cell("--library vec", "void fill(double *out, long n, double v) "
                                         "{ for (long i = 0; i < n; i++) out[i] = v; }")
    out = np.zeros(3)
    r.functions["fill"](out, 3, 7.0)
    assert out.tolist() == [7.0, 7.0, 7.0] and r.unit.library.name == "vec" and r.unit.library.patchable
    ir = linker.run_cell("llvm", "define i64 @sq(i64 %x) {\n  %r = mul i64 %x, %x\n  ret i64 %r\n}\n")
    assert ir.functions["sq"](12) == 144
    cxx = linker.run_cell("c++", 'extern "C" int cx(int x) { return x + 1; }')
    assert cxx.functions == {} and "C++" in cxx.unbound["cx"]
    assert "cx: not bound" in cxx.summary()
    assert linker.library().function("cx", "int(int)")(1) == 2


def test_memory_table(linker):
    linker.run_cell("", "int one(void) { return 1; }")
    t = MemoryTable(linker.session.memory())
    text = repr(t)
    assert text.splitlines()[0].split() == ["library", "units", "used", "symbols"]
    assert any(line.split()[:2] == ["cells", "1"] for line in text.splitlines())
    assert "retired (waiting for a grace period):" in text and "<td>cells</td>" in t._repr_html_()


def test_magics_on_an_ipython_shell(tmp_path):
    from IPython.core.interactiveshell import InteractiveShell
    ip = InteractiveShell.instance()
    try:
        ip.run_line_magic("load_ext", "hotlink")
        r = ip.run_cell("%%hotlink --library shell\nint triple(int x) { return 3 * x; }\n")
        assert r.success and ip.user_ns["triple"](5) == 15
        assert isinstance(ip.run_line_magic("hotlink", "memory"), MemoryTable)
        lib = ip.run_line_magic("hotlink", "lib shell")
        assert isinstance(lib, hotlink.Library) and "triple" in lib
        session = ip.run_line_magic("hotlink", "session")
        bad = ip.run_cell("%hotlink nonsense")
        assert isinstance(bad.error_in_exec, ValueError)
        failed = ip.run_cell("%%hotlink --library shell\nint triple(int x) { return x +; }\n")
        assert isinstance(failed.error_in_exec, CellCompileError) and ip.user_ns["triple"](5) == 15
        ip.run_line_magic("unload_ext", "hotlink")
        with pytest.raises(hotlink.SessionClosedError):
            session.check_open()
    finally:
        InteractiveShell.clear_instance()
