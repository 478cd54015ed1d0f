"""`sparsetrain train` smoke runs on synthetic data for every model and every registered method, plus
inspect and report on a finished run, and the option errors."""
import json

import pytest

from sparsetrain.algorithms import names as method_names
from sparsetrain.cli import main
from sparsetrain.train.checkpoint import load_checkpoint

TINY = ["--dataset", "synthetic", "--synthetic-size", "32", "--batch-size", "16", "--epochs", "1",
        "--num-classes", "3", "--threads", "2", "--no-progress"]
MODELS = {  # name: (width, image size)
    "resnet20": (4, 16), "resnet32": (4, 16), "resnet56": (4, 16), "wrn-32-2": (4, 16), "wrn-56-2": (4, 16),
    "vgg19": (8, 32), "mobilenetv2": (0.25, 16), "fmnist-cnn": (4, 28), "resnet18": (8, 32), "resnet50": (4, 32),
}


def _train(tmp_path, *args):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out), *args]) == 0
    with open(out / "summary.json") as f:
        return out, json.load(f)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_model_trains_dense(tmp_path, model):
    width, size = MODELS[model]
    out, s = _train(tmp_path, "--model", model, "--width", str(width), "--image-size", str(size))
    assert s["global_step"] == 2 and s["epochs_done"] == 1 and 0.0 <= s["test_acc"] <= 1.0
    assert s["sparsity"] == 0.0 and s["layers"] == []
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,global_step") and len(rows) == 2



def test_new_run_in_a_used_folder_replaces_its_metrics(tmp_path):
    args = ("--model", "fmnist-cnn", "--width", "4", "--image-size", "16")
    out, _ = _train(tmp_path, *args)
    out, s = _train(tmp_path, *args, "--epochs", "2")  # no --resume: a new run, not a continuation
    rows = (out / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["epoch", "1", "2"]
    assert [r["epoch"] for r in json.loads((out / "metrics.json").read_text())] == [1, 2]
    assert s["epochs_done"] == 2 and s["best_test_acc"] >= s["test_acc"]

# options that give every method a mask change inside a 2-step run
_SHORT = {"set": "{update_interval: 1}", "rigl": "{update_interval: 1}",  "gmp": "{update_interval: 1}",
          "gmp-global": "{update_interval: 1}", "lottery": "{steps_per_round: 1, rounds: 1}",
          "sparseprop": None, "synflow": "{synflow_rounds: 2}"}


@pytest.mark.parametrize("method", method_names())
def test_every_method_trains_sparse(tmp_path, method):
    args = ["--model", "fmnist-cnn", "--width", "4", "--image-size", "16", "--method", method,
            "--sparsity", "0.9", "--backend", "sparse"]
    if _SHORT.get(method):
        args += ["--method-options", _SHORT[method]]
    if method.startswith("hrbp"):
        args += ["--distribution", "uniform"] + (["--method-options", "{update_interval: 1}"]
                                                 if method == "hrbp-dst" else [])
    out, s = _train(tmp_path, *args)
    assert s["global_step"] == 2
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["masks"], "a sparse method leaves masks in the checkpoint"
    # the sparse layers are the inner conv and hidden linear (first conv and last linear stay dense)
    assert set(state["masks"]) == {"features.3", "fc1"}
    if method not in ("sparseprop",):  # sparseprop's recipe stays dense for its first 10 epochs
        assert s["sparsity"] == pytest.approx(0.9, abs=0.02)


@pytest.mark.parametrize("backend", ["auto", "dense", "sparse"])
def test_backends_and_inspect(tmp_path, capsys, backend):
    out, s = _train(tmp_path, "--model", "resnet20", "--width", "8", "--image-size", "16", "--method", "static",
                    "--sparsity", "0.95", "--backend", backend, "--distribution", "uniform")
    kinds = {layer["backend"] for layer in s["layers"]}
    assert kinds == ({"masked-dense"} if backend == "dense" else {"sparse-cpu", "dense"} if backend == "auto"
                     else {"sparse-cpu"}) or (backend == "auto" and kinds <= {"sparse-cpu", "dense"})
    if backend == "auto":  # every packed layer was timed on its real input
        assert all(layer["times_ms"] and layer["choice"] for layer in s["layers"])
    capsys.readouterr()
    assert main(["inspect", str(out / "checkpoint.pt")]) == 0
    text = capsys.readouterr().out
    assert "layer3.2.conv2" in text and "0.9497" in text  # 32x32x3x3 at 95%: 463 of 9216 kept
    assert ("masked-dense" if backend == "dense" else "sparse-cpu" if backend == "sparse" else "layer") in text


@pytest.mark.parametrize("method", ["hrbp", "static"])
def test_backend_block_packs_block_structured_masks(tmp_path, method, capsys):
    # HRBP masks become BlockSparseConv2d layers; unstructured (static random) masks stay SparseProp layers
    out, s = _train(tmp_path, "--model", "fmnist-cnn", "--width", "4", "--image-size", "16", "--method", method,
                    "--sparsity", "0.9", "--distribution", "uniform", "--backend", "block")
    assert s["global_step"] == 2
    chosen = {layer["layer"]: layer["choice"] for layer in s["layers"]}
    assert chosen["features.3"] == ("block-cpu" if method == "hrbp" else "sparse-cpu")
    if method == "hrbp":  # inspect shows the block structure: t x (rows x columns) per layer
        capsys.readouterr()
        assert main(["inspect", str(out / "checkpoint.pt")]) == 0
        line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("features.3"))
        assert "block-cpu" in line and line.rstrip().endswith(")") and "x(" in line


