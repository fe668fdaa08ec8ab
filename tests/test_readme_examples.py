"""README.md's quick start runs as written (with the two objects it names
built here), and it uses the C-declaration form; the Jupyter section shows a
%%hotlink session."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()

DOT = "double dot(const double *a, const double *b, long n) {{ double s = 0; " \
      "for (long i = 0; i < n; i++) s += a[i] * b[i]; return {scale} * s; }}"


def section(title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.S | re.M)
    assert m, f"README.md has no section {title!r}"
    return m.group(1)


def test_quick_start_runs_and_uses_c_declarations(tmp_path, monkeypatch, compile_c, capsys):
    code = re.search(r"```python\n(.*?)```", section("Quick start"), re.S).group(1)
    assert 'function("crc32", "unsigned long(' in code and 'function("dot", "double(' in code
    assert 'k.function("sum")(' in code                      # an inferred signature too
    for v, scale in (("dot_v1", 1), ("dot_v2", 2)):
        obj = compile_c(DOT.format(scale=scale), name=v)
        (tmp_path / f"{v}.o").write_bytes(obj.read_bytes())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOTLINK_CACHE_DIR", str(tmp_path / "cache"))
    exec(compile(code, "README.md quick start", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == str(sum(i * i for i in range(1000)) * 1.0)      # dot_v1 on numpy arrays
    assert out[1] == "499500.0"                                       # the inferred sum
    assert "MemoryStats(" in out[2]


@pytest.mark.parametrize("needle", ["%load_ext hotlink", "%%hotlink -O3", "hotlink: replaced cells:cell1",
                                    "Out[5]: (3000.0, 3000.0)", "<cell>:3:12: error:", "%hotlink memory",
                                    "retired (waiting for a grace period): 0 B"])
def test_jupyter_section_has_a_transcript(needle):
    assert needle in section("Jupyter")
