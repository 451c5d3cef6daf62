"""Export a torch module to ONNX, check it, and compare it with ONNX Runtime; static INT8.

The small, model-agnostic steps every exported file of a bundle goes through (timm's
``utils/onnx.py`` is the model): fold BatchNorm into the convolutions (torch.fx), export at opset 17
with a dynamic batch axis, run ``onnx.checker``, then
measure the largest absolute difference and the smallest row cosine between PyTorch and ONNX
Runtime on real inputs; :func:`require_agreement` refuses a file past ``MAX_ABS_DIFF`` /
``MIN_COSINE``. ``quantize_int8`` writes a static QDQ INT8 copy
calibrated on the user's own images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

OPSET = 17
MAX_ABS_DIFF = 1e-4
MIN_COSINE = 0.99999


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every Conv -> BatchNorm pair (eval mode) with torch.fx; the result computes the same function."""
    from torch.fx.experimental.optimization import fuse

    from simclr_search.training.models.im2col_conv import with_plain_convolutions

    # with_plain_convolutions already returns a copy: fuse may work on it in place.
    return fuse(with_plain_convolutions(module.eval()), inplace=True)


def export_onnx(
    module: nn.Module, example: torch.Tensor, path: Path, input_name: str, output_name: str
) -> None:
    """One input, one output, a dynamic batch axis (the denoiser, with two inputs and dynamic
    height and width, has its own export in ``export_denoiser.py``); checked by ``onnx.checker``."""
    torch.onnx.export(
        module.eval(),
        (example,),
        str(path),
        opset_version=OPSET,
        input_names=[input_name],
        output_names=[output_name],
        dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
        do_constant_folding=True,
        dynamo=False,
    )
    import onnx

    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def compare_with_onnxruntime(module: nn.Module, path: Path, inputs: np.ndarray) -> dict[str, float]:
    """Max absolute difference and minimum row cosine between PyTorch and ONNX Runtime outputs."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = module.eval()(torch.from_numpy(inputs)).numpy()
    got = session.run(None, {session.get_inputs()[0].name: inputs})[0]
    return agreement(expected, got)


def agreement(expected: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """Max absolute difference and minimum per-row cosine of two same-shape output batches."""
    a, b = expected.reshape(len(expected), -1), got.reshape(len(got), -1)
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    return {"max_abs_diff": float(np.abs(a - b).max()), "min_cosine": float(cosine.min())}


def require_agreement(parity: dict[str, float], what: str) -> dict[str, float]:
    """``parity`` (from :func:`agreement`) if within ``MAX_ABS_DIFF`` / ``MIN_COSINE``; else refuse
    the file with a ValueError naming ``what`` was exported."""
    if parity["max_abs_diff"] > MAX_ABS_DIFF or parity["min_cosine"] < MIN_COSINE:
        raise ValueError(f"ONNX Runtime disagrees with PyTorch on the {what}: {parity}")
    return parity


def quantize_int8(fp32_path: Path, int8_path: Path, calibration: np.ndarray) -> None:
    """Static QDQ INT8: per-channel int8 weights, uint8 activations calibrated on ``calibration``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(
                [{"images": calibration[i : i + 16]} for i in range(0, len(calibration), 16)]
            )

        def get_next(self):
            return next(self.batches, None)

    import onnx

    prepared = int8_path.with_suffix(".prep.onnx")
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    # The whitening matrix (the only MatMul) stays float: it is one small product, and int8 would
    # round away the low-variance directions whitening exists to amplify.
    keep_float = [n.name for n in onnx.load(str(prepared)).graph.node if n.op_type == "MatMul"]
    try:
        quantize_static(
            str(prepared),
            str(int8_path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=keep_float,
        )
    finally:
        prepared.unlink(missing_ok=True)
