"""Two gloo processes on the CPU: scores are all-reduced and masks are identical on every rank."""
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _net():
    torch.manual_seed(0)  # same weights on every rank
    return nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4)).double()


def _batch(rank):
    g = torch.Generator().manual_seed(100 + rank)  # different data per rank
    return torch.randn(16, 10, generator=g, dtype=torch.float64), torch.randint(0, 4, (16,), generator=g)


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from sparsetrain.algorithms import SET, RigL, Static
        from sparsetrain.nn import protocol
        result = {}
        # RigL: lr=0 keeps weights identical, so only the gradients (data) differ between ranks
        model = _net()
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        algo = RigL(model, opt, density=0.2, distribution="uniform", total_steps=10, update_interval=1, seed=rank)
        masks0 = algo.layer_masks()
        before = masks0["2"]
        x, y = _batch(rank)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        algo.step()
        result["rigl"] = algo.layer_masks()["2"]
        # what the average gradient grows: recompute both ranks' dense gradients locally
        ref = _net()
        with torch.no_grad():
            ref[0].weight.mul_(masks0["0"])
            ref[2].weight.mul_(before)
        grads = []
        for r in range(world):
            ref.zero_grad()
            xr, yr = _batch(r)
            F.cross_entropy(ref(xr), yr).backward()
            grads.append(ref[2].weight.grad.clone())
        result["avg_grad"] = sum(grads) / world
        result["before"] = before
        result["weight"] = protocol.dense_weight(model[2])
        # SET with the same seed everywhere, SNIP on different data
        m2 = _net()
        set_algo = SET(m2, None, density=0.2, total_steps=10, update_interval=1, seed=5)
        m2(x).sum().backward()
        set_algo.step()
        result["set"] = set_algo.layer_masks()["2"]
        snip = Static(_net(), None, density=0.2, distribution="uniform", criterion="snip", data=[(x, y)])
        result["snip"] = snip.layer_masks()["2"]
        torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_ranks_agree(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    for key in ("rigl", "set", "snip"):
        assert torch.equal(r0[key], r1[key]), key
    # RigL grew by the all-reduced gradient: the grown weights have the largest |mean grad| outside the survivors
    new, before, g = r0["rigl"], r0["before"], r0["avg_grad"].abs()
    grown = new & ~before
    assert grown.any()
    assert g[grown].min() >= g[~new & ~before].max()  # inactive candidates not chosen score lower
    assert int(before.sum()) == int(new.sum())
