"""The batched SimCLR augmentation: shapes, value ranges, probabilities and seeded determinism."""

from __future__ import annotations

import pytest
import torch

from simclr_search.training.augment import AugmentConfig, SimCLRAugment


def _batch(n: int = 16, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


def _unnormalise(x: torch.Tensor, aug: SimCLRAugment) -> torch.Tensor:
    return x * aug.std + aug.mean


def _only(**overrides) -> AugmentConfig:
    """Full-image crop with every random operation off, but those in ``overrides``."""
    plain = {"scale": (1.0, 1.0), "ratio": (1.0, 1.0), "hflip_p": 0, "jitter_p": 0, "gray_p": 0}
    return AugmentConfig(**{**plain, **overrides})


@pytest.mark.parametrize(
    ("in_size", "out_size", "config"),
    [
        (32, 32, {}),
        (40, 32, {"blur_p": 0.5, "rotation_degrees": 30}),
        (32, 32, {"noise_p": 1.0, "noise_sigma": 0.2}),
        (300, 96, {"scale": (0.08, 1.0), "blur_p": 1.0}),
        (24, 48, {}),
    ],
)
def test_shapes_and_range(in_size: int, out_size: int, config: dict) -> None:
    aug = SimCLRAugment(AugmentConfig(input_size=out_size, **config))
    out = aug(_batch(8, in_size), torch.Generator().manual_seed(1))
    assert out.shape == (8, 3, out_size, out_size)
    assert out.dtype == torch.float32
    pixels = _unnormalise(out, aug)
    assert pixels.min() >= -1e-5
    assert pixels.max() <= 1 + 1e-5
    assert torch.isfinite(out).all()


def test_non_square_input() -> None:
    aug = SimCLRAugment(AugmentConfig(input_size=32))
    images = torch.randint(0, 256, (4, 3, 40, 64), dtype=torch.uint8)
    assert aug(images, torch.Generator().manual_seed(0)).shape == (4, 3, 32, 32)


def test_seeded_runs_are_identical_and_seeds_differ() -> None:
    aug = SimCLRAugment(AugmentConfig(blur_p=0.5, rotation_degrees=10))
    images = _batch()
    a = aug(images, torch.Generator().manual_seed(7))
    b = aug(images, torch.Generator().manual_seed(7))
    c = aug(images, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_two_views_of_one_image_differ() -> None:
    aug = SimCLRAugment(AugmentConfig())
    g = torch.Generator().manual_seed(0)
    images = _batch()
    assert not torch.allclose(aug(images, g), aug(images, g))


def test_identity_when_every_random_op_is_off() -> None:
    """Full-image crop, no flip, no colour ops: the view is the (normalised) image itself."""
    aug = SimCLRAugment(_only())
    images = _batch(4, 32)
    out = _unnormalise(aug(images, torch.Generator().manual_seed(0)), aug)
    torch.testing.assert_close(out, images.float() / 255, atol=1e-4, rtol=0)


def test_flip_only_mirrors() -> None:
    aug = SimCLRAugment(_only(hflip_p=1.0))
    images = _batch(4, 32)
    out = _unnormalise(aug(images, torch.Generator().manual_seed(0)), aug)
    torch.testing.assert_close(out, images.float().flip(-1) / 255, atol=1e-4, rtol=0)


def test_grayscale_probability() -> None:
    aug = SimCLRAugment(AugmentConfig(jitter_p=0, gray_p=0.2))
    images = _batch(2000, 16)
    out = _unnormalise(aug(images, torch.Generator().manual_seed(3)), aug)
    is_gray = (out.max(dim=1).values - out.min(dim=1).values).amax(dim=(1, 2)) < 1e-4
    assert 0.15 < is_gray.float().mean().item() < 0.25


def test_jitter_changes_colours_with_probability_p() -> None:
    aug = SimCLRAugment(_only(input_size=8, jitter_p=0.8, jitter_strength=1.0))
    images = _batch(1000, 8)
    out = _unnormalise(aug(images, torch.Generator().manual_seed(4)), aug)
    changed = (out - images.float() / 255).abs().amax(dim=(1, 2, 3)) > 1e-3
    assert 0.74 < changed.float().mean().item() < 0.86


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_size": 4}, "input_size"),
        ({"scale": (0.5, 0.2)}, "scale"),
        ({"gray_p": 1.5}, "gray_p"),
        ({"noise_p": -0.1}, "noise_p"),
        ({"jitter_strength": -1}, "jitter_strength"),
        ({"std": (0.0, 1.0, 1.0)}, "std"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AugmentConfig(**kwargs)


def test_rejects_non_uint8_or_wrong_channels() -> None:
    aug = SimCLRAugment(AugmentConfig())
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="uint8"):
        aug(torch.rand(2, 3, 32, 32), g)
    with pytest.raises(ValueError, match="uint8"):
        aug(torch.zeros(2, 1, 32, 32, dtype=torch.uint8), g)


def test_view_size_sets_the_training_views_but_not_the_model_input() -> None:
    from simclr_search.training.config import TrainConfig

    cfg = TrainConfig(input_size=32, view_size=24)
    assert cfg.augment_config().input_size == 24 and cfg.cache_size == 32
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    views = SimCLRAugment(cfg.augment_config())(images, torch.Generator().manual_seed(0))
    assert views.shape == (4, 3, 24, 24)
    assert TrainConfig().augment_config().input_size == 32  # 0: the input size


def test_blur_on_small_views_reaches_the_drawn_sigma() -> None:
    """A point's blurred spread follows sigma up to 2 px even on 24 px views (not capped by 3 taps)."""
    aug = SimCLRAugment(_only(input_size=24, blur_p=1.0))
    images = torch.zeros(200, 3, 24, 24, dtype=torch.uint8)
    images[:, :, 12, 12] = 255
    out = _unnormalise(aug(images, torch.Generator().manual_seed(5)), aug)[:, 0]
    weights = out / out.sum(dim=(1, 2), keepdim=True)
    offsets = (torch.arange(24.0) - 12).view(1, 1, 24)
    sigma_x = (weights * offsets**2).sum(dim=(1, 2)).sqrt()
    assert sigma_x.min() < 0.3  # sigma 0.1 leaves the point nearly sharp
    assert sigma_x.max() > 1.6  # three taps could not spread past ~0.82
    assert torch.allclose(out.sum(dim=(1, 2)), torch.ones(200), atol=1e-3)  # blur keeps energy
