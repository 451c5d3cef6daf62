"""The im2col weight-gradient convolution against torch's own convolution."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from simclr_search.training.models.encoders import CompactEncoder
from simclr_search.training.models.im2col_conv import (
    IM2COL_MAX_OUTPUT_PIXELS,
    Im2colConv2d,
    _Conv3x3,
    im2col_weight_grad,
    prefers_im2col,
)


def _pair(cin: int, cout: int, stride: int, dtype=torch.float64) -> tuple[Im2colConv2d, nn.Conv2d]:
    ours = Im2colConv2d(cin, cout, stride).to(dtype)
    ref = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False).to(dtype)
    ref.weight.data.copy_(ours.weight.data)
    return ours, ref


@pytest.mark.parametrize(
    ("cin", "cout", "stride", "side"),
    [(8, 16, 1, 3), (8, 16, 2, 6), (4, 5, 2, 7), (6, 6, 1, 4), (3, 4, 1, 1), (3, 3, 2, 2)],
)
def test_gradients_equal_torch_convolution(cin: int, cout: int, stride: int, side: int) -> None:
    torch.manual_seed(0)
    ours, ref = _pair(cin, cout, stride)
    x = torch.randn(5, cin, side, side, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    y, y_ref = ours(x), ref(x_ref)
    grad = torch.randn_like(y)
    y.backward(grad)
    y_ref.backward(grad)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad)
    torch.testing.assert_close(x.grad, x_ref.grad)


def test_gradcheck_of_the_autograd_function() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: _Conv3x3.apply(a, b, 2), (x, w))


def test_weight_grad_shape_and_layout() -> None:
    x = torch.randn(2, 3, 6, 5)
    grad_out = torch.randn(2, 7, 3, 3)  # stride 2: ceil(6/2) x ceil(5/2)
    grad_w = im2col_weight_grad(x, grad_out, stride=2)
    assert grad_w.shape == (7, 3, 3, 3)


def test_bf16_autocast_matches_torch_within_bf16_precision() -> None:
    torch.manual_seed(0)
    ours, ref = _pair(32, 32, 1, torch.float32)
    x = torch.randn(16, 32, 3, 3).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, y_ref = ours(x), ref(x)
    assert y.dtype == y_ref.dtype == torch.bfloat16
    grad = torch.randn_like(y.float())
    y.float().backward(grad)
    y_ref.float().backward(grad)
    assert ours.weight.grad.dtype == torch.float32
    rel = (ours.weight.grad - ref.weight.grad).norm() / ref.weight.grad.norm()
    assert rel < 1e-2


def test_routing_rule() -> None:
    x = torch.zeros(1, 8, 32, 32)
    assert prefers_im2col(x, 3, 3)
    assert prefers_im2col(x, 4, 4)
    assert not prefers_im2col(x, 6, 6)
    assert IM2COL_MAX_OUTPUT_PIXELS == 16


def test_without_gradients_it_is_a_plain_convolution() -> None:
    ours, ref = _pair(4, 4, 1, torch.float32)
    x = torch.randn(2, 4, 3, 3)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x))


def test_compact_encoder_state_dict_keeps_plain_convolution_keys() -> None:
    encoder = CompactEncoder()
    plain = {k for k in encoder.state_dict() if k.endswith(".weight")}
    assert "stages.2.conv2.0.weight" in plain
    # A state dict saved before the change (plain nn.Conv2d) loads unchanged.
    encoder.load_state_dict(CompactEncoder().state_dict())


def test_batchnorm_folding_sees_plain_convolutions() -> None:
    from simclr_search.training.onnx_export import fold_batchnorm

    torch.manual_seed(0)
    encoder = CompactEncoder((4, 8, 16, 32)).eval()
    folded = fold_batchnorm(encoder)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert not any(isinstance(m, Im2colConv2d) for m in folded.modules())
    assert any(isinstance(m, Im2colConv2d) for m in encoder.modules())  # the original is untouched
    x = torch.randn(3, 3, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), encoder(x))
