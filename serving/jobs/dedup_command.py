"""``simclr dedup``: the duplicate groups of a photo library, and which copy of each to keep.

Two ways in:

* ``simclr dedup FOLDER|ARCHIVE``: the library is indexed first (``indexer.index_local``: resumable
  by content hash, so a second run embeds only new files), every file's hash and facts are noted
  on the way, then the collection's groups (``serving/core/dedup.py``) are turned back into files:
  byte-identical files, which the index stores once, all come back as exact copies.
* ``simclr dedup --collection NAME``: a collection already indexed, from the local store, or from a
  running server (``--remote``) through its ``FindDuplicates`` RPC; files are the items' uris.

Reports: JSON (``--output``), CSV (``--csv``), a PNG contact sheet (``--contact-sheet``). Files are
moved only when asked (``--move-copies-to DIR``, undone with ``--undo DIR/simclr-dedup-manifest.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from simclr_search.serving.client.commands import (
    ENV_PREFIX,
    Connection,
    add_connection_arguments,
    grpc_errors,
)
from simclr_search.serving.core.dedup import DuplicateGroup, Member, choose_keeper
from simclr_search.serving.core.signature import PhotoFacts
from simclr_search.serving.jobs.dedup_files import (
    DedupReport,
    FileGroup,
    move_copies,
    undo_moves,
    write_contact_sheet,
    write_csv,
    write_json,
)
from simclr_search.settings import add_arguments, from_args, setting


@dataclass
class DedupSettings:
    """``simclr dedup``'s settings (besides the library and the server connection)."""

    collection: str = setting(
        "", "collection to index into / look through (default: the server's, 'images')"
    )
    remote: bool = setting(False, "--collection mode: ask --server's FindDuplicates", env="")
    bundle: Path = setting(Path("bundle"), "local mode: model bundle (with its pair model)")
    store: Path = setting(Path("store"), "local mode: index folder")
    output: Path = setting(Path("duplicates.json"), "JSON report", env="")
    csv: Path | None = setting(None, "also a CSV report here", env="")
    contact_sheet: Path | None = setting(None, "also a PNG of the first groups here", env="")
    sheet_groups: int = setting(12, "groups on the contact sheet", env="")
    exact_only: bool = setting(False, "byte-identical copies only (no model needed)", env="")
    neighbours: int = setting(16, "nearest stored images compared per image", env="")
    move_copies_to: Path | None = setting(
        None, "move every copy (never a keeper) under this folder, with an undo manifest", env=""
    )
    progress: bool = setting(True, "progress bars", env="")


@dataclass
class _File:
    uri: str
    facts: PhotoFacts | None


def _file_groups(groups: list[DuplicateGroup], files: dict[str, list[_File]]) -> list[FileGroup]:
    """Item groups -> file groups: each item stands for every file of its content hash (the index
    stores one of identical files); hashes of several files outside any group are exact groups."""
    out: list[FileGroup] = []
    covered: set[str] = set()
    for group in groups:
        scored = [(group.keep, group.keep_score), *zip(group.copies, group.scores, strict=True)]
        members, score_of = [], {}
        for item, score in scored:
            covered.add(item.content_hash)
            for f in files.get(item.content_hash, []):  # none: an item of another library
                members.append(Member(f.uri, f.uri, item.content_hash, f.facts))
                score_of[f.uri] = score
        if len(members) >= 2:
            out.append(_to_files(members, score_of))
    for digest, same in files.items():
        if len(same) >= 2 and digest not in covered:
            members = [Member(f.uri, f.uri, digest, f.facts) for f in same]
            out.append(_to_files(members, {}))
    out.sort(key=lambda g: (-len(g.copies), g.keep))
    return out


def _to_files(members: list[Member], score_of: dict[str, float]) -> FileGroup:
    keep, reason = choose_keeper(members)
    copies = [m for m in members if m is not keep]
    exact = [m.content_hash == keep.content_hash for m in copies]
    scores = [1.0 if e else score_of.get(m.id, 0.0) for m, e in zip(copies, exact, strict=True)]
    return FileGroup(keep.id, [m.id for m in copies], scores, exact, reason)


def _member_groups(groups: list[DuplicateGroup]) -> list[FileGroup]:
    """Collection mode: items as their uris (their ids where stored without one)."""
    out = []
    for g in groups:
        copies = [m.uri or m.id for m in g.copies]
        out.append(
            FileGroup(g.keep.uri or g.keep.id, copies, list(g.scores), list(g.exact), g.reason)
        )
    return out


def dedup_folder(folder: str, settings: DedupSettings, progress: bool = True) -> DedupReport:
    """Index ``folder`` locally, then group its files."""
    from simclr_search.index.store import Store
    from simclr_search.serving.core.copy_scores import CopyCalibration
    from simclr_search.serving.core.dedup import DuplicateFinder
    from simclr_search.serving.core.request_images import facts_of
    from simclr_search.serving.jobs.indexer import bulk_config, index_local

    config = bulk_config(settings.bundle, settings.store)
    collection = settings.collection or config.default_collection
    config = dataclasses.replace(config, default_collection=collection)
    files: dict[str, list[_File]] = {}

    def note(item, outcome) -> None:
        if outcome.content_hash and outcome.status != "failed":
            files.setdefault(outcome.content_hash, []).append(_File(item[2], facts_of(item[1])))

    report = asyncio.run(index_local(folder, config, "", progress=progress, on_outcome=note))
    print(report.summary(), file=sys.stderr)
    calibration = CopyCalibration.load(settings.bundle)
    decision = calibration.pairs if calibration is not None else None
    store = Store(settings.store)
    try:
        finder = DuplicateFinder(decision, settings.neighbours)
        groups = finder.find(
            store.get(collection), not settings.exact_only, _bar(progress, len(files))
        )
    finally:
        store.close()
    threshold = 0.0 if settings.exact_only or decision is None else decision.threshold
    images = sum(len(v) for v in files.values())
    return DedupReport(_file_groups(groups, files), threshold, images, report.failures, collection)


