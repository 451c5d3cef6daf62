"""Training throughput: our SimCLR step against lightly's, side by side, on this machine.

For each encoder (ResNet-18 with the small-image stem, and the compact encoder) it times, on the
same decoded CIFAR-10 images and the same batch size:
  * ours: ``training.train.train_one_epoch`` as ``simclr train`` runs it (uint8 batch read from the
    decoded cache, batched views in torch, bf16 autocast where the CPU has it, channels-last);
  * ours in fp32 (the same code with ``--precision fp32``), to show what bf16 buys;
  * lightly: its ``SimCLRTransform`` in a ``DataLoader`` (2 workers, per-image PIL transforms), the
    same backbone with lightly's ``SimCLRProjectionHead`` and ``NTXentLoss``, fp32, as its docs show.
Images/s counts images (two views each). Achieved GFLOP/s = counted FLOPs of one step's forward and
backward / step time, next to this CPU's measured matrix-product peak in fp32 and bf16.
It also measures the data path alone: decoding (first epoch) vs reading the decoded cache, and the
batched augmentation, to show data loading is not the bottleneck.

    python benchmarks/bench_throughput.py            # ~4 minutes on 2 cores
    python benchmarks/bench_throughput.py --quick    # under a minute
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import cifar, emit, machine, peak_gflops
from simclr_search.training.augment import SimCLRAugment
from simclr_search.training.config import TrainConfig
from simclr_search.training.data.batches import BatchReader
from simclr_search.training.data.library import build_library
from simclr_search.training.loss import NTXentLoss
from simclr_search.training.models.simclr import build_model
from simclr_search.training.optim import build_optimizer, warmup_cosine
from simclr_search.training.precision import grad_scaler, resolve_precision
from simclr_search.training.run_log import RunLog
from simclr_search.training.train import TrainState, train_one_epoch


def step_flops(encoder: str, batch: int) -> float:
    """FLOPs of one training step's forward + backward on ``2 * batch`` views of 32 px."""
    model = build_model(encoder)
    views = torch.randn(2 * batch, 3, 32, 32)
    with FlopCounterMode(display=False) as counter:
        _, z = model(views)
        z.sum().backward()
    return float(counter.get_total_flops())


def time_ours(library, encoder: str, batch: int, steps: int, precision: str) -> float:
    cfg = TrainConfig(
        encoder=encoder, batch_size=batch, precision=precision, progress=False, log_every=10**9
    )
    device = torch.device("cpu")
    precision = resolve_precision(device, precision)
    torch.manual_seed(0)
    model = build_model(encoder).to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, "sgd", 0.06, 5e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(10**6, 0))
    reader = BatchReader(library, batch, seed=0)
    augment = SimCLRAugment(cfg.augment_config())
    args = (
        model,
        NTXentLoss(0.2),
        optimizer,
        scheduler,
        grad_scaler(device, precision),
        reader,
        augment,
        device,
    )
    sink = RunLog(".", enabled=False)
    train_one_epoch(*args, precision, cfg, TrainState(step=0, total_steps=2), sink)  # warm-up
    tick = time.perf_counter()
    train_one_epoch(*args, precision, cfg, TrainState(step=2, total_steps=2 + steps), sink)
    return steps * batch / (time.perf_counter() - tick)


