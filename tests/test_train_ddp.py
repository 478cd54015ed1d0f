"""torchrun with 2 CPU processes (gloo) matches the 1-process run of the same global batch."""
import os
import subprocess
import sys

import pytest
import torch

from sparsetrain.cli import main
from sparsetrain.train.checkpoint import load_checkpoint

ARGS = ["train", "--model", "fmnist-cnn", "--width", "4", "--dataset", "synthetic", "--synthetic-size", "64",
        "--image-size", "16", "--num-classes", "3", "--batch-size", "16", "--epochs", "2", "--lr", "0.05",
        "--threads", "1", "--no-progress", "--method", "rigl", "--sparsity", "0.8", "--backend", "sparse",
        "--method-options", "{update_interval: 3}"]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")
def test_two_processes_match_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(ARGS + ["--out", str(one)]) == 0
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "sparsetrain", *ARGS, "--out", str(two)], env=env, capture_output=True, text=True,
                          timeout=300)
    # a rank's own traceback comes before torchrun's summary of it: show those lines first
    rank_lines = "\n".join(line for line in proc.stderr.splitlines() if line.startswith("[rank"))
    assert proc.returncode == 0, (rank_lines or proc.stderr)[-4000:]
    assert proc.stdout.count("done: test accuracy") == 1  # only rank 0 reports
    a, b = load_checkpoint(one / "checkpoint.pt"), load_checkpoint(two / "checkpoint.pt")
    assert b["world_size"] == 2 and a["global_step"] == b["global_step"] == 8
    # masks (RigL updates at steps 3 and 6 from all-reduced gradients) are identical across the two runs
    for name in a["masks"]:
        assert torch.equal(a["masks"][name], b["masks"][name]), name
    for k in a["model"]:
        assert torch.allclose(a["model"][k].float(), b["model"][k].float(), atol=1e-5, rtol=1e-4), k
    rows_one = (one / "metrics.csv").read_text().splitlines()
    rows_two = (two / "metrics.csv").read_text().splitlines()
    assert len(rows_one) == len(rows_two) == 3
