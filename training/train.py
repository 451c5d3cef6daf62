"""SimCLR training: ``simclr train`` (or ``torchrun ... -m simclr_search.training.train``).

Structure follows torchvision's classification reference: :func:`get_args_parser` (its flags in
``train_args.py``), :func:`main`, :func:`train_one_epoch`, :func:`evaluate`. Each step draws two
views of every image of the batch (``augment.py``), encodes both views in one forward pass, and
minimises NT-Xent (``loss.py``) between their projections z. The kNN monitor evaluates h.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from simclr_search.training import distributed
from simclr_search.training.augment import SimCLRAugment
from simclr_search.training.checkpoint import (
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from simclr_search.training.config import TrainConfig
from simclr_search.training.data.batches import BatchReader, step_generator
from simclr_search.training.data.library import ImageLibrary, build_library
from simclr_search.training.evaluate import extract_features, knn_accuracy
from simclr_search.training.loss import NTXentLoss
from simclr_search.training.models.simclr import SimCLRModel, build_model
from simclr_search.training.optim import build_optimizer, scaled_lr, warmup_cosine
from simclr_search.training.precision import autocast, grad_scaler, resolve_precision, select_device
from simclr_search.training.run_log import RunLog, plot_curves
from simclr_search.training.time_budget import BudgetReplanner, probe_steps
from simclr_search.training.train_args import config_from_args, get_args_parser

log = logging.getLogger("simclr.train")


@dataclass
class TrainState:
    step: int = 0
    total_steps: int = 0
    history: list | None = None


def preprocessing_facts(cfg: TrainConfig, embedding_dim: int) -> dict[str, Any]:
    """What a consumer of the weights needs to feed them: travels with every checkpoint."""
    return {
        "input_size": cfg.input_size,
        "mean": list(cfg.mean),
        "std": list(cfg.std),
        "color_order": "RGB",
        "resize": "shorter side to input_size (bicubic), centre crop",
        "embedding_dim": embedding_dim,
        "embedding": "h (encoder output before the projection head)",
    }


def training_step(
    model: nn.Module,
    criterion: NTXentLoss,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    views: torch.Tensor,
    device: torch.device,
    precision: str,
    step: int,
) -> torch.Tensor:
    """One SGD step on ``views`` ``(2N, 3, S, S)`` (the first N and the last N are the two views
    of the same N images): one forward pass for both, NT-Xent between their z; returns the loss."""
    with autocast(device, precision):
        _, z = model(views)
    z1, z2 = z.float().chunk(2)
    loss = criterion(z1, z2)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss is {loss.item()} at step {step}; lower --lr or use fp32")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss


def train_one_epoch(
    model: nn.Module,
    criterion: NTXentLoss,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    reader: BatchReader,
    augment: SimCLRAugment,
    device: torch.device,
    precision: str,
    cfg: TrainConfig,
    state: TrainState,
    run_log: RunLog,
    on_step=None,
) -> float:
    """Run the steps of the current epoch (from ``state.step``); returns the epoch's mean loss."""
    model.train()
    epoch = state.step // reader.steps_per_epoch
    end = min((epoch + 1) * reader.steps_per_epoch, state.total_steps)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    global_batch = cfg.batch_size * distributed.world_size()
    losses: list[float] = []
    bar = tqdm(
        total=end - state.step,
        desc=f"epoch {epoch}",
        unit="step",
        leave=False,
        disable=not (cfg.progress and distributed.is_main()),
        mininterval=1.0,
    )
    tick = time.perf_counter()
    while state.step < end:
        images = reader.read(state.step).to(device, non_blocking=True)
        generator = step_generator(cfg.seed, state.step, distributed.rank())
        views = torch.cat([augment(images, generator), augment(images, generator)])
        loss = training_step(
            model,
            criterion,
            optimizer,
            scaler,
            views.contiguous(memory_format=memory_format),
            device,
            precision,
            state.step,
        )
        lr = optimizer.param_groups[0]["lr"]  # the rate this step used
        scheduler.step()
        state.step += 1
        losses.append(loss.item())
        bar.update(1)
        if state.step % cfg.log_every == 0 or state.step == end:
            now = time.perf_counter()
            steps = (
                cfg.log_every
                if state.step % cfg.log_every == 0
                else len(losses) % cfg.log_every or 1
            )
            images_per_s = steps * global_batch / max(now - tick, 1e-9)
            tick = now
            run_log.write(
                "step", state.step, loss=losses[-1], lr=lr, images_per_s=images_per_s, epoch=epoch
            )
            bar.set_postfix(loss=f"{losses[-1]:.3f}", img_s=f"{images_per_s:.0f}")
        if on_step is not None:
            on_step()
    bar.close()
    return float(sum(losses) / max(1, len(losses)))


