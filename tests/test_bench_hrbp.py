"""The HRBP layer benchmark: a tiny run of its command line with every CPU block variant, and its option errors."""
import pytest

from sparsetrain.bench.hrbp import main, parse_args


def test_tiny_run_times_every_variant_side_by_side(capsys):
    main(["--shapes", "resnet32.16x16@32,resnet32.16x32@32/s2", "--batch", "2", "--sparsity", "0.9",
          "--warmup", "0", "--repeats", "1", "--variants", "all", "--markdown"])
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("| resnet32")]
    impls = {(line.split("|")[1].strip(), line.split("|")[3].strip()) for line in table}
    stride1, stride2 = "resnet32.16x16@32", "resnet32.16x32@32/s2"
    for v in ("over-width", "batch-last", "runs", "tiled", "planes"):
        assert (stride1, f"hrbp/{v}") in impls
    assert (stride2, "hrbp/runs") not in impls  # runs needs stride 1: left out, not an error
    assert {(stride2, "hrbp/over-width"), (stride1, "dense"), (stride1, "channel")} <= impls


def test_stride_one_variants_on_a_strided_layer_fall_back_to_the_default(capsys):
    """Only stride-1 variants asked for, on a stride-2 layer: the layer's own choice runs (it crashed before)."""
    main(["--shapes", "resnet32.16x32@32/s2", "--batch", "2", "--sparsity", "0.9", "--warmup", "0", "--repeats", "1",
          "--variants", "tiled,planes", "--markdown"])
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| resnet32")]
    assert {line.split("|")[3].strip() for line in table} == {"dense", "hrbp", "sparseprop", "channel"}


@pytest.mark.parametrize("argv,message", [
    (["--variants", "fast"], "--variants: unknown"),
    (["--sparsity", "1.2"], "--sparsity values must lie in"),
    (["--groups", "0"], "--groups must be >= 1"),
    (["--shapes", "vgg19.nope"], "unknown layer"),
])
def test_bad_options_name_the_option(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert message in capsys.readouterr().err
