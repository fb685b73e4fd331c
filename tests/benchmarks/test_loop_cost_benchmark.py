"""benchmarks/loop_cost.py, shortened: the event loop's CPU per request on the real service and the no-op app."""

import json
import shutil

import pytest

from benchmarks import loop_cost


@pytest.mark.benchmark
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load is not installed (apt-get install nghttp2-client)")
def test_every_target_is_answered_at_the_rate_and_its_loop_cost_measured(trained_classifier, tmp_path, capsys):
    artifact = trained_classifier[2]
    argv = ["--model-dir", str(artifact.parent.parent), "--rate", "128", "--duration", "2", "--rounds", "1"]
    loop_cost.main([*argv, "--out", str(tmp_path)])
    medians = json.loads((tmp_path / "loop_cost.json").read_text())["medians"]
    assert list(medians) == [target.name for target in loop_cost.TARGETS]
    for name, median in medians.items():
        assert median["errors"] == 0, name
        assert 64 <= median["requests_per_second"] <= 192, name  # 2 a second from each of 64 clients
        assert 0 < median["loop_us_per_request"] < 1e5, name
    assert "gRPC Predict / /classify, loop µs a request" in capsys.readouterr().out
