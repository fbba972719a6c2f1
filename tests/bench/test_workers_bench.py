"""The workers benchmark says what it measured: the projection is labelled as one, and the
figures it derives from the rounds are the stated ones."""

from __future__ import annotations

import argparse

import pytest
from bench.run import ALL_TARGETS, _target_names
from bench.workers_bench import Round, report


def test_round_figures() -> None:
    sample = Round(rps=1000.0, requests=5000, worker_cpu=[0.3, 0.2])
    assert sample.cpu_us == pytest.approx(100.0)  # 0.5 s of CPU over 5000 requests
    assert sample.busiest_share == pytest.approx(0.6)


def test_on_a_small_machine_the_ratio_is_a_projection(capsys: pytest.CaptureFixture[str]) -> None:
    rounds = {
        "1 worker": [Round(2000.0, 10000, [1.0])] * 3,  # 100 us per request
        "2 workers": [Round(1500.0, 7500, [0.45, 0.45])] * 3,  # 120 us per request
    }
    report(rounds, False, "2 CPUs shared", argparse.Namespace(repeats=3, duration=5))
    out = capsys.readouterr().out
    assert "2 x 0.83 = 1.67x one worker with both saturated" in out
    assert "0.83 / 0.50 = 1.67x if the busiest worker's share" in out
    assert "does NOT hold as a projection" in out
    assert "Not measured: the req/s ratio itself (0.75x here" in out


def test_an_uneven_split_lowers_the_projection(capsys: pytest.CaptureFixture[str]) -> None:
    rounds = {
        "1 worker": [Round(2000.0, 10000, [1.0])] * 3,  # 100 us per request
        "2 workers": [Round(2000.0, 10000, [0.6, 0.4])] * 3,  # 100 us, 60 % on one worker
    }
    report(rounds, False, "2 CPUs shared", argparse.Namespace(repeats=3, duration=5))
    out = capsys.readouterr().out
    assert "2 x 1.00 = 2.00x one worker with both saturated" in out
    assert "1.00 / 0.60 = 1.67x" in out
    assert "does NOT hold as a projection" in out


def test_with_cores_to_spare_the_ratio_is_measured(capsys: pytest.CaptureFixture[str]) -> None:
    rounds = {
        "1 worker": [Round(2000.0, 10000, [1.0])] * 3,
        "2 workers": [Round(3600.0, 18000, [0.9, 0.9])] * 3,
    }
    report(rounds, True, "workers on CPUs 2,3", argparse.Namespace(repeats=3, duration=5))
    assert "1.80x req/s (target >= 1.7x: met)" in capsys.readouterr().out


def test_run_targets_are_checked() -> None:
    assert _target_names("envoy, wg-limits") == {"envoy", "wg-limits"}
    assert _target_names(",".join(ALL_TARGETS)) == ALL_TARGETS
    with pytest.raises(argparse.ArgumentTypeError, match="unknown target"):
        _target_names("envoy,nginx")
