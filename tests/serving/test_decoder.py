"""Decoder: shapes, ranges and bad input; a short training run that learns; export and Reconstruct."""

from __future__ import annotations

import io
import json
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from PIL import Image

from simclr_search.training.image_metrics import psnr, ssim
from simclr_search.training.models.decoder import Decoder


def test_output_shape_and_range_for_a_batch_of_embeddings() -> None:
    decoder = Decoder(embed_dim=64, image_size=32, width=32).eval()
    out = decoder(torch.nn.functional.normalize(torch.randn(5, 64), dim=1))
    assert out.shape == (5, 3, 32, 32)
    assert out.min() >= 0 and out.max() <= 1
    assert Decoder(16, image_size=64, width=16).eval()(torch.randn(2, 16)).shape == (2, 3, 64, 64)


@pytest.mark.parametrize(
    ("h", "message"),
    [
        (torch.randn(2, 63), r"\(B, 64\)"),
        (torch.randn(64), r"\(B, 64\)"),
        (torch.randn(0, 64), "empty batch"),
    ],
)
def test_bad_inputs_are_rejected(h: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Decoder(64, 32, 32)(h)
    with pytest.raises(ValueError, match="multiple of 8"):
        Decoder(64, 30, 32)


def test_psnr_and_ssim() -> None:
    a = torch.rand(2, 3, 32, 32)
    assert torch.all(ssim(a, a) > 0.999)
    shifted = (a + 0.1).clamp(0, 1)
    expected = 10 * torch.log10(1 / (shifted - a).pow(2).flatten(1).mean(1))
    torch.testing.assert_close(psnr(shifted, a), expected)
    noisy = (a + 0.2 * torch.randn_like(a)).clamp(0, 1)
    assert torch.all(ssim(noisy, a) < ssim(shifted, a))


@pytest.mark.slow
def test_short_training_lowers_the_loss_and_reconstructs_through_the_server(
    tiny_run, tmp_path: Path, loop_thread
) -> None:
    from simclr_search.serving.client import Client
    from simclr_search.serving.server.app import start_server
    from simclr_search.serving.server.settings import ServerOptions
    from simclr_search.training.decoder_train import DecoderTrainConfig, train_decoder
    from simclr_search.training.export import ExportConfig, export_bundle
    from tests.serving.conftest import make_config

    checkpoint, library = tiny_run
    summary = train_decoder(
        DecoderTrainConfig(
            str(checkpoint),
            str(library),
            str(tmp_path / "dec"),
            epochs=12,
            batch_size=16,
            lr=3e-3,
            width=16,
            device="cpu",
            precision="fp32",
            cache_dir=str(tmp_path / "c"),
            progress=False,
        )
    )
    assert summary["final_loss"] < summary["first_loss"] - 0.05, summary
    assert summary["psnr_db"] > 10 and 0 < summary["ssim"] <= 1
    assert Path(summary["grid"]).exists()

    report = export_bundle(
        ExportConfig(
            str(checkpoint), str(tmp_path / "bundle"), str(library), decoder=summary["decoder"]
        )
    )
    assert report["decoder_parity"]["max_abs_diff"] <= 1e-4
    running = loop_thread.run(
        start_server(
            make_config(tmp_path / "bundle", tmp_path / "store"),
            ServerOptions(address="127.0.0.1:0", metrics_port=0, http_port=0),
        )
    )
    try:
        with Client(f"127.0.0.1:{running.port}") as client:
            assert client.info().has_decoder
            from simclr_search.protos.simclr.v1 import search_pb2 as pb

            image = next(library.glob("circle/*.png")).read_bytes()
            png = client.stub.Reconstruct(pb.ReconstructRequest(image=pb.Image(data=image))).png
            assert Image.open(io.BytesIO(png)).size == (32, 32)
            vector = client.embed([image])[0]
            png = client.stub.Reconstruct(
                pb.ReconstructRequest(embedding=pb.Embedding(values=vector.tolist()))
            ).png
            assert np.asarray(Image.open(io.BytesIO(png))).shape == (32, 32, 3)
            with pytest.raises(grpc.RpcError) as info:
                client.stub.Reconstruct(
                    pb.ReconstructRequest(embedding=pb.Embedding(values=[1.0, 2.0]))
                )
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "64 values" in info.value.details()
            assert json.loads(client.info().manifest_json)["files"]["decoder"]["output_range"] == [
                0,
                1,
            ]
    finally:
        loop_thread.run(running.stop())