def evaluate(
    model: SimCLRModel,
    bank: ImageLibrary,
    test: ImageLibrary,
    cfg: TrainConfig,
    device: torch.device,
    precision: str,
) -> float:
    """kNN top-1 accuracy of h (k, temperature from ``cfg``) in [0, 1]."""
    feats = [
        extract_features(
            model, lib.images, cfg.input_size, cfg.mean, cfg.std, device, precision=precision
        )
        for lib in (bank, test)
    ]
    return knn_accuracy(
        feats[0], bank.labels, feats[1], test.labels, cfg.knn_k, cfg.knn_temperature
    )


def _load_eval_libraries(
    cfg: TrainConfig, train_lib: ImageLibrary
) -> tuple[ImageLibrary, ImageLibrary] | None:
    if not cfg.knn_test:
        return None
    cache = cfg.cache_dir or None
    bank = (
        train_lib
        if not cfg.knn_train or cfg.knn_train == cfg.data
        else build_library(
            cfg.knn_train,
            cfg.cache_size,
            cache,
            cfg.workers,
            cfg.progress and distributed.is_main(),
        )
    )
    test = build_library(
        cfg.knn_test, cfg.cache_size, cache, cfg.workers, cfg.progress and distributed.is_main()
    )
    for name, lib in (("kNN bank", bank), ("kNN test set", test)):
        if not lib.has_labels:
            raise ValueError(f"the {name} needs class sub-folders (labels) for kNN evaluation")
    if bank.classes != test.classes:
        raise ValueError(f"kNN bank classes {bank.classes} differ from test classes {test.classes}")
    return bank, test


def main(args: argparse.Namespace, argv: list[str] | None = None) -> dict[str, Any]:
    """Train, checkpoint and evaluate; returns the final metrics (also written to ``summary.json``)."""
    cfg = config_from_args(args, argv)
    return run(cfg)


@dataclass
class _Runtime:
    """Where and how this process trains."""

    device: torch.device
    precision: str
    rank: int
    world: int
    is_main: bool


@dataclass
class _Parts:
    """The pieces of a training run, built once and passed around whole."""

    model: SimCLRModel
    train_model: nn.Module  # model, wrapped for DDP and torch.compile where asked
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    criterion: NTXentLoss
    augment: SimCLRAugment
    reader: BatchReader
    scheduler: torch.optim.lr_scheduler.LambdaLR | None = None


def _runtime(cfg: TrainConfig) -> _Runtime:
    """Threads, device, process group and precision of this process."""
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = select_device(cfg.device)
    if device.type == "cuda":
        torch.cuda.set_device(
            device.index if device.index is not None else distributed.local_rank()
        )
    distributed.init_from_env(device)
    torch.manual_seed(cfg.seed)
    return _Runtime(
        device,
        resolve_precision(device, cfg.precision),
        distributed.rank(),
        distributed.world_size(),
        distributed.is_main(),
    )


