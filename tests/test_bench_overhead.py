"""The overhead benchmark runs end to end and prints, per case, its overhead and the autograd floor."""
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "overhead.py"


def test_overhead_script_prints_every_case_with_its_floor():
    # a subprocess: the script wraps the ops' kernel functions with timers, which must not leak into other tests;
    # medians of 3 so one scheduler hiccup in a single round cannot invert floor and total
    out = subprocess.run([sys.executable, str(SCRIPT), "--threads", "1", "--repeats", "3"], check=True,
                         capture_output=True, text=True, timeout=600).stdout
    assert "floor ms" in out.splitlines()[1]
    rows = [line.split() for line in out.splitlines()[2:] if line.strip()]
    assert len(rows) == 8
    for row in rows:
        total, kernels, floor = float(row[-5]), float(row[-4]), float(row[-2])
        assert 0 < kernels < total and 0 < floor < total, row
