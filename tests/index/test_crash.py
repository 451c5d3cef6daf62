"""Kill a writer with SIGKILL at random points: no acknowledged write is ever lost.

Also: a writer that fills its disk gets a storage error, and what it acknowledged survives.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simclr_search.index.store import Store

ROOT = Path(__file__).resolve().parents[2]


def _spawn(store_root: Path, seed: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.index.crash_writer", str(store_root), str(seed), *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _check(store_root: Path, present: set[str], absent: set[str]) -> int:
    store = Store(store_root)
    col = store.get("c")
    try:
        integrity = col.integrity()
        assert integrity["sqlite"] == "ok"
        assert integrity["index_count"] == integrity["sqlite_count"]
        found = col.meta.items_by_external(sorted(present | absent), 8)
        lost = present - set(found)
        assert not lost, f"acknowledged writes lost: {sorted(lost)[:10]}"
        resurrected = absent & set(found)
        assert not resurrected, f"acknowledged deletes undone: {sorted(resurrected)[:10]}"
        return integrity["sqlite_count"]
    finally:
        col.meta.close()  # like a crash: no snapshot, so the next writer replays


class Ledger:
    """What the writer acknowledged: ids that must exist, and ids that must not."""

    def __init__(self) -> None:
        self.present: set[str] = set()
        self.absent: set[str] = set()
        self.acked_adds = 0

    def read(self, line: str) -> None:
        if line.startswith("ACK "):
            ids = line[4:].split(",")
            self.present.update(ids)
            self.acked_adds += len(ids)
        elif line.startswith("BEGIN-DEL "):
            self.present.discard(line.split(" ", 1)[1])  # uncertain until acknowledged
        elif line.startswith("DEL "):
            self.absent.add(line.split(" ", 1)[1])


@pytest.mark.slow
def test_sigkill_never_loses_acknowledged_writes(tmp_path: Path) -> None:
    rng = random.Random(1234)
    ledger = Ledger()
    cycles = 0
    # At least 50 crashes and 1,000 acknowledged adds, however fast this machine writes.
    while cycles < 50 or ledger.acked_adds < 1000:
        assert cycles < 400, f"only {ledger.acked_adds} acknowledged adds after {cycles} crashes"
        cycle = cycles
        cycles += 1
        proc = _spawn(tmp_path, cycle)
        assert proc.stdout.readline().strip() == "READY", proc.stderr.read()
        deadline = time.monotonic() + rng.uniform(0.05, 0.5)
        while time.monotonic() < deadline:
            line = proc.stdout.readline().strip()
            if not line:
                break
            ledger.read(line)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for line in proc.stdout.read().splitlines():  # acknowledged before the kill, still buffered
            ledger.read(line)
        _check(tmp_path, ledger.present, ledger.absent)
    present, absent, acked_adds = ledger.present, ledger.absent, ledger.acked_adds
    assert acked_adds >= 1000, f"only {acked_adds} acknowledged adds over {cycles} crashes"
    # Finally a damaged index file: the store rebuilds it from SQLite.
    index_file = tmp_path / "c" / "index.faiss"
    if index_file.exists():
        data = bytearray(index_file.read_bytes())
        data[len(data) // 2] ^= 0xFF
        index_file.write_bytes(bytes(data))
    assert _check(tmp_path, present, absent) >= len(present)


@pytest.mark.slow
def test_full_disk_is_reported_and_loses_nothing(tmp_path: Path) -> None:
    warmup = _spawn(tmp_path, 0)
    assert warmup.stdout.readline().strip() == "READY"
    for _ in range(20):
        warmup.stdout.readline()
    warmup.kill()
    warmup.wait()
    proc = _spawn(tmp_path, 1, "--fill-disk")
    out, err = proc.communicate(timeout=120)
    lines = out.splitlines()
    assert lines[0] == "READY"
    assert lines[-1].startswith("FULL "), err[-2000:]
    assert "disk refused the write" in lines[-1]
    acked = {i for line in lines if line.startswith("ACK ") for i in line[4:].split(",")}
    assert acked, "the writer acknowledged nothing before the disk filled"
    _check(tmp_path, acked, set())