def _build_parts(cfg: TrainConfig, rt: _Runtime, train_lib: ImageLibrary) -> _Parts:
    """Model (f and g), optimiser, loss and views; DDP across ranks, compiled if asked."""
    model = build_model(
        cfg.encoder, cfg.small_stem, cfg.width, cfg.proj_hidden_dim, cfg.proj_out_dim
    ).to(rt.device)
    if cfg.sync_bn and rt.world > 1:
        if rt.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif rt.is_main:
            log.warning(
                "--sync-bn needs CUDA (PyTorch's SyncBatchNorm is GPU-only); using per-process BatchNorm"
            )
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    lr = scaled_lr(cfg.lr, cfg.batch_size * rt.world, cfg.lr_scaling)
    train_model: nn.Module = model
    if rt.world > 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None
        )
    if cfg.compile:
        train_model = torch.compile(train_model)
    return _Parts(
        model=model,
        train_model=train_model,
        optimizer=build_optimizer(model, cfg.optimizer, lr, cfg.weight_decay, cfg.momentum),
        scaler=grad_scaler(rt.device, rt.precision),
        criterion=NTXentLoss(cfg.temperature),
        augment=SimCLRAugment(cfg.augment_config()).to(rt.device),
        reader=BatchReader(train_lib, cfg.batch_size, cfg.seed, rt.rank, rt.world),
    )


def _plan_steps(
    cfg: TrainConfig,
    rt: _Runtime,
    parts: _Parts,
    eval_libs: tuple[ImageLibrary, ImageLibrary] | None,
    resume_state: dict[str, Any] | None,
    started: float,
) -> tuple[int, float]:
    """The run's total steps (a resumed run keeps its own; a time budget is probed) and the
    evaluation seconds the budget set aside."""
    eval_seconds = 0.0
    if resume_state is not None:
        return resume_state["total_steps"], eval_seconds
    if cfg.time_budget_min > 0:
        total, eval_seconds = _steps_for_budget(
            parts.train_model,
            parts.criterion,
            parts.optimizer,
            parts.reader,
            parts.augment,
            rt.device,
            rt.precision,
            cfg,
            eval_libs,
            started,
        )
    else:
        total = cfg.epochs * parts.reader.steps_per_epoch
    if cfg.max_steps > 0:
        total = min(total, cfg.max_steps)
    return total, eval_seconds


def _restore(parts: _Parts, state: TrainState, resume_state: dict[str, Any]) -> None:
    """Continue exactly: weights, optimiser, schedule, scaler, RNG and history."""
    parts.model.load_state_dict(resume_state["model"])
    parts.optimizer.load_state_dict(resume_state["optimizer"])
    parts.scheduler.load_state_dict(resume_state["scheduler"])
    parts.scaler.load_state_dict(resume_state["scaler"])
    set_rng_state(resume_state["rng"])
    state.step = resume_state["step"]
    state.history = resume_state.get("history", [])


def _save(path: Path, cfg: TrainConfig, parts: _Parts, state: TrainState) -> None:
    """A checkpoint as a plain dict: everything an exact resume and an export need."""
    save_checkpoint(
        path,
        {
            "model": parts.model.state_dict(),
            "optimizer": parts.optimizer.state_dict(),
            "scheduler": parts.scheduler.state_dict(),
            "scaler": parts.scaler.state_dict(),
            "step": state.step,
            "total_steps": state.total_steps,
            "config": cfg.to_dict(),
            "preprocessing": preprocessing_facts(cfg, parts.model.num_features),
            "rng": rng_state(),
            "history": state.history,
            "encoder": {"name": cfg.encoder, "width": cfg.width, "small_stem": cfg.small_stem},
        },
    )


