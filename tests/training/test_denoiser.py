"""Denoiser: shapes and range at odd and tiny sizes, tiling, bad input, noise, a short training run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from simclr_search.bundle.tiling import apply_tiled, plan_tiles
from simclr_search.training.models.denoiser import Denoiser
from simclr_search.training.noise import corrupt, dihedral, gaussian, mosaic


def _perturbed(widths=(8, 16, 32), seed: int = 0) -> Denoiser:
    """A random denoiser that is not the identity (the real head starts at zero)."""
    torch.manual_seed(seed)
    model = Denoiser(widths)
    torch.nn.init.normal_(model.head.weight, std=0.2)
    return model.eval()


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (8, 8), (33, 47), (64, 17)])
def test_any_size_gives_the_same_shape(size: tuple[int, int]) -> None:
    model = _perturbed()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        out = model(x, torch.tensor([-1.0, 25.0]))
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_a_new_denoiser_is_the_identity_and_the_noise_level_input_is_wired() -> None:
    x = torch.rand(1, 3, 20, 20)
    with torch.no_grad():
        torch.testing.assert_close(Denoiser((8, 16))(x, torch.tensor([10.0])), x)
        model = _perturbed()
        blind, known = model(x, torch.tensor([-1.0])), model(x, torch.tensor([50.0]))
    assert (blind - known).abs().max() > 1e-4


@pytest.mark.parametrize(
    ("images", "sigma", "message"),
    [
        (torch.rand(1, 4, 8, 8), torch.tensor([1.0]), r"\(B, 3, H, W\)"),
        (torch.rand(3, 8, 8), torch.tensor([1.0]), r"\(B, 3, H, W\)"),
        (torch.rand(0, 3, 8, 8), torch.zeros(0), "empty"),
        (torch.rand(1, 3, 0, 8), torch.tensor([1.0]), "empty"),
        (torch.rand(2, 3, 8, 8), torch.tensor([1.0]), "one noise level per image"),
    ],
)
def test_bad_inputs_are_rejected(images: torch.Tensor, sigma: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Denoiser((8, 16))(images, sigma)


def test_tile_plan_covers_the_image_with_bounded_tiles() -> None:
    for height, width in [(1, 1), (500, 500), (513, 1900), (4000, 3000), (700, 40)]:
        tile_h, tile_w, origins = plan_tiles(height, width, max_tile=512, overlap=32)
        assert tile_h <= 512 and tile_w <= 512
        covered = np.zeros((height, width), dtype=bool)
        for top, left in origins:
            assert top + tile_h <= height and left + tile_w <= width
            covered[top : top + tile_h, left : left + tile_w] = True
        assert covered.all()
    assert plan_tiles(500, 500)[2] == [(0, 0)]
    with pytest.raises(ValueError, match="overlap"):
        plan_tiles(100, 100, max_tile=64, overlap=32)
    with pytest.raises(ValueError, match="empty"):
        plan_tiles(0, 10)


def test_tiled_output_matches_the_whole_image() -> None:
    model = _perturbed((8, 16, 32, 64))
    image = np.random.default_rng(0).random((3, 150, 203), dtype=np.float32)

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(batch), torch.full((len(batch),), 25.0)).numpy()

    whole = run(image[None])[0]
    tiled = apply_tiled(run, image, max_tile=96, overlap=32)
    assert plan_tiles(150, 203, 96, 32)[2].__len__() > 4
    diff = np.abs(tiled - whole)
    assert diff.mean() < 1 / 255, diff.mean()
    assert np.percentile(diff, 99) < 4 / 255, np.percentile(diff, 99)
    np.testing.assert_allclose(apply_tiled(lambda b: b, image, 96, 32), image, atol=1e-6)


def test_mirrored_border_is_what_the_model_sees_and_is_cropped_off() -> None:
    image = np.random.default_rng(1).random((3, 150, 203), dtype=np.float32)
    seen: list[tuple[int, ...]] = []

    def box_blur(batch: np.ndarray) -> np.ndarray:  # shift-equivariant, reads across the edge
        seen.append(batch.shape)
        t = torch.from_numpy(batch)
        kernel = torch.full((3, 1, 5, 5), 1 / 25)
        return F.conv2d(F.pad(t, [2, 2, 2, 2]), kernel, groups=3).numpy()

    whole = apply_tiled(box_blur, image, max_tile=203, border=16)
    assert seen == [(1, 3, 182, 235)]  # the border does not push an image into tiles
    mirrored = np.pad(image, ((0, 0), (16, 16), (16, 16)), mode="reflect")
    expected = box_blur(mirrored[None])[0, :, 16:-16, 16:-16]
    np.testing.assert_allclose(whole, expected, atol=1e-6)
    # At the corner the border changed the answer (zero padding darkens it; mirroring does not).
    assert whole[:, 0, 0].mean() > box_blur(image[None])[0, :, 0, 0].mean() + 0.1
    tiled = apply_tiled(box_blur, image, max_tile=96, overlap=32, border=16)
    assert np.abs(tiled - whole).mean() < 1 / 255  # tiles blend as without a border
    for size in ((3, 1, 1), (3, 2, 5)):  # mirroring works on images smaller than the border
        tiny = np.random.default_rng(2).random(size, dtype=np.float32)
        np.testing.assert_allclose(apply_tiled(lambda b: b, tiny, border=16), tiny)
    with pytest.raises(ValueError, match="border"):
        apply_tiled(lambda b: b, image, border=-1)


def test_noise_is_seeded_unclipped_and_labelled() -> None:
    clean = torch.full((64, 3, 8, 8), 0.5)
    noisy, sigma = gaussian(clean, 55.0, torch.Generator().manual_seed(1))
    again, _ = gaussian(clean, 55.0, torch.Generator().manual_seed(1))
    torch.testing.assert_close(noisy, again)
    assert sigma.min() >= 0 and sigma.max() <= 55
    measured = (noisy - clean).flatten(1).std(1) * 255
    assert torch.corrcoef(torch.stack([measured, sigma]))[0, 1] > 0.95
    noisy, shown = corrupt(clean, torch.Generator().manual_seed(2), known_p=0.5, jpeg_p=0.2)
    assert ((shown == -1).float().mean() > 0.3) and ((shown >= 0).float().mean() > 0.2)
    assert dihedral(torch.arange(4.0).view(1, 1, 2, 2), torch.Generator()).numel() == 4
    with pytest.raises(ValueError, match="known_p"):
        corrupt(clean, torch.Generator(), known_p=2.0)


def test_mosaic_lays_images_side_by_side() -> None:
    images = torch.arange(9 * 3 * 2 * 2, dtype=torch.float32).view(9, 3, 2, 2)
    tiled = mosaic(images, 2)
    assert tiled.shape == (2, 3, 4, 4)  # 9 images: two 2x2 mosaics, one left over
    torch.testing.assert_close(tiled[0, :, :2, :2], images[0])
    torch.testing.assert_close(tiled[0, :, :2, 2:], images[1])
    torch.testing.assert_close(tiled[0, :, 2:, :2], images[2])
    torch.testing.assert_close(tiled[1, :, 2:, 2:], images[7])
    assert mosaic(images, 1) is images
    with pytest.raises(ValueError, match="at least 9"):
        mosaic(images[:4], 3)
    with pytest.raises(ValueError, match="tiles"):
        mosaic(images, 0)


@pytest.mark.slow
def test_short_training_lowers_the_loss(image_library: Path, tmp_path: Path) -> None:
    from simclr_search.training.denoiser_train import DenoiserTrainConfig as Config
    from simclr_search.training.denoiser_train import load_denoiser, train_denoiser

    summary = train_denoiser(
        Config(
            str(image_library),
            str(tmp_path / "run"),
            steps=80,
            batch_size=8,
            patch_size=32,
            lr=5e-3,
            widths=(8, 16, 32),
            device="cpu",
            precision="fp32",
            cache_dir=str(tmp_path / "cache"),
            progress=False,
            mosaic=1,  # single images, every one noisy: the plainest loss curve
            clean_p=0.0,
        )
    )
    assert summary["final_loss"] < 0.8 * summary["first_loss"], summary
    model, state = load_denoiser(summary["denoiser"])
    assert state["config"]["widths"] == [8, 16, 32] and state["step"] == 80
    assert model.widths == (8, 16, 32)
    mosaics = train_denoiser(
        Config(
            str(image_library),
            str(tmp_path / "mosaic"),
            steps=3,
            batch_size=8,
            widths=(8, 16, 32),
            device="cpu",
            precision="fp32",
            cache_dir=str(tmp_path / "cache"),
            progress=False,
            mosaic=2,
            lr=5e-3,
            weights=summary["denoiser"],
            ema=0.999999,  # the saved average barely leaves the starting weights
        )
    )
    averaged, state = load_denoiser(mosaics["denoiser"])
    assert state["config"]["mosaic"] == 2 and state["config"]["ema"] == 0.999999
    start = model.state_dict()
    for key, value in averaged.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, start[key], atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="--mosaic 3 needs 9 images per batch"):
        train_denoiser(Config(str(image_library), str(tmp_path / "bad"), batch_size=8, mosaic=3))
    with pytest.raises(ValueError, match="--ema must be in"):
        train_denoiser(Config(str(image_library), str(tmp_path / "bad"), ema=1.0))


def test_learning_rate_warms_up_then_decays_to_zero() -> None:
    from simclr_search.training.denoiser_train import learning_rate

    assert learning_rate(0.0, 1e-3) < 1e-4
    assert learning_rate(0.02, 1e-3) == pytest.approx(1e-3)
    assert learning_rate(0.5, 1e-3) == pytest.approx(0.5e-3, rel=0.05)
    assert learning_rate(1.0, 1e-3) == pytest.approx(0.0, abs=1e-12)


def test_tiled_run_stops_when_the_caller_goes_away() -> None:
    from simclr_search.bundle.tiling import Cancelled

    calls = []

    def fn(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return batch

    image = np.zeros((3, 300, 300), dtype=np.float32)
    with pytest.raises(Cancelled, match="caller went away"):
        apply_tiled(fn, image, max_tile=96, overlap=32, batch=1, cancelled=lambda: len(calls) >= 2)
    assert len(calls) == 2 < len(plan_tiles(300, 300, 96, 32)[2])