def time_lightly(library, encoder: str, batch: int, steps: int) -> float:
    from lightly.loss import NTXentLoss as LightlyNTXent
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms import SimCLRTransform
    from PIL import Image

    class Images(torch.utils.data.Dataset):
        def __init__(self, arrays, transform):
            self.arrays, self.transform = arrays, transform

        def __len__(self):
            return len(self.arrays)

        def __getitem__(self, i):
            return self.transform(Image.fromarray(self.arrays[i]))

    transform = SimCLRTransform(input_size=32, cj_strength=0.5, min_scale=0.2, gaussian_blur=0.0)
    loader = torch.utils.data.DataLoader(
        Images(library.images, transform),
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        num_workers=2,
        persistent_workers=True,
    )
    torch.manual_seed(0)
    backbone = build_model(encoder).encoder
    head = SimCLRProjectionHead(backbone.num_features, backbone.num_features, 128)
    model = torch.nn.Sequential(backbone, head)
    criterion = LightlyNTXent(temperature=0.2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06, momentum=0.9, weight_decay=5e-4)
    batches = iter(loader)
    tick = 0.0
    for i in range(steps + 1):
        if i == 1:
            tick = time.perf_counter()  # first step is warm-up (worker start, allocator)
        x0, x1 = next(batches)
        z0, z1 = model(x0), model(x1)
        loss = criterion(z0, z1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps * batch / (time.perf_counter() - tick)


def data_path(batch: int, cache_root: Path) -> dict[str, float]:
    # Decoding runs once per library (then the cache serves every epoch). In-process first: the
    # decode itself; then with the 2-process pool, whose start-up (importing this script's modules,
    # torch among them) a 10,000-image library does not hide.
    # The pool's cache lands in ``cache_root`` itself, where the training runs find it decoded.
    rates = {}
    for workers, cache in ((0, cache_root / "in-process"), (2, cache_root)):
        tick = time.perf_counter()
        library = build_library(cifar("test"), 32, cache, workers=workers, progress=False)
        rates[workers] = len(library) / (time.perf_counter() - tick)
    decode = rates[0]
    reader = BatchReader(library, batch, seed=0)
    tick = time.perf_counter()
    for step in range(reader.steps_per_epoch):
        images = reader.read(step)
    cached = reader.steps_per_epoch * batch / (time.perf_counter() - tick)
    augment = SimCLRAugment(TrainConfig().augment_config())
    g = torch.Generator().manual_seed(0)
    tick = time.perf_counter()
    for _ in range(10):
        augment(images, g), augment(images, g)
    aug = 10 * batch / (time.perf_counter() - tick)
    return {
        "decode_images_per_s": decode,
        "decode_pool_images_per_s": rates[2],
        "cache_read_images_per_s": cached,
        "augment_images_per_s": aug,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="small batch, few steps: under a minute"
    )
    parser.add_argument("--batch-size", type=int, default=0, help="default 256 (64 with --quick)")
    parser.add_argument("--encoders", nargs="+", default=["resnet18", "compact"])
    args = parser.parse_args()
    batch = args.batch_size or (64 if args.quick else 256)
    steps = {"resnet18": 2 if args.quick else 3, "compact": 3 if args.quick else 10}

    info = machine()
    peaks = {"fp32": peak_gflops("fp32"), "bf16": peak_gflops("bf16")}
    print(f"machine: {info}")
    print(
        f"measured matmul peak: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s"
    )
    cache_root = Path(tempfile.mkdtemp(prefix="simclr-bench-"))
    data = data_path(batch, cache_root)
    print(
        f"data path: decode {data['decode_images_per_s']:.0f} img/s in-process, "
        f"{data['decode_pool_images_per_s']:.0f} with a 2-process pool (first epoch only), cached read "
        f"{data['cache_read_images_per_s']:.0f} img/s, two batched views {data['augment_images_per_s']:.0f} img/s"
    )
    library = build_library(cifar("test"), 32, cache_root, workers=2, progress=False)
    precision = resolve_precision(torch.device("cpu"), "auto")
    result = {
        "batch_size": batch,
        "quick": args.quick,
        "machine": info,
        "peak_gflops": peaks,
        **data,
    }
    for encoder in args.encoders:
        flops = step_flops(encoder, batch)
        n = steps.get(encoder, 3)
        ours = time_ours(library, encoder, batch, n, precision)
        ours_fp32 = time_ours(library, encoder, batch, n, "fp32")
        lightly = time_lightly(library, encoder, batch, n)
        rows = {
            f"ours ({precision})": (ours, precision),
            "ours (fp32)": (ours_fp32, "fp32"),
            "lightly (fp32)": (lightly, "fp32"),
        }
        print(
            f"\n{encoder}, batch {batch} (two views each), {flops / batch / 1e9:.2f} GFLOP per image per step"
        )
        for name, (ips, dtype) in rows.items():
            achieved = ips / batch * flops / 1e9
            print(
                f"  {name:<16} {ips:8.1f} images/s  {achieved:6.0f} GFLOP/s = "
                f"{100 * achieved / peaks[dtype]:.0f}% of the {dtype} matmul peak"
            )
        print(f"  speed-up over lightly: {ours / lightly:.2f}x")
        result[encoder] = {
            "ours_images_per_s": ours,
            "ours_fp32_images_per_s": ours_fp32,
            "lightly_images_per_s": lightly,
            "speedup_vs_lightly": ours / lightly,
            "gflop_per_image_step": flops / batch / 1e9,
            "ours_gflops": ours / batch * flops / 1e9,
            "precision": precision,
        }
    emit(result)


if __name__ == "__main__":
    main()
