"""Load-test the HTTP service with wrk: against the HTTP ceiling, BentoML's own anchors and the models in process.

    python -m benchmarks.serving                          # models from artifacts/; small ones trained where missing
    python -m benchmarks.serving --connections 1,16,64 --duration 10 --scenarios classify-json,ceiling

Every scenario is a closed loop of wrk keep-alive connections (1, 16 and 64 by default) on loopback,
--warmup seconds unmeasured then --duration measured, one server at a time:

  ceiling            plain uvicorn + FastAPI (`benchmarks.ceiling_app`): parse /classify's JSON, answer a
                     constant. No model, no BentoML: the most any Python service reaches on this machine
  bentoml-noop       BentoML 1.4 with its defaults and the same no-op route (`benchmarks.bentoml_anchors`)
  bentoml-batchable  the service BentoML's documentation recommends, on the same classifier SavedModel:
                     `@bentoml.api(batchable=True, max_batch_size=256, max_latency_ms=1000)`
  naive              FastAPI calling Keras `model.predict` on each request alone (`benchmarks.naive_app`)
  classify-json      this service: POST /classify, one 8x8 digit as JSON pixels
  tfserving-rest     this service: POST /v1/models/classifier:predict, the same body (TF Serving's REST API)
  classify-grpc      this service: TF Serving's gRPC Predict, the same digit as a float32 tensor, sent by h2load
                     over kept-open HTTP/2 connections (one per client, as a client reuses its channel)
  grpc-ceiling       grpcio's server as the service runs it, with a no-op Predict (`benchmarks.ceiling_app`): the
                     most a Python gRPC server reaches here, as `ceiling` is for HTTP
  classify-grpc-zttp the same gRPC Predict on a second server with MODELSERVICE_GRPC_SERVER=zttp: gRPC on uvicorn's
                     HTTP/2 protocol instead of grpcio's server (serving/grpc_http2.py)
  classify-json-64   this service: POST /classify, 64 digits per request as JSON pixels
  classify-grpc-64   this service: gRPC Predict, the same 64 digits per call as one 64x8x8x1 tensor
  classify-png       this service: POST /classify, the digit as a PNG upload (multipart)
  translate          this service: POST /translate, one date text, beam width 3
  detect             this service: POST /detect, one 128x128 scene as a PNG upload

After the servers stop, the same SavedModels are called in this process: `translate` at the batch size
the server reached, `detect` at batch sizes 1-32 (its best), so the service's figures can be read as a
fraction of what the model alone does. The goals' ratios then come from --rounds paired rounds
(`paired_rounds`: the servers up together, both sides of each ratio measured one after the other in
each round, the median round), since on a shared machine a server's own figure moves by a fifth between
minutes. The report: a table (requests/s, p50, p90, p99, errors, the CPU cores used by the server and by
wrk), every ratio, the issue-14 goals met or missed, and `serving.json`, `serving.png` and the servers'
logs under --out.

Needs `wrk` (Debian: apt-get install wrk), and `h2load` (apt-get install nghttp2-client) for classify-grpc.
The model store is private: BENTOML_HOME points at a
temporary folder, set before BentoML is imported.
"""

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import h2load, wrk
from benchmarks.common import comma_separated, environment, fastest_pass
from serving.contract import latest_version, read_metadata

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ("classifier", "seq2seq", "detector")
JSON_TYPE = "application/json"
BOUNDARY = "benchmark-boundary-7d1f"
MULTIPART_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
BEAM_WIDTH = 3
DETECT_BATCH_SIZES = (1, 2, 4, 8, 16, 32)
GRPC_PREDICT = "/tensorflow.serving.PredictionService/Predict"


@dataclass(frozen=True)
class Scenario:
    server: str  # which process answers: ceiling, bentoml-noop, bentoml-batchable, naive, service or service-zttp
    path: str
    content_type: str  # h2load.GRPC_TYPE: gRPC calls on the server's gRPC port, sent by h2load; else wrk
    bodies: str  # a key of the bodies built by `request_bodies`
    what: str
    one_connection: bool = False  # gRPC: every call in flight on one connection (a client's one channel)


