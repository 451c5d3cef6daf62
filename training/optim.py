"""Optimisers and learning-rate schedule for SimCLR training.

* LARS (You et al. 2017), as SimCLR uses it (Chen et al. 2020, Sec. 2.1 and Appendix B.1): SGD with
  momentum whose per-layer step is scaled by ``eta * ||w|| / ||grad + wd * w||``; biases and
  BatchNorm parameters are excluded from both the trust ratio and weight decay.
* AdamW and SGD (momentum, nesterov) with the same exclusion of biases/BN from weight decay.
* Linear warm-up then cosine decay to zero, per step.
* Learning-rate scaling rules from the paper: ``linear`` (lr = base * B / 256) and ``sqrt``
  (lr = base * sqrt(B), 0.075 * sqrt(B) for LARS in Appendix B.1).
"""

from __future__ import annotations

import math

import torch
from torch import nn

OPTIMIZERS = ("lars", "sgd", "adamw")
LR_SCALINGS = ("none", "linear", "sqrt")


def scaled_lr(base_lr: float, batch_size: int, rule: str) -> float:
    if rule == "none":
        return base_lr
    if rule == "linear":
        return base_lr * batch_size / 256
    if rule == "sqrt":
        return base_lr * math.sqrt(batch_size)
    raise ValueError(f"unknown lr scaling {rule!r}; choose one of {LR_SCALINGS}")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights that decay and adapt, and biases/normalisation parameters that do neither."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name.endswith(".bias"):
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay, "lars_exclude": False},
        {"params": no_decay, "weight_decay": 0.0, "lars_exclude": True},
    ]


class LARS(torch.optim.Optimizer):
    """Layer-wise Adaptive Rate Scaling over SGD with momentum.

    Args:
        params: parameter groups; a group with ``lars_exclude=True`` gets plain momentum SGD.
        lr: learning rate.
        momentum: momentum factor (0.9 in SimCLR).
        weight_decay: L2 penalty (1e-6 in SimCLR).
        eta: trust coefficient (0.001 in SimCLR).
    """

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 1e-6,
        eta: float = 0.001,
    ):
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "eta": eta,
            "lars_exclude": False,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if group["weight_decay"] != 0:
                    grad = grad.add(p, alpha=group["weight_decay"])
                if not group["lars_exclude"]:
                    w_norm = torch.linalg.vector_norm(p)
                    g_norm = torch.linalg.vector_norm(grad)
                    trust = torch.where(
                        (w_norm > 0) & (g_norm > 0),
                        group["eta"] * w_norm / g_norm,
                        torch.ones_like(w_norm),
                    )
                    grad = grad.mul(trust)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.clone(grad).detach()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(grad)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


def build_optimizer(
    model: nn.Module, name: str, lr: float, weight_decay: float, momentum: float = 0.9
) -> torch.optim.Optimizer:
    groups = param_groups(model, weight_decay)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    for group in groups:
        group.pop("lars_exclude")
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))
    raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")


def warmup_cosine(total_steps: int, warmup_steps: int, final_fraction: float = 0.0):
    """A multiplier for ``LambdaLR``: linear from ~0 to 1 over warm-up, cosine to ``final_fraction``."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    warmup_steps = max(0, min(warmup_steps, total_steps - 1))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        progress = min(1.0, progress)
        return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
