"""The live autotuner demo runs end to end (shortened): patches applied while
native and Python threads call, no wrong result, retired memory freed."""
import pytest

from hotlink import demo


@pytest.mark.slow
def test_demo_runs_and_frees_retired_code(capsys):
    assert demo.main(seconds_per_variant=0.3) == 0
    out = capsys.readouterr().out
    assert "5 patches applied" in out and " 0 wrong results" in out
    assert "still retired: 0" in out
