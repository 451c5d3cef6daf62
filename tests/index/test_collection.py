"""Collections: operations, filters, every index kind's deletes, persistence, and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simclr_search.index.collection import MAX_K, CollectionConfig
from simclr_search.index.errors import AlreadyExists, IncompatibleSpace, InvalidArgument, NotFound
from simclr_search.index.metadata import NewItem
from simclr_search.index.store import Store
from simclr_search.index.vector_index import KINDS


def _vectors(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def _items(vectors: np.ndarray, prefix: str = "img") -> list[NewItem]:
    return [
        NewItem(
            f"{prefix}{i}",
            v,
            uri=f"/photos/{i}.jpg",
            content_hash=f"h{i}",
            metadata={"album": f"a{i % 4}", "n": i},
        )
        for i, v in enumerate(vectors)
    ]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "store")
    yield s
    s.close()


def test_add_get_search_delete_count(store: Store) -> None:
    col = store.create("photos", CollectionConfig(dim=16))
    vectors = _vectors(50)
    assert col.add(_items(vectors)) == [f"img{i}" for i in range(50)]
    assert col.count() == 50
    item = col.get(["img3"])[0]
    assert item.uri == "/photos/3.jpg" and item.metadata == {"album": "a3", "n": 3}
    np.testing.assert_allclose(item.vector, vectors[3] / np.linalg.norm(vectors[3]), rtol=1e-6)
    hits = col.search(vectors[3], k=5)[0]
    assert hits[0].external_id == "img3" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert col.delete(["img3"]) == 1
    assert "img3" not in [h.external_id for h in col.search(vectors[3], k=50)[0]]
    assert col.count() == 49


def test_upsert_replaces_vector_and_metadata(store: Store) -> None:
    col = store.create("c", CollectionConfig(dim=16))
    vectors = _vectors(10)
    col.add(_items(vectors))
    col.upsert([NewItem("img0", vectors[9], metadata={"album": "new"})])
    assert col.count() == 10
    assert col.get(["img0"])[0].metadata == {"album": "new"}
    top = [h.external_id for h in col.search(vectors[9], k=2)[0]]
    assert set(top) == {"img0", "img9"}
    with pytest.raises(InvalidArgument, match="already exists"):
        col.add([NewItem("img1", vectors[1])])


def test_filter_returns_k_matches_and_search_by_id(store: Store) -> None:
    col = store.create("c", CollectionConfig(dim=16))
    vectors = _vectors(200)
    col.add(_items(vectors))
    hits = col.search(vectors[0], k=10, filter=("album", "a1"))[0]
    assert len(hits) == 10
    assert all(h.metadata["album"] == "a1" for h in hits)
    assert col.search(vectors[0], k=10, filter=("n", 7))[0][0].external_id == "img7"
    assert col.search(vectors[0], k=10, filter=("album", "none"))[0] == []
    similar = col.search_by_id("img5", k=3)
    assert len(similar) == 3 and "img5" not in [h.external_id for h in similar]
    with pytest.raises(InvalidArgument, match="filter field"):
        col.search(vectors[0], k=3, filter=("album'; DROP TABLE items; --", "x"))


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_metrics_rank_like_brute_force(store: Store, metric: str) -> None:
    col = store.create(f"m-{metric}", CollectionConfig(dim=16, metric=metric))
    vectors = _vectors(100)
    col.add(_items(vectors))
    query = _vectors(1, seed=9)[0]
    base = (
        vectors / np.linalg.norm(vectors, axis=1, keepdims=True) if metric == "cosine" else vectors
    )
    q = query / np.linalg.norm(query) if metric == "cosine" else query
    if metric == "l2":
        expected = np.argsort(((base - q) ** 2).sum(1))[:5]
    else:
        expected = np.argsort(-(base @ q))[:5]
    assert [h.external_id for h in col.search(query, k=5)[0]] == [f"img{i}" for i in expected]


@pytest.mark.parametrize("kind", KINDS)
def test_deletes_really_delete_for_every_index_kind(store: Store, kind: str) -> None:
    col = store.create(kind, CollectionConfig(dim=16, index="flat"))
    vectors = _vectors(3000, seed=1)
    col.add(_items(vectors))
    col.rebuild(kind)
    assert col.stats()["index"]["kind"] == kind
    doomed = [f"img{i}" for i in range(0, 3000, 7)]
    col.delete(doomed)
    found = {h.external_id for row in col.search(vectors[:300:7], k=20) for h in row}
    assert not found & set(doomed)
    assert col.integrity()["index_count"] == col.count() == 3000 - len(doomed)
    # The same holds after reopening from the snapshot.
    store.close()
    reopened = Store(store.root).get(kind)
    assert reopened.integrity()["index_count"] == 3000 - len(doomed)
    assert reopened.stats()["index"]["kind"] == kind
    assert not {h.external_id for h in reopened.search(vectors[0], k=50)[0]} & set(doomed)
    reopened.close()


def test_restart_keeps_everything_and_replays_unsnapshotted_changes(tmp_path: Path) -> None:
    store = Store(tmp_path)
    col = store.create("c", CollectionConfig(dim=16))
    col.add(_items(_vectors(20)))
    col.snapshot()
    col.add(_items(_vectors(5, seed=2), prefix="late"))
    col.delete(["img0"])
    # Simulate a crash: no close(), so no snapshot of the last changes.
    col.meta.close()
    again = Store(tmp_path).get("c")
    assert again.count() == 24
    assert again.integrity() == {"sqlite": "ok", "sqlite_count": 24, "index_count": 24}
    assert again.search(_vectors(5, seed=2)[1], k=1)[0][0].external_id == "late1"
    again.close()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "delete"])
def test_corrupt_or_missing_index_file_is_rebuilt_from_sqlite(tmp_path: Path, damage: str) -> None:
    store = Store(tmp_path)
    col = store.create("c", CollectionConfig(dim=16))
    vectors = _vectors(40)
    col.add(_items(vectors))
    store.close()
    path = tmp_path / "c" / "index.faiss"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "garbage":
        data = bytearray(path.read_bytes())
        data[-10:] = b"\x00" * 10
        path.write_bytes(bytes(data))
    else:
        path.unlink()
    again = Store(tmp_path).get("c")
    assert again.integrity()["index_count"] == 40
    assert again.search(vectors[7], k=1)[0][0].external_id == "img7"
    again.close()


def test_bad_inputs_are_clear_errors_and_change_nothing(store: Store) -> None:
    col = store.create("c", CollectionConfig(dim=16))
    col.add(_items(_vectors(5)))
    cases = [
        (lambda: col.add([NewItem("x", np.zeros(8))]), "dimension 8"),
        (lambda: col.add([NewItem("x", np.full(16, np.nan))]), "NaN"),
        (lambda: col.add([NewItem("x", np.full(16, np.inf))]), "NaN or infinite"),
        (lambda: col.add([NewItem("x", np.zeros(16))]), "all-zero"),
        (lambda: col.add([NewItem("x", ["a"] * 16)]), "numbers"),
        (lambda: col.add([NewItem("d", np.ones(16)), NewItem("d", np.ones(16))]), "twice"),
        (lambda: col.add([NewItem("", np.ones(16))]), "non-empty"),
        (lambda: col.search(np.ones(16), k=0), "k must be"),
        (lambda: col.search(np.ones(16), k=10**9), "k must be"),
        (lambda: col.search(np.ones(3), k=1), "dimension 16"),
    ]
    for call, message in cases:
        with pytest.raises(InvalidArgument, match=message):
            call()
    with pytest.raises(NotFound, match="unknown ids"):
        col.get(["nope"])
    with pytest.raises(NotFound, match="unknown ids"):
        col.delete(["img1", "nope"])
    assert col.count() == 5, "a rejected delete deletes nothing"
    assert col.integrity() == {"sqlite": "ok", "sqlite_count": 5, "index_count": 5}
    assert col.search(np.ones(16), k=MAX_K)[0][-1].external_id.startswith("img")


def test_store_names_and_collections(store: Store) -> None:
    store.create("a", CollectionConfig(dim=4))
    assert store.create("a", CollectionConfig(dim=4), exist_ok=True) is store.get("a")
    with pytest.raises(AlreadyExists):
        store.create("a", CollectionConfig(dim=8), exist_ok=True)
    store.create("s", CollectionConfig(dim=4, space="model 1"))
    assert store.create("s", CollectionConfig(dim=4, space="model 1"), exist_ok=True)
    with pytest.raises(IncompatibleSpace, match="holds vectors of 'model 1', not of 'model 2'"):
        store.create("s", CollectionConfig(dim=4, space="model 2"), exist_ok=True)
    store.drop("s")
    # Made before spaces were recorded: an empty collection takes the caller's label, for good.
    store.create("old", CollectionConfig(dim=4))
    assert (
        store.create("old", CollectionConfig(dim=4, space="m"), exist_ok=True).config.space == "m"
    )
    store.close()
    reopened = Store(store.root)
    with pytest.raises(IncompatibleSpace):
        reopened.create("old", CollectionConfig(dim=4, space="other"), exist_ok=True)
    reopened.drop("old")
    store = reopened
    for bad in ["../etc", "", "a/b", ".hidden"]:
        with pytest.raises(InvalidArgument, match="collection name"):
            store.create(bad, CollectionConfig(dim=4))
    with pytest.raises(NotFound, match="does not exist"):
        store.get("missing")
    with pytest.raises(InvalidArgument, match="metric"):
        store.create("b", CollectionConfig(dim=4, metric="hamming"))
    assert store.list() == ["a"]
    store.drop("a")
    assert store.list() == []


def test_auto_index_switches_to_an_approximate_index_at_scale(tmp_path: Path) -> None:
    store = Store(tmp_path)
    col = store.create(
        "auto", CollectionConfig(dim=16, memory_budget_bytes=500_000, exact_below=2000)
    )
    vectors = _vectors(2500, seed=3)
    for start in range(0, 2500, 500):
        col.add(_items(vectors[start : start + 500], prefix=f"b{start}-"))
    assert col.wait_for_rebuild(timeout=60)
    stats = col.stats()
    assert stats["index"]["kind"] == "ivf_sq8"
    assert stats["index"]["params"]["nprobe"] >= 1
    assert col.integrity()["index_count"] == 2500
    store.close()


@pytest.mark.parametrize("snapshot_every", [100_000, 300])
def test_writes_during_a_background_rebuild_are_caught_up_and_survive_a_restart(
    tmp_path: Path, snapshot_every: int
) -> None:
    """The re-plan at ``exact_below`` builds in a thread while adds, upserts and deletes go on; the
    swapped-in index must hold exactly SQLite's items whatever the interleaving, also after reopening
    (with snapshots written during the build too: the rebuilt index must replace them on disk)."""
    store = Store(tmp_path)
    col = store.create(
        "grow",
        CollectionConfig(
            dim=16, memory_budget_bytes=500_000, exact_below=2000, snapshot_every=snapshot_every
        ),
    )
    vectors = _vectors(4000, seed=5)
    col.add(_items(vectors[:2000], prefix="a"))  # reaches exact_below: the rebuild starts
    for start in range(2000, 4000, 100):  # these race with it
        col.add(_items(vectors[start : start + 100], prefix=f"c{start}-"))
        col.delete([f"a{start - 2000}"])
        col.upsert([NewItem(f"a{start - 1950}", vectors[start] * -1)])
    assert col.wait_for_rebuild(timeout=120)
    check = {
        "deleted": [f"a{i}" for i in range(0, 2000, 100)],
        "live": [f"c{s}-{j}" for s in range(2000, 4000, 700) for j in (0, 99)] + ["a1", "a1999"],
    }

    def verify(c) -> None:
        assert c.stats()["index"]["kind"] == "ivf_sq8"
        integrity = c.integrity()
        assert integrity["index_count"] == integrity["sqlite_count"] == 4000 - 20
        for item_id in check["live"]:
            item = c.get([item_id])[0]
            assert c.search(item.vector, k=1)[0][0].external_id == item_id
        for item_id in check["deleted"]:
            with pytest.raises(NotFound):
                c.get([item_id])
        replaced = c.get(["a50"])[0]
        assert np.allclose(replaced.vector, -vectors[2000] / np.linalg.norm(vectors[2000]))
        assert c.search(replaced.vector, k=1)[0][0].external_id == "a50"

    verify(col)
    store.close()
    reopened = Store(tmp_path)
    verify(reopened.get("grow"))
    reopened.close()


def test_replay_after_a_crash_handles_an_item_added_and_deleted_since_the_snapshot(
    tmp_path: Path,
) -> None:
    """Log after the snapshot: add X, delete Z (in the snapshot), delete X; then a crash. In-order
    replay used to fetch X's vector after its delete (gone) and then fail to remove it."""
    store = Store(tmp_path)
    col = store.create("c", CollectionConfig(dim=16))
    vectors = _vectors(12, seed=7)
    col.add(_items(vectors[:10]))
    col.snapshot()
    col.add([NewItem("x", vectors[10])])
    col.delete(["img3"])
    col.delete(["x"])
    col.add([NewItem("y", vectors[11])])
    col.meta.close()  # a crash: no snapshot at close, the next open replays the log
    reopened = Store(tmp_path)
    col = reopened.get("c")
    integrity = col.integrity()
    assert integrity["index_count"] == integrity["sqlite_count"] == 10
    assert col.search(vectors[11], k=1)[0][0].external_id == "y"
    assert all(h.external_id not in {"x", "img3"} for h in col.search(vectors[3], k=10)[0])
    reopened.close()


