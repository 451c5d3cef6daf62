"""Vector index benchmark: every index kind on clustered vectors, side by side with hnswlib.

Data: ``--n`` vectors (default 1,000,000) of ``--dim`` 128 from a seeded Gaussian mixture (1,000
clusters), plus 1,000 held-out queries from the same mixture; optionally real encoder embeddings
from a ``.npy`` file (``--embeddings``). For each kind it reports build time, bytes per vector,
recall@10 against exact search, and queries/s one at a time and in batches of 64 with 1 and 2
threads, at the search parameter the store's tuner picks for recall >= ``--target-recall``.
hnswlib is tuned the same way (efSearch) and measured with the same protocol. Finally the durable
add rate of a collection (SQLite WAL + fsync per batch of 1,000, then FAISS).

    python benchmarks/bench_index.py            # 1M vectors: ~15 minutes on 2 cores
    python benchmarks/bench_index.py --quick    # 50k vectors: under a minute
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import emit
from simclr_search.index.collection import CollectionConfig
from simclr_search.index.faiss_loader import configure_threads, faiss
from simclr_search.index.metadata import NewItem
from simclr_search.index.planner import default_nlist, exact_neighbours, recall_at_k, tune
from simclr_search.index.store import Store
from simclr_search.index.vector_index import IndexSpec, VectorIndex


def mixture(
    n: int, dim: int, clusters: int, seed: int, sample_seed: int | None = None
) -> np.ndarray:
    """``n`` points of a Gaussian mixture whose centres depend on ``seed`` only, the draws on ``sample_seed``."""
    centres = np.random.default_rng(seed).normal(size=(clusters, dim)).astype(np.float32) * 3
    rng = np.random.default_rng(seed if sample_seed is None else sample_seed)
    rng.normal(size=(clusters, dim))  # keep the default draws identical to the centres' stream
    labels = rng.integers(0, clusters, n)
    return (centres[labels] + rng.normal(size=(n, dim)).astype(np.float32)).astype(np.float32)


def qps(search, queries: np.ndarray, batch: int, limit: int) -> float:
    queries = queries[:limit]
    tick = time.perf_counter()
    for start in range(0, len(queries), batch):
        search(queries[start : start + batch])
    return len(queries) / (time.perf_counter() - tick)


def speeds(search, queries: np.ndarray, single_limit: int) -> dict[str, float]:
    out = {}
    for threads in (1, 2):
        faiss().omp_set_num_threads(threads)
        out[f"qps_single_{threads}t"] = qps(search, queries, 1, single_limit)
        out[f"qps_batch64_{threads}t"] = qps(search, queries, 64, len(queries))
    return out


def bench_faiss(
    kind: str, base, ids, queries, truth, k: int, target: float, single_limit: int
) -> dict:
    n, dim = base.shape
    spec = IndexSpec(
        kind=kind,
        nlist=default_nlist(n) if kind.startswith("ivf") else 0,
        hnsw_m=16,
        ef_construction=64,
    )
    faiss().omp_set_num_threads(2)
    tick = time.perf_counter()
    vi = VectorIndex(spec, dim, "l2")
    if vi.needs_training:
        sample = base[
            np.random.default_rng(0).choice(
                n, size=min(n, max(64 * spec.nlist, 50_000)), replace=False
            )
        ]
        vi.train(sample)
    vi.add(ids, base)
    build = time.perf_counter() - tick
    tuned = tune(vi, queries[:200], truth[:200], k, target)
    params = {tuned.param: tuned.value} if tuned.param else {}
    _, found = vi.search(queries, k, params=params)
    row = {
        "build_s": build,
        "bytes_per_vector": len(vi.serialize()) / n,
        "param": params,
        "recall_at_10": recall_at_k(found, truth),
    }
    row.update(speeds(lambda q: vi.search(q, k, params=params), queries, single_limit))
    return row


def bench_hnswlib(base, ids, queries, truth, k: int, target: float, single_limit: int) -> dict:
    import hnswlib

    n, dim = base.shape
    tick = time.perf_counter()
    index = hnswlib.Index(space="l2", dim=dim)
    index.init_index(max_elements=n, M=16, ef_construction=64, random_seed=0)
    index.set_num_threads(2)
    index.add_items(base, ids)
    build = time.perf_counter() - tick
    chosen = 1024
    for ef in (16, 32, 64, 128, 256, 512, 1024):
        index.set_ef(max(ef, k))
        found, _ = index.knn_query(queries[:200], k=k)
        if recall_at_k(found.astype(np.int64), truth[:200]) >= target:
            chosen = ef
            break
    index.set_ef(max(chosen, k))
    found, _ = index.knn_query(queries, k=k)
    path = Path(tempfile.mkdtemp()) / "hnswlib.bin"
    index.save_index(str(path))
    row = {
        "build_s": build,
        "bytes_per_vector": path.stat().st_size / n,
        "param": {"ef": chosen},
        "recall_at_10": recall_at_k(found.astype(np.int64), truth),
    }
    for threads in (1, 2):
        index.set_num_threads(threads)
        row[f"qps_single_{threads}t"] = qps(
            lambda q: index.knn_query(q, k=k), queries, 1, single_limit
        )
        row[f"qps_batch64_{threads}t"] = qps(
            lambda q: index.knn_query(q, k=k), queries, 64, len(queries)
        )
    return row


def durable_adds(dim: int, total: int, batch: int = 1000) -> float:
    root = Path(tempfile.mkdtemp(prefix="simclr-adds-"))
    store = Store(root)
    col = store.create(
        "bench", CollectionConfig(dim=dim, metric="l2", index="flat", snapshot_every=10**9)
    )
    vectors = mixture(total, dim, 100, seed=5)
    items = [
        NewItem(f"v{i}", vectors[i], uri=f"/img/{i}.jpg", content_hash=f"{i:016x}")
        for i in range(total)
    ]
    tick = time.perf_counter()
    for start in range(0, total, batch):
        col.add(items[start : start + batch])
    rate = total / (time.perf_counter() - tick)
    store.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument(
        "--kinds", nargs="+", default=["flat", "ivf_flat", "ivf_sq8", "ivf_pq", "hnsw"]
    )
    parser.add_argument(
        "--embeddings", help="optional .npy of real encoder embeddings (N, D) to use instead"
    )
    args = parser.parse_args()
    configure_threads(2)
    n = 50_000 if args.quick else args.n
    k = 10
    if args.embeddings:
        data = np.load(args.embeddings).astype(np.float32)
        rng = np.random.default_rng(0)
        order = rng.permutation(len(data))
        queries, base = data[order[: args.queries]], data[order[args.queries :]]
        n, dim, source = len(base), base.shape[1], f"embeddings {args.embeddings}"
    else:
        dim = args.dim
        base = mixture(n, dim, 1000, seed=0)
        queries = mixture(args.queries, dim, 1000, seed=0, sample_seed=99)  # held out: same centres
        source = f"Gaussian mixture, 1000 clusters, seed 0, {n} x {dim}"
    ids = np.arange(n, dtype=np.int64)
    print(f"data: {source}; queries: {len(queries)}; target recall@10 {args.target_recall}")
    tick = time.perf_counter()
    truth = exact_neighbours(ids, base, queries, k, "l2")
    print(f"exact ground truth: {time.perf_counter() - tick:.1f} s")
    single_limit = 100 if args.quick else 300
    results: dict[str, dict] = {}
    for kind in args.kinds:
        results[kind] = bench_faiss(
            kind, base, ids, queries, truth, k, args.target_recall, single_limit
        )
        print(_line(kind, results[kind]))
    try:
        results["hnswlib"] = bench_hnswlib(
            base, ids, queries, truth, k, args.target_recall, single_limit
        )
        print(_line("hnswlib", results["hnswlib"]))
    except ImportError:
        print("hnswlib is not installed (pip install hnswlib); skipped")
    exact = results.get("flat", {}).get("qps_batch64_2t")
    if exact:
        for row in results.values():
            row["speedup_vs_exact_batch64_2t"] = row["qps_batch64_2t"] / exact
    adds = durable_adds(dim, 20_000 if args.quick else 100_000)
    print(
        f"durable adds (SQLite WAL, fsync per 1,000-vector batch, then FAISS): {adds:,.0f} vectors/s"
    )
    emit(
        {
            "n": n,
            "dim": dim,
            "source": source,
            "target_recall": args.target_recall,
            "results": results,
            "durable_adds_per_s": adds,
            "quick": args.quick,
        }
    )


def _line(name: str, row: dict) -> str:
    return (
        f"{name:<9} build {row['build_s']:7.1f} s  {row['bytes_per_vector']:6.1f} B/vec  {row['param']}  "
        f"recall@10 {row['recall_at_10']:.3f}  q/s single 1t {row['qps_single_1t']:8.0f} 2t {row['qps_single_2t']:8.0f}"
        f"  batch64 1t {row['qps_batch64_1t']:8.0f} 2t {row['qps_batch64_2t']:8.0f}"
    )


if __name__ == "__main__":
    main()