def test_report_writes_plots_and_speedup(tmp_path, capsys):
    dense, _ = _train(tmp_path / "a", "--model", "fmnist-cnn", "--width", "8", "--image-size", "28")
    sparse, s = _train(tmp_path / "b", "--model", "fmnist-cnn", "--width", "8", "--image-size", "28",
                       "--method", "static", "--sparsity", "0.9", "--backend", "auto")
    capsys.readouterr()
    assert main(["report", str(dense), str(sparse), "--out", str(tmp_path / "rep")]) == 0
    text = capsys.readouterr().out
    for png in ("accuracy_vs_sparsity.png", "speedup_vs_sparsity.png", "layer_speedup.png"):
        assert (tmp_path / "rep" / png).stat().st_size > 5000
    dense_ms = json.loads((dense / "summary.json").read_text())["step_ms"]
    assert f"{dense_ms / s['step_ms']:.2f}x" in text and "1.00x" in text
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "no summary.json" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--model", "resnet1000"], "--model: unknown model 'resnet1000'"),
    (["--method", "magic"], "--method: unknown method 'magic'"),
    (["--sparsity", "1.5"], r"--sparsity: must be a number in [0, 1)"),
    (["--sparsity", "-0.1"], r"--sparsity: must be a number in [0, 1)"),
    (["--dataset", "cifar10"], "--data-root: --dataset cifar10 needs a local data folder"),
    (["--dataset", "cifar10", "--data-root", "/nonexistent/cifar"], "--data-root: folder /nonexistent/cifar does not exist"),
    (["--distribution", "zipf"], "--distribution: must be one of"),
    (["--epochs", "0"], "--epochs: must be an integer >= 1"),
    (["--method", "rigl", "--method-options", "{bogus: 1}"], "--method rigl:"),
    (["--resume", "/nonexistent/ckpt.pt"], "checkpoint /nonexistent/ckpt.pt does not exist"),
])
def test_bad_options_name_the_option(tmp_path, capsys, args, message):
    rc = main(["train", *TINY, "--model", "fmnist-cnn", "--width", "4", "--out", str(tmp_path / "r"), *args])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_yaml_config_with_command_line_override(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: fmnist-cnn\nwidth: 4\ndataset: synthetic\nsynthetic-size: 48\nbatch_size: 16\n"
                   "epochs: 3\nnum_classes: 3\nlr: 0.01\nprogress: false\n")
    out = tmp_path / "r"
    assert main(["train", "--config", str(cfg), "--epochs", "1", "--out", str(out), "--threads", "2"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["config"]["epochs"] == 1 and s["config"]["lr"] == 0.01 and s["global_step"] == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("modle: resnet20\n")
    assert main(["train", "--config", str(bad), "--out", str(out)]) == 2
    assert "unknown option 'modle'" in capsys.readouterr().err