SCENARIOS: dict[str, Scenario] = {
    "ceiling": Scenario("ceiling", "/classify", JSON_TYPE, "digits", "uvicorn + FastAPI, no model: the HTTP ceiling"),
    "bentoml-noop": Scenario("bentoml-noop", "/classify", JSON_TYPE, "digits", "BentoML defaults, no model"),
    "bentoml-batchable": Scenario(
        "bentoml-batchable", "/classify", JSON_TYPE, "digits", "BentoML's recommended batchable API"
    ),
    "naive": Scenario("naive", "/classify", JSON_TYPE, "digits", "FastAPI + Keras model.predict per request"),
    "classify-json": Scenario("service", "/classify", JSON_TYPE, "digits", "POST /classify, JSON pixels"),
    "tfserving-rest": Scenario(
        "service", "/v1/models/{classifier}:predict", JSON_TYPE, "digits", "TF Serving REST :predict"
    ),
    "classify-grpc": Scenario("service", GRPC_PREDICT, h2load.GRPC_TYPE, "digit_calls", "gRPC Predict"),
    "classify-grpc-1ch": Scenario(
        "service", GRPC_PREDICT, h2load.GRPC_TYPE, "digit_calls", "gRPC Predict, one channel", one_connection=True
    ),
    "grpc-ceiling": Scenario("ceiling", GRPC_PREDICT, h2load.GRPC_TYPE, "digit_calls", "grpcio, no model"),
    "classify-grpc-zttp": Scenario("service-zttp", GRPC_PREDICT, h2load.GRPC_TYPE, "digit_calls", "gRPC Predict, zttp"),
    "classify-json-64": Scenario("service", "/classify", JSON_TYPE, "digit_batches", "POST /classify, 64 digits"),
    "classify-grpc-64": Scenario("service", GRPC_PREDICT, h2load.GRPC_TYPE, "digit_batch_calls", "gRPC, 64 digits"),
    "classify-png": Scenario("service", "/classify", MULTIPART_TYPE, "digit_pngs", "POST /classify, PNG upload"),
    "translate": Scenario("service", "/translate", JSON_TYPE, "texts", f"POST /translate, beam {BEAM_WIDTH}"),
    "detect": Scenario("service", "/detect", MULTIPART_TYPE, "scene_pngs", "POST /detect, 128x128 PNG"),
}
SERVICES = {"service": "grpcio", "service-zttp": "zttp"}  # this project's server, and its MODELSERVICE_GRPC_SERVER
SERVICE_SCENARIOS = [name for name, scenario in SCENARIOS.items() if scenario.server in SERVICES]