def _step_hook(
    cfg: TrainConfig,
    rt: _Runtime,
    parts: _Parts,
    state: TrainState,
    replanner: BudgetReplanner | None,
    warmup: int,
):
    """What runs after every step: a re-planned budget, and periodic checkpoints."""
    out_dir = Path(cfg.out_dir)

    def on_step() -> None:
        if replanner is not None:
            total = replanner.on_step(state.step, state.total_steps)
            if total is not None:
                state.total_steps = total
                groups = len(parts.optimizer.param_groups)
                parts.scheduler.lr_lambdas = [warmup_cosine(total, warmup)] * groups
        if cfg.checkpoint_every > 0 and state.step % cfg.checkpoint_every == 0 and rt.is_main:
            _save(out_dir / "checkpoint.pt", cfg, parts, state)
            if cfg.keep_checkpoints > 0:
                shutil.copyfile(
                    out_dir / "checkpoint.pt", out_dir / f"checkpoint-{state.step:07d}.pt"
                )
                for old in sorted(out_dir.glob("checkpoint-*.pt"))[: -cfg.keep_checkpoints]:
                    old.unlink()

    return on_step


def _train_epochs(
    cfg: TrainConfig,
    rt: _Runtime,
    parts: _Parts,
    state: TrainState,
    eval_libs: tuple[ImageLibrary, ImageLibrary] | None,
    run_log: RunLog,
    on_step,
) -> float | None:
    """Epochs until ``state.total_steps``, with the kNN monitor; returns the last kNN top-1."""
    reader = parts.reader
    knn = None
    while state.step < state.total_steps:
        epoch = state.step // reader.steps_per_epoch
        epoch_start = time.perf_counter()
        loss = train_one_epoch(
            parts.train_model,
            parts.criterion,
            parts.optimizer,
            parts.scheduler,
            parts.scaler,
            reader,
            parts.augment,
            rt.device,
            rt.precision,
            cfg,
            state,
            run_log,
            on_step,
        )
        loss = float(distributed.all_reduce_mean(torch.tensor(loss)))
        seconds = time.perf_counter() - epoch_start
        fraction = (state.step - epoch * reader.steps_per_epoch) / reader.steps_per_epoch
        record: dict[str, Any] = {"epoch": epoch + fraction, "loss": loss, "seconds": seconds}
        run_log.write("epoch", state.step, **record)
        last = state.step >= state.total_steps
        due = last or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0)
        if eval_libs is not None and rt.is_main and due:
            knn = evaluate(parts.model, *eval_libs, cfg, rt.device, rt.precision)
            run_log.write("eval", state.step, epoch=epoch + fraction, knn_top1=knn)
            record["knn_top1"] = knn
        state.history.append(record)
        if rt.is_main:
            epochs_total = math.ceil(state.total_steps / reader.steps_per_epoch)
            shown = f", kNN top-1 {100 * knn:.2f}%" if "knn_top1" in record else ""
            log.info(
                "epoch %d/%d: loss %.4f (%.0f s)%s", epoch + 1, epochs_total, loss, seconds, shown
            )
    return knn


