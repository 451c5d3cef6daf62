"""LARS exclusions, learning-rate scaling and the warm-up + cosine schedule."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from simclr_search.training.optim import (
    LARS,
    build_optimizer,
    param_groups,
    scaled_lr,
    warmup_cosine,
)


def _model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))


def test_bias_and_norm_parameters_are_excluded_from_decay_and_adaptation() -> None:
    groups = param_groups(_model(), weight_decay=1e-4)
    decayed = {p.ndim for p in groups[0]["params"]}
    excluded = groups[1]["params"]
    assert decayed == {4, 2}
    assert (
        all(p.ndim == 1 for p in excluded) and len(excluded) == 4
    )  # conv bias, BN w+b, linear bias
    assert groups[1]["weight_decay"] == 0 and groups[1]["lars_exclude"]


def test_lars_step_matches_the_trust_ratio_formula() -> None:
    weight = nn.Parameter(torch.tensor([3.0, 4.0]))  # ||w|| = 5
    bias = nn.Parameter(torch.tensor([1.0]))
    opt = LARS(
        [
            {"params": [weight], "lars_exclude": False, "weight_decay": 0.0},
            {"params": [bias], "lars_exclude": True, "weight_decay": 0.0},
        ],
        lr=1.0,
        eta=0.01,
    )
    weight.grad = torch.tensor([0.0, 10.0])  # ||g|| = 10
    bias.grad = torch.tensor([2.0])
    opt.step()
    trust = 0.01 * 5 / 10
    torch.testing.assert_close(weight.data, torch.tensor([3.0, 4.0 - trust * 10]))
    torch.testing.assert_close(bias.data, torch.tensor([1.0 - 2.0]))  # plain SGD


@pytest.mark.parametrize("name", ["lars", "sgd", "adamw"])
def test_every_optimizer_reduces_a_simple_loss(name: str) -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    opt = build_optimizer(model, name, lr=0.5 if name == "lars" else 0.05, weight_decay=0.0)
    first = nn.functional.mse_loss(model(x), y).item()
    for _ in range(50):
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first


def test_lr_scaling_rules() -> None:
    assert scaled_lr(0.3, 512, "linear") == pytest.approx(0.6)
    assert scaled_lr(0.075, 4096, "sqrt") == pytest.approx(0.075 * 64)
    assert scaled_lr(0.1, 999, "none") == 0.1
    with pytest.raises(ValueError, match="lr scaling"):
        scaled_lr(0.1, 256, "cubic")


def test_warmup_then_cosine() -> None:
    f = warmup_cosine(total_steps=110, warmup_steps=10)
    assert f(0) == pytest.approx(1 / 11)
    assert f(9) == pytest.approx(10 / 11)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5)
    assert f(110) == pytest.approx(0.0, abs=1e-12)
    values = [f(s) for s in range(10, 111)]
    assert all(a >= b for a, b in itertools.pairwise(values))
    assert math.isclose(warmup_cosine(10, 0)(0), 1.0)
