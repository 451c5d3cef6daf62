"""Copy detection: the views, local features, the calibration file, and a real server that finds
each edit family's original on a small photo set and calls photos it does not hold not-a-copy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from simclr_search.edits import FAMILIES, edited
from simclr_search.serving.core import local_features
from simclr_search.serving.core.copy_scores import (
    CopyCalibration,
    calibrate,
    fit_logistic,
    threshold_for_precision,
)
from simclr_search.serving.core.photo_views import (
    WHOLE,
    photo,
    query_views,
    square,
    tiles,
    trim_border,
)
from tests.conftest import kodak_photos

SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "denoise-eval"
SHIPPED = Path(__file__).resolve().parents[2] / "models" / "compact-cifar10"


def _texture(seed: int, size: tuple[int, int] = (320, 240)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize(size, Image.Resampling.BICUBIC))


def test_trim_border_removes_padding_only() -> None:
    inner = _texture(0)
    padded = np.asarray(ImageOps.expand(Image.fromarray(inner), border=(30, 12), fill=(9, 200, 9)))
    trimmed = trim_border(padded)
    assert (
        abs(trimmed.shape[0] - inner.shape[0]) <= 2 and abs(trimmed.shape[1] - inner.shape[1]) <= 2
    )
    assert trim_border(inner).shape == inner.shape  # nothing to trim
    flat = np.full((50, 50, 3), 128, np.uint8)
    assert trim_border(flat).shape == flat.shape  # all border: kept


def test_query_views_start_with_the_stored_view() -> None:
    pixels = _texture(1)  # 4:3: stored as two squares, the left and the right end
    stored = tiles(pixels, 32)
    assert stored.shape == (2, 32, 32, 3)
    views = query_views(pixels, 32)
    kinds, mirrored, counts = views.kinds, views.mirrored, views.counts
    assert views.squares.shape[1:] == (32, 32, 3) and len(counts) == len(kinds)
    assert counts.sum() == len(views.squares)
    np.testing.assert_array_equal(views.squares[:2], stored)
    assert (kinds == WHOLE).sum() == 8  # no border: the 8 orientations only
    assert counts[:8].tolist() == [2] * 8 and counts[8:].tolist() == [1] * (len(counts) - 8)
    turned = views.squares[4:6]  # the third view: a quarter turn of each square
    np.testing.assert_array_equal(turned, [np.rot90(t, 1) for t in stored])
    np.testing.assert_array_equal(views.squares[6:8], [np.rot90(t, 1)[:, ::-1] for t in stored])
    assert mirrored[:8].tolist() == [False, True] * 4 and not mirrored[8:].any()
    np.testing.assert_array_equal(views.thumbnail_square[0], stored[0])
    bordered = np.asarray(ImageOps.expand(Image.fromarray(pixels), border=40, fill=(255, 255, 255)))
    assert (query_views(bordered, 32).kinds == WHOLE).sum() == 10  # + trimmed, both ways
    square_photo = _texture(4, (300, 300))
    np.testing.assert_array_equal(tiles(square_photo, 32)[0], square(square_photo, 32))


def test_local_features_pack_round_trip_and_match_a_crop_not_another_picture() -> None:
    extractor = local_features.LocalFeatures()
    a, b = _texture(2, (480, 360)), _texture(3, (480, 360))
    points, descriptors = extractor.extract(a)
    assert len(descriptors) > 50
    unpacked = local_features.unpack(local_features.pack(points, descriptors))
    np.testing.assert_allclose(unpacked[0], points, atol=0.25)  # float16 positions
    np.testing.assert_array_equal(unpacked[1], descriptors)
    assert local_features.unpack(b"") is None and local_features.unpack(b"\x09garbage") is None
    crop = np.ascontiguousarray(a[40:300, 60:400])
    assert extractor.inliers(extractor.extract(crop), (points, descriptors)) >= 20
    assert extractor.inliers(extractor.extract(b), (points, descriptors)) < 10


def test_wilson_lower_bound_and_the_threshold_it_gives() -> None:
    from simclr_search.serving.core.logistic import wilson_lower

    # 90 of 100 at z 1.645, by hand: (0.9 + 0.013530 - 0.051171) / 1.027060 = 0.83963
    assert float(wilson_lower(np.array(90), np.array(100), 1.645)) == pytest.approx(0.83963, 1e-4)
    assert float(wilson_lower(np.array(9), np.array(10), 0.0)) == 0.9
    # 40 right answers, then every 10th wrong: the plain precision stays near 0.9 to the end,
    # its lower bound only higher up, so the bounded threshold is stricter
    correct = np.array([1.0] * 40 + [0.0 if i % 10 == 0 else 1.0 for i in range(160)])
    scores = np.linspace(1, 0, len(correct), endpoint=False)
    plain = threshold_for_precision(scores, correct, 0.9)
    bounded = threshold_for_precision(scores, correct, 0.9, 1.645)
    assert bounded > plain
    kept = correct[scores >= bounded]
    assert wilson_lower(kept.sum(), len(kept), 1.645) >= 0.9


def test_logistic_fit_and_threshold_against_hand_computed_values() -> None:
    # separable in x: the fitted slope is positive and large, probabilities ordered by x
    x = np.column_stack([np.ones(8), np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9])])
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1], dtype=float)
    w = fit_logistic(x, y)
    assert w[1] > 5 and abs(w[0] + 0.5 * w[1]) < 0.5  # the boundary near x = 0.5
    # scores best first: correct, correct, wrong, correct, wrong -> precision 1, 1, 2/3, 3/4, 3/5
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    correct = np.array([1, 1, 0, 1, 0], dtype=float)
    assert threshold_for_precision(scores, correct, 0.75) == 0.6
    assert threshold_for_precision(scores, correct, 1.0) == 0.8
    assert threshold_for_precision(scores, np.zeros(5), 0.9) == 1.0


def test_calibration_file_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    whole = np.concatenate([rng.uniform(0.8, 1.0, 50), rng.uniform(0.3, 0.85, 50)])
    window = whole - 0.05
    inliers = np.concatenate([rng.integers(10, 80, 50), rng.integers(0, 8, 50)])
    correct = np.concatenate([np.ones(50), np.zeros(50)])
    model = calibrate(whole, window, inliers, correct, 0.9, {"images": "synthetic"})
    model.save(tmp_path)
    loaded = CopyCalibration.load(tmp_path)
    assert loaded == model
    np.testing.assert_allclose(
        loaded.probability(whole, window, inliers), model.probability(whole, window, inliers)
    )
    decided = loaded.probability(whole, window, inliers) >= loaded.threshold
    assert correct[decided].mean() >= 0.9
    assert CopyCalibration.load(tmp_path / "none") is None
    (tmp_path / "copy_calibration.json").write_text('{"format_version": 7}')
    with pytest.raises(ValueError, match="format_version"):
        CopyCalibration.load(tmp_path)


@pytest.mark.slow
def test_the_server_finds_each_edit_familys_original(tmp_path: Path, loop_thread) -> None:
    """Six photos indexed among crops of two others; edits of two of them are found, edits of
    photos not in the index are not called copies (the shipped bundle and its calibration)."""
    from simclr_search.serving.client import Client
    from simclr_search.serving.server.app import start_server
    from simclr_search.serving.server.settings import ServerOptions
    from tests.serving.conftest import make_config

    if CopyCalibration.load(SHIPPED) is None:
        pytest.fail("the shipped bundle has no copy_calibration.json")
    photos = kodak_photos(10)
    originals = {f"photo{i}": photos[i] for i in range(6)}
    rng = np.random.default_rng(5)
    distractors = {f"crop{i}{j}": edited(photos[i], "crop", rng) for i in (6, 7) for j in range(8)}
    running = loop_thread.run(
        start_server(
            make_config(SHIPPED, tmp_path / "store"),
            ServerOptions(address="127.0.0.1:0", metrics_port=0, http_port=0),
        )
    )
    try:
        with Client(f"127.0.0.1:{running.port}") as client:
            items = [(n, d, n, {}) for n, d in {**originals, **distractors}.items()]
            assert all(r.status == 1 for r in client.index_images(items))
            found: dict[str, list[bool]] = {}
            for name in ("photo0", "photo1"):
                for family in FAMILIES:
                    top = client.search(image=edited(originals[name], family, rng), k=3)[0]
                    found.setdefault(family, []).append(top.id == name and top.is_copy)
            missing = [f for f, ok in found.items() if not any(ok)]
            assert not missing, found
            assert np.mean([v for ok in found.values() for v in ok]) >= 0.9, found
            for negative in (photos[8], photos[9]):
                for family in ("crop", "jpeg", "text", "rotate90"):
                    hits = client.search(image=edited(negative, family, rng), k=3)
                    assert not any(h.is_copy for h in hits), (family, hits)
            exact = client.search(image=originals["photo3"], k=1)[0]
            assert exact.id == "photo3" and exact.is_copy and exact.copy_probability > 0.9
            assert len(photo(originals["photo3"], 10**8)) > 0
    finally:
        loop_thread.run(running.stop())


def test_exact_cosines_against_a_hand_written_reference() -> None:
    from simclr_search.serving.core.copy_search import exact_cosines
    from simclr_search.serving.core.photo_views import WINDOW

    rng = np.random.default_rng(3)
    views, stored = rng.normal(size=(7, 16)), rng.normal(size=(5, 16))
    kinds = np.array([WHOLE] * 3 + [WINDOW] * 4)
    mirrored = np.array([False, True, False, False, False, False, False])
    whole, window, flipped = exact_cosines(views, kinds, mirrored, stored, turned_penalty=0.1)
    for c in range(5):
        cos = [float(stored[c] @ v / np.linalg.norm(stored[c]) / np.linalg.norm(v)) for v in views]
        cos[1], cos[2] = cos[1] - 0.1, cos[2] - 0.1  # whole views but the first count 0.1 less
        assert whole[c] == pytest.approx(max(cos[:3]), abs=1e-9)
        assert window[c] == pytest.approx(max(cos[3:]), abs=1e-9)
        assert flipped[c] == (int(np.argmax(cos[:3])) == 1)
    only_whole = exact_cosines(views[:3], kinds[:3], mirrored[:3], stored)
    np.testing.assert_allclose(only_whole[1], only_whole[0])  # no windows: window = whole


def test_stored_vectors_leave_out_ids_deleted_since_the_search(tmp_path: Path) -> None:
    from simclr_search.index.collection import CollectionConfig
    from simclr_search.index.metadata import NewItem
    from simclr_search.index.store import Store
    from simclr_search.serving.core.copy_search import stored_vectors

    collection = Store(tmp_path).create("c", CollectionConfig(dim=4))
    vectors = np.eye(4, dtype=np.float32)
    collection.add([NewItem(f"i{n}", vectors[n]) for n in range(3)])
    collection.delete(["i1"])
    found = stored_vectors(collection, ["i2", "i1", "i0", "never"])
    assert sorted(found) == ["i0", "i2"]
    np.testing.assert_allclose(found["i2"], vectors[2])
    assert stored_vectors(collection, ["i1"]) == {}


def _hit(name: str, pixels: np.ndarray | None) -> object:
    from simclr_search.index.hits import Hit
    from simclr_search.serving.core.signature import compose
    from simclr_search.serving.core.tie_break import SIGNATURE_BYTES

    packed = b""
    if pixels is not None:
        packed = local_features.pack(*local_features.LocalFeatures().extract(pixels))
    return Hit(name, 0.5, "", "", {}, compose(b"\0" * SIGNATURE_BYTES, None, packed))


def test_verification_reaches_past_icons_and_weak_candidates_and_stops_when_sure() -> None:
    """The original ranked below the first VERIFIED candidates that have features is still
    checked when none of those is a strong match; icons (no features) take no slot; with a strong
    match among the first, nothing further is checked."""
    from simclr_search.serving.core import copy_search
    from simclr_search.serving.core.request_images import Photo

    original = _texture(50, (480, 360))
    query = Photo(np.ascontiguousarray(original[30:300, 40:420]), original[:32, :32], b"")
    icons = [_hit(f"icon{i}", None) for i in range(5)]
    others = [_hit(f"other{i}", _texture(100 + i, (480, 360))) for i in range(copy_search.VERIFIED)]
    late = [*icons, *others, _hit("original", original)]
    counts = copy_search._verify(query, late)
    assert counts[:5] == [0] * 5 and max(counts[5:-1]) < copy_search.STRONG
    assert counts[-1] >= copy_search.STRONG
    early = [_hit("original", original), *others, _hit("other-late", _texture(99, (480, 360)))]
    counts = copy_search._verify(query, early)
    assert counts[0] >= copy_search.STRONG and counts[-1] == 0  # sure after the first 12


@pytest.mark.slow
def test_calibrate_copies_gives_the_same_file_whatever_the_bundle_held(tmp_path: Path) -> None:
    """`simclr calibrate-copies` fits from its photos alone: the bundle's previous calibration,
    which orders a search's hits, does not leak into the refit (one pass is ordered by cosine,
    the kept one by that pass's fit)."""
    import json
    import shutil

    from simclr_search.serving.jobs.calibrate import cli_main, get_args_parser

    library = tmp_path / "photos"
    library.mkdir()
    for i, data in enumerate(kodak_photos(16)):
        (library / f"{i:02d}.png").write_bytes(data)
    written = []
    for keep_previous in (True, False):
        bundle = tmp_path / f"bundle-{keep_previous}"
        shutil.copytree(SHIPPED, bundle)
        if not keep_previous:
            (bundle / "copy_calibration.json").unlink()
        args = get_args_parser().parse_args(
            [str(library), "--bundle", str(bundle), "--no-progress"]
        )
        assert cli_main(args) == 0
        written.append(json.loads((bundle / "copy_calibration.json").read_text()))
    assert written[0] == written[1]
    assert 0 < written[0]["threshold"] < 1 and written[0]["fitted_on"]["queries"] == 12 * 19
    shipped = CopyCalibration.load(SHIPPED)
    assert written[0]["weights"] != list(shipped.weights)  # fitted here, not copied


