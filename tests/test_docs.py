"""The generated docs are current: settings.md from the parsers, benchmarks.md and the README's
figures from the recorded benchmark runs (``scripts/gen_docs.py``), and every recorded run still
renders (a benchmark that renamed a key would break its row)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_generated_docs_are_current() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIMCLR_")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_docs.py"), "--check"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr


def test_the_readme_stays_a_product_page() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150, len(lines)
    assert max(map(len, lines)) <= 200
