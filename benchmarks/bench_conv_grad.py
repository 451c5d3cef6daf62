"""Convolution weight gradients on CPU: oneDNN's kernel against im2col + one GEMM.

Why it exists: the compact encoder's training step spent most of its time in oneDNN's bf16
weight-gradient kernel on the last stages (3x3 and 4x4 feature maps). This script prints, for each
3x3 convolution shape of the compact encoder at 24 and 32 px views (batch 2 x 256 views), the
milliseconds of the two routes, then the whole compiled training step (forward, NT-Xent, backward,
SGD) with the im2col route off and on. ``training/models/im2col_conv.py`` takes the GEMM route only
where this table says it wins (output maps of at most ``IM2COL_MAX_OUTPUT_PIXELS`` pixels).

    python benchmarks/bench_conv_grad.py            # full table and training steps
    python benchmarks/bench_conv_grad.py --quick    # smaller batch, no torch.compile
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import best_seconds, emit, machine
from simclr_search.training.loss import NTXentLoss
from simclr_search.training.models import im2col_conv
from simclr_search.training.models.simclr import build_model


def _ms(fn: Callable[[], object], repeats: int) -> float:
    return best_seconds(fn, repeats, warmup=2) * 1e3


def conv_shapes(view: int, stem: int = 32) -> list[tuple[int, int, int, int]]:
    """``(c_in, c_out, stride, input side)`` of every 3x3 convolution after the compact stem."""
    shapes, side, width = [], view, stem
    for _ in range(3):
        shapes.append((width, 2 * width, 2, side))
        side = (side - 1) // 2 + 1
        shapes += [(2 * width, 2 * width, 1, side)] * 2
        width *= 2
    return shapes


def weight_grad_table(batch: int, views: tuple[int, ...], repeats: int) -> list[dict]:
    rows = []
    for view in views:
        for c_in, c_out, stride, side in sorted(set(conv_shapes(view)), key=lambda s: -s[3]):
            x = torch.randn(batch, c_in, side, side, dtype=torch.bfloat16)
            x = x.contiguous(memory_format=torch.channels_last)
            out_side = (side - 1) // stride + 1
            grad = torch.randn(batch, c_out, out_side, out_side, dtype=torch.bfloat16)
            grad = grad.contiguous(memory_format=torch.channels_last)
            weight_shape = (c_out, c_in, 3, 3)
            native = _ms(
                partial(torch.nn.grad.conv2d_weight, x, weight_shape, grad, stride, padding=1),
                repeats,
            )
            ours = _ms(partial(im2col_conv.im2col_weight_grad, x, grad, stride), repeats)
            routed = im2col_conv.prefers_im2col(x, out_side, out_side)
            rows.append(
                {
                    "view": view,
                    "c_in": c_in,
                    "c_out": c_out,
                    "stride": stride,
                    "out_side": out_side,
                    "onednn_ms": round(native, 2),
                    "im2col_ms": round(ours, 2),
                    "routed_to_im2col": routed,
                }
            )
            print(
                f"view {view:2d}: {c_in:3d}->{c_out:3d} stride {stride} -> {out_side:2d}x{out_side:<2d}  "
                f"oneDNN {native:6.2f} ms  im2col+GEMM {ours:6.2f} ms  ({native / ours:4.2f}x)"
                f"{'  <- used' if routed else ''}"
            )
    return rows


def step_ms(view: int, batch: int, compile_model: bool, im2col: bool, repeats: int) -> float:
    """Milliseconds of one bf16 training step of the compact model on ``batch`` views."""
    saved = im2col_conv.IM2COL_MAX_OUTPUT_PIXELS
    im2col_conv.IM2COL_MAX_OUTPUT_PIXELS = saved if im2col else 0
    try:
        torch.manual_seed(0)
        torch._dynamo.reset()
        model = build_model("compact").to(memory_format=torch.channels_last)
        run = torch.compile(model) if compile_model else model
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        criterion = NTXentLoss(0.2)
        views = torch.randn(batch, 3, view, view).contiguous(memory_format=torch.channels_last)

        def step() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                _, z = run(views)
            loss = criterion(*z.float().chunk(2))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return _ms(step, repeats)
    finally:
        im2col_conv.IM2COL_MAX_OUTPUT_PIXELS = saved


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    batch = 128 if args.quick else 512
    repeats = 3 if args.quick else 8
    views = (24,) if args.quick else (24, 32)
    print(f"machine: {machine()}")
    print(f"weight gradients, bf16, channels-last, batch {batch}:")
    table = weight_grad_table(batch, views, repeats)
    steps = {}
    for view in views:
        off = step_ms(view, batch, not args.quick, False, repeats)
        on = step_ms(view, batch, not args.quick, True, repeats)
        steps[view] = {"onednn_ms": round(off, 1), "im2col_ms": round(on, 1)}
        print(
            f"training step, view {view} px, batch {batch} views"
            f"{', torch.compile' if not args.quick else ''}: oneDNN weight gradients {off:.1f} ms, "
            f"im2col route {on:.1f} ms ({off / on:.2f}x; {batch / 2 / (on / 1e3):.0f} training images/s)"
        )
    emit(
        {
            "weight_grads": table,
            "steps": steps,
            "batch_views": batch,
            "machine": machine(),
            "quick": args.quick,
        }
    )


if __name__ == "__main__":
    main()
