"""``hotlink run FILE... [-- ARGS]``: link objects and run their ``main``, like lli."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROG = r"""
#include <stdio.h>

int main(int argc, char **argv) {
    printf("argc=%d\n", argc);
    for (int i = 1; i < argc; i++)
        printf("argv[%d]=%s\n", i, argv[i]);
    printf("argv[argc] is %s\n", argv[argc] ? "set" : "NULL");
    return argc + 40;
}
"""

MAIN_WITH_HELPER = r"""
#include <stdio.h>
#include <stdlib.h>
extern int helper_sum(int n);
extern const char *helper_name;

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 0;
    printf("%s:%d\n", helper_name, helper_sum(n));
    return 0;
}
"""

HELPER = r"""
const char *helper_name = "helper";
int helper_sum(int n) { int s = 0; for (int i = 1; i <= n; i++) s += i; return s; }
"""

MISSING = r"""
extern int hotlink_cli_missing_symbol(void);
int main(void) { return hotlink_cli_missing_symbol(); }
"""


def hotlink_run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hotlink", "run", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_run_passes_args_and_exit_code(compile_c):
    obj = compile_c(PROG, name="prog")
    proc = hotlink_run(obj, "--", "a", "b", "c")
    assert proc.stdout.splitlines() == [
        "argc=4",
        "argv[1]=a",
        "argv[2]=b",
        "argv[3]=c",
        "argv[argc] is NULL",
    ], proc.stderr
    assert proc.returncode == 44, proc.stderr


@pytest.mark.slow
def test_run_without_args(compile_c):
    obj = compile_c(PROG, name="prog")
    proc = hotlink_run(obj)
    assert proc.stdout.splitlines() == ["argc=1", "argv[argc] is NULL"], proc.stderr
    assert proc.returncode == 41, proc.stderr


@pytest.mark.slow
def test_run_args_with_spaces_and_dashes(compile_c):
    obj = compile_c(PROG, name="prog")
    proc = hotlink_run(obj, "--", "two words", "--entry", "")
    assert proc.stdout.splitlines() == [
        "argc=4",
        "argv[1]=two words",
        "argv[2]=--entry",
        "argv[3]=",
        "argv[argc] is NULL",
    ], proc.stderr
    assert proc.returncode == 44, proc.stderr


def test_run_links_several_files(compile_c):
    main_o = compile_c(MAIN_WITH_HELPER, name="main")
    helper_o = compile_c(HELPER, name="helper")
    proc = hotlink_run(main_o, helper_o, "--", "100")
    assert proc.stdout == "helper:5050\n", proc.stderr
    assert proc.returncode == 0, proc.stderr


def test_run_reports_undefined_symbol(compile_c):
    obj = compile_c(MISSING, name="missing")
    proc = hotlink_run(obj)
    assert proc.returncode != 0
    assert "hotlink_cli_missing_symbol" in proc.stderr
    assert proc.stdout == ""


@pytest.mark.slow
def test_run_reads_pipes_once(compile_c, tmp_path):
    """``hotlink run <(...)``: /dev/fd/N is a pipe, readable once; an object and
    IR text from pipes are told apart by content (no extension to go by)."""
    main_o = compile_c(MAIN_WITH_HELPER, name="main")
    helper_ll = tmp_path / "helper.ll"
    helper_ll.write_text('@.name = private constant [5 x i8] c"pipe\\00"\n'
                         "@helper_name = constant ptr @.name\n"
                         "define i32 @helper_sum(i32 %n) {\n  %r = mul i32 %n, 2\n  ret i32 %r\n}\n")
    proc = subprocess.run(["bash", "-c", '"$0" -m hotlink run <(cat "$1") <(cat "$2") -- 21',
                           sys.executable, str(main_o), str(helper_ll)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "HOTLINK_CACHE": "0"})
    assert proc.stdout == "pipe:42\n", proc.stderr
    assert proc.returncode == 0, proc.stderr
