"""The serving benchmark: its wrk driver against a real server, its requests against the real service, its goals."""

import argparse
import shutil
import sys

import httpx
import pytest

from benchmarks import h2load, serving, wrk
from benchmarks.common import comma_separated
from serving.process import free_port, running_process

needs_wrk = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)")
needs_h2load = pytest.mark.skipif(
    shutil.which("h2load") is None, reason="h2load is not installed (apt-get install nghttp2-client)"
)


@pytest.fixture(scope="module")
def ceiling_grpc_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def ceiling(tmp_path_factory, ceiling_grpc_port):
    """The no-op ceiling app, a real uvicorn server on a free loopback port, and its gRPC ceiling."""
    port = free_port()
    log = tmp_path_factory.mktemp("ceiling") / "ceiling.log"
    command = [
        sys.executable,
        "-m",
        "benchmarks.ceiling_app",
        "--port",
        str(port),
        "--grpc-port",
        str(ceiling_grpc_port),
    ]
    with running_process(command, port=port, log_path=log, timeout=60) as url:
        yield url


@needs_wrk
def test_wrk_counts_answered_requests_and_its_own_cpu(ceiling):
    load = wrk.Load("/classify", "application/json", [b'{"instances": [[[0, 1], [2, 3]]]}', b'{"instances": []}'])
    level = wrk.run(ceiling, load, connections=4, seconds=1)
    assert level.connections == 4
    assert level.errors == 0
    assert level.requests > 50
    assert level.rps == pytest.approx(level.requests / level.seconds, rel=1e-3)  # seconds are rounded
    assert 0 < level.p50_ms <= level.p90_ms <= level.p99_ms <= level.max_ms
    assert 0 < level.load_generator_cpu_cores <= 1.5  # one wrk thread


@needs_wrk
def test_wrk_counts_answers_that_are_not_2xx_as_errors(ceiling):
    level = wrk.run(ceiling, wrk.Load("/no-such-route", "application/json", [b"{}"]), connections=1, seconds=1)
    assert level.requests > 0
    assert level.errors == level.requests


@needs_h2load
def test_the_grpc_ceiling_answers_predict_calls(ceiling, ceiling_grpc_port):
    target, path = f"http://127.0.0.1:{ceiling_grpc_port}", serving.SCENARIOS["grpc-ceiling"].path
    body = serving.request_bodies([], "classifier", count=1)["digit_calls"][0]
    assert h2load.first_answer(target, path, body) is None
    level = h2load.run(target, path, body, connections=2, seconds=1)
    assert level.errors == 0 and level.requests > 20


@needs_h2load
def test_h2load_holds_each_clients_rate_and_sends_json_over_http1(ceiling):
    body = serving.request_bodies([], "classifier", count=1)["digits"][0]
    level = h2load.run(ceiling, "/classify", body, json_over_http1=True, connections=2, seconds=2, rate=20)
    assert level.errors == 0
    assert 50 <= level.requests <= 90  # 2 clients x 20 a second x 2 s, not as many as answered
    missing = h2load.run(ceiling, "/no-such-route", body, json_over_http1=True, connections=1, seconds=1, rate=10)
    assert missing.requests > 0 and missing.errors == missing.requests


def test_every_request_body_is_answered_by_the_real_service(server, grpc_port, trained_classifier):
    """The benchmark's requests are ones the service accepts: 200 on each scenario's route and content type, and
    OK for its gRPC calls."""
    from benchmarks.detection import sample_images

    bodies = serving.request_bodies(sample_images(2, seed=0), "classifier", count=2)
    for name in serving.SERVICE_SCENARIOS:
        scenario = serving.SCENARIOS[name]
        path = scenario.path.format(classifier="classifier")
        if scenario.content_type == h2load.GRPC_TYPE:
            for body in bodies[scenario.bodies]:
                assert h2load.first_answer(f"http://127.0.0.1:{grpc_port}", path, body) is None, name
            continue
        for body in bodies[scenario.bodies]:
            response = httpx.post(server + path, content=body, headers={"content-type": scenario.content_type})
            assert response.status_code == 200, f"{name}: {response.text}"
            assert "predictions" in response.json()


