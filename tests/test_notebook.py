"""``%load_ext hotlink`` in a real notebook (tests/notebooks/hotlink_magic.ipynb),
executed with nbclient on a real ipykernel: a C function defined in a
``%%hotlink`` cell and called on a numpy array, the cell edited and re-run (the
new name binding and a callable saved before the edit both give the new
behaviour), a cell that does not compile (the compiler's message with cell
line numbers; the previous version still answers), and memory() showing the
old version freed."""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parent / "notebooks" / "hotlink_magic.ipynb"


def text_of(cell: dict) -> str:
    return "".join(o.get("text", "") for o in cell["outputs"] if o["output_type"] == "stream")


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("notebook")
    mp = pytest.MonkeyPatch()
    mp.setenv("HOTLINK_CACHE_DIR", str(tmp / "cache"))     # the kernel inherits it
    try:
        nb = nbformat.read(NOTEBOOK, as_version=4)
        # allow_errors=False: only the cell tagged raises-exception may fail
        NotebookClient(nb, timeout=180, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp)}}).execute()
    finally:
        mp.undo()
    return [c for c in nb.cells if c.cell_type == "code"]


def test_kernel_is_this_python(executed):
    assert text_of(executed[0]).strip() == sys.executable


def test_cell_defines_a_typed_function_called_on_numpy(executed):
    assert "hotlink: added cells:cell1" in text_of(executed[1])
    assert "double dot(double *a, const double *b, long n)" in text_of(executed[1])
    assert "v1 10.0" in text_of(executed[2])


def test_edited_cell_replaces_its_unit_and_old_callables_follow(executed):
    assert "hotlink: replaced cells:cell1" in text_of(executed[3])
    assert text_of(executed[4]).split() == ["v2", "1000.0", "1000.0", "False"]


def test_compile_error_shows_cell_lines_and_keeps_the_previous_version(executed):
    errors = [o for o in executed[5]["outputs"] if o["output_type"] == "error"]
    assert len(errors) == 1
    err = errors[0]
    assert err["ename"] == "CellCompileError"
    shown = "\n".join(err["traceback"])
    assert "the C compiler rejected the cell" in shown
    assert "previous version is still loaded" in shown
    # the cell's third line (the %%hotlink line is line 1) is where the error is
    assert "<cell>:3:12: error:" in shown and "undefined_variable" in shown
    assert "Traceback" not in shown              # the compiler's message, not a Python traceback
    assert text_of(executed[6]).split() == ["after", "error", "1000.0", "1000.0"]


def test_memory_shows_the_old_version_freed(executed):
    out = text_of(executed[7])
    assert "units 1 retired 0" in out
    assert "old version freed True" in out
    table = [o for o in executed[7]["outputs"] if o["output_type"] == "execute_result"]
    assert len(table) == 1
    data = table[0]["data"]
    assert "<th>library</th>" in data["text/html"] and "<td>cells</td>" in data["text/html"]
    assert "retired (waiting for a grace period): 0 B" in data["text/plain"]
