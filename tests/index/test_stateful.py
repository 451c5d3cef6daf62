"""Hypothesis stateful test: the store against a brute-force model through adds, upserts, deletes,
searches and reopens. With the exact index, results must agree exactly (ids and order)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from simclr_search.index.collection import CollectionConfig
from simclr_search.index.errors import InvalidArgument, NotFound
from simclr_search.index.metadata import NewItem
from simclr_search.index.store import Store

DIM = 4
ids = st.sampled_from([f"id{i}" for i in range(12)])
# Small integers keep ties impossible to confuse with float noise: distinct vectors, exact scores.
vectors = (
    st.lists(st.integers(-5, 5), min_size=DIM, max_size=DIM)
    .filter(any)
    .map(lambda v: np.asarray(v, dtype=np.float32))
)
albums = st.sampled_from(["x", "y"])


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="stateful-"))
        self.store = Store(self.root)
        self.col = self.store.create("c", CollectionConfig(dim=DIM, metric="l2", snapshot_every=3))
        self.model: dict[str, tuple[np.ndarray, str]] = {}

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.root, ignore_errors=True)

    @rule(key=ids, vector=vectors, album=albums)
    def add(self, key: str, vector: np.ndarray, album: str) -> None:
        if key in self.model:
            try:
                self.col.add([NewItem(key, vector, metadata={"album": album})])
            except InvalidArgument:
                return
            raise AssertionError("adding an existing id must fail")
        self.col.add([NewItem(key, vector, metadata={"album": album})])
        self.model[key] = (vector, album)

    @rule(key=ids, vector=vectors, album=albums)
    def upsert(self, key: str, vector: np.ndarray, album: str) -> None:
        self.col.upsert([NewItem(key, vector, metadata={"album": album})])
        self.model[key] = (vector, album)

    @rule(key=ids)
    def delete(self, key: str) -> None:
        if key in self.model:
            assert self.col.delete([key]) == 1
            del self.model[key]
        else:
            try:
                self.col.delete([key])
            except NotFound:
                return
            raise AssertionError("deleting an unknown id must fail")

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = Store(self.root)
        self.col = self.store.get("c")

    @rule()
    def crash_and_reopen(self) -> None:
        """Drop the process state without a final snapshot: replay must restore everything."""
        self.col.meta.close()
        self.store = Store(self.root)
        self.col = self.store.get("c")

    @rule(query=vectors, k=st.integers(1, 15), album=st.none() | albums)
    def search(self, query: np.ndarray, k: int, album: str | None) -> None:
        candidates = {key: v for key, (v, a) in self.model.items() if album is None or a == album}
        distances = {key: float(((v - query) ** 2).sum()) for key, v in candidates.items()}
        expected = sorted(distances, key=lambda key: (distances[key], key))[:k]
        flt = None if album is None else ("album", album)
        hits = self.col.search(query, k=k, filter=flt)[0]
        assert len(hits) == len(expected)
        got = [(h.external_id, round(h.score, 3)) for h in hits]
        assert sorted(round(s, 3) for _, s in got) == sorted(
            round(distances[e], 3) for e in expected
        )
        # Ids must match up to the order of exact ties.
        assert {key for key, s in got} - set(expected) <= {
            key
            for key in candidates
            if round(distances[key], 3) == round(distances[expected[-1]], 3)
        }

    @invariant()
    def counts_agree(self) -> None:
        assert self.col.count() == len(self.model)
        integrity = self.col.integrity()
        assert integrity["index_count"] == integrity["sqlite_count"] == len(self.model)


TestStore = StoreMachine.TestCase
TestStore.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
