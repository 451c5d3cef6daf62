"""A 3x3 convolution whose weight gradient is one matrix product: faster on CPU for small feature maps.

Why: profiling the compact encoder's training step on this project's CPU (oneDNN, bf16, AMX) showed
the weight-gradient kernel (``brgconv_bwd_w``) taking 7x the forward convolution on the last stages,
where the feature maps are 3x3 to 6x6 pixels: 25 ms against 3.5 ms for a 256-channel 3x3 convolution
on a ``(512, 256, 3, 3)`` batch. Written as im2col + GEMM,

    dW (C_out, C_in * 9) = dY^T (C_out, N * H_out * W_out) @ cols (N * H_out * W_out, C_in * 9),

the same gradient costs 5.9 ms (the GEMM runs near the AMX peak; the nine shifted copies that make
``cols`` are cheap while the maps are small). On large maps the copies dominate and oneDNN's own kernel
wins, so :func:`prefers_im2col` decides per call from the map size (measured in
``benchmarks/bench_conv_grad.py``). The forward pass and the input gradient stay oneDNN's.

Shapes: input ``(N, C_in, H, W)``, weight ``(C_out, C_in, 3, 3)``, output ``(N, C_out, H_out, W_out)``.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

# Largest output map (H_out * W_out pixels) for which the GEMM route beats oneDNN's weight-gradient
# kernel on CPU: on larger maps the im2col copies cost more than they save
# (benchmarks/bench_conv_grad.py prints both routes per shape).
IM2COL_MAX_OUTPUT_PIXELS = 16


def prefers_im2col(x: torch.Tensor, out_h: int, out_w: int) -> bool:
    """Take the GEMM route on CPU for small output maps; elsewhere (CUDA, large maps) use the kernel."""
    return x.device.type == "cpu" and out_h * out_w <= IM2COL_MAX_OUTPUT_PIXELS


def im2col_weight_grad(x: torch.Tensor, grad_out: torch.Tensor, stride: int) -> torch.Tensor:
    """Gradient of a 3x3, padding-1 convolution with respect to its weight.

    Args:
        x: input ``(N, C_in, H, W)``.
        grad_out: gradient of the output ``(N, C_out, H_out, W_out)``.
        stride: the convolution's stride.

    Returns:
        ``(C_out, C_in, 3, 3)`` in ``x``'s dtype (float32 accumulation inside the GEMM).
    """
    n, c_in = x.shape[0], x.shape[1]
    c_out, out_h, out_w = grad_out.shape[1], grad_out.shape[2], grad_out.shape[3]
    padded = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 1))  # (N, H+2, W+2, C_in)
    span_h, span_w = stride * (out_h - 1) + 1, stride * (out_w - 1) + 1
    taps = [
        padded[:, i : i + span_h : stride, j : j + span_w : stride, :]
        for i in range(3)
        for j in range(3)
    ]
    cols = torch.stack(taps, dim=3).reshape(n * out_h * out_w, 9 * c_in)
    dy = grad_out.permute(0, 2, 3, 1).reshape(n * out_h * out_w, c_out)
    grad_w = dy.t() @ cols  # (C_out, 9 * C_in), tap-major then channel
    return grad_w.view(c_out, 3, 3, c_in).permute(0, 3, 1, 2)


class _Conv3x3(torch.autograd.Function):
    """3x3 convolution (padding 1) with the im2col weight gradient; see the module docstring."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride = stride
        return F.conv2d(x, weight, stride=stride, padding=1)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.nn.grad.conv2d_input(
                x.shape, weight, grad_out, stride=ctx.stride, padding=1
            )
        if ctx.needs_input_grad[1]:
            grad_w = im2col_weight_grad(x, grad_out, ctx.stride).to(weight.dtype)
            grad_w = grad_w.contiguous(memory_format=torch.channels_last)
        return grad_x, grad_w, None


class Im2colConv2d(nn.Conv2d):
    """Drop-in ``nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False)`` with the fast CPU weight
    gradient on small maps. Same parameters and state dict as ``nn.Conv2d`` (checkpoints and ONNX
    export see a plain convolution: under tracing or without gradients it is one)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stride = self.stride[0]
        out_h = (x.shape[-2] - 1) // stride + 1
        out_w = (x.shape[-1] - 1) // stride + 1
        if (
            not torch.is_grad_enabled()
            or not self.weight.requires_grad
            or torch.jit.is_tracing()
            or torch.onnx.is_in_onnx_export()
            or not prefers_im2col(x, out_h, out_w)
        ):
            return super().forward(x)
        weight = self.weight
        if torch.is_autocast_enabled("cpu"):
            dtype = torch.get_autocast_dtype("cpu")
            x, weight = x.to(dtype), weight.to(dtype)
        with torch.autocast("cpu", enabled=False):
            return _Conv3x3.apply(x, weight, stride)


def with_plain_convolutions(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every :class:`Im2colConv2d` replaced by an ``nn.Conv2d`` holding the
    same weight: for graph tools that match exact module types (``torch.fx`` Conv-BN folding)."""
    module = copy.deepcopy(module)
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Im2colConv2d):
                plain = nn.Conv2d(
                    child.in_channels,
                    child.out_channels,
                    3,
                    stride=child.stride,
                    padding=1,
                    bias=False,
                ).to(child.weight.device, child.weight.dtype)
                plain.weight = child.weight
                plain.train(child.training)
                setattr(parent, name, plain)
    return module
