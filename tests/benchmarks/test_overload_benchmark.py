"""benchmarks/overload.py, shortened: past the concurrency floor the server refuses with 503 and answers the
rest, and nothing else goes wrong."""

import json
import shutil

import pytest

from benchmarks import overload

needs_wrk = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)")


@needs_wrk
@pytest.mark.benchmark
@pytest.mark.slow
def test_past_capacity_requests_are_answered_or_refused_and_nothing_fails(trained_classifier, tmp_path, monkeypatch):
    monkeypatch.setenv("MODELSERVICE_MIN_CONCURRENCY", "8")  # a small floor: 64 connections are past it
    argv = ["--model-dir", str(trained_classifier[2].parent.parent), "--duration", "3", "--probes", "4"]
    out = tmp_path / "results"
    assert overload.main([*argv, "--capacity-connections", "8", "--connections", "64", "--out", str(out)]) == 0
    results = json.loads((out / "overload.json").read_text())
    within, past = results["levels"]
    assert within["answers_per_s"].get("200", 0) > 10 and "503" not in within["answers_per_s"]
    assert past["answers_per_s"].get("200", 0) > 10
    assert past["connection_errors"] == 0 and past["other_statuses"] == 0
    assert results["goodput_ratio"] > 0
    assert (out / "overload.png").stat().st_size > 10_000
