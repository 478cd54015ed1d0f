"""torch.distributed helpers: identical masks on every rank (DESIGN decision 7)."""
from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_scores(scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Average per-layer scores over ranks (one flat all-reduce); a no-op outside distributed runs."""
    if not is_distributed() or not scores:
        return scores
    names = list(scores)
    flat = torch.cat([scores[n].reshape(-1).double() for n in names])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    out, start = {}, 0
    for n in names:
        s = scores[n]
        out[n] = flat[start:start + s.numel()].view(s.shape).to(s.dtype)
        start += s.numel()
    return out


def broadcast_masks(masks: dict[str, torch.Tensor], src: int = 0) -> dict[str, torch.Tensor]:
    """Every rank gets rank ``src``'s masks (gloo has no bool broadcast: sent as uint8)."""
    if not is_distributed() or not masks:
        return masks
    names = list(masks)
    flat = torch.cat([masks[n].reshape(-1).to(torch.uint8).cpu() for n in names])
    dist.broadcast(flat, src)
    out, start = {}, 0
    for n in names:
        m = masks[n]
        out[n] = flat[start:start + m.numel()].view(m.shape).to(device=m.device, dtype=torch.bool)
        start += m.numel()
    return out
