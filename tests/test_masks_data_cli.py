"""Random masks, the Fashion-MNIST loader and the CLI."""
import gzip
import struct

import pytest
import torch

from sparsetrain.cli import main
from sparsetrain.data.fashion_mnist import load_fashion_mnist, read_idx
from sparsetrain.masks import random_mask


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.999])
def test_random_mask_has_exact_density_and_is_seeded(sparsity):
    m = random_mask((40, 25), sparsity, torch.Generator().manual_seed(3))
    assert m.dtype == torch.bool and int(m.sum()) == round((1 - sparsity) * 1000)
    assert torch.equal(m, random_mask((40, 25), sparsity, torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("bad", [-0.1, 1.0, 2, "0.5"])
def test_random_mask_rejects_sparsity_outside_range(bad):
    with pytest.raises(ValueError, match=r"sparsity must be a number in \[0, 1\)"):
        random_mask((3, 3), bad)


def test_fixture_subset_loads_when_no_dataset_is_installed(monkeypatch, tmp_path):
    import sparsetrain.data.fashion_mnist as fm
    monkeypatch.setattr(fm, "DEBIAN_ROOT", tmp_path / "absent")
    x, y, src = load_fashion_mnist("train")
    assert x.shape == (1000, 1, 28, 28) and y.shape == (1000,) and "subset" in src
    assert 0 <= int(y.min()) and int(y.max()) <= 9 and abs(float(x.mean())) < 0.5


def test_idx_reader_and_errors(tmp_path):
    img = tmp_path / "train-images-idx3-ubyte.gz"
    lab = tmp_path / "train-labels-idx1-ubyte.gz"
    with gzip.open(img, "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + struct.pack(">III", 2, 28, 28) + bytes(range(256)) * 6 + bytes(32))
    with gzip.open(lab, "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + struct.pack(">I", 2) + bytes([3, 7]))
    x, y, src = load_fashion_mnist("train", root=tmp_path)
    assert x.shape == (2, 1, 28, 28) and y.tolist() == [3, 7] and src == str(tmp_path)
    with gzip.open(lab, "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + struct.pack(">I", 5) + bytes([3, 7]))
    with pytest.raises(ValueError, match="truncated"):
        read_idx(lab)
    with pytest.raises(FileNotFoundError, match="root="):
        load_fashion_mnist("test", root=tmp_path)
    with pytest.raises(ValueError, match="split must be"):
        load_fashion_mnist("val")


def test_cli_demo_runs_a_few_steps(capsys, tmp_path):
    assert main(["demo", "--max-steps", "3", "--width", "16", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "training step speedup of hrbp over dense" in out and "block-cpu" in out
    assert (tmp_path / "report" / "report.md").is_file() and list((tmp_path / "report").glob("*.png"))


@pytest.mark.parametrize("argv", [["demo", "--sparsity", "1.0"], ["demo", "--epochs", "0"]])
def test_cli_rejects_bad_options(argv, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    assert "must be" in capsys.readouterr().err
