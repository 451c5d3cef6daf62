"""Two CPU processes on the gloo backend: gathered negatives give the single-process loss and gradients."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from simclr_search.training.loss import NTXentLoss

WORLD = 2


def _global_batch(n: int = 8, d: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        z1, z2 = _global_batch()
        per_rank = z1.shape[0] // WORLD
        sl = slice(rank * per_rank, (rank + 1) * per_rank)
        a = z1[sl].clone().requires_grad_(True)
        b = z2[sl].clone().requires_grad_(True)
        loss = NTXentLoss(0.2)(a, b)
        # DDP averages gradients over ranks; do the same by hand for the raw tensors.
        (loss / WORLD).backward()
        torch.save(
            {"loss": loss.detach(), "grad1": a.grad, "grad2": b.grad},
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_two_process_loss_and_gradients_equal_single_process(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    z1, z2 = _global_batch()
    z1.requires_grad_(True)
    z2.requires_grad_(True)
    single = NTXentLoss(0.2, gather_distributed=False)(z1, z2)
    single.backward()

    mean_loss = sum(r["loss"] for r in results) / WORLD
    assert mean_loss.item() == pytest.approx(single.item(), rel=1e-5)
    torch.testing.assert_close(
        torch.cat([r["grad1"] for r in results]), z1.grad, rtol=1e-4, atol=1e-6
    )
    torch.testing.assert_close(
        torch.cat([r["grad2"] for r in results]), z2.grad, rtol=1e-4, atol=1e-6
    )


@pytest.mark.slow
@pytest.mark.distributed
def test_torchrun_trains_with_two_processes(image_library: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "simclr_search.training.train",
        "--data",
        str(image_library),
        "--out-dir",
        str(out),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--workers",
        "0",
        "--width",
        "8",
        "--batch-size",
        "4",
        "--epochs",
        "1",
        "--precision",
        "fp32",
        "--no-progress",
        "--no-tensorboard",
        "--sync-bn",
        "--threads",
        "1",
    ]
    # A new session, so a hung run's worker processes die with the launcher on timeout.
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["steps"] == 3  # 24 images / (4 per rank * 2 ranks)
