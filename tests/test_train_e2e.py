"""The end-to-end benchmark's masks and a tiny run of its command line."""
import torch

from sparsetrain.bench.e2e import main, uniform_masks
from sparsetrain.train.models import build_model


def test_uniform_masks_keep_first_conv_and_last_linear_dense():
    model = build_model("resnet20", 10, 3, width=4)
    masks = uniform_masks(model, 0.9)
    assert "conv1" not in masks and "fc" not in masks and "layer3.2.conv2" in masks
    m = masks["layer3.2.conv2"]
    assert m.dtype == torch.bool and int(m.sum()) == round(0.1 * m.numel())


def test_hrbp_masks_are_block_layouts_for_convs():
    from sparsetrain.formats import BlockLayout
    model = build_model("resnet20", 10, 3, width=8)
    masks = uniform_masks(model, 0.9, kind="hrbp")
    assert "conv1" not in masks and "fc" not in masks
    lay = masks["layer3.2.conv2"]
    assert isinstance(lay, BlockLayout) and abs(lay.density - 0.1) < 0.02


def test_bench_model_runs_and_prints_a_table(capsys):
    assert main(["--models", "resnet32", "--sparsity", "0.9", "--batch", "2", "--rounds", "1", "--warmup", "0",
                 "--masks", "uniform,hrbp"]) == 0
    out = capsys.readouterr().out
    assert "| resnet32 2x3x32x32 | dense |" in out and "| resnet32 2x3x32x32 | uniform 90% |" in out
    assert "| resnet32 2x3x32x32 | hrbp 90% |" in out and "threads" in out and "block-cpu" in out
