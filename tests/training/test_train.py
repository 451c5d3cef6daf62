"""End-to-end training on a tiny library: the loss falls, outputs are written, resume is exact."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from simclr_search.training.augment import AugmentConfig, SimCLRAugment
from simclr_search.training.checkpoint import load_checkpoint
from simclr_search.training.config import TrainConfig, load_config_file
from simclr_search.training.data.library import build_library
from simclr_search.training.loss import NTXentLoss
from simclr_search.training.models.simclr import build_model, model_from_checkpoint
from simclr_search.training.train import config_from_args, get_args_parser, run
from tests.conftest import make_library


def _config(library: Path, out: Path, cache: Path, **overrides) -> TrainConfig:
    values = dict(
        data=str(library),
        out_dir=str(out),
        cache_dir=str(cache),
        workers=0,
        encoder="compact",
        width=8,
        batch_size=8,
        epochs=2,
        optimizer="adamw",
        lr=2e-3,
        lr_scaling="none",
        weight_decay=1e-4,
        warmup_epochs=0,
        precision="fp32",
        progress=False,
        tensorboard=False,
        log_every=1,
        checkpoint_every=3,
        keep_checkpoints=10,
        eval_every=1,
        knn_k=5,
    )
    values.update(overrides)
    return TrainConfig(**values)


def _fixed_batch_loss(model: torch.nn.Module, library: Path, cache: Path) -> float:
    """NT-Xent of two fixed (seeded) views of the whole library: comparable before and after training."""
    lib = build_library(library, 32, cache, workers=0, progress=False)
    images = torch.from_numpy(np.array(lib.images)).permute(0, 3, 1, 2).contiguous()
    augment = SimCLRAugment(AugmentConfig(input_size=32, scale=(0.6, 1.0), jitter_strength=0.2))
    g = torch.Generator().manual_seed(123)
    views = torch.cat([augment(images, g), augment(images, g)])
    model = copy.deepcopy(model).train()  # batch statistics, as in training
    with torch.no_grad():
        _, z = model(views)
    return NTXentLoss(0.2)(*z.chunk(2)).item()


@pytest.mark.slow
def test_tiny_run_lowers_the_loss_and_writes_its_outputs(tmp_path: Path, cache_dir: Path) -> None:
    library = make_library(tmp_path / "library", per_class=16)
    # Milder views than SimCLR's (crops of 60-100%, weak jitter) so 45 steps visibly learn.
    cfg = _config(
        library,
        tmp_path / "run",
        cache_dir,
        epochs=15,
        batch_size=16,
        lr=1e-3,
        crop_min_scale=0.6,
        jitter_strength=0.2,
        knn_test=str(library),
        tensorboard=True,
        eval_every=5,
    )
    torch.manual_seed(cfg.seed)
    initial = build_model(
        cfg.encoder, cfg.small_stem, cfg.width, cfg.proj_hidden_dim, cfg.proj_out_dim
    )
    summary = run(cfg)
    out = tmp_path / "run"
    trained = model_from_checkpoint(load_checkpoint(out / "checkpoint.pt"))
    before = _fixed_batch_loss(initial, library, cache_dir)
    after = _fixed_batch_loss(trained, library, cache_dir)
    assert after < before - 0.3, (before, after)

    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in history if r["kind"] == "epoch"]) == 15
    assert summary["steps"] == 45
    assert 0.0 <= summary["knn_top1"] <= 1.0
    assert [r["epoch"] for r in history if r["kind"] == "eval"] == [5.0, 10.0, 15.0]
    for name in ("checkpoint.pt", "config.json", "summary.json", "curves.png"):
        assert (out / name).exists(), name
    assert list((out / "tb").iterdir()), "TensorBoard event file"
    steps = [r for r in history if r["kind"] == "step"]
    assert all(r["images_per_s"] > 0 and r["lr"] > 0 for r in steps)
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["preprocessing"]["input_size"] == 32
    assert state["preprocessing"]["embedding_dim"] == 64
    assert state["config"]["width"] == 8


def test_resume_continues_exactly(image_library: Path, tmp_path: Path, cache_dir: Path) -> None:
    straight = _config(image_library, tmp_path / "straight", cache_dir, epochs=2)
    run(straight)
    final = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    halfway = tmp_path / "straight" / "checkpoint-0000003.pt"
    assert load_checkpoint(halfway)["step"] == 3
    resumed = _config(image_library, tmp_path / "resumed", cache_dir, epochs=2, resume=str(halfway))
    run(resumed)
    again = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")
    assert again["step"] == final["step"] == 6
    for key, value in final["model"].items():
        assert torch.equal(value, again["model"][key]), key
    assert again["scheduler"]["last_epoch"] == final["scheduler"]["last_epoch"]


def test_checkpoint_pruning_keeps_the_newest(
    image_library: Path, tmp_path: Path, cache_dir: Path
) -> None:
    run(
        _config(
            image_library,
            tmp_path / "run",
            cache_dir,
            epochs=3,
            checkpoint_every=2,
            keep_checkpoints=2,
        )
    )
    kept = sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*.pt"))
    assert kept == ["checkpoint-0000006.pt", "checkpoint-0000008.pt"]


def test_config_file_sets_defaults_and_flags_win(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text('data = "/images"\nepochs = 7\nbatch-size = 64\ntemperature = 0.3\n')
    argv = ["--config", str(config), "--epochs", "9"]
    cfg = config_from_args(get_args_parser().parse_args(argv), argv)
    assert (cfg.data, cfg.epochs, cfg.batch_size, cfg.temperature) == ("/images", 9, 64, 0.3)
    config.write_text("epoch = 3\n")
    with pytest.raises(ValueError, match="unknown config keys"):
        load_config_file(config)


def test_missing_data_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--data is required"):
        run(TrainConfig(out_dir=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="not found"):
        run(TrainConfig(data=str(tmp_path / "missing"), out_dir=str(tmp_path), progress=False))


@pytest.mark.slow
def test_time_budget_is_measured_and_respected(
    tmp_path: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="simclr.train")
    library = make_library(tmp_path / "library", per_class=16)
    cfg = _config(
        library,
        tmp_path / "run",
        cache_dir,
        epochs=1,
        batch_size=16,
        time_budget_min=0.3,
        warmup_epochs=0,
        checkpoint_every=0,
    )
    summary = run(cfg)
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert summary["steps"] == state["total_steps"] > 50  # resized after measuring, past the probe
    assert summary["seconds"] <= 0.3 * 60 * 1.25
    # planned from a probe, then re-planned from measured speed after warm-up, at 50% and 80%
    # (on a machine slowed down mid-run, the 50% re-plan can end the run before the 80% point)
    plans = [r for r in caplog.records if "time budget: measured" in r.getMessage()]
    assert len(plans) in (2, 3), [r.getMessage() for r in plans]