def test_a_snapshot_taken_during_a_rebuild_is_replaced_by_the_rebuilt_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A snapshot written while the re-plan builds (same seq as the install: no writes between) once
    kept the old flat index on disk under the new spec. The build is held until the snapshot is
    written, to force that interleaving."""
    import threading

    import simclr_search.index.collection as collection_module
    from simclr_search.index.snapshot import read_snapshot

    release = threading.Event()
    real_build = collection_module.build_from_sqlite

    def held_build(*args, **kwargs):
        assert release.wait(60)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(collection_module, "build_from_sqlite", held_build)
    store = Store(tmp_path)
    col = store.create(
        "grow", CollectionConfig(dim=16, memory_budget_bytes=500_000, exact_below=2000)
    )
    col.add(_items(_vectors(2000, seed=8)))  # the re-plan starts, and waits
    col.add(_items(_vectors(100, seed=9), prefix="late"))
    col.snapshot()  # the flat index, at the seq the install will also have
    release.set()
    assert col.wait_for_rebuild(timeout=60)
    header = read_snapshot(tmp_path / "grow" / "index.faiss").header
    assert header["spec"]["kind"] == "ivf_sq8" and header["count"] == 2100
    store.close()
    reopened = Store(tmp_path)
    assert reopened.get("grow").stats()["index"]["kind"] == "ivf_sq8"
    reopened.close()


def test_close_right_after_a_replan_starts_loses_nothing_and_open_replans(tmp_path: Path) -> None:
    store = Store(tmp_path)
    col = store.create(
        "grow", CollectionConfig(dim=16, memory_budget_bytes=500_000, exact_below=2000)
    )
    col.add(_items(_vectors(2000, seed=6)))  # starts the re-plan ...
    store.close()  # ... which close does not wait for
    reopened = Store(tmp_path)
    col = reopened.get("grow")
    assert col.wait_for_rebuild(timeout=120)
    assert col.stats()["index"]["kind"] == "ivf_sq8"
    assert col.integrity()["index_count"] == col.integrity()["sqlite_count"] == 2000
    reopened.close()


def test_unwritable_disk_is_a_storage_failure_and_loses_nothing(tmp_path: Path) -> None:
    import os

    from simclr_search.index.errors import StorageFailure

    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions; covered by the full-disk test")
    store = Store(tmp_path)
    col = store.create("c", CollectionConfig(dim=4))
    col.add([NewItem("a", np.ones(4))])
    os.chmod(tmp_path / "c" / "meta.sqlite", 0o444)
    try:
        with pytest.raises(StorageFailure):
            col.add([NewItem("b", np.ones(4))])
    finally:
        os.chmod(tmp_path / "c" / "meta.sqlite", 0o644)
    assert col.count() == 1


def test_planner_choice_follows_size_and_memory_budget() -> None:
    from simclr_search.index.planner import choose_spec

    assert choose_spec(10_000, 128).kind == "flat"
    assert choose_spec(1_000_000, 128).kind == "ivf_sq8"
    small = choose_spec(
        1_000_000, 128, memory_budget_bytes=100 << 20
    )  # 144 MB of SQ8 codes do not fit
    assert small.kind == "ivf_pq" and small.pq_m == 64 and small.nlist == 4000


def test_closing_the_metadata_store_leaves_a_query_another_thread_is_running(
    tmp_path: Path,
) -> None:
    """Closing a SQLite connection under a running query crashes the process: close() must leave
    a live thread's reader alone (a background rebuild still reading when a collection closed
    took CI down), and every query after close() must raise instead."""
    import sqlite3
    import threading
    import time

    from simclr_search.index.metadata import MetadataStore

    meta = MetadataStore(tmp_path / "meta.sqlite")
    running, result = threading.Event(), {}

    def long_read() -> None:
        conn = meta._reader()
        running.set()
        result["rows"] = conn.execute(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) "
            "SELECT count(*) FROM c"
        ).fetchone()[0]
        try:
            meta.count()
        except sqlite3.ProgrammingError as exc:
            result["after"] = exc

    reader = threading.Thread(target=long_read)
    reader.start()
    running.wait(10)
    time.sleep(0.05)  # inside the query now
    meta.close()
    reader.join(60)
    assert result["rows"] == 3_000_000
    assert isinstance(result.get("after"), sqlite3.ProgrammingError)
    with pytest.raises(sqlite3.ProgrammingError):
        meta.count()


def test_signatures_come_back_with_hits_survive_restart_and_old_stores_gain_the_column(
    tmp_path: Path,
) -> None:
    import sqlite3

    store = Store(tmp_path)
    col = store.create("c", CollectionConfig(dim=16))
    vectors = _vectors(3)
    col.add(_items(vectors[:1], prefix="old"))
    store.close()
    # A store written before signatures existed: drop the column, as that version had none.
    with sqlite3.connect(tmp_path / "c" / "meta.sqlite") as conn:
        conn.execute("ALTER TABLE items DROP COLUMN signature")
    col = Store(tmp_path).get("c")
    col.add([NewItem("new", vectors[1], signature=b"\x01\x02\x03")])
    col.add([NewItem("none", vectors[2])])
    hits = {h.external_id: h for h in col.search(vectors[1], k=3)[0]}
    assert hits["new"].signature == b"\x01\x02\x03"
    assert hits["old0"].signature == b"" and hits["none"].signature == b""
    col.close()
    again = Store(tmp_path).get("c")
    assert again.search(vectors[1], k=1)[0][0].signature == b"\x01\x02\x03"
    assert again.get(["new"])[0].signature == b"\x01\x02\x03"
    again.close()


def test_a_signature_that_is_not_short_bytes_is_refused_and_nothing_is_written(
    store: Store,
) -> None:
    col = store.create("c", CollectionConfig(dim=16))
    vector = _vectors(1)[0]
    from simclr_search.index.collection import MAX_SIGNATURE_BYTES

    for bad in ["text", b"x" * (MAX_SIGNATURE_BYTES + 1)]:
        with pytest.raises(InvalidArgument, match="signature of id 'a' must be bytes"):
            col.add([NewItem("ok", vector), NewItem("a", vector, signature=bad)])
    assert col.count() == 0


def test_two_openers_upgrading_an_old_store_at_once_both_succeed(tmp_path: Path) -> None:
    """The column is added by whichever opener gets there first; the other, whose look at the
    table came before that, must not fail on adding it again."""
    import sqlite3

    from simclr_search.index.metadata import MetadataStore, _add_missing_columns

    store = Store(tmp_path)
    store.create("c", CollectionConfig(dim=16)).add(_items(_vectors(2)))
    store.close()
    path = tmp_path / "c" / "meta.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE items DROP COLUMN signature")
    late = sqlite3.connect(path)
    stale = late.execute("PRAGMA table_info(items)").fetchall()  # no signature column yet
    MetadataStore(path).close()  # the other opener adds it

    class StaleLook:  # the late opener acts on what it saw before
        def execute(self, sql: str, *args):
            return iter(stale) if sql.startswith("PRAGMA table_info") else late.execute(sql, *args)

    _add_missing_columns(StaleLook())  # type: ignore[arg-type]
    late.close()
    again = Store(tmp_path).get("c")
    assert again.count() == 2
    again.close()