def _bar(progress: bool, total: int):
    """A progress callback for ``DuplicateFinder.find``: one bar per stage."""
    if not progress:
        return None
    bars: dict[str, tqdm] = {}

    def update(stage: str, n: int) -> None:
        if stage not in bars:
            for bar in bars.values():
                bar.close()
            unit = "img" if stage == "neighbours" else "pair"
            bars[stage] = tqdm(desc=stage, unit=unit, total=total if unit == "img" else None)
        bars[stage].update(n)

    return update


def dedup_collection(settings: DedupSettings, args) -> DedupReport:
    """An indexed collection's groups: from the local store, or a server's FindDuplicates."""
    if settings.remote:
        link = from_args(Connection, args)
        with link.client() as client:
            answers = list(
                client.find_duplicates(
                    settings.collection, settings.exact_only, settings.neighbours
                )
            )
            count = next(
                (c.count for c in client.info().collections if c.name == settings.collection), 0
            )
        groups = [
            FileGroup(
                g.keep.uri or g.keep.id,
                [c.uri or c.id for c in g.copies],
                [c.copy_probability for c in g.copies],
                [c.exact for c in g.copies],
                g.reason,
            )
            for g in answers
        ]
        threshold = answers[0].threshold if answers else 0.0
        return DedupReport(groups, threshold, int(count), [], settings.collection)
    from simclr_search.index.store import Store
    from simclr_search.serving.core.config import ServiceConfig
    from simclr_search.serving.core.copy_scores import CopyCalibration
    from simclr_search.serving.core.dedup import DuplicateFinder

    calibration = CopyCalibration.load(settings.bundle)
    decision = calibration.pairs if calibration is not None else None
    store = Store(settings.store)
    try:
        collection = store.get(settings.collection or ServiceConfig.default_collection)
        finder = DuplicateFinder(decision, settings.neighbours)
        groups = finder.find(
            collection, not settings.exact_only, _bar(settings.progress, collection.count())
        )
        count = collection.count()
    finally:
        store.close()
    threshold = 0.0 if settings.exact_only or decision is None else decision.threshold
    return DedupReport(_member_groups(groups), threshold, count, [], collection.name)


def dedup_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="find the duplicates and near-duplicates of a library and which copy to keep "
        "(nothing is moved or deleted unless asked)",
        add_help=add_help,
    )
    p.add_argument(
        "library", nargs="?", help="folder or .tar/.tar.gz of images (omit with --collection)"
    )
    p.add_argument("--undo", type=Path, help="put back the files a --move-copies-to manifest moved")
    add_arguments(p, DedupSettings, ENV_PREFIX)
    add_connection_arguments(p)
    return p


@grpc_errors
def dedup_main(args, argv=None) -> int:
    from simclr_search.index.errors import StoreError
    from simclr_search.serving.core.errors import ServiceError

    if args.undo is not None:
        restored, left = undo_moves(args.undo)
        print(f"simclr dedup: put back {restored} files" + (f"; {len(left)} left:" if left else ""))
        for line in left:
            print(f"  {line}")
        return 0 if not left else 1
    settings = from_args(DedupSettings, args)
    if not args.library and not settings.collection:
        print("simclr dedup: give a folder or archive, or --collection NAME", file=sys.stderr)
        return 2
    if args.library and settings.remote:
        print(
            "simclr dedup: --remote looks through a collection the server holds: index the folder "
            "with 'simclr index FOLDER --remote', then 'simclr dedup --collection NAME --remote'",
            file=sys.stderr,
        )
        return 2
    try:
        if args.library:
            report = dedup_folder(args.library, settings, settings.progress)
        else:
            report = dedup_collection(settings, args)
    except (ServiceError, StoreError, ValueError) as exc:
        print(f"simclr dedup: {exc}", file=sys.stderr)
        return 1
    write_json(report, settings.output)
    if settings.csv is not None:
        write_csv(report, settings.csv)
    if settings.contact_sheet is not None:
        write_contact_sheet(report, settings.contact_sheet, settings.sheet_groups)
    copies = sum(len(g.copies) for g in report.groups)
    print(
        f"simclr dedup: {len(report.groups)} groups, {copies} copies among {report.images} images;"
        f" report in {settings.output}"
    )
    if settings.move_copies_to is not None:
        root = Path(args.library) if args.library else Path("/")
        manifest, skipped = move_copies(report, root, settings.move_copies_to)
        print(f"simclr dedup: moved copies to {settings.move_copies_to}; undo: --undo {manifest}")
        for line in skipped:
            print(f"  {line}")
    return 0
