"""What one request costs the server's event-loop thread: /classify JSON against TF Serving's gRPC Predict.

    python -m benchmarks.loop_cost                      # the latest classifier in artifacts/, or a small one
    python -m benchmarks.loop_cost --rate 2560 --rounds 5 --duration 5

Each worker answers every HTTP request and gRPC call on one event-loop thread, and that thread is what limits
its requests per second. Throughput at saturation moves by a fifth between minutes on a shared machine, more
than the differences between two request paths; the CPU time the loop's thread spends per request, at a
fixed rate below saturation (h2load `--rps`, 64 clients), moves far less. Measured for one digit a request:

  service /classify        this service's JSON route (HTTP/1.1)
  service gRPC Predict     the same digit as a float32 tensor, on the same server
  gRPC Predict on zttp     the same call to a second server with MODELSERVICE_GRPC_SERVER=zttp (uvicorn's HTTP/2)
  no-op HTTP               `benchmarks.ceiling_app`: uvicorn + FastAPI parsing the JSON, answering a constant
  no-op gRPC               the same app's grpcio servers, as the service runs them, answering a constant

The no-op rows are what the web stack alone costs the loop; the rest of a service row is the request's own
work (input checks, batching, the answer). Prints the median over --rounds (each target measured once a
round, in turn) and writes loop_cost.json under --out. Needs h2load (apt-get install nghttp2-client).
"""

import argparse
import atexit
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks import h2load
from benchmarks.common import environment
from serving.contract import latest_version, read_metadata

PREDICT_PATH = "/tensorflow.serving.PredictionService/Predict"
CLIENTS = 64


@dataclass(frozen=True)
class Target:
    name: str
    server: str  # "service", "service-zttp" (MODELSERVICE_GRPC_SERVER=zttp) or "ceiling"
    grpc: bool


