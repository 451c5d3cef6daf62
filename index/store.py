"""A folder of collections: ``<root>/<name>/meta.sqlite`` + ``<root>/<name>/index.faiss``.

The store opens each collection once and hands out the same object to every caller, so one
process holds one writer per collection.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
from pathlib import Path
from typing import Any

from simclr_search.index.collection import Collection, CollectionConfig
from simclr_search.index.errors import AlreadyExists, IncompatibleSpace, InvalidArgument, NotFound

log = logging.getLogger("simclr.index")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or name in {".", ".."}:
        raise InvalidArgument(
            f"collection name {name!r} must be 1-128 letters, digits, '_', '.', '-' and start with a letter or digit"
        )
    return name


class Store:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._open: dict[str, Collection] = {}
        self._lock = threading.Lock()

    def list(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if (p / "meta.sqlite").exists())

    def create(self, name: str, config: CollectionConfig, exist_ok: bool = False) -> Collection:
        check_name(name)
        with self._lock:
            folder = self.root / name
            if (folder / "meta.sqlite").exists():
                existing = self._get_locked(name)
                theirs = existing.config.space
                if exist_ok and not theirs and config.space:
                    self._adopt_space(existing, name, config.space)
                elif exist_ok and theirs and config.space and theirs != config.space:
                    raise IncompatibleSpace(
                        f"collection {name!r} holds vectors of {theirs!r}, not of {config.space!r}:"
                        " searching it with this model would return meaningless neighbours;"
                        " index into another store or collection, or serve the model it was"
                        " built with"
                    )
                same = (existing.config.dim, existing.config.metric) == (config.dim, config.metric)
                if exist_ok and same:
                    return existing
                raise AlreadyExists(
                    f"collection {name!r} exists (dim {existing.config.dim}, metric {existing.config.metric})"
                )
            collection = Collection.create(folder, config)
            self._open[name] = collection
            return collection

    @staticmethod
    def _adopt_space(collection: Collection, name: str, space: str) -> None:
        """A collection from before spaces were recorded: label it if empty, else say we cannot tell."""
        if collection.count() == 0:
            collection.set_space(space)
            return
        log.warning(
            "collection %r records no embedding space (made before spaces were recorded); assuming"
            " its %d vectors come from %s. If they do not, search returns meaningless neighbours:"
            " index into a new store.",
            name,
            collection.count(),
            space,
        )

    def get(self, name: str) -> Collection:
        check_name(name)
        with self._lock:
            return self._get_locked(name)

    def _get_locked(self, name: str) -> Collection:
        if name not in self._open:
            folder = self.root / name
            if not (folder / "meta.sqlite").exists():
                raise NotFound(f"collection {name!r} does not exist; known: {self.list()}")
            self._open[name] = Collection.open(folder)
        return self._open[name]

    def drop(self, name: str) -> None:
        check_name(name)
        with self._lock:
            collection = self._open.pop(name, None)
            if collection is not None:
                collection.meta.close()
            folder = self.root / name
            if not folder.exists():
                raise NotFound(f"collection {name!r} does not exist")
            shutil.rmtree(folder)

    def stats(self) -> dict[str, Any]:
        return {name: self.get(name).stats() for name in self.list()}

    def close(self) -> None:
        with self._lock:
            for collection in self._open.values():
                collection.close()
            self._open.clear()
