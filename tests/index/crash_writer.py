"""A writer process for the crash tests: acknowledges each durable write on stdout.

Protocol (one line each, flushed): ``READY``; ``ACK id,id,...`` after an add committed;
``BEGIN-DEL id`` before and ``DEL id`` after a delete committed.
    python -m tests.index.crash_writer ROOT SEED            # loop until killed
    python -m tests.index.crash_writer ROOT SEED --fill-disk  # write until the disk is "full"
"""

from __future__ import annotations

import os
import random
import resource
import signal
import sys
from pathlib import Path

import numpy as np

from simclr_search.index.collection import CollectionConfig
from simclr_search.index.errors import StorageFailure
from simclr_search.index.metadata import NewItem
from simclr_search.index.store import Store

DIM = 8


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> None:
    root, seed = Path(sys.argv[1]), int(sys.argv[2])
    fill_disk = "--fill-disk" in sys.argv
    rng = random.Random(seed)
    store = Store(root)
    col = store.create("c", CollectionConfig(dim=DIM, snapshot_every=25), exist_ok=True)
    live: list[str] = [item for item in col.meta.items_by_external([], DIM)]
    if fill_disk:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        largest = max(p.stat().st_size for p in (root / "c").iterdir())
        resource.setrlimit(resource.RLIMIT_FSIZE, (largest + 64 * 1024, resource.RLIM_INFINITY))
    say("READY")
    counter = 0
    while True:
        if live and rng.random() < 0.15 and not fill_disk:
            victim = live.pop(rng.randrange(len(live)))
            say(f"BEGIN-DEL {victim}")
            col.delete([victim])
            say(f"DEL {victim}")
            continue
        batch = []
        for _ in range(rng.randint(1, 5) if not fill_disk else 50):
            counter += 1
            batch.append(
                NewItem(f"s{seed}-{counter}", np.random.default_rng(counter).normal(size=DIM))
            )
        try:
            col.add(batch)
        except StorageFailure as exc:
            say(f"FULL {exc}")
            os._exit(0)
        live.extend(item.external_id for item in batch)
        say("ACK " + ",".join(item.external_id for item in batch))


if __name__ == "__main__":
    main()
