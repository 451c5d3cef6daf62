"""``simclr serve`` configuration: flags over environment variables over defaults."""

from __future__ import annotations

import pytest

from simclr_search.serving.server.settings import config_from_args, get_args_parser


def _config(argv: list[str]):
    return config_from_args(get_args_parser().parse_args(argv))[0]


def test_defaults_work_out_of_the_box() -> None:
    config = _config([])
    assert config.denoise_ensemble == "auto"
    assert config.max_batch > 0 and config.ort_threads > 0


def test_denoise_ensemble_from_flag_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _config(["--denoise-ensemble", "4"]).denoise_ensemble == 4
    assert _config(["--denoise-ensemble", "auto"]).denoise_ensemble == "auto"
    monkeypatch.setenv("SIMCLR_DENOISE_ENSEMBLE", "8")
    assert _config([]).denoise_ensemble == 8
    assert _config(["--denoise-ensemble", "1"]).denoise_ensemble == 1  # the flag wins
    with pytest.raises(SystemExit):
        _config(["--denoise-ensemble", "3"])


def test_tie_break_margin_from_flag_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _config([]).tie_break_margin == 0.02
    assert _config(["--tie-break-margin", "0"]).tie_break_margin == 0.0
    monkeypatch.setenv("SIMCLR_TIE_BREAK_MARGIN", "0.05")
    assert _config([]).tie_break_margin == 0.05


def test_encoder_lanes_from_flag_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _config([]).encoder_lanes == "auto"
    assert _config(["--encoder-lanes", "0"]).encoder_lanes == 0
    monkeypatch.setenv("SIMCLR_ENCODER_LANES", "3")
    assert _config([]).encoder_lanes == 3
    assert _config(["--encoder-lanes", "auto"]).encoder_lanes == "auto"  # the flag wins
    for bad in (["--encoder-lanes", "-1"], ["--encoder-lanes", "two"]):
        with pytest.raises(SystemExit):
            _config(bad)
    monkeypatch.setenv("SIMCLR_ENCODER_LANES", "many")
    with pytest.raises(SystemExit):  # a usage error naming the flag, not a traceback
        _config([])