def run(cfg: TrainConfig) -> dict[str, Any]:
    """The training run behind ``main``, for callers that hold a :class:`TrainConfig`."""
    started = time.perf_counter()
    if not cfg.data:
        raise ValueError("--data is required: a folder of images or a .tar/.tar.gz archive")
    rt = _runtime(cfg)
    out_dir = Path(cfg.out_dir)
    train_lib = build_library(
        cfg.data, cfg.cache_size, cfg.cache_dir or None, cfg.workers, cfg.progress and rt.is_main
    )
    if rt.is_main:
        log.info("library %s: %d images; %s", cfg.data, len(train_lib), train_lib.skipped_summary())
    eval_libs = _load_eval_libraries(cfg, train_lib)
    parts = _build_parts(cfg, rt, train_lib)
    resume_state = load_checkpoint(cfg.resume) if cfg.resume else None
    state = TrainState(history=[])
    state.total_steps, eval_seconds = _plan_steps(cfg, rt, parts, eval_libs, resume_state, started)
    warmup = round(cfg.warmup_epochs * parts.reader.steps_per_epoch)
    parts.scheduler = torch.optim.lr_scheduler.LambdaLR(
        parts.optimizer, warmup_cosine(state.total_steps, warmup)
    )
    if resume_state is not None:
        _restore(parts, state, resume_state)
        if rt.is_main:
            log.info("resumed from %s at step %d of %d", cfg.resume, state.step, state.total_steps)
    run_log = RunLog(out_dir, enabled=rt.is_main, tensorboard=cfg.tensorboard)
    if rt.is_main:
        (out_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    replanner = None
    if cfg.time_budget_min > 0 and resume_state is None:
        replanner = BudgetReplanner(
            cfg.time_budget_min * 60,
            started,
            eval_seconds,
            parts.reader.steps_per_epoch,
            cfg.eval_every,
            calibrate_at=max(warmup, 50),
            reduce=lambda s: float(distributed.all_reduce_mean(torch.tensor(s))),
            verbose=rt.is_main,
        )
    on_step = _step_hook(cfg, rt, parts, state, replanner, warmup)
    try:
        knn = _train_epochs(cfg, rt, parts, state, eval_libs, run_log, on_step)
        if rt.is_main:
            _save(out_dir / "checkpoint.pt", cfg, parts, state)
    finally:
        run_log.close()
    summary = {
        "steps": state.step,
        "epochs": state.step / parts.reader.steps_per_epoch,
        "images": len(train_lib),
        "skipped": len(train_lib.skipped),
        "final_loss": state.history[-1]["loss"] if state.history else None,
        "knn_top1": knn,
        "seconds": time.perf_counter() - started,
        "device": str(rt.device),
        "precision": rt.precision,
        "encoder": cfg.encoder,
        "world_size": rt.world,
    }
    if rt.is_main:
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        plot_curves(out_dir / "metrics.jsonl", out_dir / "curves.png")
    return summary


def _steps_for_budget(
    model, criterion, optimizer, reader, augment, device, precision, cfg, eval_libs, started
) -> tuple[int, float]:
    """Time a few real steps (then undo them) and size the run so training + evaluation fit the
    budget (``training/time_budget.py``)."""
    snapshot = {k: v.detach().clone() for k, v in model.state_dict().items()}
    probe_cfg = TrainConfig(**{**cfg.to_dict(), "progress": False, "log_every": 10**9})
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1e-3)
    null_log = RunLog(cfg.out_dir, enabled=False)

    def run_steps(n: int) -> int:
        probe = TrainState(step=0, total_steps=n)
        train_one_epoch(
            model,
            criterion,
            optimizer,
            sched,
            grad_scaler(device, precision),
            reader,
            augment,
            device,
            precision,
            probe_cfg,
            probe,
            null_log,
        )
        return probe.step

    def time_eval() -> float:
        if eval_libs is None:
            return 0.0
        n_eval = len(eval_libs[0]) + len(eval_libs[1])
        sample = eval_libs[1].images[: min(512, len(eval_libs[1]))]
        tick = time.perf_counter()
        extract_features(
            model.module if hasattr(model, "module") else model,
            sample,
            cfg.input_size,
            cfg.mean,
            cfg.std,
            device,
            precision=precision,
        )
        return (time.perf_counter() - tick) * n_eval / len(sample) * 1.2 + 5

    try:
        return probe_steps(
            run_steps,
            time_eval,
            cfg.time_budget_min * 60,
            started,
            reader.steps_per_epoch,
            cfg.eval_every,
        )
    finally:
        model.load_state_dict(snapshot)
        optimizer.state.clear()


def cli_main(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    """Entry point of ``simclr train``: prints the summary as one JSON line."""
    try:
        summary = main(args, argv)
        if distributed.is_main():
            print(json.dumps(summary))
    finally:
        if distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":  # torchrun --nproc_per_node=K -m simclr_search.training.train ...
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(cli_main(get_args_parser().parse_args(), sys.argv[1:]))