@needs_h2load
def test_h2load_puts_a_one_channel_scenarios_calls_on_one_connection(server, grpc_port):
    body = serving.request_bodies([], "classifier", count=1)["digit_calls"][0]
    scenario = serving.SCENARIOS["classify-grpc-1ch"]
    assert scenario.one_connection and not serving.SCENARIOS["classify-grpc"].one_connection
    level = h2load.run(f"http://127.0.0.1:{grpc_port}", scenario.path, body, connections=1, streams=8, seconds=1)
    assert level.connections == 8  # the calls in flight, the figure wrk's rows give as connections
    assert level.errors == 0 and level.requests > 20


@needs_h2load
def test_h2load_sends_grpc_calls_and_the_server_counts_them(server, grpc_port):
    body = serving.request_bodies([], "classifier", count=1)["digit_calls"][0]
    path = serving.SCENARIOS["classify-grpc"].path
    failed_before = serving.grpc_failures(server)
    level = h2load.run(f"http://127.0.0.1:{grpc_port}", path, body, connections=4, seconds=1)
    assert level.connections == 4 and level.errors == 0 and level.requests > 20
    assert 0 < level.p50_ms <= level.p90_ms <= level.p99_ms <= level.max_ms
    assert 0 < level.load_generator_cpu_cores <= 1.5  # one h2load thread
    assert serving.grpc_failures(server) == failed_before
    unknown_model = h2load.framed(serving.predict_request("nope", [[[0] * 8] * 8]))
    assert "NOT_FOUND" in h2load.first_answer(f"http://127.0.0.1:{grpc_port}", path, unknown_model)
    h2load.run(f"http://127.0.0.1:{grpc_port}", path, unknown_model, connections=1, seconds=1)
    assert serving.grpc_failures(server) > failed_before  # h2load sees HTTP 200: the server's metrics count them


def test_grpc_failures_leave_out_the_calls_the_client_cancelled_and_in_flight_adds_up_the_routes():
    predict = 'route="/tensorflow.serving.PredictionService/Predict"'
    metrics = f"""# TYPE :tensorflow:serving:request_count counter
:tensorflow:serving:request_count_total{{model_name="classifier",model_version="1",{predict},status="OK"}} 900.0
:tensorflow:serving:request_count_total{{model_name="classifier",model_version="1",{predict},status="CANCELLED"}} 64.0
:tensorflow:serving:request_count_total{{model_name="",model_version="",{predict},status="NOT_FOUND"}} 3.0
:tensorflow:serving:request_count_total{{model_name="classifier",model_version="1",route="/classify",status="503"}} 7.0
modelservice_requests_in_flight{{route="/classify"}} 2.0
modelservice_requests_in_flight{{route="/detect"}} 5.0
modelservice_concurrency_limit{{route="/detect"}} 64.0
"""
    assert serving.grpc_failure_total(metrics) == 3.0
    assert serving.in_flight_total(metrics) == 7.0
    assert serving.in_flight_total("") == 0.0


def test_batch_totals_add_up_every_label_set_of_both_histograms():
    metrics = """# HELP modelservice_batch_size Items per model call
# TYPE modelservice_batch_size histogram
modelservice_batch_size_bucket{le="1.0",model="classifier",signature="serving_default",version="1"} 2.0
modelservice_batch_size_sum{model="classifier",signature="serving_default",version="1"} 9.0
modelservice_batch_size_count{model="classifier",signature="serving_default",version="1"} 3.0
modelservice_batch_size_sum{model="seq2seq",signature="translate",version="2"} 4.0
modelservice_batch_size_count{model="seq2seq",signature="translate",version="2"} 1.0
bentoml_service_adaptive_batch_size_sum{method_name="classify"} 64.0
bentoml_service_adaptive_batch_size_count{method_name="classify"} 2.0
bentoml_service_request_duration_seconds_sum{endpoint="/classify"} 12.5
bentoml_service_request_duration_seconds_count{endpoint="/classify"} 100.0
"""
    assert serving.batch_totals(metrics) == (77.0, 6.0)
    assert serving.batch_totals("") == (0.0, 0.0)


