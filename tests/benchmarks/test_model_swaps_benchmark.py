"""benchmarks/model_swaps.py, shortened: versions swapped under load answer every request, and the memory
part cycles a real artifact."""

import json

import pytest

from benchmarks import model_swaps


@pytest.mark.benchmark
@pytest.mark.slow
def test_swaps_under_load_lose_no_request_and_memory_is_measured_per_cycle(trained_classifier, tmp_path):
    artifact = trained_classifier[2]
    out = tmp_path / "results"
    argv = ["--model-dir", str(artifact.parent.parent), "--swaps", "2", "--baseline", "3", "--connections", "4"]
    assert model_swaps.main([*argv, "--cycles", "2", "--out", str(out)]) == 0
    results = json.loads((out / "model_swaps.json").read_text())
    swaps = results["swaps"]
    assert swaps["errors"] == 0 and swaps["requests"] > 20
    assert [swap["version"] for swap in swaps["swaps"]] == ["2", "3"]
    assert all(swap["first_request_ms"] is not None and swap["load_seconds"] > 0 for swap in swaps["swaps"])
    assert results["memory"]["model"] == "classifier" and len(results["memory"]["rss_mib"]) == 2
    assert (out / "model_swaps.png").stat().st_size > 10_000
