"""C (and C++) front end: the system compiler with -fPIC; its diagnostics on
failure; ``hotlink run`` on .c and .ll files."""
from __future__ import annotations

import ctypes
import math
import os
import subprocess
import sys
from ctypes import c_double, c_int, c_long
from pathlib import Path

import pytest

import hotlink
from hotlink.frontend import Source


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Never touch the user's object cache."""
    monkeypatch.setenv("HOTLINK_CACHE_DIR", str(tmp_path / "cache"))


STATS_C = r"""
#include <math.h>

static double weights[5] = {1.0, 2.0, 3.0, 4.0, 5.0};   /* a global array */
long squares[8];

static double weighted(const double *v, int n) {          /* static functions */
    double s = 0;
    for (int i = 0; i < n; i++)
        s += v[i] * weights[i % 5];
    return s;
}

static void fill_squares(void) {
    for (long i = 0; i < 8; i++)
        squares[i] = i * i;
}

double rms_weighted(const double *v, int n) {             /* calls into libm */
    return sqrt(weighted(v, n) / n) + cbrt(27.0) - 3.0;
}

double hyp(double a, double b) { return hypot(a, b); }

long sum_squares(void) {
    fill_squares();
    long s = 0;
    for (int i = 0; i < 8; i++) s += squares[i];
    return s;
}
"""


def test_c_file_with_statics_global_array_and_libm(session, tmp_path):
    src = tmp_path / "stats.c"
    src.write_text(STATS_C)
    lib = session.library("stats")
    unit = lib.add(src)
    assert unit.name == "stats.c"
    assert "rms_weighted" in unit.symbols and "weighted" not in unit.symbols   # static stays local

    v = (c_double * 5)(1, 2, 3, 4, 5)
    rms = lib.function("rms_weighted", c_double, [ctypes.c_void_p, c_int])
    expected = math.sqrt(sum(x * w for x, w in zip(v, [1, 2, 3, 4, 5])) / 5)
    assert rms(v, 5) == pytest.approx(expected)
    assert lib.function("hyp", c_double, [c_double, c_double])(3.0, 4.0) == 5.0
    assert lib.function("sum_squares", c_long)() == sum(i * i for i in range(8))
    squares = (c_long * 8).from_address(lib.address("squares"))
    assert list(squares) == [i * i for i in range(8)]


def test_c_text_with_language_and_flags(session):
    lib = session.library("text")
    lib.add("int answer(void) { return VALUE * 2; }", language="c", flags=["-DVALUE=21"])
    assert lib.function("answer", c_int)() == 42
    lib.add("int answer3(void) { return VALUE; }", language="c", flags="-DVALUE=3 -Wall")
    assert lib.function("answer3", c_int)() == 3


def test_c_syntax_error_gives_compiler_message(session):
    lib = session.library("bad")
    with pytest.raises(hotlink.CompileError) as info:
        lib.add("int broken(void) { return 1 +; }\n", language="c")
    err = info.value
    assert "error" in err.diagnostics and "expected expression" in err.diagnostics
    assert "<stdin>:1:" in err.diagnostics                 # the compiler's own location
    assert "compiler failed" in str(err) and err.diagnostics in str(err)
    assert lib.units == [] and session.memory().used == 0


def test_c_error_names_the_file(session, tmp_path):
    src = tmp_path / "oops.c"
    src.write_text("int f(void) {\n  return undeclared_thing;\n}\n")
    with pytest.raises(hotlink.CompileError) as info:
        session.library("oops").add(src)
    assert str(src) in str(info.value) and "undeclared_thing" in info.value.diagnostics


