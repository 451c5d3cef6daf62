"""Half-size ONNX files: weights stored as float16, computed in float32.

Image-to-image models (decoder, denoiser) do not need 24-bit weight mantissas: rounding their weights
to float16 moves outputs by far less than one 8-bit grey level. Storing them as float16 with a
``Cast`` to float32 halves the file (what a bundle ships and downloads); inference still runs in
float32 (measured here: the denoiser at 256 px, one thread, 121 ms with float32 storage against
124-127 ms with float16 storage).

Parity stays exact: :func:`round_weights_to_fp16` applies the same rounding to the PyTorch module
before export, so ONNX Runtime is compared against the function it actually computes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

MIN_ELEMENTS = 256  # small tensors (biases, scalars) stay float32: no size to gain


@torch.no_grad()
def round_weights_to_fp16(module: nn.Module) -> nn.Module:
    """Round every floating parameter and buffer of ``module`` to the nearest float16 value, in place."""
    for tensor in [*module.parameters(), *module.buffers()]:
        if tensor.dtype == torch.float32 and tensor.numel() >= MIN_ELEMENTS:
            tensor.copy_(tensor.half().float())
    return module


def store_weights_as_fp16(path: Path) -> int:
    """Rewrite ``path`` so large float32 initializers are float16 + ``Cast``; returns bytes saved.

    Only initializers whose values are exactly representable in float16 are converted (those rounded
    by :func:`round_weights_to_fp16`), so the computed function does not change.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    before = path.stat().st_size
    casts, kept = [], []
    for init in graph.initializer:
        values = numpy_helper.to_array(init)
        if (
            values.dtype != np.float32
            or values.size < MIN_ELEMENTS
            or not np.array_equal(values.astype(np.float16).astype(np.float32), values)
        ):
            kept.append(init)
            continue
        half_name = f"{init.name}__fp16"
        kept.append(numpy_helper.from_array(values.astype(np.float16), half_name))
        casts.append(
            helper.make_node(
                "Cast",
                [half_name],
                [init.name],
                to=onnx.TensorProto.FLOAT,
                name=f"{half_name}_cast",
            )
        )
    if not casts:
        return 0
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return before - path.stat().st_size
