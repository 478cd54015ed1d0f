"""Models, data (CIFAR pickles, augmentation, batch order) and checkpoints of the training harness."""
import pickle

import numpy as np
import pytest
import torch

from sparsetrain.train import checkpoint as ck
from sparsetrain.train.data import (_crop_flip, epoch_order, load_cifar, load_data, make_batch, synthetic,
                                    train_batches)
from sparsetrain.train.models import build_model


@pytest.mark.parametrize("name, params", [("resnet18", 11_689_512), ("resnet50", 25_557_032)])
def test_imagenet_resnets_match_torchvision_parameter_counts(name, params):
    # torchvision.models.resnet18/50(num_classes=1000) have exactly these parameter counts
    assert sum(p.numel() for p in build_model(name, 1000).parameters()) == params


def test_cifar_model_shapes():
    assert sum(p.numel() for p in build_model("resnet20").parameters()) < 300_000  # the ~0.27M ResNet-20
    m = build_model("wrn-32-2", 100)
    assert m.conv1.out_channels == 32 and m.fc.in_features == 128 and len(m.layer1) == 5
    assert build_model("vgg19", 10)(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("name, package", [("timm:resnet18", "timm"), ("deit-tiny", "timm"),
                                           ("hf:bert-base", "transformers"), ("torchvision:resnet18", "torchvision")])
def test_optional_package_models_name_the_package(name, package):
    try:
        __import__(package)
        pytest.skip(f"{package} is installed here")
    except Exception:
        pass
    with pytest.raises(ImportError, match=f"needs the package '{package}"):
        build_model(name, 10)


def test_unknown_model():
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        build_model("nope")


def _write_cifar(folder, files, key, n):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, f in enumerate(files):
        with open(folder / f, "wb") as fh:
            pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         key: list(range(i, i + n))}, fh)


def test_cifar10_and_100_from_pickled_batches(tmp_path):
    _write_cifar(tmp_path / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"],
                 b"labels", 4)
    spec = load_cifar("cifar10", tmp_path)
    assert spec.train.images.shape == (20, 3, 32, 32) and spec.train.images.dtype == torch.uint8
    assert spec.train.labels.tolist()[:5] == [0, 1, 2, 3, 1] and len(spec.test) == 4 and spec.num_classes == 10
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb") as fh:
        raw = pickle.load(fh, encoding="bytes")[b"data"]
    assert torch.equal(spec.train.images[0], torch.from_numpy(raw[0].reshape(3, 32, 32)))  # CHW row-major
    _write_cifar(tmp_path / "c100" / "cifar-100-python", ["train", "test"], b"fine_labels", 3)
    assert load_cifar("cifar100", tmp_path / "c100").num_classes == 100


def test_missing_cifar_says_what_to_put_where(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data_batch_1.*cifar-10-batches-py.*cifar-10-python.tar.gz"):
        load_data("cifar10", str(tmp_path))


def test_crop_flip_matches_hand_computed_example():
    x = torch.arange(2 * 1 * 3 * 3, dtype=torch.float32).view(2, 1, 3, 3) + 1
    # sample 0: offset (4, 4) = no shift, no flip; sample 1: offset (5, 3) (one down, one left), flipped
    out = _crop_flip(x, torch.tensor([[4, 4, 0], [5, 3, 1]]))
    assert torch.equal(out[0], x[0])
    shifted = torch.tensor([[0.0, 13, 14], [0, 16, 17], [0, 0, 0]])  # rows 1..3, cols -1..1 of sample 1
    assert torch.equal(out[1, 0], shifted.flip(1))


def test_batch_order_is_seeded_and_ranks_split_the_global_batch():
    assert torch.equal(epoch_order(50, 3, 1), epoch_order(50, 3, 1))
    assert not torch.equal(epoch_order(50, 3, 1), epoch_order(50, 3, 2))
    data = synthetic(64, 8, 3, 4).train
    whole = list(train_batches(data, 16, 0, 0))
    ranks = [list(train_batches(data, 16, 0, 0, rank=r, world=2)) for r in range(2)]
    for step, (x, y) in enumerate(whole):
        assert torch.equal(x[0::2], ranks[0][step][0]) and torch.equal(x[1::2], ranks[1][step][0])
    resumed = list(train_batches(data, 16, 0, 0, start_step=2))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(whole[2:], resumed)) and len(resumed) == 2


def test_uint8_batches_are_normalised():
    split = load_cifar.__globals__["Split"](torch.full((2, 3, 2, 2), 255, dtype=torch.uint8), torch.tensor([0, 1]),
                                            (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    x, _ = make_batch(split, torch.tensor([1]), train=False)
    assert torch.allclose(x, torch.full((1, 3, 2, 2), 2.0))


def test_checkpoint_round_trip_with_rng(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    state = ck.rng_state()
    a = (torch.rand(3), np.random.rand(3))
    ck.save_checkpoint({"rng": state, "x": torch.ones(2)}, tmp_path / "c.pt")
    loaded = ck.load_checkpoint(tmp_path / "c.pt")
    ck.set_rng_state(loaded["rng"])
    assert torch.equal(torch.rand(3), a[0]) and np.array_equal(np.random.rand(3), a[1])


def test_failed_write_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    ck.save_checkpoint({"v": torch.tensor(1)}, path)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")
    monkeypatch.setattr(ck.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ck.save_checkpoint({"v": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert int(ck.load_checkpoint(path)["v"]) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind


def test_truncated_and_foreign_files_are_clear_errors(tmp_path):
    path = tmp_path / "c.pt"
    ck.save_checkpoint({"v": torch.zeros(1000)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ck.CheckpointError, match="cannot be read \\(truncated or corrupt"):
        ck.load_checkpoint(path)
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ck.CheckpointError, match="is not a sparsetrain checkpoint"):
        ck.load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(ck.CheckpointError, match="does not exist"):
        ck.load_checkpoint(tmp_path / "absent.pt")
