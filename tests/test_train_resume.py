"""A run killed mid-epoch and resumed ends bit-identical to an uninterrupted run (CPU, deterministic)."""
import os
import subprocess
import sys

import pytest
import torch

from sparsetrain.cli import main
from sparsetrain.train.checkpoint import load_checkpoint

# 96 images / batch 16 = 6 steps per epoch, 2 epochs; checkpoints every 4 steps (mid-epoch at 4 and 8)
BASE = ["train", "--model", "resnet20", "--width", "4", "--dataset", "synthetic", "--synthetic-size", "96",
        "--image-size", "16", "--num-classes", "3", "--batch-size", "16", "--epochs", "2", "--lr", "0.05",
        "--milestones", "1", "--threads", "1", "--no-progress", "--checkpoint-every", "4", "--seed", "5"]


def _run_killed(args, out, exit_after):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, "-m", "sparsetrain", *args, "--out", str(out),
                           "--debug-exit-after", str(exit_after)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 3, proc.stderr[-2000:]  # died abruptly, as a killed process does


def _assert_same_state(a, b):
    sa, sb = load_checkpoint(a / "checkpoint.pt"), load_checkpoint(b / "checkpoint.pt")
    assert sa["global_step"] == sb["global_step"] == 12
    assert sa["model"].keys() == sb["model"].keys()
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), k
    for pa, pb in zip(sa["optimizer"]["state"].values(), sb["optimizer"]["state"].values()):
        assert torch.equal(pa["momentum_buffer"], pb["momentum_buffer"])
    assert sa["scheduler"] == sb["scheduler"]


@pytest.mark.parametrize("exit_after", [6, 10])  # killed on the last step of epoch 1, before its end-of-epoch checkpoint; and mid-epoch 2
def test_killed_then_resumed_run_is_bit_identical(tmp_path, exit_after):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(BASE + ["--out", str(full)]) == 0
    _run_killed(BASE, cut, exit_after)
    state = load_checkpoint(cut / "checkpoint.pt")
    assert state["global_step"] == {6: 4, 10: 8}[exit_after]  # last checkpoint before the kill
    assert main(BASE + ["--out", str(cut), "--resume"]) == 0
    _assert_same_state(full, cut)
    # the metrics files hold each epoch once, with the same numbers as the uninterrupted run
    rows_full = (full / "metrics.csv").read_text().splitlines()
    rows_cut = (cut / "metrics.csv").read_text().splitlines()
    strip = lambda rows: [",".join(r.split(",")[:8]) for r in rows]  # noqa: E731 (drop timing columns)
    assert strip(rows_full) == strip(rows_cut) and len(rows_full) == 3
