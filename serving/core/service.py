"""What the service does, free of gRPC: embed, search, upsert, delete, get, index, info.

The servicer (``servicer.py``) converts protos to these calls and back. Work that blocks runs off the
event loop: image decoding in a small thread pool (``request_images.py``), inference in the
micro-batcher's thread, Denoise and Reconstruct in a thread of their own (``image_models.py``),
SQLite and FAISS in the store's thread pool. The core never imports torch: models come from the
bundle's ONNX files, vectors live in ``index``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from simclr_search.bundle.manifest import Manifest, load_manifest
from simclr_search.bundle.preprocess import normalize, pool_tiles
from simclr_search.bundle.runtime import Decoder, Denoiser, Encoder
from simclr_search.index.checks import (
    MAX_K,
    check_ids,
    check_uri,
)
from simclr_search.index.collection import CollectionConfig
from simclr_search.index.errors import InvalidArgument
from simclr_search.index.faiss_loader import configure_threads
from simclr_search.index.hits import Hit
from simclr_search.index.metadata import Item, NewItem
from simclr_search.index.store import Store
from simclr_search.serving.core.batcher import MicroBatcher
from simclr_search.serving.core.config import ServiceConfig
from simclr_search.serving.core.copy_scores import CopyCalibration
from simclr_search.serving.core.copy_search import CopyHit, CopySearch, stored_vectors
from simclr_search.serving.core.dedup import DuplicateFinder, DuplicateGroup
from simclr_search.serving.core.errors import BadRequest, InvalidImage
from simclr_search.serving.core.image_models import ImageModels
from simclr_search.serving.core.local_features import VOTE_DISTANCE, VOTE_RATIO
from simclr_search.serving.core.request_images import RequestImages, tile_signatures
from simclr_search.serving.core.signature import vote_codes
from simclr_search.serving.core.tie_break import (
    CANDIDATES,
    SIGNATURE_BYTES,
    near_tie_order,
)
from simclr_search.serving.core.writes import (
    IndexOutcome,
    UpsertInput,
    parse_metadata,
    runs_without_repeats,
)

log = logging.getLogger(__name__)
VERSION = "0.1.0"
#: Most nearest neighbours one FindDuplicates call may compare each item with.
MAX_DEDUP_NEIGHBOURS = 256


class SearchService:
    """What the RPCs do, with no transport: models, micro-batching, the store.

    Args:
        config: paths, limits and thread counts.
        on_batch: optional ``on_batch(rows, seconds)`` after every encoder call (the server's
            metrics: batch sizes, and encoder busy time, whose rate is the encoder's utilisation).
    """

    def __init__(
        self, config: ServiceConfig, on_batch: Callable[[int, float], None] | None = None
    ) -> None:
        self.config = config
        self.on_batch = on_batch
        self.manifest: Manifest | None = None
        self.encoder: Encoder | None = None
        self.images: ImageModels | None = None
        self.requests: RequestImages | None = None
        self.batcher: MicroBatcher | None = None
        self.store: Store | None = None
        self._store_pool = ThreadPoolExecutor(2, thread_name_prefix="store")
        self.duplicates: DuplicateFinder | None = None
        self._dedup_lock = asyncio.Lock()  # one whole-collection job at a time: it uses every core
        self.ready = False

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load and verify the bundle, open the store; the server reports SERVING only after this."""
        loop = asyncio.get_running_loop()
        configure_threads(self.config.faiss_threads)
        await loop.run_in_executor(None, self._load_models)
        self.batcher.start()
        await loop.run_in_executor(None, self._open_store)
        self.ready = True
        log.info(
            "ready: bundle %s (%s), store %s, providers %s, encoder lanes %d",
            self.config.bundle,
            self.manifest.data["model"],
            self.config.store,
            self.encoder.providers,
            len(self.batcher.lanes),
        )

    def _load_models(self) -> None:
        """The bundle's ONNX sessions, the request decoder and the micro-batcher (not started)."""
        cfg = self.config
        self.manifest = load_manifest(cfg.bundle)
        self.encoder = Encoder(self.manifest, cfg.int8, cfg.device, cfg.ort_threads)
        lanes = self._lane_count()
        narrow = None
        if lanes > 1:  # one single-threaded session: concurrent runs each use the calling thread
            narrow = Encoder(self.manifest, cfg.int8, cfg.device, 1)
        decoder = denoiser = None
        if self.manifest.has("decoder"):
            decoder = Decoder(self.manifest, cfg.device, cfg.ort_threads)
        if self.manifest.has("denoiser"):
            denoiser = Denoiser(self.manifest, cfg.device, cfg.ort_threads, cfg.denoise_ensemble)
        self.images = ImageModels(
            cfg.bundle,
            denoiser,
            decoder,
            cfg.limits,
            cfg.max_denoise_pixels,
            self.manifest.embedding_dim,
        )
        self.requests = RequestImages(
            self.manifest.input_size, cfg.limits, cfg.decode_threads, cfg.max_request_images
        )
        self.copies = None
        calibration = CopyCalibration.load(cfg.bundle)
        self.duplicates = DuplicateFinder(
            calibration.pairs if calibration is not None else None, threads=cfg.decode_threads
        )
        if cfg.copy_detection:
            self.copies = CopySearch(
                self.requests, self.embed_pixels, calibration, cfg.tie_break_margin
            )
        self.batcher = MicroBatcher(
            self._encode_pixels,
            cfg.max_batch,
            cfg.max_wait_ms,
            self.on_batch,
            cfg.encoder_streams,
            [lambda pixels: self._encode_pixels(pixels, narrow)] * lanes if narrow else (),
        )

    def _open_store(self) -> None:
        """Open the store and the default collection (created on first start): the embedded one,
        or with ``ray`` set, sharded collections in Ray actors (``index.ray_shards``)."""
        if self.config.ray:
            from simclr_search.index.ray_shards import ShardedStore  # the [ray] extra

            self.store = ShardedStore(self.config.store, self.config.shards, self.config.ray)
        else:
            self.store = Store(self.config.store)
        self.store.create(
            self.config.default_collection,
            CollectionConfig(
                dim=self.manifest.embedding_dim,
                metric=self.config.metric,
                space=self.manifest.embedding_space,
            ),
            exist_ok=True,
        )

    async def stop(self) -> None:
        """Finish queued inference, snapshot every collection, release threads."""
        self.ready = False
        if self.batcher is not None:
            await self.batcher.stop()
        if self.store is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.store.close)
        for pool in (self.requests, self.images):
            if pool is not None:
                pool.close()
        self._store_pool.shutdown(wait=True)

    async def _store(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._store_pool, fn, *args)

    def _collection(self, name: str):
        return self.store.get(name or self.config.default_collection)

    def _lane_count(self) -> int:
        """How many single-threaded encoder lanes the batcher gets for a backlog (0: none)."""
        lanes = self.config.encoder_lanes
        if lanes != "auto":
            return int(lanes)
        if self.encoder.providers[0] != "CPUExecutionProvider":
            return 0  # a GPU runs one big batch best
        return self.config.ort_threads or os.cpu_count() or 1

    # -- embeddings -------------------------------------------------------------------------------
    def _encode_pixels(self, pixels: np.ndarray, encoder: Encoder | None = None) -> np.ndarray:
        """``(B, S, S, 3)`` uint8 -> ``(B, D)`` with ``encoder`` (default: the multi-threaded one),
        in the batcher's threads: normalising there, once per batch, keeps ~15 us per image off the
        event loop, which serves every call's messages."""
        encoder = encoder or self.encoder
        return encoder(normalize(pixels, self.manifest.mean, self.manifest.std))

    async def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """``(n, S, S, 3)`` uint8 -> ``(n, D)`` embeddings through the micro-batcher."""
        return await self.batcher(pixels)

    async def embed_tiles(self, tiles: list[np.ndarray]) -> np.ndarray:
        """Each picture's ``(T, S, S, 3)`` tiles -> its ``(D,)`` vector, ``(n, D)``: the tiles'
        embeddings pooled (``bundle.preprocess.pool_tiles``)."""
        vectors = await self.embed_pixels(np.concatenate(tiles))
        return pool_tiles(vectors, [len(t) for t in tiles], self.manifest.normalized)

    async def embed(self, images: list[bytes]) -> np.ndarray:
        """Encoded images -> ``(n, D)`` embeddings; the first bad image fails the call."""
        return await self.embed_tiles(await self.requests.decode(images))

    # -- search -----------------------------------------------------------------------------------
    def _check_k(self, k: int) -> None:
        limit = min(self.config.max_k, MAX_K)
        if k <= 0 or k > limit:
            raise BadRequest(f"k must be in 1..{limit}, got {k}")

    async def search(
        self,
        collection: str,
        k: int,
        image: bytes | None = None,
        vector: np.ndarray | None = None,
        item_id: str | None = None,
        filter: tuple[str, Any] | None = None,
    ) -> list[Hit] | list[CopyHit]:
        """Hits for an image (as :class:`CopyHit` with copy detection on), a vector or a stored id."""
        self._check_k(k)
        col = self._collection(collection)
        if item_id is not None:
            return await self._store(lambda: col.search_by_id(item_id, k, filter))
        if image is not None and self.copies is not None:
            return await self.copies.search(
                image,
                k,
                lambda vectors, n: self._store(lambda: col.search(vectors, n, filter)),
                lambda ids: self._store(lambda: stored_vectors(col, ids)),
                lambda codes, n: self._store(
                    lambda: col.vote(codes, n, VOTE_DISTANCE, VOTE_RATIO, filter)
                ),
            )
        signature = b""
        if image is not None:
            tiles = await self.requests.decode([image])
            vector = (await self.embed_tiles(tiles))[0]
            if self.config.tie_break_margin > 0:
                signature = tile_signatures(tiles)[0]
        if vector is None:
            raise BadRequest("a search needs an image, a vector or a stored id")
        fetch = min(max(k, CANDIDATES), MAX_K) if signature else k
        hits = (await self._store(lambda: col.search(vector, fetch, filter)))[0]
        if signature:
            order = near_tie_order(
                np.array([h.score for h in hits]),
                signature,
                [h.signature for h in hits],
                self.config.tie_break_margin,
                larger_is_nearer=col.config.metric != "l2",
            )
            hits = [hits[i] for i in order]
        return hits[:k]

    # -- writes -----------------------------------------------------------------------------------
    async def upsert(self, collection: str, items: list[UpsertInput]) -> list[str]:
        if not items:
            raise BadRequest("no items in the request")
        col = self._collection(collection)
        with_images = [i for i, item in enumerate(items) if item.image is not None]
        vectors: dict[int, np.ndarray] = {}
        thumbs: dict[int, bytes] = {}
        if with_images:
            tiles, signed = await self._decode_for_index([items[i].image for i in with_images])
            vectors.update(zip(with_images, await self.embed_tiles(tiles), strict=True))
            thumbs.update(zip(with_images, signed, strict=True))
        new_items = []
        for i, item in enumerate(items):
            vector = vectors.get(i, item.embedding)
            if vector is None:
                raise BadRequest(f"item {item.id!r} has neither an image nor an embedding")
            digest = hashlib.sha256(item.image).hexdigest() if item.image is not None else ""
            new_items.append(
                NewItem(
                    item.id,
                    np.asarray(vector, dtype=np.float32),
                    item.uri,
                    digest,
                    item.metadata,
                    thumbs.get(i, b""),
                    vote_codes(thumbs.get(i, b"")),
                )
            )
        return await self._store(col.upsert, new_items)

    async def _decode_for_index(self, images: list[bytes]) -> tuple[list[np.ndarray], list[bytes]]:
        """Images -> each one's ``(T, S, S, 3)`` tiles to embed and the signatures to store; the
        first bad image fails the call (as :meth:`RequestImages.decode`)."""
        self.requests.check_count(images)
        decoded = await self._decode_each_for_index(images)
        for i, result in enumerate(decoded):
            if isinstance(result, Exception):
                raise InvalidImage(f"image {i}: {result}") if len(images) > 1 else result
        return [tiles for tiles, _ in decoded], [signature for _, signature in decoded]

    async def delete(self, collection: str, ids: list[str], ignore_missing: bool) -> int:
        if not ids:
            raise BadRequest("no ids in the request")
        col = self._collection(collection)
        return await self._store(lambda: col.delete(ids, missing_ok=ignore_missing))

    async def get(self, collection: str, ids: list[str]) -> list[Item]:
        if not ids:
            raise BadRequest("no ids in the request")
        col = self._collection(collection)
        return await self._store(col.get, ids)

    async def index_images(
        self, collection: str, batch: list[tuple[str, bytes, str, str]]
    ) -> list[IndexOutcome]:
        """Index ``(id, image bytes, uri, metadata_json)``; duplicates by content hash are skipped.

        Per-item results: a bad image, id, uri or metadata fails only itself. An id sent twice is
        indexed in order (the later replaces the earlier), as two separate calls would do.
        """
        col = self._collection(collection)
        outcomes: list[IndexOutcome] = []
        for run in runs_without_repeats(batch):
            outcomes.extend(await self._index_run(col, run))
        return outcomes

    async def _index_run(self, col, batch: list[tuple[str, bytes, str, str]]) -> list[IndexOutcome]:
        hashes = [hashlib.sha256(data).hexdigest() for _, data, _, _ in batch]
        # Signed only: an image indexed before thumbnails were stored counts as new, so indexing the
        # library again gives it one (re-embedding it once) instead of skipping it for good.
        # With copy detection, an item indexed before local features (a thumbnail alone) counts as
        # new too, and gets them.
        least = SIGNATURE_BYTES + 1 if self.copies is not None else 1
        known = await self._store(col.known_hashes, hashes, True, least)
        outcomes: list[IndexOutcome | None] = [None] * len(batch)
        fresh: list[tuple[int, str, dict[str, Any]]] = []
        for i, ((item_id, _, uri, meta_text), digest) in enumerate(zip(batch, hashes, strict=True)):
            item_id = item_id or digest
            try:
                check_ids([item_id])
                check_uri(uri, item_id)
                metadata = parse_metadata(meta_text, item_id)
            except (InvalidArgument, BadRequest) as exc:
                outcomes[i] = IndexOutcome(item_id, "failed", str(exc), digest)
                continue
            if digest in known:
                outcomes[i] = IndexOutcome(item_id, "duplicate", "", digest)
            else:
                known.add(digest)  # a second copy inside this batch is a duplicate too
                fresh.append((i, item_id, metadata))
        decoded = await self._decode_each_for_index([batch[i][1] for i, _, _ in fresh])
        todo = []
        for (i, item_id, metadata), result in zip(fresh, decoded, strict=True):
            if isinstance(result, Exception):
                outcomes[i] = IndexOutcome(item_id, "failed", str(result), hashes[i])
                continue
            todo.append((i, item_id, result, batch[i][2], hashes[i], metadata))
        if todo:
            vectors = await self.embed_tiles([t[2][0] for t in todo])
            items = [
                NewItem(item_id, v, uri, digest, metadata, signature, vote_codes(signature))
                for (_, item_id, (_, signature), uri, digest, metadata), v in zip(
                    todo, vectors, strict=True
                )
            ]
            await self._store(col.upsert, items)
            for i, item_id, *_ in todo:
                outcomes[i] = IndexOutcome(item_id, "indexed", "", hashes[i])
        return outcomes  # type: ignore[return-value]

    async def _decode_each_for_index(self, images: list[bytes]) -> list:
        """One ``(tiles, signature)`` or error per image (IndexImages: a bad image fails itself);
        with copy detection the signature carries the local features too."""
        if self.copies is not None:
            photos = await self.requests.decode_photos(images, with_features=True)
            return [p if isinstance(p, Exception) else (p.tiles, p.signature) for p in photos]
        decoded = await self.requests.decode_each(images)
        thumbs = iter(tile_signatures([d for d in decoded if not isinstance(d, Exception)]))
        return [d if isinstance(d, Exception) else (d, next(thumbs)) for d in decoded]

    async def find_duplicates(
        self, collection: str, exact_only: bool = False, neighbours: int = 0
    ) -> tuple[list[DuplicateGroup], float]:
        """The collection's duplicate groups (``dedup.py``) and the pair threshold they were
        decided at (0 for exact copies only). Runs off the event loop, one call at a time."""
        if not 0 <= neighbours <= MAX_DEDUP_NEIGHBOURS:
            raise BadRequest(f"neighbours must be in 0..{MAX_DEDUP_NEIGHBOURS}, got {neighbours}")
        col = self._collection(collection)
        finder = self.duplicates
        if neighbours:
            finder = DuplicateFinder(finder.decision, neighbours, finder.threads)
        async with self._dedup_lock:
            groups = await asyncio.get_running_loop().run_in_executor(
                None, finder.find, col, not exact_only
            )
        threshold = 0.0 if exact_only or finder.decision is None else finder.decision.threshold
        return groups, threshold

    # -- image-to-image ---------------------------------------------------------------------------
    async def denoise(self, image: bytes, sigma: float) -> bytes:
        """The denoised image as PNG, full size; ``sigma`` on the 0-255 scale, 0 = unknown (blind)."""
        return await self.images.denoise(image, sigma)

    async def reconstruct(self, image: bytes | None, embedding: np.ndarray | None) -> bytes:
        """An image for an embedding (or for an image's embedding), as PNG at the encoder's input size."""
        if image is not None and self.images.decoder is not None:
            embedding = (await self.embed([image]))[0]
        return await self.images.reconstruct(embedding)

    # -- info -------------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        collections = []
        for name in self.store.list():
            stats = self.store.get(name).stats()
            collections.append(
                {
                    "name": name,
                    "count": stats["count"],
                    "index_kind": stats["index"]["kind"],
                    "metric": stats["metric"],
                    "dim": stats["dim"],
                }
            )
        return {
            "server_version": VERSION,
            "manifest": self.manifest.data,
            "embedding_dim": self.manifest.embedding_dim,
            "embedding_normalized": self.manifest.normalized,
            "collections": collections,
            "default_collection": self.config.default_collection,
            "max_batch": self.config.max_request_images,
            "max_k": min(self.config.max_k, MAX_K),
            "max_image_bytes": self.config.limits.max_bytes,
            "max_image_pixels": self.config.limits.max_pixels,
            "providers": self.encoder.providers,
            "has_denoiser": self.manifest.has("denoiser"),
            "has_decoder": self.manifest.has("decoder"),
        }
