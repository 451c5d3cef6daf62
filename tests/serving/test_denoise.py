"""Denoiser end to end: train briefly, export into a bundle (parity at several sizes), serve Denoise."""

from __future__ import annotations

import io
import json
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from tests.conftest import make_library


@pytest.fixture(scope="module")
def denoiser_bundle(tiny_run, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from simclr_search.training.denoiser_train import DenoiserTrainConfig, train_denoiser
    from simclr_search.training.export import ExportConfig, export_bundle

    checkpoint, library = tiny_run
    root = tmp_path_factory.mktemp("denoiser-bundle")
    summary = train_denoiser(
        DenoiserTrainConfig(
            str(library),
            str(root / "run"),
            steps=20,
            batch_size=8,
            widths=(8, 16, 32),
            device="cpu",
            precision="fp32",
            cache_dir=str(root / "cache"),
            progress=False,
        )
    )
    report = export_bundle(
        ExportConfig(
            str(checkpoint), str(root / "bundle"), str(library), denoiser=summary["denoiser"]
        )
    )
    parity = report["denoiser_parity"]
    assert parity["max_abs_diff"] <= 1e-4 and parity["min_cosine"] >= 0.99999, parity
    assert {"1x1", "33x47", "161x100"} <= set(parity["sizes"])
    return root / "bundle", library


def test_export_carries_a_denoiser_over_from_another_bundle(
    denoiser_bundle, tiny_bundle, tiny_run, tmp_path: Path
) -> None:
    """A new encoder keeps the last bundle's denoiser, byte for byte, without its checkpoint."""
    from simclr_search.bundle.manifest import load_manifest
    from simclr_search.training.export import ExportConfig, export_bundle

    source, library = denoiser_bundle
    checkpoint, _ = tiny_run
    out = tmp_path / "next"
    export_bundle(
        ExportConfig(
            str(checkpoint), str(out), str(library), whiten_images=0, denoiser_from=str(source)
        )
    )
    manifest = load_manifest(out)  # checksums verified
    assert (out / "denoiser.onnx").read_bytes() == (source / "denoiser.onnx").read_bytes()
    entry, before = manifest.data["files"]["denoiser"], load_manifest(source).data
    assert entry["tiling"] == before["files"]["denoiser"]["tiling"]
    assert entry["carried_from"] == f"simclr version {before['model']['version']}"
    with pytest.raises(ValueError, match="not both"):
        export_bundle(
            ExportConfig(
                str(checkpoint),
                str(tmp_path / "x"),
                str(library),
                denoiser="d.pt",
                denoiser_from=str(source),
            )
        )
    with pytest.raises(ValueError, match="no denoiser to carry"):
        export_bundle(
            ExportConfig(
                str(checkpoint),
                str(tmp_path / "y"),
                str(library),
                whiten_images=0,
                denoiser_from=str(tiny_bundle[0]),
            )
        )
    assert not (tmp_path / "y").exists()  # refused before anything was written


def test_bundle_runtime_denoises_any_size_and_matches_pytorch(
    denoiser_bundle, tiny_run, monkeypatch: pytest.MonkeyPatch
) -> None:
    from simclr_search.bundle import runtime
    from simclr_search.bundle.manifest import BundleError, load_manifest
    from simclr_search.bundle.runtime import Denoiser

    bundle, _ = denoiser_bundle
    manifest = load_manifest(bundle)
    entry = manifest.data["files"]["denoiser"]
    assert entry["inputs"]["images"] == ["batch", 3, "height", "width"]
    denoiser = Denoiser(manifest, device="cpu")
    rng = np.random.default_rng(0)
    for shape in [(1, 1, 3), (5, 9, 3), (300, 41, 3)]:
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        out = denoiser(image, 25.0)
        assert out.shape == shape and out.dtype == np.uint8
        assert denoiser(image, None).shape == shape
    denoiser.max_tile, denoiser.overlap = 96, 32  # force tiling on a 200 x 230 image
    image = rng.integers(0, 256, (200, 230, 3)).astype(np.float32)
    tiled = denoiser.denoise_float(image, 25.0)
    denoiser.max_tile = 512
    whole = denoiser.denoise_float(image, 25.0)
    assert np.abs(tiled - whole).mean() < 1.0
    image = rng.integers(0, 256, (37, 53, 3)).astype(np.float32)
    single = denoiser.denoise_float(image, None)
    for passes in (2, 4, 8):
        ensemble = Denoiser(manifest, device="cpu", ensemble=passes).denoise_float(image, None)
        assert ensemble.shape == image.shape
        assert 0 < np.abs(ensemble - single).mean() < 10  # the same model, averaged over views
    four = Denoiser(manifest, device="cpu", ensemble=4).denoise_float(image, None)
    auto = Denoiser(manifest, device="cpu", ensemble="auto")
    np.testing.assert_array_equal(auto.denoise_float(image, None), four)  # small: 4 passes
    monkeypatch.setattr(runtime, "AUTO_ENSEMBLE_PIXELS", 37 * 53 - 1)
    np.testing.assert_array_equal(auto.denoise_float(image, None), single)  # over it: 1 pass
    with pytest.raises(BundleError, match="ensemble"):
        Denoiser(manifest, device="cpu", ensemble=3)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        denoiser(np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="between 0 and 255"):
        denoiser(np.zeros((4, 4, 3), np.uint8), 300.0)


@pytest.mark.slow
def test_denoise_rpc(denoiser_bundle, tmp_path: Path, loop_thread) -> None:
    from simclr_search.serving.client import Client
    from simclr_search.serving.server.app import start_server
    from simclr_search.serving.server.settings import ServerOptions
    from tests.serving.conftest import make_config

    bundle, _ = denoiser_bundle
    running = loop_thread.run(
        start_server(
            make_config(bundle, tmp_path / "store", max_denoise_pixels=6000),
            ServerOptions(address="127.0.0.1:0", metrics_port=0, http_port=0),
        )
    )
    try:
        with Client(f"127.0.0.1:{running.port}") as client:
            assert client.info().has_denoiser
            manifest = json.loads(client.info().manifest_json)
            assert manifest["files"]["denoiser"]["tiling"]["max_tile"] >= 64
            photo = make_library(tmp_path / "lib", per_class=1, size=77)
            for path in sorted(photo.rglob("*.*")):
                data = path.read_bytes()
                for sigma in (0.0, 25.0):
                    out = Image.open(io.BytesIO(client.denoise(data, sigma)))
                    assert out.format == "PNG" and out.size == (77, 77)
            buffer = io.BytesIO()
            Image.new("RGB", (100, 100)).save(buffer, "PNG")  # 10,000 pixels > 6,000
            for bad, sigma, words in [
                (buffer.getvalue(), 0.0, "over the limit of 6000"),
                (b"not an image", 0.0, "image"),
                (data, -3.0, "between 0 and 255"),
                (data, float("nan"), "between 0 and 255"),
                (b"", 0.0, "empty"),
            ]:
                with pytest.raises(grpc.RpcError) as info:
                    client.denoise(bad, sigma)
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
                assert words in info.value.details()
    finally:
        loop_thread.run(running.stop())


def test_oversize_denoise_is_refused_at_once_behind_a_running_one(
    denoiser_bundle, tmp_path: Path, loop_thread
) -> None:
    """Limits are read from the header before a Denoise queues behind another (they share one
    model thread): the refusal must come while the first call is still running."""
    import threading
    import time

    from simclr_search.serving.client import Client
    from simclr_search.serving.server.app import start_server
    from simclr_search.serving.server.settings import ServerOptions
    from tests.serving.conftest import make_config

    def png(side: int) -> bytes:
        rng = np.random.default_rng(side)
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buffer, "PNG")
        return buffer.getvalue()

    bundle, _ = denoiser_bundle
    limit = 1600 * 1600
    running = loop_thread.run(
        start_server(
            make_config(bundle, tmp_path / "store", max_denoise_pixels=limit),
            ServerOptions(address="127.0.0.1:0", metrics_port=0, http_port=0),
        )
    )
    big, oversize = png(1500), png(1700)
    finished: dict[str, float] = {}
    try:
        with Client(f"127.0.0.1:{running.port}") as client:

            def run_big() -> None:
                client.denoise(big, 25.0)
                finished["big"] = time.perf_counter()

            worker = threading.Thread(target=run_big)
            started = time.perf_counter()
            worker.start()
            time.sleep(0.3)
            with pytest.raises(grpc.RpcError) as info:
                client.denoise(oversize, 0.0)
            refused = time.perf_counter()
            worker.join(120)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"over the limit of {limit}" in info.value.details()
        assert finished["big"] - started > 0.6, "the first Denoise was too quick to queue behind"
        assert refused < finished["big"], "the refusal waited for the running Denoise"
    finally:
        loop_thread.run(running.stop())
