"""benchmarks/soak.py, shortened: mixed traffic on every route gets no error, and memory is followed."""

import json
import shutil

import pytest

from benchmarks import soak


@pytest.mark.benchmark
@pytest.mark.slow
def test_mixed_traffic_on_every_route_answers_every_request(
    trained_classifier, trained_seq2seq, trained_detector, tmp_path
):
    models = tmp_path / "artifacts"
    for artifact in (trained_classifier[2], trained_seq2seq[3], trained_detector[3]):
        shutil.copytree(artifact, models / artifact.parent.name / artifact.name)
    out = tmp_path / "results"
    argv = ["--model-dir", str(models), "--duration", "4", "--interval", "1", "--warmup", "1", "--connections", "8"]
    assert soak.main([*argv, "--out", str(out)]) == 0
    results = json.loads((out / "soak.json").read_text())
    assert results["errors"] == 0, results["first_errors"]
    assert set(results["answers_per_route"]) == {route.name for route in soak.routes()}
    assert min(results["answers_per_route"].values()) >= 5
    assert len(results["intervals"]) == 4 and all(row["rss_mib"] > 100 for row in results["intervals"])
    assert results["goals"]["rss_growth"]["value"] == results["rss_growth"]
    assert (out / "soak.png").stat().st_size > 10_000
