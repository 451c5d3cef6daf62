"""The fast tar reader against ``tarfile``: same members, names, bytes and labels, in every format
``tarfile`` writes, plus damaged archives (cut short, a corrupt header) and the fallback."""

from __future__ import annotations

import io
import random
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simclr_search.bundle.sources import _iter_archive, _iter_archive_tarfile
from simclr_search.bundle.tar_reader import NotSimpleTar, iter_members, open_tar

FORMATS = {"gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT, "ustar": tarfile.USTAR_FORMAT}


def _write(path: Path, members: list[tuple[str, bytes]], fmt: int, mode: str = "w") -> None:
    with tarfile.open(path, mode, format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        folder = tarfile.TarInfo("some/folder")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        link = tarfile.TarInfo("some/link.jpg")
        link.type = tarfile.SYMTYPE
        # A long link name: a GNU 'K' or pax 'linkpath' record (ustar has no room for one).
        link.linkname = "x" * (50 if fmt == tarfile.USTAR_FORMAT else 150)
        tar.addfile(link)


def _both(path: Path) -> tuple[list, list, list, list]:
    fast_skipped: list = []
    slow_skipped: list = []
    fast = list(_iter_archive(path, fast_skipped))
    slow = list(_iter_archive_tarfile(path, slow_skipped))
    return fast, slow, fast_skipped, slow_skipped


NAME = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\"),
    min_size=1,
    max_size=40,
).filter(lambda s: s not in (".", ".."))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    parts=st.lists(st.lists(NAME, min_size=1, max_size=4), min_size=1, max_size=6),
    sizes=st.lists(st.sampled_from([0, 1, 511, 512, 513, 1500, 70_000]), min_size=6, max_size=6),
    fmt=st.sampled_from(sorted(FORMATS)),
    gz=st.booleans(),
)
def test_same_members_as_tarfile(tmp_path: Path, parts, sizes, fmt: str, gz: bool) -> None:
    names = ["/".join(p) + ".jpg" for p in parts]
    if fmt == "ustar":  # ustar cannot store long or non-ASCII names: tarfile refuses them
        names = [n for n in names if len(n.encode()) < 100 and n.isascii()] or ["a/b.jpg"]
    names = list(dict.fromkeys(names))
    members = [
        (n, bytes([i % 251]) * s) for i, (n, s) in enumerate(zip(names, sizes, strict=False))
    ]
    path = tmp_path / f"{fmt}{len(names)}{'.tar.gz' if gz else '.tar'}"
    _write(path, members, FORMATS[fmt], "w:gz" if gz else "w")
    fast, slow, fast_skipped, slow_skipped = _both(path)
    assert fast == slow
    assert [data for _, data in fast] == [data for _, data in members]
    assert fast_skipped == slow_skipped == []
    path.unlink()


def test_long_names_and_labels(tmp_path: Path) -> None:
    deep = "/".join(["folder"] * 40) + "/cat/photo.JPG"  # 300+ bytes: pax or GNU long name
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        path = tmp_path / f"long{fmt}.tar"
        _write(path, [(deep, b"abc"), ("top.png", b"d"), ("notes.txt", b"e")], fmt)
        fast, slow, _, _ = _both(path)
        assert fast == slow
        assert [(r.uri.split("::")[1], r.label) for r, _ in fast] == [
            (deep, "cat"),
            ("top.png", None),
        ]


@pytest.mark.parametrize("mode", ["w", "w:gz"])
def test_cut_short_keeps_what_came_before(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "cut.tar"
    rng = random.Random(0)  # incompressible, like JPEG data: half the .gz holds half the members
    members = [(f"c/{i}.jpg", rng.randbytes(5000)) for i in range(10)]
    _write(path, members, tarfile.PAX_FORMAT, mode)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    skipped: list = []
    got = list(_iter_archive(path, skipped))
    assert 0 < len(got) < 10
    assert got == list(_iter_archive_tarfile(path, []))  # the same members survive
    assert skipped and "truncated or corrupt" in skipped[0][1]


def test_corrupt_header_is_an_error_not_garbage(tmp_path: Path) -> None:
    path = tmp_path / "bad.tar"
    _write(path, [("a/1.jpg", b"x" * 600), ("a/2.jpg", b"y" * 600)], tarfile.USTAR_FORMAT)
    data = bytearray(path.read_bytes())
    data[512 * 3 + 10] ^= 0xFF  # the second member's header (header, 2 data blocks, header)
    path.write_bytes(bytes(data))
    skipped: list = []
    got = list(_iter_archive(path, skipped))
    assert [r.uri.split("::")[1] for r, _ in got] == ["a/1.jpg"]
    assert "checksum" in skipped[0][1]


def test_other_compressions_go_through_tarfile(tmp_path: Path) -> None:
    path = tmp_path / "images.tar"  # bz2 inside, whatever the name says
    _write(path, [("x/1.jpg", b"abc")], tarfile.PAX_FORMAT, "w:bz2")
    with pytest.raises(NotSimpleTar):
        open_tar(path)
    got = list(_iter_archive(path, []))
    assert [(r.label, data) for r, data in got] == [("x", b"abc")]


def test_unwanted_members_are_skipped_without_reading(tmp_path: Path) -> None:
    path = tmp_path / "big.tar"
    _write(path, [("big.jpg", bytes(3 << 20)), ("small.jpg", b"s")], tarfile.PAX_FORMAT)
    with open_tar(path) as stream:
        got = list(iter_members(stream, lambda name, size: size < 1000))
    assert got == [("big.jpg", 3 << 20, None), ("small.jpg", 1, b"s")]


def test_a_gzip_cut_inside_its_first_block_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "tiny.tar.gz"
    _write(path, [("a/1.jpg", random.Random(1).randbytes(4000))], tarfile.PAX_FORMAT, "w:gz")
    path.write_bytes(path.read_bytes()[:60])
    skipped: list = []
    assert list(_iter_archive(path, skipped)) == []
    assert skipped and "archive" in skipped[0][1]


def test_sparse_members_are_passed_over(tmp_path: Path) -> None:
    """An old-GNU sparse member whose map needs extension blocks (built by hand: tarfile cannot
    write sparse files) is skipped whole; the image after it is read."""
    path = tmp_path / "sparse.tar"
    _write(path, [], tarfile.GNU_FORMAT)  # folder and link only
    body = bytearray(path.read_bytes().rstrip(b"\x00"))
    body += bytes(-len(body) % 512)
    header = bytearray(512)
    header[0:10] = b"sparse.jpg"
    header[100:108] = b"0000644\x00"
    header[124:136] = b"%011o\x00" % 600  # stored bytes
    header[156:157] = b"S"
    header[257:265] = b"ustar  \x00"
    header[482] = 1  # one extension block follows
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\x00 " % sum(header)
    extension = bytearray(512)  # its byte 504 is 0: the last extension
    image = bytearray(512)
    image[0:9] = b"after.jpg"
    image[100:108] = b"0000644\x00"
    image[124:136] = b"%011o\x00" % 3
    image[156:157] = b"0"
    image[148:156] = b" " * 8
    image[148:156] = b"%06o\x00 " % sum(image)
    data = body + header + extension + bytes(1024) + image + b"abc" + bytes(509) + bytes(1024)
    path.write_bytes(bytes(data))
    skipped: list = []
    got = [(r.uri.split("::")[1], d) for r, d in _iter_archive(path, skipped)]
    assert got == [("after.jpg", b"abc")] and skipped == []
