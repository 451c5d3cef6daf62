"""NT-Xent against a slow reference written straight from Eq. 1 of Chen et al. 2020."""

from __future__ import annotations

import math

import pytest
import torch

from simclr_search.training.loss import NTXentLoss


def reference_ntxent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    """Loop over every positive pair (i, j): l(i,j) = -log exp(s_ij/tau) / sum_{k != i} exp(s_ik/tau)."""
    z = torch.cat([z1, z2]).double()
    n2 = z.shape[0]
    n = n2 // 2

    def sim(a: int, b: int) -> torch.Tensor:
        return torch.dot(z[a], z[b]) / (torch.linalg.norm(z[a]) * torch.linalg.norm(z[b]))

    total = torch.zeros((), dtype=torch.float64)
    for i in range(n2):
        j = (i + n) % n2
        denominator = sum(torch.exp(sim(i, k) / tau) for k in range(n2) if k != i)
        total = total - torch.log(torch.exp(sim(i, j) / tau) / denominator)
    return total / n2


@pytest.mark.parametrize("batch", [1, 2, 5, 16])
@pytest.mark.parametrize("tau", [0.07, 0.2, 0.5, 1.0])
def test_matches_reference_values_and_gradients(batch: int, tau: float) -> None:
    g = torch.Generator().manual_seed(batch * 100 + int(tau * 100))
    z1 = torch.randn(batch, 8, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(batch, 8, generator=g, dtype=torch.float64, requires_grad=True)
    ours = NTXentLoss(tau)(z1, z2)
    ours_grads = torch.autograd.grad(ours, (z1, z2))
    ref = reference_ntxent(z1, z2, tau)
    ref_grads = torch.autograd.grad(ref, (z1, z2))
    # Ours computes in float32 (as in training); the reference in float64.
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-5)
    for a, b in zip(ours_grads, ref_grads, strict=True):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-6)


def test_perfect_alignment_with_orthogonal_negatives_gives_known_value() -> None:
    # Views equal, different images orthogonal: s=1 for the positive, 0 for 2N-2 negatives.
    n, tau = 4, 0.5
    z = torch.eye(n)
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + (2 * n - 2)))
    assert NTXentLoss(tau)(z, z.clone()).item() == pytest.approx(expected, rel=1e-6)


def test_invariant_to_scale_of_z() -> None:
    z1, z2 = torch.randn(6, 4), torch.randn(6, 4)
    loss = NTXentLoss(0.3)
    assert loss(z1, z2).item() == pytest.approx(loss(3 * z1, 0.5 * z2).item(), rel=1e-5)


@pytest.mark.parametrize("tau", [0.0, -0.1])
def test_rejects_bad_temperature(tau: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(tau)


def test_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        NTXentLoss()(torch.randn(4, 8), torch.randn(3, 8))
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        NTXentLoss()(torch.randn(4), torch.randn(4))