TARGETS = (
    Target("service /classify", "service", grpc=False),
    Target("service gRPC Predict", "service", grpc=True),
    Target("gRPC Predict on zttp", "service-zttp", grpc=True),
    Target("no-op HTTP", "ceiling", grpc=False),
    Target("no-op gRPC", "ceiling", grpc=True),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.loop_cost",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=Path("artifacts"),
        help="exported artifacts: the latest classifier is served, or a small one is trained (default: %(default)s)",
    )
    parser.add_argument(
        "--rate", type=int, default=2560, help=f"requests a second, over {CLIENTS} clients (default: %(default)s)"
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per target and round (default: 5)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the median is reported (default: 5)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench"), help="where loop_cost.json goes")
    args = parser.parse_args(argv)
    if args.rate < CLIENTS or args.duration < 1 or args.rounds < 1:
        parser.error(f"--rate must be at least {CLIENTS}, --duration at least 1 and --rounds at least 1")
    return args


def loop_seconds(pid: int) -> float:
    """CPU seconds used so far by the process's main thread, which runs its event loop."""
    import psutil

    main_thread = next(thread for thread in psutil.Process(pid).threads() if thread.id == pid)
    return main_thread.user_time + main_thread.system_time


@contextlib.contextmanager
def servers(classifier: Path, logs: Path) -> Iterator[dict[str, tuple[str, str, int]]]:
    """The servers up: name -> (HTTP URL, gRPC target, pid of the process whose loop answers)."""
    from pipelines.export.artifact import register_in_bentoml
    from serving.process import free_port, home_beside, running_process, running_server, server_worker

    service_grpc, zttp_grpc, ceiling_port, ceiling_grpc = free_port(), free_port(), free_port(), free_port()
    models = register_in_bentoml(classifier)
    env = {"MODELSERVICE_MODELS": models, "MODELSERVICE_GRPC_PORT": str(service_grpc)}
    zttp_env = {
        "MODELSERVICE_MODELS": models,
        "MODELSERVICE_GRPC_PORT": str(zttp_grpc),
        "MODELSERVICE_GRPC_SERVER": "zttp",
    } | home_beside(logs / "bentoml-service-zttp")  # BentoML's metrics folder is per home
    ceiling = [sys.executable, "-m", "benchmarks.ceiling_app", "--grpc-port", str(ceiling_grpc)]
    ceiling += ["--host", "127.0.0.1", "--port", str(ceiling_port)]
    with (
        running_server(env=env, log_path=logs / "service.log") as service_url,
        running_server(env=zttp_env, log_path=logs / "service-zttp.log") as zttp_url,
        running_process(ceiling, port=ceiling_port, log_path=logs / "ceiling.log") as ceiling_url,
    ):

        def address(url: str, grpc_port: int) -> tuple[str, str, int]:
            return url, f"http://127.0.0.1:{grpc_port}", server_worker(int(url.rpartition(":")[2])).pid

        yield {
            "service": address(service_url, service_grpc),
            "service-zttp": address(zttp_url, zttp_grpc),
            "ceiling": address(ceiling_url, ceiling_grpc),
        }


def send(target: Target, address: tuple[str, str, int], bodies: dict[str, bytes], **load) -> h2load.Level:
    url, grpc_target, _ = address
    if target.grpc:
        return h2load.run(grpc_target, PREDICT_PATH, bodies["grpc"], connections=CLIENTS, **load)
    return h2load.run(url, "/classify", bodies["json"], json_over_http1=True, connections=CLIENTS, **load)


def measure(target: Target, address: tuple[str, str, int], bodies: dict[str, bytes], args: argparse.Namespace) -> dict:
    pid = address[2]
    started_cpu, started = loop_seconds(pid), time.perf_counter()
    level = send(target, address, bodies, seconds=args.duration, rate=round(args.rate / CLIENTS))
    cpu = loop_seconds(pid) - started_cpu
    return {
        "requests_per_second": level.rps,
        "errors": level.errors,
        "loop_busy": cpu / (time.perf_counter() - started),
        "loop_us_per_request": cpu / level.requests * 1e6 if level.requests else float("nan"),
    }


def report(rows: dict[str, list[dict]]) -> tuple[str, dict]:
    medians = {
        name: {key: statistics.median(row[key] for row in measured) for key in measured[0]}
        for name, measured in rows.items()
    }
    lines = [f"{'target':<22} {'req/s':>7} {'errors':>6} {'loop busy':>9} {'loop µs/request':>16}   rounds"]
    for name, median in medians.items():
        each = ", ".join(f"{row['loop_us_per_request']:.0f}" for row in rows[name])
        lines.append(
            f"{name:<22} {median['requests_per_second']:7.0f} {median['errors']:6.0f} {median['loop_busy']:9.2f} "
            f"{median['loop_us_per_request']:16.0f}   {each}"
        )
    cost = {name: median["loop_us_per_request"] for name, median in medians.items()}
    lines += [
        "",
        f"gRPC Predict / /classify, loop µs a request: {cost['service gRPC Predict'] / cost['service /classify']:.2f}",
        f"zttp Predict / /classify, loop µs a request: {cost['gRPC Predict on zttp'] / cost['service /classify']:.2f}",
        f"no-op gRPC / no-op HTTP:                     {cost['no-op gRPC'] / cost['no-op HTTP']:.2f}",
        f"no-op gRPC / service /classify:              {cost['no-op gRPC'] / cost['service /classify']:.2f}"
        "   (what grpcio alone costs, against a whole JSON request)",
    ]
    return "\n".join(lines), medians


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if shutil.which("h2load") is None:  # make bench goes on to the other benchmarks
        print("h2load is not installed (apt-get install nghttp2-client): benchmarks.loop_cost left out")
        return
    if "bentoml" not in sys.modules:  # a private model store; else the one BentoML was imported with (tests')
        os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="loop-cost-bentoml-")
        atexit.register(shutil.rmtree, os.environ["BENTOML_HOME"], ignore_errors=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("CI", "1")
    from benchmarks.serving import request_bodies, train_small_classifier

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="loop-cost-") as workdir:
        classifier = latest_version(args.model_dir / "classifier")
        if classifier is None:
            print(f"no classifier in {args.model_dir}: training a small one")
            classifier = train_small_classifier(Path(workdir))
        one_digit = request_bodies([], read_metadata(classifier).name, count=1)  # gRPC calls name the model
        bodies = {"json": one_digit["digits"][0], "grpc": one_digit["digit_calls"][0]}
        rows: dict[str, list[dict]] = {target.name: [] for target in TARGETS}
        with servers(classifier.resolve(), args.out) as addresses:
            for target in TARGETS:  # warm-up: connections, batchers, caches
                send(target, addresses[target.server], bodies, seconds=2)
                # h2load counts HTTP statuses; a gRPC call's own status is in its trailers, so one is checked here.
                if target.grpc:
                    problem = h2load.first_answer(addresses[target.server][1], PREDICT_PATH, bodies["grpc"])
                    if problem:
                        raise SystemExit(f"{target.name} does not answer: {problem}")
            for round_number in range(args.rounds):
                for target in TARGETS:
                    rows[target.name].append(measure(target, addresses[target.server], bodies, args))
                print(f"round {round_number + 1}/{args.rounds} done", flush=True)
    text, medians = report(rows)
    print(f"\n{args.rate} requests/s over {CLIENTS} clients, {args.duration:g} s a target, median of {args.rounds}:\n")
    print(text)
    results = {"settings": {**vars(args), "model_dir": str(args.model_dir), "out": str(args.out)}}
    results |= {"rounds": rows, "medians": medians, "environment": environment(("grpcio", "uvicorn", "bentoml"))}
    (args.out / "loop_cost.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwritten: {args.out / 'loop_cost.json'}")


if __name__ == "__main__":
    main()
