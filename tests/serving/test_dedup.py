"""Duplicate finding: the keeper rule, the pair model, the stored facts, and FindDuplicates on a
real server over real photos with exact and edited copies (the shipped bundle's pair model)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from simclr_search.bundle.decode import header_facts
from simclr_search.edits import edited
from simclr_search.serving.core import local_features
from simclr_search.serving.core.copy_scores import CopyCalibration
from simclr_search.serving.core.dedup import Member, choose_keeper
from simclr_search.serving.core.pair_scores import PairDecision, fit_pairs
from simclr_search.serving.core.signature import PhotoFacts, compose, parse
from tests.conftest import kodak_photos

SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "denoise-eval"
SHIPPED = Path(__file__).resolve().parents[2] / "models" / "compact-cifar10"


def _member(name: str, facts: PhotoFacts | None) -> Member:
    return Member(name, name, name, facts)


def test_keeper_is_largest_then_heaviest_then_with_exif_then_first() -> None:
    small = PhotoFacts(100, 100, 9000, True)
    large = PhotoFacts(200, 100, 5000, False)
    keep, why = choose_keeper([_member("a", small), _member("b", large)])
    assert keep.id == "b" and "largest picture (200x100)" in why
    light, heavy = PhotoFacts(100, 100, 10, False), PhotoFacts(100, 100, 20, False)
    keep, why = choose_keeper([_member("a", light), _member("b", heavy)])
    assert keep.id == "b" and "most bytes" in why
    plain, tagged = PhotoFacts(100, 100, 10, False), PhotoFacts(100, 100, 10, True)
    keep, why = choose_keeper([_member("a", plain), _member("b", tagged)])
    assert keep.id == "b" and "EXIF" in why
    keep, why = choose_keeper([_member("b", plain), _member("a", plain)])
    assert keep.id == "a" and "first id" in why
    keep, why = choose_keeper([_member("b", None), _member("a", plain)])
    assert keep.id == "a"  # facts beat none
    keep, why = choose_keeper([_member("b", None), _member("a", None)])
    assert keep.id == "a" and "no image facts" in why


def test_signature_reads_every_layout() -> None:
    thumbnail = bytes(range(192))
    points = np.array([[1.5, 2.0], [300.0, 400.0]], np.float32)
    descriptors = np.arange(64, dtype=np.uint8).reshape(2, 32)
    blob = local_features.pack(points, descriptors)
    facts = PhotoFacts(4032, 3024, 3_500_000, True)
    full = parse(compose(thumbnail, facts, blob))
    assert full.thumbnail == thumbnail and full.facts == facts
    np.testing.assert_array_equal(full.features[1], descriptors)
    old = parse(thumbnail + blob)  # written before the facts existed
    assert old.facts is None and old.features is not None
    assert parse(thumbnail).features is None and parse(b"").facts is None
    assert parse(compose(thumbnail, facts)).facts == facts


def test_header_facts_see_size_and_exif_without_decoding() -> None:
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0110] = "test camera"
    Image.new("RGB", (64, 48)).save(buffer, "JPEG", exif=exif)
    assert header_facts(buffer.getvalue()) == (64, 48, True)
    plain = io.BytesIO()
    Image.new("RGB", (64, 48)).save(plain, "PNG")
    assert header_facts(plain.getvalue()) == (64, 48, False)


def test_pair_model_takes_the_stronger_evidence_and_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 400
    copy = rng.random(n) < 0.4
    # Copies: either a high cosine or many spread inliers (a rotation); others: neither.
    rotated = copy & (rng.random(n) < 0.5)
    cosine = np.where(copy & ~rotated, rng.uniform(0.7, 1.0, n), rng.uniform(0.0, 0.5, n))
    inliers = np.where(rotated, rng.integers(40, 200, n), rng.integers(0, 8, n))
    spread = np.where(rotated, rng.uniform(0.6, 1.0, n), rng.uniform(0.0, 0.3, n))
    model = fit_pairs(cosine, inliers, spread, copy, 0.95, {"what": "synthetic"})
    said = model.probability(cosine, inliers, spread) >= model.threshold
    assert (said & copy).sum() / said.sum() >= 0.95 and (said & copy).sum() / copy.sum() > 0.9
    assert model.probability([0.2], [150], [0.9])[0] >= model.threshold  # a rotation: local alone
    assert model.probability([0.95], [0], [0.0])[0] >= model.threshold  # a re-encode: embedding
    assert model.probability([0.3], [2], [0.1])[0] < model.threshold  # neither
    assert bool(model.decides_alone(np.array([0.95]))[0])
    calibration = CopyCalibration((0.0, 1.0, 1.0, 1.0), 0.5, 0.9, {}, model)
    calibration.save(tmp_path)
    assert CopyCalibration.load(tmp_path).pairs == model
    data = json.loads((tmp_path / "copy_calibration.json").read_text())
    del data["pairs"]  # a file from before the pair model: loads, without one
    (tmp_path / "copy_calibration.json").write_text(json.dumps(data))
    assert CopyCalibration.load(tmp_path).pairs is None
    data["pairs"] = {"weights": [1, 2], "threshold": 0.5, "target_precision": 0.9}
    (tmp_path / "copy_calibration.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="5 pair weights"):
        CopyCalibration.load(tmp_path)


def _start(loop_thread, bundle: Path, store: Path):
    from simclr_search.serving.server.app import start_server
    from simclr_search.serving.server.settings import ServerOptions
    from tests.serving.conftest import make_config

    return loop_thread.run(
        start_server(
            make_config(bundle, store),
            ServerOptions(address="127.0.0.1:0", metrics_port=0, http_port=0),
        )
    )


@pytest.mark.slow
def test_find_duplicates_groups_exact_and_edited_copies(tmp_path: Path, loop_thread) -> None:
    from simclr_search.serving.client import Client

    if CopyCalibration.load(SHIPPED).pairs is None:
        pytest.fail("the shipped bundle's copy_calibration.json has no pair model")
    photos = kodak_photos(9)
    rng = np.random.default_rng(3)
    library = {}
    for i in range(4):
        library[f"p{i}.png"] = photos[i]
        for family in ("jpeg", "colour_filter", "exif"):
            library[f"p{i}-{family}.jpg"] = edited(photos[i], family, rng)
    for i in range(4, 9):
        library[f"other{i}.png"] = photos[i]
    running = _start(loop_thread, SHIPPED, tmp_path / "store")
    try:
        with Client(f"127.0.0.1:{running.port}") as client:
            items = [(n, d, f"/photos/{n}", {}) for n, d in library.items()]
            assert all(r.status == 1 for r in client.index_images(items))
            assert list(client.find_duplicates(exact_only=True)) == []  # no identical files yet
            client.upsert_images([("p0-again.png", photos[0])])  # the same bytes, another id
            groups = list(client.find_duplicates())
            exact = list(client.find_duplicates(exact_only=True))
            # Is this photo already in the collection? Search's is_copy says it.
            assert client.search(image=edited(photos[1], "blur", rng), k=1)[0].is_copy
            assert not client.search(image=kodak_photos(12)[11], k=1)[0].is_copy
        out = tmp_path / "remote.json"
        from simclr_search.cli.main import main

        address = f"127.0.0.1:{running.port}"
        assert main(["dedup", "--collection", "images", "--remote", "--server", address,
                     "--output", str(out), "--no-progress"]) == 0  # fmt: skip
        remote = json.loads(out.read_text())
    finally:
        loop_thread.run(running.stop())
    assert len(exact) == 1 and {exact[0].keep.id, exact[0].copies[0].id} == {
        "p0.png",
        "p0-again.png",
    }
    assert exact[0].copies[0].exact and exact[0].threshold == 0.0
    members = [{g.keep.id, *(c.id for c in g.copies)} for g in groups]
    for i in range(4):
        expected = {f"p{i}.png", *(f"p{i}-{f}.jpg" for f in ("jpeg", "colour_filter", "exif"))}
        if i == 0:
            expected.add("p0-again.png")
        assert expected in members, (i, members)
    assert len(groups) == 4  # the other photos are in no group
    first = next(g for g in groups if g.keep.id in ("p0.png", "p0-again.png"))
    assert first.keep.width == 500 and first.keep.bytes == len(photos[0])  # the PNG, not a JPEG
    assert "first id" in first.reason and first.keep.id == "p0-again.png"
    assert first.threshold > 0 and all(0 < c.copy_probability <= 1 for c in first.copies)
    assert {c.id for c in first.copies if c.exact} == {"p0.png"}
    assert all(g.keep.uri.startswith("/photos/") or g.keep.id == "p0-again.png" for g in groups)
    assert len(remote["groups"]) == 4 and remote["images"] == len(library) + 1
    assert remote["threshold"] == pytest.approx(first.threshold)


def test_find_duplicates_errors_say_what_to_do(tmp_path: Path, loop_thread) -> None:
    from simclr_search.serving.client import Client

    bundle = tmp_path / "bundle"
    shutil.copytree(SHIPPED, bundle)
    data = json.loads((bundle / "copy_calibration.json").read_text())
    data.pop("pairs", None)
    (bundle / "copy_calibration.json").write_text(json.dumps(data))
    running = _start(loop_thread, bundle, tmp_path / "store")
    try:
        with Client(f"127.0.0.1:{running.port}") as client:
            with pytest.raises(grpc.RpcError) as missing:
                list(client.find_duplicates())
            assert missing.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "calibrate-copies" in missing.value.details()
            assert list(client.find_duplicates(exact_only=True)) == []  # needs no model
            with pytest.raises(grpc.RpcError) as unknown:
                list(client.find_duplicates(collection="nope"))
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.RpcError) as wide:
                list(client.find_duplicates(exact_only=True, neighbours=100_000))
            assert wide.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "neighbours" in wide.value.details()
    finally:
        loop_thread.run(running.stop())


def test_a_decision_without_a_pair_model_is_none() -> None:
    assert CopyCalibration((0.0, 1.0, 1.0, 1.0), 0.5, 0.9).pairs is None
    assert isinstance(CopyCalibration.load(SHIPPED).pairs, PairDecision)
