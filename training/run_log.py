"""What a training run reports: per-step JSONL, TensorBoard scalars, and a final PNG plot.

Only rank 0 writes. TensorBoard and matplotlib are optional (the ``train`` extra installs them): a
missing one is reported once and skipped, the JSONL log is always written.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class RunLog:
    """Append-only metrics sink for one run directory.

    Args:
        out_dir: the run directory (``metrics.jsonl``, ``tb/``, ``curves.png`` go there).
        enabled: False on non-zero ranks.
        tensorboard: also write TensorBoard event files.
    """

    def __init__(
        self, out_dir: str | os.PathLike[str], enabled: bool = True, tensorboard: bool = True
    ) -> None:
        self.out_dir = Path(out_dir)
        self.enabled = enabled
        self._writer = None
        self._jsonl = None
        if not enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.out_dir / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.out_dir / "tb"))
            except ImportError:
                log.warning("tensorboard is not installed; writing metrics.jsonl only")

    def write(self, kind: str, step: int, **values: Any) -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "step": step, **values}
        self._jsonl.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for key, value in values.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    self._writer.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._jsonl is not None:
            self._jsonl.close()


def read_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def plot_curves(
    metrics_path: str | os.PathLike[str], out_png: str | os.PathLike[str]
) -> Path | None:
    """Loss (per epoch mean) and kNN accuracy against epochs, as a PNG. Returns None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed; no curves.png")
        return None
    records = read_log(metrics_path)
    epochs = [r for r in records if r["kind"] == "epoch"]
    evals = [r for r in records if r["kind"] == "eval" and "knn_top1" in r]
    fig, ax_loss = plt.subplots(figsize=(7, 4))
    ax_loss.plot(
        [r["epoch"] for r in epochs],
        [r["loss"] for r in epochs],
        "o-",
        color="tab:blue",
        label="NT-Xent loss",
    )
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss", color="tab:blue")
    if evals:
        ax_knn = ax_loss.twinx()
        ax_knn.plot(
            [r["epoch"] for r in evals], [100 * r["knn_top1"] for r in evals], "s-", color="tab:red"
        )
        ax_knn.set_ylabel("kNN top-1 (%)", color="tab:red")
    ax_loss.set_title("SimCLR training")
    fig.tight_layout()
    out = Path(out_png)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