def test_voted_candidates_are_verified_beyond_the_reach() -> None:
    """A candidate the local features voted for is checked even where the embedding ranked it
    past every slot verification reaches."""
    from simclr_search.serving.core import copy_search
    from simclr_search.serving.core.request_images import Photo

    original = _texture(51, (480, 360))
    query = Photo(np.ascontiguousarray(original[30:300, 40:420]), original[:32, :32], b"")
    others = [_hit(f"other{i}", _texture(200 + i, (480, 360))) for i in range(copy_search.VERIFIED)]
    late = [*others, _hit("original", original)]
    assert copy_search._verify(query, late, reach=copy_search.VERIFIED)[-1] == 0  # out of reach
    counts = copy_search._verify(
        query, late, reach=copy_search.VERIFIED, voted=frozenset({len(late) - 1})
    )
    assert counts[-1] >= copy_search.STRONG


def test_local_features_come_strongest_first_and_their_head_is_stored_as_vote_codes() -> None:
    import cv2

    from simclr_search.serving.core.signature import compose, vote_codes
    from simclr_search.serving.core.tie_break import SIGNATURE_BYTES

    pixels = _texture(52, (480, 360))
    points, descriptors = local_features.LocalFeatures().extract(pixels)
    grey = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    keypoints = cv2.ORB_create(nfeatures=local_features.FEATURES).detect(grey, None)
    strongest = max(keypoints, key=lambda k: k.response)
    np.testing.assert_allclose(points[0], strongest.pt)  # the first is the strongest corner
    signature = compose(b"\0" * SIGNATURE_BYTES, None, local_features.pack(points, descriptors))
    codes = vote_codes(signature)
    assert codes == descriptors[: local_features.VOTE_CODES].tobytes()
    assert vote_codes(b"\0" * SIGNATURE_BYTES) == b""  # no features, no codes


