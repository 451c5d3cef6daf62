"""``simclr dedup`` on a folder of real photos: exact and edited copies, a corrupt file, a library
with none, the reports, resuming, and moving copies aside and back."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from simclr_search.cli.main import main
from simclr_search.edits import edited
from tests.conftest import kodak_photos

SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "denoise-eval"
SHIPPED = Path(__file__).resolve().parents[2] / "models" / "compact-cifar10"


@pytest.fixture
def library(tmp_path: Path) -> Path:
    photos = kodak_photos(6)
    root = tmp_path / "library"
    (root / "trip").mkdir(parents=True)
    rng = np.random.default_rng(11)
    (root / "a.png").write_bytes(photos[0])
    (root / "trip" / "a-copy.png").write_bytes(photos[0])  # byte-identical
    (root / "trip" / "a-small.jpg").write_bytes(edited(photos[0], "thumbnail", rng))
    (root / "b.png").write_bytes(photos[1])
    (root / "b-filter.jpg").write_bytes(edited(photos[1], "colour_filter", rng))
    for i in range(2, 6):
        (root / f"other{i}.png").write_bytes(photos[i])
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a photo")
    return root


def _dedup(tmp_path: Path, *args: str) -> int:
    return main(
        [
            "dedup",
            *args,
            "--bundle",
            str(SHIPPED),
            "--store",
            str(tmp_path / "store"),
            "--no-progress",
        ]
    )


@pytest.mark.slow
def test_dedup_reports_groups_keepers_and_the_broken_file(
    library: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "groups.json"
    sheet, table = tmp_path / "sheet.png", tmp_path / "groups.csv"
    args = [str(library), "--output", str(out), "--csv", str(table), "--contact-sheet", str(sheet)]
    assert _dedup(tmp_path, *args) == 0
    report = json.loads(out.read_text())
    groups = {frozenset([g["keep"], *g["copies"]]): g for g in report["groups"]}
    a_group = frozenset(str(library / p) for p in ("a.png", "trip/a-copy.png", "trip/a-small.jpg"))
    b_group = frozenset(str(library / p) for p in ("b.png", "b-filter.jpg"))
    assert set(groups) == {a_group, b_group}, report["groups"]
    a = groups[a_group]
    assert a["keep"] in (str(library / "a.png"), str(library / "trip/a-copy.png"))
    assert "first id" in a["reason"]  # the two identical files tie on size, bytes and EXIF
    exact = dict(zip(a["copies"], a["exact"], strict=True))
    assert exact[str(library / "trip/a-small.jpg")] is False and sum(exact.values()) == 1
    assert groups[b_group]["keep"] == str(library / "b.png")
    assert "largest picture" in groups[b_group]["reason"] or "bytes" in groups[b_group]["reason"]
    assert report["threshold"] > 0 and report["images"] == 9  # the broken file is a failure
    assert [f["path"] for f in report["failures"]] == [str(library / "broken.jpg")]
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 5 and {r["role"] for r in rows} == {"keep", "copy"}
    assert Image.open(sheet).size[1] > 100
    # A second run embeds nothing again: every file is known by its content hash.
    capsys.readouterr()
    assert _dedup(tmp_path, *args) == 0
    assert "indexed 0," in capsys.readouterr().err
    assert json.loads(out.read_text())["groups"] == report["groups"]


@pytest.mark.slow
def test_move_copies_aside_and_undo(library: Path, tmp_path: Path) -> None:
    before = {p.relative_to(library): p.read_bytes() for p in library.rglob("*") if p.is_file()}
    aside = tmp_path / "aside"
    out = tmp_path / "groups.json"
    assert _dedup(tmp_path, str(library), "--output", str(out), "--move-copies-to", str(aside)) == 0
    report = json.loads(out.read_text())
    moved = {c for g in report["groups"] for c in g["copies"]}
    assert len(moved) == 3
    for copy in moved:
        assert not Path(copy).exists()
        assert (aside / Path(copy).relative_to(library)).exists()
    for group in report["groups"]:
        assert Path(group["keep"]).exists()  # keepers never move
    manifest = aside / "simclr-dedup-manifest.json"
    assert len(json.loads(manifest.read_text())["moves"]) == 3
    assert main(["dedup", "--undo", str(manifest)]) == 0
    after = {p.relative_to(library): p.read_bytes() for p in library.rglob("*") if p.is_file()}
    assert after == before
    assert not manifest.exists() and Path(str(manifest) + ".undone").exists()


def test_undo_after_an_interrupted_move_puts_back_what_moved(tmp_path: Path) -> None:
    from simclr_search.serving.jobs.dedup_files import MANIFEST, undo_moves

    src, dst = tmp_path / "lib", tmp_path / "aside"
    src.mkdir()
    dst.mkdir()
    (dst / "moved.jpg").write_bytes(b"1")
    (src / "not-moved.jpg").write_bytes(b"2")
    plan = [
        {"from": str(src / "moved.jpg"), "to": str(dst / "moved.jpg")},
        {"from": str(src / "not-moved.jpg"), "to": str(dst / "not-moved.jpg")},
    ]
    (dst / MANIFEST).write_text(json.dumps({"moves": plan}))
    restored, left = undo_moves(dst / MANIFEST)
    assert restored == 1 and left == []
    assert (src / "moved.jpg").read_bytes() == b"1" and (src / "not-moved.jpg").exists()


@pytest.mark.slow
def test_a_library_without_copies_has_no_groups(tmp_path: Path) -> None:
    root = tmp_path / "distinct"
    root.mkdir()
    for i, data in enumerate(kodak_photos(5)):
        (root / f"p{i}.png").write_bytes(data)
    out = tmp_path / "groups.json"
    assert _dedup(tmp_path, str(root), "--output", str(out)) == 0
    report = json.loads(out.read_text())
    assert report["groups"] == [] and report["images"] == 5 and report["failures"] == []


def test_dedup_without_a_library_or_collection_says_so(capsys) -> None:
    assert main(["dedup"]) == 2
    assert "--collection" in capsys.readouterr().err


def test_dedup_of_an_indexed_collection(library: Path, tmp_path: Path) -> None:
    assert _dedup(tmp_path, str(library), "--output", str(tmp_path / "a.json")) == 0
    out = tmp_path / "b.json"
    assert _dedup(tmp_path, "--collection", "images", "--output", str(out)) == 0
    groups = json.loads(out.read_text())["groups"]
    # The collection holds one item per content: the identical second file is not in it.
    sizes = sorted(len(g["copies"]) + 1 for g in groups)
    assert sizes == [2, 2], groups
