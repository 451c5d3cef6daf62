"""The ``simclr`` program: help, unknown commands, and errors a person can act on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from simclr_search.cli.main import COMMANDS, main


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_unknown_command_exits_with_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
    assert "unknown command" in capsys.readouterr().err


def test_train_on_a_missing_folder_is_one_clear_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "simclr_search.cli.main",
            "train",
            "--data",
            str(tmp_path / "nowhere"),
            "--out-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "simclr train: error: image library not found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "simclr"
    if not script.exists():
        pytest.skip("package not installed with its console script in this environment")
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "train" in proc.stdout


def test_bench_lists_runs_and_refuses_benchmarks_by_name(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from simclr_search.cli.bench import BENCHMARKS

    assert main(["bench"]) == 0
    listed = capsys.readouterr().out
    scripts = sorted(p.stem.removeprefix("bench_") for p in BENCHMARKS.glob("bench_*.py"))
    assert [line.split()[0] for line in listed.splitlines()] == scripts
    assert "service" in scripts and "denoise" in scripts
    assert main(["bench", "nope"]) == 2
    assert "no benchmark 'nope'" in capsys.readouterr().err
    # Arguments go to the script itself: its own --help (argparse usage names the script).
    proc = subprocess.run(
        [sys.executable, "-m", "simclr_search.cli.main", "bench", "grpc_transport", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: bench_grpc_transport.py") and "--quick" in proc.stdout
