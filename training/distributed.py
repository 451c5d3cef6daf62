"""Multi-process helpers: set-up from ``torchrun``'s environment, and a differentiable all-gather.

``torchrun --nproc_per_node=K -m simclr_search.training.train ...`` (or ``simclr train`` under torchrun) sets
RANK, WORLD_SIZE and LOCAL_RANK; :func:`init_from_env` picks NCCL on CUDA and gloo on CPU.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def init_from_env(device: torch.device) -> bool:
    """Initialise the default process group when launched by torchrun. Returns True if distributed."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_initialized():
        return is_initialized()
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    return True


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sums every rank's gradient for this rank's slice.

    Forward: ``x (n, d)`` -> ``world`` tensors ``(n, d)``. Backward: the gradient w.r.t. ``x`` is the
    sum over ranks of the gradient each rank's loss sent to rank r's slice, so the negatives a rank
    contributes are trained by every rank's anchors.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        out = [torch.zeros_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        stacked = torch.stack(grads)
        dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
        return stacked[dist.get_rank()]


def all_gather_with_grad(x: torch.Tensor) -> list[torch.Tensor]:
    """Gather ``x`` from every rank (in rank order); gradients flow back to the producing rank."""
    if not is_initialized() or world_size() == 1:
        return [x]
    gathered = list(_GatherWithGrad.apply(x))
    # Our own slice is the live tensor, so its gradient also flows through the direct path.
    gathered[rank()] = x
    return gathered


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    if not is_initialized():
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / world_size()