def test_search_finds_through_votes_what_the_embedding_did_not_offer(tmp_path: Path) -> None:
    """Through the service core and a real collection: with the embedding's candidates taken
    away, the query's descriptors still vote for the original, which is verified and comes first;
    with votes off too, nothing is found."""
    import asyncio
    import io

    from simclr_search.serving.core.copy_search import STRONG, stored_vectors
    from simclr_search.serving.core.service import SearchService
    from simclr_search.serving.core.writes import UpsertInput
    from tests.serving.conftest import make_config

    def jpeg(pixels: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=92)
        return buffer.getvalue()

    library = {f"photo{i}": _texture(300 + i, (480, 360)) for i in range(6)}
    query = jpeg(np.ascontiguousarray(library["photo4"][20:330, 30:440]))

    async def main():
        service = SearchService(make_config(SHIPPED, tmp_path / "store"))
        await service.start()
        try:
            name = service.config.default_collection
            await service.upsert(name, [UpsertInput(n, jpeg(p), uri=n) for n, p in library.items()])
            col = service._collection(name)
            stats = col.stats()["votes"]
            assert stats["codes"] == 6 * local_features.VOTE_CODES, stats

            async def nothing(vectors, n):  # the embedding offers no candidate at all
                return [[] for _ in range(len(vectors))]

            async def vectors(ids):
                return stored_vectors(col, ids)

            async def vote(codes, n):
                return col.vote(codes, n, local_features.VOTE_DISTANCE, local_features.VOTE_RATIO)

            found = await service.copies.search(query, 3, nothing, vectors, vote)
            blind = await service.copies.search(query, 3, nothing, vectors, None)
            return found, blind
        finally:
            await service.stop()

    found, blind = asyncio.run(main())
    assert found[0].hit.external_id == "photo4" and found[0].inliers >= STRONG
    assert len(found) <= local_features.VOTED and blind == []
