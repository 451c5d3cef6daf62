"""The weighted kNN monitor and the linear probe's classifier."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simclr_search.training.evaluate import knn_accuracy, knn_predict
from simclr_search.training.linear_probe import fit_linear


def test_knn_votes_are_weighted_by_similarity() -> None:
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.2, 0.8]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    query = torch.tensor([[1.0, 0.05], [0.05, 1.0]])
    # k=5 puts three class-1 neighbours against two class-0 ones; similarity weights decide.
    assert knn_predict(query, bank, labels, num_classes=2, k=5, temperature=0.1).tolist() == [0, 1]
    # With a huge temperature every vote weighs the same and the majority (class 1) wins.
    assert knn_predict(query, bank, labels, num_classes=2, k=5, temperature=1e6).tolist() == [1, 1]


def test_knn_accuracy_on_separable_clusters() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=g) * 5
    labels = np.repeat(np.arange(4), 50)
    feats = centres[labels] + torch.randn(200, 16, generator=g)
    assert knn_accuracy(feats[::2], labels[::2], feats[1::2], labels[1::2], k=10) == 1.0
    with pytest.raises(ValueError, match="k must be positive"):
        knn_predict(feats, feats, torch.as_tensor(labels), 4, k=0)


def test_linear_probe_fits_a_linear_problem() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(400, 8, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    head = fit_linear(x, y, num_classes=2, epochs=30, lr=5e-2, batch_size=64)
    assert (head(x).argmax(1) == y).float().mean() > 0.95


def test_knn_and_linear_probe_commands_on_a_checkpoint(tiny_run, tmp_path) -> None:
    from simclr_search.training.knn_eval import KnnConfig, knn_top1
    from simclr_search.training.linear_probe import LinearProbeConfig, linear_probe

    checkpoint, library = tiny_run
    top1 = knn_top1(
        KnnConfig(
            str(checkpoint), str(library), str(library), k=5, device="cpu", cache_dir=str(tmp_path)
        )
    )
    assert 1 / 3 < top1 <= 1.0  # above chance: three balanced classes
    result = linear_probe(
        LinearProbeConfig(
            str(checkpoint),
            str(library),
            str(library),
            epochs=50,
            lr=5e-2,
            device="cpu",
            cache_dir=str(tmp_path),
        )
    )
    assert result["train_top1"] > 0.8  # 48 images, 64-d features: separable
    assert 0.0 <= result["linear_top1"] <= 1.0