# The goals of issue 14, at the highest number of connections.
GOALS_AT = 64
GOAL_CLASSIFY_VS_CEILING = 0.8
GOAL_CLASSIFY_P99_MS = 50.0
GOAL_TFSERVING_VS_CLASSIFY = 0.9
GOAL_TRANSLATE_VS_IN_PROCESS = 0.8
GOAL_TRANSLATE_P99_MS = 100.0
GOAL_DETECT_VS_IN_PROCESS = 0.9
GOAL_GRPC_VS_JSON = 1.0  # issue 20: gRPC at least as fast as HTTP JSON


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.serving", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=PROJECT_ROOT / "artifacts",
        help="exported artifacts (<name>/<version>/): the latest classifier, seq2seq and detector are served; "
        "a small one is trained into a temporary folder for each that is missing (default: %(default)s)",
    )
    parser.add_argument(
        "--keras-model",
        type=Path,
        help="the classifier's .keras file for the naive baseline (default: runs/classifier/model.keras, or the "
        "trained one); the naive scenario is left out when there is none",
    )
    parser.add_argument(
        "--connections", default="1,16,64", help="comma-separated numbers of connections (default: %(default)s)"
    )
    parser.add_argument(
        "--duration", type=float, default=10.0, help="measured seconds per level (default: %(default)s)"
    )
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="unmeasured seconds before each level (default: %(default)s)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="paired rounds for the goals' ratios, both sides measured in turn in each (0: none; the goals then "
        "take the table's single ratios) (default: %(default)s)",
    )
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"comma-separated subset of {', '.join(SCENARIOS)}"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=PROJECT_ROOT / "benchmarks" / "results",
        help="folder for serving.json, serving.png and server logs (default: %(default)s)",
    )
    parser.add_argument(
        "--startup-timeout", type=float, default=180.0, help="seconds to wait for each server (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    args.levels = sorted(set(comma_separated(parser, "--connections", args.connections, int)))
    if min(args.levels) < 1:
        parser.error("--connections must each be >= 1")
    args.scenario_list = comma_separated(parser, "--scenarios", args.scenarios, str, choices=SCENARIOS)
    if args.duration < 1 or args.warmup < 0:
        parser.error("--duration must be >= 1 and --warmup >= 0 (wrk counts whole seconds)")
    if args.rounds < 0:
        parser.error("--rounds must be >= 0")
    if args.keras_model and not args.keras_model.is_file():
        parser.error(f"{args.keras_model} does not exist")
    return args


# --- models and requests ---------------------------------------------------------------------------


def prepare_models(args: argparse.Namespace, workdir: Path) -> dict[str, Path]:
    """The artifact folder of each family: the latest in --model-dir, or a small one trained now."""
    artifacts = {}
    for family in FAMILIES:
        found = latest_version(args.model_dir / family)
        if found is None:
            print(f"no {family} in {args.model_dir}: training a small one (its serving cost, not its accuracy, counts)")
            found = TRAIN_SMALL[family](workdir / family)
        artifacts[family] = found.resolve()
        print(f"{family}: {artifacts[family]}")
    return artifacts


def train_small_classifier(workdir: Path) -> Path:
    from pipelines import classifier

    classifier.FAMILY.main([
        "--run-dir", str(workdir / "run"), "--artifacts", str(workdir / "artifacts"), "--no-register",
        "--epochs", "3", "--no-augment",
    ])  # fmt: skip
    return latest_version(workdir / "artifacts" / classifier.FAMILY.name)


def train_small_seq2seq(workdir: Path) -> Path:
    from benchmarks.decoding import train_small_model

    return train_small_model(workdir)[1]


def train_small_detector(workdir: Path) -> Path:
    from benchmarks.detection import train_small_model

    return train_small_model(workdir / "run", workdir / "artifacts" / "detector")


TRAIN_SMALL: dict[str, Callable[[Path], Path]] = {
    "classifier": train_small_classifier,
    "seq2seq": train_small_seq2seq,
    "detector": train_small_detector,
}


def naive_keras_model(args: argparse.Namespace, classifier: Path) -> Path | None:
    """The .keras file of the served classifier's run, when there is one."""
    if args.keras_model:
        return args.keras_model.resolve()
    name = read_metadata(classifier).name
    for candidate in (
        classifier.parent.parent.parent / "run" / "model.keras",
        PROJECT_ROOT / "runs" / name / "model.keras",
    ):
        if candidate.is_file():
            return candidate
    return None


def multipart(field: str, filename: str, data: bytes, content_type: str) -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def png(pixels: Any) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def request_bodies(scenes: list[bytes], classifier: str = "classifier", count: int = 64) -> dict[str, list[bytes]]:
    """Seeded request bodies per kind, from the data each family trains on (the test splits); gRPC calls name
    the model `classifier`."""
    from pipelines.data.date_data import make_dataset
    from pipelines.data.image_data import load_digits

    digits = load_digits(seed=0).test.images[:count, ..., 0]  # (N, 8, 8) uint8
    texts = [pair.text for pair in make_dataset(0, 0, count, seed=0).test]
    compact = {"separators": (",", ":")}
    return {
        "digits": [json.dumps({"instances": [image.tolist()]}, **compact).encode() for image in digits],
        "digit_calls": [h2load.framed(predict_request(classifier, image[np.newaxis])) for image in digits],
        "digit_batches": [json.dumps({"instances": digits.tolist()}, **compact).encode()],
        "digit_batch_calls": [h2load.framed(predict_request(classifier, digits))],
        "digit_pngs": [multipart("image", "digit.png", png(image), "image/png") for image in digits],
        "texts": [json.dumps({"texts": [text], "beam_width": BEAM_WIDTH}, **compact).encode() for text in texts],
        "scene_pngs": [multipart("image", "scene.png", data, "image/png") for data in scenes],
    }


def predict_request(model: str, images: Any) -> bytes:
    """A gRPC PredictRequest of N digits (N×8×8) as an N×8×8×1 float32 tensor, serialized."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.asarray(images, np.float32)[..., np.newaxis]))
    return request.SerializeToString()


# --- servers ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def started(server: str, context: dict[str, Any], args: argparse.Namespace) -> Iterator[str]:
    from serving.process import free_port, home_beside, running_process, running_server

    log_path = args.out / "logs" / f"{server}.log"
    if server in SERVICES:
        env = {"MODELSERVICE_MODELS": ",".join(context["tags"].values())}
        env["MODELSERVICE_GRPC_PORT"] = context["grpc_targets"][server].rpartition(":")[2]
        env["MODELSERVICE_GRPC_SERVER"] = SERVICES[server]
        if server != "service":  # up beside "service" in the paired rounds: metrics of its own
            env |= home_beside(args.out / "logs" / f"bentoml-{server}")
        with running_server(env=env, log_path=log_path, timeout=args.startup_timeout) as url:
            yield url
    elif server in ("bentoml-noop", "bentoml-batchable"):
        from benchmarks.bentoml_anchors import SAVED_MODEL_ENV

        service = "NoopService" if server == "bentoml-noop" else "BatchableClassifier"
        env = {SAVED_MODEL_ENV: str(context["artifacts"]["classifier"])}
        with running_server(
            service=f"benchmarks.bentoml_anchors:{service}", env=env, log_path=log_path, timeout=args.startup_timeout
        ) as url:
            yield url
    else:
        port = free_port()
        command = [sys.executable, "-m", f"benchmarks.{'ceiling_app' if server == 'ceiling' else 'naive_app'}"]
        if server == "naive":
            command += ["--model", str(context["keras_model"]), "--labels", json.dumps(context["labels"])]
        if server == "ceiling":
            command += ["--grpc-port", context["grpc_targets"]["ceiling"].rpartition(":")[2]]
        command += ["--host", "127.0.0.1", "--port", str(port)]
        with running_process(command, port=port, log_path=log_path, timeout=args.startup_timeout) as url:
            yield url


def first_answer(url: str, load: wrk.Load, grpc_target: str | None) -> str | None:
    """None when one request is answered 200 (a gRPC call OK), else what went wrong (wrk only counts non-2xx
    answers, h2load not even failed gRPC calls)."""
    import httpx

    if load.content_type == h2load.GRPC_TYPE:
        return h2load.first_answer(grpc_target, load.path, load.bodies[0])
    try:
        response = httpx.post(
            url + load.path, content=load.bodies[0], headers={"content-type": load.content_type}, timeout=60
        )
    except httpx.HTTPError as error:
        return f"{type(error).__name__}: {error}"
    return None if response.status_code == 200 else f"HTTP {response.status_code}: {response.text[:300]}"


BATCH_METRICS = ("modelservice_batch_size", "bentoml_service_adaptive_batch_size")  # this service's, BentoML's


def batch_counters(url: str) -> tuple[float, float]:
    """(sum, count) of the model-call batch sizes on the server's /metrics."""
    return batch_totals(server_metrics(url))


def batch_totals(metrics: str) -> tuple[float, float]:
    """(sum, count) over every label set of the batch-size histograms in Prometheus text."""
    totals = {"_sum": 0.0, "_count": 0.0}
    for name, _, value in samples(metrics):
        for suffix in totals:
            if name in (base + suffix for base in BATCH_METRICS):
                totals[suffix] += value
    return totals["_sum"], totals["_count"]


def grpc_failures(url: str) -> float:
    """gRPC calls that failed so far, from the server's request metrics (0 for a server without them)."""
    return grpc_failure_total(server_metrics(url))


def grpc_failure_total(metrics: str) -> float:
    """gRPC calls answered with a status other than OK in Prometheus text. CANCELLED is the client's own doing
    (h2load cancels the calls it has in flight when it stops), not the server's."""
    return sum(
        value
        for name, labels, value in samples(metrics)
        if name == ":tensorflow:serving:request_count_total"  # prometheus_client adds _total to counters
        and labels.get("route", "").startswith("/tensorflow.")
        and labels.get("status") not in ("OK", "CANCELLED")
    )


def in_flight_total(metrics: str) -> float:
    """Inference requests admitted and not answered yet, over every route, in Prometheus text."""
    return sum(value for name, _, value in samples(metrics) if name == "modelservice_requests_in_flight")


def samples(metrics: str) -> Iterator[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample in Prometheus text."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            yield sample.name, sample.labels, sample.value


def server_metrics(url: str) -> str:
    """The server's /metrics, or nothing for an anchor that has none (a 404 page is not Prometheus text)."""
    import httpx

    response = httpx.get(f"{url}/metrics", timeout=10)
    return response.text if response.status_code == 200 else ""


def wait_until_idle(url: str, timeout: float = 60.0) -> None:
    """Until the server has answered every request it admitted: a load generator that stops leaves the requests
    it had in flight with the server, and those would hold admission slots in the next measurement."""
    deadline = time.monotonic() + timeout
    while in_flight_total(server_metrics(url)) and time.monotonic() < deadline:
        time.sleep(0.05)


def server_cpu_seconds() -> float:
    """CPU seconds used so far by this process's children: the one server running now (wrk is reaped)."""
    import psutil

    total = 0.0
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            times = child.cpu_times()
            total += times.user + times.system
    return total


def scenario_load(name: str, context: dict[str, Any]) -> wrk.Load:
    scenario = SCENARIOS[name]
    return wrk.Load(
        scenario.path.format(classifier=context["names"]["classifier"]),
        scenario.content_type,
        context["bodies"][scenario.bodies],
    )


def measure_server(server: str, names: list[str], context: dict[str, Any], args: argparse.Namespace) -> list[dict]:
    rows = []
    began = time.perf_counter()
    with started(server, context, args) as url:
        print(f"\n[{server}] ready at {url} after {time.perf_counter() - began:.1f} s")
        for name in names:
            load = scenario_load(name, context)
            grpc_target = context["grpc_targets"].get(server)
            if problem := first_answer(url, load, grpc_target):
                print(f"[{name}] the first request failed, skipping: {problem}")
                continue
            one_connection = SCENARIOS[name].one_connection
            for connections in args.levels:
                row = {"scenario": name, **measure_level(url, load, connections, args, grpc_target, one_connection)}
                rows.append(row)
                print(f"[{name}] {row_text(row)}")
    return rows


def measure_level(
    url: str,
    load: wrk.Load,
    connections: int,
    args: argparse.Namespace,
    grpc_target: str | None = None,
    one_connection: bool = False,
) -> dict[str, Any]:
    """wrk's (or for gRPC h2load's) figures after --warmup unmeasured seconds, the server's CPU cores and its mean
    model-call batch; gRPC calls that failed counted on the server's metrics. `one_connection`: gRPC's calls in
    flight (`connections` of them) share one connection, as one client channel's do."""

    def load_for(seconds: float) -> wrk.Level:
        if load.content_type == h2load.GRPC_TYPE:
            clients, streams = (1, connections) if one_connection else (connections, 1)
            return h2load.run(
                grpc_target, load.path, load.bodies[0], connections=clients, streams=streams, seconds=seconds
            )
        return wrk.run(url, load, connections=connections, seconds=seconds)

    if args.warmup:
        load_for(args.warmup)
    wait_until_idle(url)
    failures_before = grpc_failures(url)
    batches_before, cpu_before, started_at = batch_counters(url), server_cpu_seconds(), time.perf_counter()
    level = load_for(args.duration)
    cpu = (server_cpu_seconds() - cpu_before) / (time.perf_counter() - started_at)
    batches_after = batch_counters(url)
    calls = batches_after[1] - batches_before[1]
    return {
        **level.to_dict(),
        "errors": level.errors + round(grpc_failures(url) - failures_before),
        "server_cpu_cores": round(cpu, 2),
        "mean_batch_size": (batches_after[0] - batches_before[0]) / calls if calls else None,
    }


def row_text(row: dict) -> str:
    batch = f", mean batch {row['mean_batch_size']:.1f}" if row["mean_batch_size"] else ""
    return (
        f"{row['connections']:>3} connections: {row['rps']:8.1f} req/s, p50 {row['p50_ms']:.1f} ms, "
        f"p99 {row['p99_ms']:.1f} ms, {row['errors']} errors{batch}; CPU cores: server "
        f"{row['server_cpu_cores']:.2f}, wrk {row['load_generator_cpu_cores']:.2f}"
    )


# --- in process ------------------------------------------------------------------------------------


class InProcess:
    """The served translate and detect signatures called directly in this process: the most a route could reach."""

    def __init__(self, artifacts: dict[str, Path], texts: list[str], scenes: list[bytes]):
        from serving import store
        from serving.contract import Role
        from serving.runtime import ModelRuntime

        self.texts, self.scenes = texts, scenes
        self.seq2seq = ModelRuntime(store.load(artifacts["seq2seq"]))
        self.detector = ModelRuntime(store.load(artifacts["detector"]))
        self.translate_signature = self.seq2seq.model.metadata.signature(Role.TEXTS)
        self.detect_signature = self.detector.model.metadata.signature(Role.IMAGE_BYTES)
        postprocessing = self.detector.model.metadata.postprocessing
        self.thresholds = {
            "score_threshold": postprocessing.score_threshold,
            "iou_threshold": postprocessing.iou_threshold,
        }

    def call(self, family: str, size: int) -> Callable[[], Any]:
        """One model call on a batch of `size` of the benchmark's own inputs."""
        if family == "translate":
            batch = np.array([text.encode() for text in (self.texts * size)[:size]], dtype=object)
            return lambda: self.seq2seq.call(self.translate_signature, batch, {"beam_width": BEAM_WIDTH})
        batch = np.array((self.scenes * size)[:size], dtype=object)
        return lambda: self.detector.call(self.detect_signature, batch, self.thresholds)

    def fastest_rate(self, family: str, size: int) -> float:
        """Items per second of the fastest of several calls (timeit's convention)."""
        call = self.call(family, size)
        call()  # the first call of a shape traces and optimises the graph
        seconds, _ = fastest_pass(call, repeats=5)
        return size / seconds

    def sustained_rate(self, family: str, size: int, seconds: float) -> float:
        """Items per second over `seconds` of calls back to back: the kind of figure wrk gives for the server."""
        call = self.call(family, size)
        call()
        started, items = time.perf_counter(), 0
        while time.perf_counter() - started < seconds:
            call()
            items += size
        return items / (time.perf_counter() - started)


def in_process_rates(models: InProcess, translate_batches: list[int]) -> dict:
    """Per family and batch size, the fastest call's items per second."""
    rates = {
        "translate": {size: models.fastest_rate("translate", size) for size in sorted(set(translate_batches))},
        "detect": {size: models.fastest_rate("detect", size) for size in DETECT_BATCH_SIZES},
    }
    for family, by_size in rates.items():
        print(f"in process, {family}: " + ", ".join(f"batch {size}: {rate:.0f}/s" for size, rate in by_size.items()))
    return rates


# --- paired rounds ---------------------------------------------------------------------------------

# Each ratio goal, as (measured, reference): a scenario of wrk, or a family called in process ("model:<family>").
PAIRED_GOALS = {
    "classify_vs_ceiling": ("classify-json", "ceiling"),
    "tfserving_vs_classify": ("tfserving-rest", "classify-json"),
    "grpc_vs_classify": ("classify-grpc", "classify-json"),
    "grpc_zttp_vs_classify": ("classify-grpc-zttp", "classify-json"),
    "grpc_vs_json_64": ("classify-grpc-64", "classify-json-64"),
    "translate_vs_in_process": ("translate", "model:translate"),
    "detect_vs_in_process": ("detect", "model:detect"),
}


def paired_rounds(
    context: dict[str, Any], args: argparse.Namespace, models: InProcess | None, detect_batch: int | None
) -> dict[str, list[float]]:
    """Each goal's ratio from --rounds rounds in which both of its sides are measured one after the other.

    On a shared machine the throughput of the same server moves by a fifth between minutes (the ceiling
    ran at 4,400 and 5,700 requests/s in two runs of the same day), so a ratio of two figures taken
    minutes apart says more about the machine than about the service. Here the ceiling and the service
    are both up, each round measures every side in turn at GOALS_AT connections, the in-process model as
    a sustained rate over the same --duration (at the batch size the route reached in that round, or
    the best in-process batch size for /detect), and the goals take the median round.
    """
    goals = {
        key: sides
        for key, sides in PAIRED_GOALS.items()
        if all(side in args.scenario_list or (side.startswith("model:") and models) for side in sides)
    }
    sides = list(dict.fromkeys(side for pair in goals.values() for side in pair))
    if not goals or not args.rounds:
        return {}
    print(f"\npaired rounds: {args.rounds} x {', '.join(sides)} at {GOALS_AT} connections, {args.duration:g} s each")
    ratios: dict[str, list[float]] = {key: [] for key in goals}
    with contextlib.ExitStack() as stack:
        urls = {
            server: stack.enter_context(started(server, context, args))
            for server in dict.fromkeys(SCENARIOS[side].server for side in sides if side in SCENARIOS)
        }
        for round_number in range(1, args.rounds + 1):
            rates: dict[str, float] = {}
            batches: dict[str, float | None] = {}
            for side in sides:
                if side.startswith("model:"):
                    family = side.removeprefix("model:")
                    size = detect_batch if family == "detect" else round(batches.get(family) or 1)
                    rates[side] = models.sustained_rate(family, size, args.duration)
                    continue
                server = SCENARIOS[side].server
                load = scenario_load(side, context)
                level = measure_level(urls[server], load, GOALS_AT, args, context["grpc_targets"].get(server))
                rates[side], batches[side] = level["rps"], level["mean_batch_size"]
            for key, (measured, reference) in goals.items():
                ratios[key].append(rates[measured] / rates[reference] if rates[reference] else 0.0)
            print(f"  round {round_number}: " + ", ".join(f"{side} {rate:.0f}/s" for side, rate in rates.items()))
    return ratios


# --- report ----------------------------------------------------------------------------------------


def find(rows: list[dict], scenario: str, connections: int) -> dict | None:
    return next((row for row in rows if row["scenario"] == scenario and row["connections"] == connections), None)


def rps_ratio(a: dict | None, b: dict | None) -> float | None:
    return a["rps"] / b["rps"] if a and b and b["rps"] else None


def summarize(
    rows: list[dict], in_process: dict | None, levels: list[int], paired: dict[str, list[float]] | None = None
) -> dict[str, Any]:
    """Every scenario's throughput against each anchor, per level; the goals at GOALS_AT connections.

    A ratio goal with paired rounds (`paired_rounds`) takes their median; without, the table's single ratio.
    """
    anchors = ("ceiling", "grpc-ceiling", "bentoml-noop", "bentoml-batchable", "naive")
    ratios = {
        anchor: {
            name: {n: rps_ratio(find(rows, name, n), find(rows, anchor, n)) for n in levels}
            for name in SCENARIOS
            if name != anchor and any(row["scenario"] == name for row in rows)
        }
        for anchor in anchors
        if any(row["scenario"] == anchor for row in rows)
    }
    at = GOALS_AT if GOALS_AT in levels else max(levels)
    classify, translate, detect = (find(rows, name, at) for name in ("classify-json", "translate", "detect"))
    translate_batch = round(translate["mean_batch_size"] or 1) if translate else None
    model_translate = in_process and translate_batch and in_process["translate"].get(translate_batch)
    model_detect = in_process and max(in_process["detect"].values())
    goals = {
        "classify_vs_ceiling": goal(rps_ratio(classify, find(rows, "ceiling", at)), GOAL_CLASSIFY_VS_CEILING),
        "classify_p99_ms": goal(classify and classify["p99_ms"], GOAL_CLASSIFY_P99_MS, below=True),
        "tfserving_vs_classify": goal(
            rps_ratio(find(rows, "tfserving-rest", at), classify), GOAL_TFSERVING_VS_CLASSIFY
        ),
        "grpc_vs_classify": goal(rps_ratio(find(rows, "classify-grpc", at), classify), GOAL_GRPC_VS_JSON),
        "grpc_zttp_vs_classify": goal(rps_ratio(find(rows, "classify-grpc-zttp", at), classify), GOAL_GRPC_VS_JSON),
        "grpc_vs_json_64": goal(
            rps_ratio(find(rows, "classify-grpc-64", at), find(rows, "classify-json-64", at)), GOAL_GRPC_VS_JSON
        ),
        "translate_vs_in_process": goal(
            translate["rps"] / model_translate if translate and model_translate else None, GOAL_TRANSLATE_VS_IN_PROCESS
        ),
        "translate_p99_ms": goal(translate and translate["p99_ms"], GOAL_TRANSLATE_P99_MS, below=True),
        "detect_vs_in_process": goal(
            detect["rps"] / model_detect if detect and model_detect else None, GOAL_DETECT_VS_IN_PROCESS
        ),
        "service_errors": goal(
            sum(row["errors"] for row in rows if row["scenario"] in SERVICE_SCENARIOS), 0, below=True, inclusive=True
        ),
    }
    for key, values in (paired or {}).items():
        if values:
            goals[key] = goal(statistics.median(values), goals[key]["goal"]) | {"rounds": values}
    return {"connections": at, "ratios": ratios, "goals": goals, "translate_batch": translate_batch}


def goal(value: float | None, target: float, *, below: bool = False, inclusive: bool = False) -> dict[str, Any]:
    if value is None:
        return {"value": None, "goal": target, "met": False}
    met = (value <= target if inclusive else value < target) if below else value >= target
    return {"value": value, "goal": target, "met": bool(met)}


GOAL_LINES = {
    "classify_vs_ceiling": "/classify JSON >= {goal:g}x the no-op ceiling",
    "classify_p99_ms": "/classify JSON p99 < {goal:g} ms",
    "tfserving_vs_classify": "TF Serving REST >= {goal:g}x /classify",
    "grpc_vs_classify": "gRPC Predict >= {goal:g}x /classify JSON, one digit",
    "grpc_zttp_vs_classify": "gRPC Predict on zttp >= {goal:g}x /classify JSON, one digit",
    "grpc_vs_json_64": "gRPC Predict >= {goal:g}x /classify JSON, 64 digits",
    "translate_vs_in_process": "/translate >= {goal:g}x in process at its batch size",
    "translate_p99_ms": "/translate p99 < {goal:g} ms",
    "detect_vs_in_process": "/detect >= {goal:g}x in-process best",
    "service_errors": "errors on this service's routes = {goal:g}",
}


def report_text(rows: list[dict], summary: dict[str, Any], levels: list[int], in_process: dict | None) -> str:
    lines = [
        f"{'scenario':<18} {'conns':>5} {'req/s':>8} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'errors':>6} "
        f"{'server CPU':>10} {'gen CPU':>7} {'batch':>6}"
    ]
    for row in rows:
        batch = f"{row['mean_batch_size']:.1f}" if row["mean_batch_size"] else "-"
        lines.append(
            f"{row['scenario']:<18} {row['connections']:>5} {row['rps']:>8.0f} {row['p50_ms']:>7.1f} "
            f"{row['p90_ms']:>7.1f} {row['p99_ms']:>7.1f} {row['errors']:>6} {row['server_cpu_cores']:>10.2f} "
            f"{row['load_generator_cpu_cores']:>7.2f} {batch:>6}"
        )
    lines.append(
        f"(CPU: cores used, of {os.cpu_count()}, by the server's processes and by the load generator, wrk or "
        "h2load for gRPC, during the level)"
    )
    for anchor, by_scenario in summary["ratios"].items():
        lines += ["", f"throughput / {anchor}:" + "".join(f"{f'{n} conns':>11}" for n in levels)]
        for name, values in by_scenario.items():
            cells = "".join(f"{'-' if values[n] is None else f'{values[n]:.2f}x':>11}" for n in levels)
            lines.append(f"  {name:<{len(anchor) + 12}}{cells}")
    if in_process:
        translate = find(rows, "translate", summary["connections"])
        lines.append("")
        for family, by_size in in_process.items():
            best = max(by_size, key=by_size.get)
            lines.append(
                f"in process, {family}: best {by_size[best]:.0f}/s at batch {best}; "
                + ", ".join(f"{size}: {rate:.0f}" for size, rate in by_size.items())
            )
        if translate:
            lines.append(
                f"  (/translate reached a mean batch of {translate['mean_batch_size'] or 1:.1f} at "
                f"{summary['connections']} connections)"
            )
    lines += ["", f"goals at {summary['connections']} connections:"]
    for key, text in GOAL_LINES.items():
        result = summary["goals"][key]
        value = "-" if result["value"] is None else f"{result['value']:.2f}"
        rounds = (
            f"; median of rounds {', '.join(f'{ratio:.2f}' for ratio in result['rounds'])}"
            if "rounds" in result
            else ""
        )
        lines.append(
            f"  {text.format(goal=result['goal']):<52} {'MET' if result['met'] else 'NOT MET':<8} ({value}{rounds})"
        )
    return "\n".join(lines)


def plot(rows: list[dict], levels: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6))
    for name in SCENARIOS:
        mine = sorted((row for row in rows if row["scenario"] == name), key=lambda row: row["connections"])
        if not mine:
            continue
        style = "--" if SCENARIOS[name].server not in SERVICES else "-"
        connections = [row["connections"] for row in mine]
        left.plot(connections, [row["rps"] for row in mine], style, marker="o", label=name)
        right.plot(connections, [row["p99_ms"] for row in mine], style, marker="o", label=name)
    for axis, title, label in ((left, "Throughput", "requests/s"), (right, "p99 latency", "ms")):
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xticks(levels, [str(level) for level in levels])
        axis.set_xlabel("connections (wrk; h2load for gRPC)")
        axis.set_ylabel(label)
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8)
    figure.suptitle(f"Serving on {os.cpu_count()} CPU cores: anchors dashed, this service solid")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# --- main ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk.executable()  # fail before any training when the load generator is missing
    grpc_scenarios = [name for name in args.scenario_list if SCENARIOS[name].content_type == h2load.GRPC_TYPE]
    if grpc_scenarios and shutil.which("h2load") is None:
        print(f"h2load is not installed (apt-get install nghttp2-client): {', '.join(grpc_scenarios)} left out")
        args.scenario_list = [name for name in args.scenario_list if name not in grpc_scenarios]
    if "bentoml" in sys.modules:
        raise RuntimeError("bentoml was imported before BENTOML_HOME was set")
    bentoml_home = tempfile.mkdtemp(prefix="bentoml-bench-")
    workdir = Path(tempfile.mkdtemp(prefix="modelservice-bench-"))
    os.environ["BENTOML_HOME"] = bentoml_home
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("CI", "1")  # one line per training epoch, no progress bars
    args.out = args.out.resolve()
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    try:
        from benchmarks.detection import sample_images
        from pipelines.export.artifact import register_in_bentoml

        artifacts = prepare_models(args, workdir)
        scenes = sample_images(16, seed=0)  # 128x128 PNGs
        from serving.process import free_port

        names = {family: read_metadata(path).name for family, path in artifacts.items()}
        context = {
            "artifacts": artifacts,
            "tags": {family: register_in_bentoml(path) for family, path in artifacts.items()},
            "names": names,
            "labels": list(read_metadata(artifacts["classifier"]).labels),
            "keras_model": naive_keras_model(args, artifacts["classifier"]),
            "bodies": request_bodies(scenes, names["classifier"]),
            "grpc_targets": {server: f"http://127.0.0.1:{free_port()}" for server in (*SERVICES, "ceiling")},
        }
        if "naive" in args.scenario_list and context["keras_model"] is None:
            print("no .keras file of the classifier's run (pass --keras-model): the naive scenario is left out")
            args.scenario_list.remove("naive")
        print(
            f"\n{len(args.scenario_list)} scenarios x {len(args.levels)} levels x {args.warmup + args.duration:g} s; "
            f"connections {args.levels}; {os.cpu_count()} CPUs shared by the server and wrk"
        )
        rows = []
        servers = dict.fromkeys(SCENARIOS[name].server for name in args.scenario_list)
        for server in servers:
            names = [name for name in args.scenario_list if SCENARIOS[name].server == server]
            rows += measure_server(server, names, context, args)
        in_process = models = None
        if {"translate", "detect"} & set(args.scenario_list):
            batches = [round(row["mean_batch_size"] or 1) for row in rows if row["scenario"] == "translate"]
            texts = [json.loads(body)["texts"][0] for body in context["bodies"]["texts"]]
            models = InProcess(artifacts, texts, scenes)
            in_process = in_process_rates(models, batches or [1])
        best_detect = max(in_process["detect"], key=in_process["detect"].get) if in_process else None
        paired = paired_rounds(context, args, models, best_detect)
        summary = summarize(rows, in_process, args.levels, paired)
        print("\n" + report_text(rows, summary, args.levels, in_process))
        total = time.perf_counter() - began
        results = {
            "settings": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
            "artifacts": {family: str(path) for family, path in artifacts.items()},
            "environment": environment(
                (
                    "tensorflow",
                    "tensorflow-cpu",
                    "keras",
                    "bentoml",
                    "fastapi",
                    "starlette",
                    "uvicorn",
                    "uvloop",
                    "httptools",
                    "grpcio",
                    "zttp",
                )
            )
            | {"wrk": subprocess_version()}
            | ({"h2load": h2load.version()} if shutil.which("h2load") else {}),
            "results": rows,
            "in_process": in_process,
            **summary,
            "total_seconds": round(total, 1),
        }
        (args.out / "serving.json").write_text(json.dumps(results, indent=2, default=str))
        plot(rows, args.levels, args.out / "serving.png")
        print(
            f"\nwrote {args.out / 'serving.json'} and {args.out / 'serving.png'} "
            f"(server logs in {args.out / 'logs'}); total {total:.0f} s"
        )
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(bentoml_home, ignore_errors=True)


def subprocess_version() -> str:
    import subprocess

    result = subprocess.run([wrk.executable(), "--version"], capture_output=True, text=True)
    return (result.stdout or result.stderr).strip().splitlines()[0]


if __name__ == "__main__":
    sys.exit(main())
