"""What ``simclr dedup`` writes and does to files: the JSON and CSV reports, a contact sheet, and
moving copies aside with a manifest that undoes the move.

Moves are journalled before they happen: the manifest (every planned ``from -> to``) is written
atomically first, then the files are moved one by one, so an undo after a crash or a kill puts
back whatever did move and skips what did not. Nothing is ever deleted; a file inside an archive is
never moved (the report says so).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw

from simclr_search.bundle.decode import decode_rgb
from simclr_search.bundle.sources import read_uri
from simclr_search.files import atomic_write

MANIFEST = "simclr-dedup-manifest.json"
SHEET_TILE = 160
SHEET_COPIES = 5


@dataclass
class FileGroup:
    """Copies of one photo, as paths: ``scores[i]`` and ``exact[i]`` belong to ``copies[i]``."""

    keep: str
    copies: list[str]
    scores: list[float]
    exact: list[bool]
    reason: str

    def to_json(self) -> dict:
        return {
            "keep": self.keep,
            "copies": self.copies,
            "scores": [round(s, 4) for s in self.scores],
            "exact": self.exact,
            "reason": self.reason,
        }


@dataclass
class DedupReport:
    groups: list[FileGroup]
    threshold: float
    images: int
    failures: list[tuple[str, str]] = field(default_factory=list)
    collection: str = ""

    def to_json(self) -> dict:
        return {
            "groups": [g.to_json() for g in self.groups],
            "threshold": self.threshold,
            "images": self.images,
            "copies": sum(len(g.copies) for g in self.groups),
            "collection": self.collection,
            "failures": [{"path": p, "error": e} for p, e in self.failures],
        }


def write_json(report: DedupReport, path: Path) -> None:
    atomic_write(Path(path), (json.dumps(report.to_json(), indent=2) + "\n").encode())


def write_csv(report: DedupReport, path: Path) -> None:
    """One row per file of a group: group number, keep/copy, path, score, exact, reason."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["group", "role", "path", "score", "exact", "reason"])
    for n, group in enumerate(report.groups, 1):
        writer.writerow([n, "keep", group.keep, "", "", group.reason])
        for copy, score, exact in zip(group.copies, group.scores, group.exact, strict=True):
            writer.writerow([n, "copy", copy, f"{score:.4f}", exact, ""])
    atomic_write(Path(path), buffer.getvalue().encode())


def _tile(uri: str) -> Image.Image:
    try:
        image = decode_rgb(read_uri(uri), min_side=SHEET_TILE)
        image.thumbnail((SHEET_TILE, SHEET_TILE))
    except (OSError, ValueError):
        image = Image.new("RGB", (SHEET_TILE, SHEET_TILE), (200, 60, 60))
    tile = Image.new("RGB", (SHEET_TILE, SHEET_TILE), (255, 255, 255))
    tile.paste(image, ((SHEET_TILE - image.width) // 2, (SHEET_TILE - image.height) // 2))
    return tile


def write_contact_sheet(report: DedupReport, path: Path, groups: int = 12) -> None:
    """A PNG: one row per group (the first ``groups``), the keeper (green) then up to five copies
    with their scores."""
    shown = report.groups[:groups]
    label = 18
    width = (1 + SHEET_COPIES) * (SHEET_TILE + 8) + 8
    height = max(1, len(shown)) * (SHEET_TILE + label + 8) + 8
    sheet = Image.new("RGB", (width, height), (245, 245, 245))
    draw = ImageDraw.Draw(sheet)
    for row, group in enumerate(shown):
        y = 8 + row * (SHEET_TILE + label + 8)
        entries = [(group.keep, "keep", (40, 160, 60))]
        entries += [
            (c, "same file" if e else f"{s:.2f}", (90, 90, 90))
            for c, s, e in zip(group.copies, group.scores, group.exact, strict=True)
        ][:SHEET_COPIES]
        for col, (uri, text, colour) in enumerate(entries):
            x = 8 + col * (SHEET_TILE + 8)
            sheet.paste(_tile(uri), (x, y))
            draw.rectangle([x - 2, y - 2, x + SHEET_TILE + 1, y + SHEET_TILE + 1], outline=colour)
            name = Path(uri.split("::")[-1]).name
            draw.text((x, y + SHEET_TILE + 3), f"{text}  {name}"[:28], fill=colour)
    buffer = io.BytesIO()
    sheet.save(buffer, "PNG")
    atomic_write(Path(path), buffer.getvalue())


def _destination(copy: str, root: Path, target: Path) -> Path:
    source = Path(copy).resolve()
    try:
        relative = source.relative_to(root.resolve())
    except ValueError:
        relative = Path(source.name)
    return target / relative


def move_copies(report: DedupReport, root: Path, target: Path) -> tuple[Path, list[str]]:
    """Move every copy (never a keeper) under ``target``, keeping its path relative to ``root``.
    Returns the manifest's path and the copies not moved, with why."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    plan, skipped = [], []
    for group in report.groups:
        for copy in group.copies:
            if "::" in copy:
                skipped.append(f"{copy}: inside an archive, not moved")
                continue
            destination = _destination(copy, Path(root), target)
            if destination.exists():
                skipped.append(f"{copy}: {destination} exists, not moved")
                continue
            plan.append({"from": str(Path(copy).resolve()), "to": str(destination.resolve())})
    manifest = target / MANIFEST
    atomic_write(manifest, (json.dumps({"moves": plan}, indent=2) + "\n").encode())
    for move in plan:
        Path(move["to"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(move["from"], move["to"])
    return manifest, skipped


def undo_moves(manifest: Path) -> tuple[int, list[str]]:
    """Put back every moved file of ``manifest``; returns how many, and the ones left alone."""
    moves = json.loads(Path(manifest).read_text())["moves"]
    restored, left = 0, []
    for move in moves:
        source, moved = Path(move["from"]), Path(move["to"])
        if not moved.exists():
            if not source.exists():
                left.append(f"{moved}: missing, and {source} is not there either")
            continue  # never moved (the move was interrupted first), or put back already
        if source.exists():
            left.append(f"{source} exists again: {moved} left where it is")
            continue
        source.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(moved), str(source))
        restored += 1
    if not left:
        os.replace(manifest, Path(str(manifest) + ".undone"))
    return restored, left