def row(scenario: str, rps: float, *, connections: int = 64, p99: float = 10.0, batch=None, errors: int = 0) -> dict:
    return {
        "scenario": scenario,
        "connections": connections,
        "rps": rps,
        "p50_ms": p99 / 2,
        "p90_ms": p99 / 1.5,
        "p99_ms": p99,
        "mean_batch_size": batch,
        "errors": errors,
        "server_cpu_cores": 1.0,
        "load_generator_cpu_cores": 0.1,
    }


def test_the_goals_compare_each_route_with_its_own_anchor():
    rows = [
        row("ceiling", 1000.0),
        row("classify-json", 850.0, p99=40.0),
        row("tfserving-rest", 700.0),
        row("classify-grpc", 900.0),
        row("classify-grpc-zttp", 800.0, errors=1),
        row("classify-json-64", 100.0),
        row("classify-grpc-64", 99.0),
        row("translate", 300.0, p99=120.0, batch=15.6),
        row("detect", 95.0, errors=2),
    ]
    in_process = {"translate": {16: 400.0, 1: 90.0}, "detect": {1: 60.0, 8: 100.0}}
    summary = serving.summarize(rows, in_process, [64])
    goals = summary["goals"]
    assert goals["classify_vs_ceiling"] == {"value": 0.85, "goal": 0.8, "met": True}
    assert goals["classify_p99_ms"]["met"]
    assert goals["tfserving_vs_classify"]["value"] == pytest.approx(700 / 850)
    assert not goals["tfserving_vs_classify"]["met"]
    assert goals["grpc_vs_classify"]["value"] == pytest.approx(900 / 850) and goals["grpc_vs_classify"]["met"]
    assert goals["grpc_vs_json_64"] == {"value": pytest.approx(0.99), "goal": 1.0, "met": False}
    assert goals["grpc_zttp_vs_classify"] == {"value": pytest.approx(800 / 850), "goal": 1.0, "met": False}
    assert summary["translate_batch"] == 16
    assert goals["translate_vs_in_process"]["value"] == pytest.approx(0.75)  # against batch 16, not the best
    assert not goals["translate_p99_ms"]["met"]
    assert goals["detect_vs_in_process"]["value"] == pytest.approx(0.95)  # against the best batch size
    assert goals["service_errors"] == {"value": 3, "goal": 0, "met": False}  # the zttp server's count too
    assert summary["ratios"]["ceiling"]["classify-json"][64] == pytest.approx(0.85)


def test_paired_rounds_replace_a_goals_single_ratio_with_their_median():
    rows = [row("ceiling", 1000.0), row("classify-json", 700.0), row("tfserving-rest", 700.0)]
    paired = {"classify_vs_ceiling": [0.78, 0.86, 0.83], "tfserving_vs_classify": []}
    goals = serving.summarize(rows, None, [64], paired)["goals"]
    assert goals["classify_vs_ceiling"] == {"value": 0.83, "goal": 0.8, "met": True, "rounds": [0.78, 0.86, 0.83]}
    assert goals["tfserving_vs_classify"]["value"] == pytest.approx(1.0)  # no rounds: the table's ratio stays
    assert "rounds" not in goals["tfserving_vs_classify"]
    text = serving.report_text(rows, serving.summarize(rows, None, [64], paired), [64], None)
    assert "MET      (0.83; median of rounds 0.78, 0.86, 0.83)" in text


def test_missing_scenarios_leave_their_goals_unmet_rather_than_failing():
    summary = serving.summarize([row("ceiling", 1000.0, connections=16)], None, [16])
    assert summary["connections"] == 16  # the highest level when 64 is not measured
    assert not any(result["met"] for key, result in summary["goals"].items() if key != "service_errors")


def test_comma_separated_options_are_checked():
    parser = argparse.ArgumentParser()
    assert comma_separated(parser, "--connections", "1, 16,,64", int) == [1, 16, 64]
    for text, choices in (("1,x", None), ("", None), ("ceiling,nope", ["ceiling"])):
        with pytest.raises(SystemExit):
            comma_separated(parser, "--option", text, int if choices is None else str, choices=choices)


def test_the_help_names_every_scenario(capsys):
    with pytest.raises(SystemExit) as exit_:
        serving.parse_args(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert all(name in text for name in serving.SCENARIOS)
