"""float16 weight storage: half the file, the same function in ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from simclr_search.training.onnx_storage import round_weights_to_fp16, store_weights_as_fp16


def test_fp16_storage_halves_the_file_and_keeps_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(64, 3, 3, padding=1)
    ).eval()
    x = torch.rand(2, 3, 16, 16)
    full = net(x).detach().numpy()
    round_weights_to_fp16(net)
    rounded = net(x).detach().numpy()
    assert 0 < np.abs(full - rounded).max() < 1e-2  # rounding moves outputs, a little
    path = tmp_path / "net.onnx"
    torch.onnx.export(net, (x,), str(path), opset_version=17, input_names=["x"], dynamo=False)
    before = path.stat().st_size
    saved = store_weights_as_fp16(path)
    assert saved > 0.4 * before
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"x": x.numpy()}
    )[0]
    assert np.abs(got - rounded).max() < 1e-5
    assert store_weights_as_fp16(path) == 0  # already converted: nothing left to do
