"""Sparse-training algorithms: schedules, drop/grow counts, state_dict, backends agree, errors."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sparsetrain
from sparsetrain.algorithms import GMP, SET, LotteryTicket, RigL, Static, create, load_sparse_checkpoint, names
from sparsetrain.algorithms.gradual import sparseprop_gmp
from sparsetrain.algorithms.schedules import CosineDecay, CubicSparsity
from sparsetrain.nn import protocol
from sparsetrain.nn.base import PackedSparseModule


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 6 * 6, 24), nn.ReLU(), nn.Linear(24, 5)).double()


def _data(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 1, 6, 6, generator=g, dtype=torch.float64), torch.randint(0, 5, (8,), generator=g))
            for _ in range(n)]


def _train(model, opt, algo, data, steps, start=0):
    losses = []
    for t in range(start, start + steps):
        x, y = data[t % len(data)]
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        algo.step()
        losses.append(loss.item())
    return losses


def test_schedules_by_hand():
    f = CosineDecay(0.3, 30)
    assert f(0) == pytest.approx(0.3) and f(15) == pytest.approx(0.15) and f(30) == 0.0 and f(40) == 0.0
    assert f(10) == pytest.approx(0.15 * 1.5)
    c = CubicSparsity(1.0, 0.1, 0, 10)  # s_t = 0.9 - 0.9 (1 - t/10)^3
    assert c(0) == 1.0 and c(10) == pytest.approx(0.1) and c(20) == pytest.approx(0.1)
    assert c(5) == pytest.approx(1 - (0.9 - 0.9 * 0.125))
    p = sparseprop_gmp(_net(), None, 0.1, steps_per_epoch=3)
    assert (p.schedule.start, p.schedule.end, p.update_interval) == (30, 240, 30)
    assert p.density_at(30) == pytest.approx(0.95) and p.density_at(240) == pytest.approx(0.1)
    assert all(bool(m.all()) for m in p.masks().values())  # dense before epoch 10


class _RecordingRigL(RigL):
    def grow_scores(self, masks):
        self.recorded = super().grow_scores(masks)
        self.before = {n: (m.clone(), protocol.dense_weight(self.layer(n)).clone()) for n, m in masks.items()}
        return self.recorded


@pytest.mark.parametrize("backend", [None, "sparse-cpu"])
def test_rigl_drop_grow_counts_and_choices(backend):
    model, data = _net(), _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    algo = _RecordingRigL(model, opt, density=0.2, total_steps=40, update_interval=10, backend=backend,
                          min_sparsity=0.0)
    assert algo.names == ["2", "5"]
    nnz0 = {n: int(m.sum()) for n, m in algo.layer_masks().items()}
    _train(model, opt, algo, data, 10)
    f = CosineDecay(0.3, 30)(10)
    for n, m in algo.layer_masks().items():
        old, w = algo.before[n]
        k = round(f * nnz0[n])
        assert algo.last_update[n][0] == k and int(m.sum()) == nnz0[n]
        # recompute by sorting: survivors = the nnz-k largest |w| among the active, then the k inactive
        # (just-dropped included) with the largest |grad| grow
        g = algo.recorded[n].flatten()
        act = old.flatten().nonzero().flatten()
        order = act[torch.argsort(w.abs().flatten()[act], descending=True)]
        survivors = torch.zeros_like(old.flatten())
        survivors[order[:nnz0[n] - k]] = True
        cand = (~survivors).nonzero().flatten()
        expected = survivors.clone()
        expected[cand[torch.argsort(g[cand], descending=True)[:k]]] = True
        assert torch.equal(m.flatten(), expected)
        grown = m & ~old
        assert algo.last_update[n][1] == int(grown.sum())
        if grown.any():  # grown weights start at zero with zero momentum
            mom = opt.state[protocol.weight_parameter(algo.layer(n))]["momentum_buffer"]
            dense_mom = algo.layer(n).scatter_values(mom) if isinstance(algo.layer(n), PackedSparseModule) else mom
            assert torch.all(protocol.dense_weight(algo.layer(n))[grown] == 0)
            assert torch.all(dense_mom[grown] == 0)
    assert isinstance(model[2], PackedSparseModule) == (backend == "sparse-cpu")
    # no update at 30 (= stop 0.75 * 40) or later
    _train(model, opt, algo, data, 30, start=10)
    assert algo.schedule.due(20) and not algo.schedule.due(30)


def test_set_counts_and_seed_determinism():
    runs = []
    for _ in range(2):
        model, data = _net(), _data()
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        algo = SET(model, opt, density=0.2, total_steps=20, update_interval=5, drop_fraction=0.5,
                   drop_schedule="constant", seed=7)
        before = algo.layer_masks()
        _train(model, opt, algo, data, 5)
        for n, m in algo.layer_masks().items():
            assert int(m.sum()) == int(before[n].sum())
            assert algo.last_update[n][0] == round(0.5 * int(before[n].sum()))
        runs.append(algo.layer_masks())
    assert all(torch.equal(runs[0][n], runs[1][n]) for n in runs[0])


@pytest.mark.parametrize("cls", [RigL, SET])
def test_state_dict_mid_training_gives_same_next_masks(cls):
    data = _data()
    kw = dict(density=0.25, total_steps=40, update_interval=5)
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    algo = cls(model, opt, **kw)
    _train(model, opt, algo, data, 7)
    # deep copies: state_dict()s hold live tensors that the rest of this run updates in place
    ckpt = copy.deepcopy({"algo": algo.state_dict(), "model": model.state_dict(), "opt": opt.state_dict()})
    _train(model, opt, algo, data, 8, start=7)
    expected = algo.layer_masks()

    model2 = _net(seed=5)  # different init: everything must come from the checkpoint
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.05, momentum=0.9)
    algo2 = cls(model2, opt2, **{**kw, "seed": 3})
    algo2.load_state_dict(ckpt["algo"])
    model2.load_state_dict(ckpt["model"])
    opt2.load_state_dict(ckpt["opt"])
    assert algo2.step_count == 7
    _train(model2, opt2, algo2, data, 8, start=7)
    for n, m in algo2.layer_masks().items():
        assert torch.equal(m, expected[n]), n


def test_masked_dense_and_sparse_kernels_agree():
    data = _data()
    results = []
    for backend in (None, "sparse-cpu"):
        model = _net()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        algo = RigL(model, opt, density=0.15, total_steps=30, update_interval=4, seed=2, backend=backend,
                    min_sparsity=0.0)
        losses = _train(model, opt, algo, data, 16)
        results.append((losses, algo.layer_masks(), model))
    (l0, m0, net0), (l1, m1, net1) = results
    assert isinstance(net1[2], PackedSparseModule) and not isinstance(net0[2], PackedSparseModule)
    torch.testing.assert_close(torch.tensor(l0), torch.tensor(l1), rtol=1e-9, atol=1e-10)
    for n in m0:
        assert torch.equal(m0[n], m1[n])


@pytest.mark.parametrize("dist", ["uniform", "global"])
def test_gmp_reaches_density_exactly_on_schedule(dist):
    model, data = _net(), _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    algo = GMP(model, opt, density=0.1, distribution=dist, start_step=2, end_step=10, update_interval=4,
               backend="sparse-cpu")
    total = sum(m.numel() for m in algo.layer_masks().values())
    seen = {}
    for t in range(1, 13):
        _train(model, opt, algo, data, 1, start=t - 1)
        seen[t] = sum(int(m.sum()) for m in algo.layer_masks().values())
    assert seen[1] == total and seen[2] == round(total * algo.density_at(2))
    assert algo.density_at(6) == pytest.approx(1 - 0.9 * (1 - 0.5 ** 3))
    assert abs(seen[6] - total * algo.density_at(6)) <= len(algo.names)
    assert seen[5] == seen[3] == seen[2]
    assert seen[10] == seen[12] == round(0.1 * total)
    if dist == "uniform":
        for n, m in algo.layer_masks().items():
            assert abs(int(m.sum()) - 0.1 * m.numel()) <= 1
    for n, m in algo.layer_masks().items():  # SparseProp's rule: packed once at least 80% sparse
        assert isinstance(algo.layer(n), PackedSparseModule) == (1 - m.float().mean().item() >= 0.8)


def test_one_shot_magnitude_keeps_largest():
    model = _net()
    w = {n: model.get_submodule(n).weight.detach().abs().clone() for n in ("2", "5")}
    algo = create("magnitude", model, None, density=0.3, distribution="uniform")
    for n, m in algo.layer_masks().items():
        assert w[n][m].min() >= w[n][~m].max()
        assert abs(int(m.sum()) - 0.3 * m.numel()) <= 1


def test_lottery_ticket_rewinds_and_prunes():
    model, data = _net(), _data()
    init = {n: model.get_submodule(n).weight.detach().clone() for n in ("2", "5")}
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    algo = LotteryTicket(model, opt, density=0.25, steps_per_round=4, rounds=2)
    _train(model, opt, algo, data, 4)
    total = sum(m.numel() for m in algo.layer_masks().values())
    assert algo.round == 1
    assert sum(int(m.sum()) for m in algo.layer_masks().values()) == round(0.5 * total)
    for n, m in algo.layer_masks().items():
        assert torch.equal(protocol.dense_weight(algo.layer(n)), init[n] * m)
    assert len(opt.state) == 0
    _train(model, opt, algo, data, 4, start=4)
    assert sum(int(m.sum()) for m in algo.layer_masks().values()) == round(0.25 * total)
    prev = algo.layer_masks()
    _train(model, opt, algo, data, 8, start=8)
    assert all(torch.equal(prev[n], m) for n, m in algo.layer_masks().items())


def test_sparse_transfer_keeps_masks_and_new_head(tmp_path):
    model, data = _net(), _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    algo = Static(model, opt, density=0.1, backend="sparse-cpu")
    _train(model, opt, algo, data, 3)
    masks = algo.layer_masks()
    torch.save(model.state_dict(), tmp_path / "sparse.pt")
    weights = {n: protocol.dense_weight(algo.layer(n)).clone() for n in algo.names}

    fresh = _net(seed=9)
    fresh[7] = nn.Linear(24, 3).double()  # a new task
    got = load_sparse_checkpoint(fresh, tmp_path / "sparse.pt", head="7")
    assert set(got) == {"2", "5"}
    for n in got:
        assert torch.equal(got[n], masks[n]) and torch.equal(fresh.get_submodule(n).weight, weights[n])
    torch.testing.assert_close(fresh[0].weight, model[0].weight)
    opt2 = torch.optim.SGD(fresh.parameters(), lr=0.05)
    algo2 = Static(fresh, opt2, masks=got)
    assert algo2.density == pytest.approx(sum(int(m.sum()) for m in got.values()) / sum(m.numel() for m in got.values()))
    fdata = [(x, y % 3) for x, y in data]
    _train(fresh, opt2, algo2, fdata, 3)
    for n in got:
        assert torch.equal(algo2.layer_masks()[n], masks[n])


def test_registry_and_exports():
    for name in ("static", "random", "snip", "grasp", "synflow", "magnitude", "set", "rigl", "gmp", "lottery"):
        assert name in names()
    assert sparsetrain.RigL is RigL and sparsetrain.algorithms.Static is Static
    with pytest.raises(ValueError, match="unknown algorithm name 'rigl2'"):
        create("rigl2", _net(), None)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"density must be a number in \(0, 1\]"):
        RigL(_net(), None, density=1.5, total_steps=10)
    with pytest.raises(ValueError, match=r"density must be a number in \(0, 1\]"):
        Static(_net(), None, density=0.0)
    with pytest.raises(ValueError, match="total_steps"):
        RigL(_net(), None, density=0.1, total_steps=0)
    with pytest.raises(ValueError, match="drop_fraction"):
        SET(_net(), None, density=0.1, total_steps=10, drop_fraction=2.0)
    with pytest.raises(TypeError, match="cannot be made sparse"):
        Static(_net(), None, density=0.1, include=["1"])
    with pytest.raises(ValueError, match="criterion must be one of"):
        Static(_net(), None, criterion="fisher")
    with pytest.raises(ValueError, match="needs data"):
        Static(_net(), None, criterion="snip")
    with pytest.raises(ValueError, match="backend must be one of"):
        Static(_net(), None, backend="gpu")
    with pytest.raises(ValueError, match="distribution must be one of"):
        Static(_net(), None, distribution="normal")


def _hrbp_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 36, 5)).double()


def test_hrbp_static_masks_are_blocks_and_run_on_block_layers():
    from sparsetrain.formats.block_layout import BlockLayout
    model, data = _hrbp_net(), _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    algo = create("hrbp", model, opt, density=0.2, distribution="uniform", groups=2, backend="sparse-cpu",
                  min_sparsity=0.5)
    assert algo.names == ["2", "4"]
    for n, m in algo.layer_masks().items():
        lay = BlockLayout.from_mask(m)  # raises unless block-structured
        assert lay.nnz == int(m.sum())
        assert abs(m.float().mean().item() - 0.2) < 0.1  # achievable block density near the target
        assert type(algo.layer(n)).__name__ == "BlockSparseConv2d"
    before = algo.layer_masks()
    _train(model, opt, algo, data, 3)
    assert all(torch.equal(before[n], m) for n, m in algo.layer_masks().items())


def test_hrbp_dynamic_block_wise_update():
    from sparsetrain.formats.block_layout import BlockLayout
    model, data = _hrbp_net(), _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    algo = create("hrbp-dst", model, opt, density=0.3, distribution="uniform", groups=2, total_steps=40,
                  update_interval=5, drop_fraction=0.5, drop_schedule="constant")
    rows = {n: lay.rows.clone() for n, lay in algo.layouts.items()}
    before = algo.layer_masks()
    _train(model, opt, algo, data, 5)
    changed = 0
    for n, m in algo.layer_masks().items():
        assert int(m.sum()) == int(before[n].sum())  # block shapes fixed
        assert torch.equal(algo.layouts[n].rows, rows[n])  # row groups kept
        assert torch.equal(BlockLayout(algo.shapes[n], *[getattr(algo.layouts[n], a) for a in
                                                          ("rows", "channels", "cells")]).mask, m)
        k = algo.last_update[n][0]
        assert k == sum(round(0.5 * int(r.sum())) for r in before[n].reshape(m.shape[0], -1))
        changed += int((m & ~before[n]).sum())
    assert changed > 0, "block-wise updating moved some blocks"


def test_random_channel_keeps_whole_filters():
    algo = create("random-channel", _hrbp_net(), None, density=0.25, distribution="uniform")
    for n, m in algo.layer_masks().items():
        per_row = m.reshape(m.shape[0], -1)
        assert bool((per_row.all(1) | ~per_row.any(1)).all())
        assert int(per_row.all(1).sum()) == round(0.25 * m.shape[0])