def test_missing_compiler_is_a_clear_error(session, monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/bin/hotlink-no-cc")
    with pytest.raises(hotlink.CompileError, match="not found.*CC"):
        session.library("nocc").add("int f(void) { return 1; }", language="c")


def test_cc_environment_variable_is_honoured(session, monkeypatch):
    monkeypatch.setenv("CC", "gcc -DFROM_CC=7")          # $CC may carry arguments
    lib = session.library("cc")
    lib.add("int from_cc(void) { return FROM_CC; }", language="c")
    assert lib.function("from_cc", c_int)() == 7


def test_c_cxx_and_ir_in_one_add_many(session, tmp_path, compile_c):
    (tmp_path / "main.c").write_text(r"""
        extern int ir_triple(int);
        extern int cxx_sum(int);
        extern int obj_five(void);
        int combined(int x) { return ir_triple(x) + cxx_sum(x) + obj_five(); }
    """)
    (tmp_path / "triple.ll").write_text("define i32 @ir_triple(i32 %x) {\n  %r = mul i32 %x, 3\n  ret i32 %r\n}\n")
    (tmp_path / "sum.cpp").write_text(r"""
        #include <numeric>
        #include <vector>
        extern "C" int cxx_sum(int n) {
            std::vector<int> v(n);
            std::iota(v.begin(), v.end(), 1);
            return std::accumulate(v.begin(), v.end(), 0);
        }
    """)
    obj = compile_c("int obj_five(void) { return 5; }", ["-fPIC"])
    session.load_shared("libstdc++.so.6")
    lib = session.library("mixed")
    units = lib.add_many([tmp_path / "main.c", tmp_path / "triple.ll", tmp_path / "sum.cpp", obj])
    assert [u.name for u in units] == ["main.c", "triple.ll", "sum.cpp", obj.name]
    assert lib.function("combined", c_int, [c_int])(4) == 12 + 10 + 5


def test_per_source_options(session):
    lib = session.library("per")
    lib.add_many([Source("int k1(void) { return K; }", flags=["-DK=1"]),
                  Source("int k2(void) { return K; }", flags=["-DK=2"])], language="c")
    assert lib.function("k1", c_int)() == 1 and lib.function("k2", c_int)() == 2


def test_add_many_failure_is_transactional(session):
    lib = session.library("tx")
    with pytest.raises(hotlink.CompileError, match="compiler failed"):
        lib.add_many([Source("int fine(void) { return 1; }"), Source("int bad( { }")], language="c")
    assert lib.units == []
    lib.add("int fine(void) { return 1; }", language="c")
    assert lib.function("fine", c_int)() == 1


# ------------------------------------------------------------- hotlink run

PROG_C = r"""
#include <stdio.h>
#include <math.h>
static int twice(int x) { return 2 * x; }
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) printf("arg %s\n", argv[i]);
    printf("sqrt %.1f\n", sqrt(2.25));
    return twice(argc);
}
"""


def hotlink_run(tmp_path: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HOTLINK_CACHE_DIR=str(tmp_path / "cli-cache"))
    src = str(Path(__file__).resolve().parent.parent / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "hotlink", "run", *map(str, args)],
                          capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.slow
def test_hotlink_run_c_file(tmp_path):
    prog = tmp_path / "prog.c"
    prog.write_text(PROG_C)
    proc = hotlink_run(tmp_path, prog, "--", "a", "b")
    assert proc.stdout.splitlines() == ["arg a", "arg b", "sqrt 1.5"], proc.stderr
    assert proc.returncode == 6, proc.stderr


@pytest.mark.slow
def test_hotlink_run_c_ll_and_bc_together(tmp_path):
    import llvmlite.binding as llvm
    (tmp_path / "main.c").write_text(
        "#include <stdio.h>\nextern int ir_add(int, int);\nextern int bc_neg(int);\n"
        "int main(int argc, char **argv) { printf(\"%d\\n\", ir_add(argc, 40) + bc_neg(1)); return 0; }\n")
    (tmp_path / "add.ll").write_text("define i32 @ir_add(i32 %a, i32 %b) {\n  %r = add i32 %a, %b\n  ret i32 %r\n}\n")
    neg = llvm.parse_assembly("define i32 @bc_neg(i32 %a) {\n  %r = sub i32 0, %a\n  ret i32 %r\n}\n")
    (tmp_path / "neg.bc").write_bytes(neg.as_bitcode())
    proc = hotlink_run(tmp_path, tmp_path / "main.c", tmp_path / "add.ll", tmp_path / "neg.bc", "--", "x")
    assert proc.stdout.strip() == "41", proc.stderr
    assert proc.returncode == 0


@pytest.mark.slow
def test_hotlink_run_reports_compile_errors(tmp_path):
    prog = tmp_path / "broken.c"
    prog.write_text("int main(void) { return nope; }\n")
    proc = hotlink_run(tmp_path, prog)
    assert proc.returncode == 127
    assert "nope" in proc.stderr and "broken.c" in proc.stderr
