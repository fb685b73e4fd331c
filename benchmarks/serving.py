"""Load-test the model service: adaptive batching vs. no batching vs. a naive Keras server.

    python -m benchmarks.serving                                   # trains a small digits MLP first
    python -m benchmarks.serving --artifact artifacts/classifier/1 --keras-model runs/classifier/model.keras
    python -m benchmarks.serving --clients 1,16,64 --duration 10 --targets batching,naive

Three targets are measured one after another, never at the same time, on loopback only:

  batching     the BentoML service (`serving.service`) with its adaptive batcher
  no-batching  the same service with MODELSERVICE_BATCHING=0 (every request is its own model call)
  naive        `benchmarks.naive_app`: FastAPI + uvicorn calling `model.predict` on the .keras file per request

The load is a closed loop: N clients (one httpx.AsyncClient and keep-alive connection each, in one
asyncio process) each send POST /classify back to back, one 8x8 digit from the digits test split per
request as pre-serialized JSON, for --duration seconds after --warmup seconds whose requests are not
counted. Errors are non-200 answers and exceptions (timeouts, refused connections). The load generator
shares the CPU cores with the server; the table shows how many cores each used. Results: a table
on stdout, throughput ratios, the goals (>= 10x the naive throughput and p99 < 100 ms at 64 clients,
zero errors), and `serving.json`, `serving.png` and the servers' logs under --out.

The model store is private: BENTOML_HOME points at a temporary folder, set before BentoML is imported.
"""

import argparse
import asyncio
import contextlib
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.common import environment
from serving.contract import METADATA_FILE, read_metadata

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("batching", "no-batching", "naive")
GOAL_SPEEDUP = 10.0
GOAL_P99_MS = 100.0
GOAL_CLIENTS = 64


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.serving", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--artifact",
        type=Path,
        help="an exported classifier version folder (e.g. artifacts/classifier/1); "
        "default: train a small digits MLP into a temporary folder",
    )
    parser.add_argument(
        "--keras-model",
        type=Path,
        help="the .keras file for the naive baseline "
        "(default: the trained model, or runs/<name>/model.keras with --artifact)",
    )
    parser.add_argument(
        "--clients", default="1,16,64", help="comma-separated numbers of concurrent clients (default: %(default)s)"
    )
    parser.add_argument(
        "--duration", type=float, default=10.0, help="measured seconds per level (default: %(default)s)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        help="unmeasured seconds of the same load before each level (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="per-request timeout in seconds; a timeout counts as an error (default: %(default)s)",
    )
    parser.add_argument(
        "--targets", default=",".join(TARGETS), help=f"comma-separated subset of {', '.join(TARGETS)} (default: all)"
    )
    parser.add_argument(
        "--epochs", type=int, default=3, help="training epochs when no --artifact is given (default: %(default)s)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=PROJECT_ROOT / "benchmarks" / "results",
        help="folder for serving.json, serving.png and server logs (default: %(default)s)",
    )
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=180.0,
        help="seconds to wait for each server to become ready (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        args.levels = sorted({int(part) for part in args.clients.split(",") if part.strip()})
    except ValueError:
        parser.error(f"--clients must be comma-separated integers, got {args.clients!r}")
    if not args.levels or min(args.levels) < 1:
        parser.error("--clients needs at least one level, each >= 1")
    args.target_list = [part.strip() for part in args.targets.split(",") if part.strip()]
    if unknown := set(args.target_list) - set(TARGETS):
        parser.error(f"unknown targets {sorted(unknown)}; choose from {', '.join(TARGETS)}")
    if args.duration <= 0 or args.warmup < 0:
        parser.error("--duration must be > 0 and --warmup >= 0")
    if args.artifact and not (args.artifact / METADATA_FILE).is_file():
        parser.error(f"{args.artifact} is not an exported model version (no {METADATA_FILE})")
    if args.keras_model and not args.keras_model.is_file():
        parser.error(f"{args.keras_model} does not exist")
    return args


# --- set-up ----------------------------------------------------------------------------------------


def prepare_model(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Train (or take) a classifier artifact, register it in the private store; return what the targets need."""
    from pipelines import classifier
    from pipelines.data.image_data import load_digits
    from pipelines.export.artifact import register_in_bentoml
    from pipelines.training.loop import TrainingConfig

    digits = load_digits(seed=0)
    if args.artifact:
        artifact = args.artifact.resolve()
        metadata = read_metadata(artifact)
        keras_model = args.keras_model or PROJECT_ROOT / "runs" / metadata.name / "model.keras"
    else:
        started = time.perf_counter()
        config = classifier.ClassifierConfig(
            augment=False, training=TrainingConfig(epochs=args.epochs, batch_size=32, learning_rate=2e-3, patience=0)
        )
        trained = classifier.FAMILY.train(config, digits, workdir / "run")
        report = classifier.FAMILY.evaluate(trained, digits, workdir / "run")
        artifact = classifier.FAMILY.export(trained, digits, report, workdir / "artifacts")
        metadata = read_metadata(artifact)
        keras_model = args.keras_model or workdir / "run" / "model.keras"
        print(
            f"trained and exported {artifact} in {time.perf_counter() - started:.1f} s "
            f"(test accuracy {report['test_accuracy']:.3f})"
        )
    tag = register_in_bentoml(artifact)
    print(f"registered {tag} in the private BentoML store {os.environ['BENTOML_HOME']}")
    images = digits.test.images[..., 0]  # (N, 8, 8) uint8: each request is one 8x8 nested list
    bodies = [json.dumps({"instances": [image.tolist()]}, separators=(",", ":")).encode() for image in images]
    return {
        "tag": tag,
        "artifact": str(artifact),
        "keras_model": Path(keras_model),
        "labels": list(metadata.labels),
        "bodies": bodies,
    }


def naive_server(keras_model: Path, labels: list[str], log_path: Path, timeout: float):
    from serving.process import free_port, running_process

    port = free_port()
    command = [
        sys.executable,
        "-m",
        "benchmarks.naive_app",
        "--model",
        str(keras_model),
        "--labels",
        json.dumps(labels),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    return running_process(command, port=port, log_path=log_path, timeout=timeout)


@contextlib.contextmanager
def target_server(target: str, model: dict[str, Any], args: argparse.Namespace) -> Iterator[str]:
    log_path = args.out / "logs" / f"{target}.log"
    if target == "naive":
        with naive_server(model["keras_model"], model["labels"], log_path, args.startup_timeout) as url:
            yield url
        return
    from serving.process import running_server

    env = {"MODELSERVICE_MODELS": model["tag"]}
    if target == "no-batching":
        env["MODELSERVICE_BATCHING"] = "0"
    with running_server(env=env, log_path=log_path, timeout=args.startup_timeout) as url:
        yield url


# --- load generator --------------------------------------------------------------------------------


def lean_httpx() -> None:
    """Keep httpx's per-request cost down in this process (it shares the 2 cores with the servers)."""
    import importlib.util

    # httpcore imports `sniffio` on every request to tell asyncio from trio; anyio 4.16 no longer
    # installs it, so each request paid for a failed import (a sys.path scan, ~0.1 ms). A None entry
    # in sys.modules makes that import fail at once, and httpcore then assumes asyncio, which is right.
    if importlib.util.find_spec("sniffio") is None:
        sys.modules["sniffio"] = None


async def run_level(
    url: str, bodies: list[bytes], clients: int, duration: float, warmup: float, timeout: float
) -> dict[str, Any]:
    """`clients` closed-loop clients for warmup + duration seconds; statistics of the measured part."""
    import ssl

    import httpx
    import numpy as np

    # One AsyncClient (one keep-alive connection) per simulated client: httpcore's pool scans every
    # queued request against every connection on each request, so one client with 64 connections
    # spends most of its CPU in the pool (~130 req/s instead of ~500 at 64 clients on 2 cores).
    tls = ssl.create_default_context()  # never used on http://127.0.0.1, but shared instead of built 64 times
    sessions = [
        httpx.AsyncClient(
            base_url=url,
            verify=tls,
            timeout=timeout,
            limits=httpx.Limits(max_connections=1),
            headers={"content-type": "application/json"},
        )
        for _ in range(clients)
    ]
    latencies: list[float] = []
    error_count = 0
    error_samples: dict[str, int] = {}
    last_end = 0.0

    async def one_client(index: int, measure_from: float, stop: float) -> None:
        nonlocal error_count, last_end
        session, position = sessions[index], index
        while (started := time.perf_counter()) < stop:
            try:
                response = await session.post("/classify", content=bodies[position % len(bodies)])
                problem = None if response.status_code == 200 else f"HTTP {response.status_code}: {response.text[:120]}"
            except Exception as error:
                problem = f"{type(error).__name__}: {str(error)[:120]}"
            ended = time.perf_counter()
            position += clients
            if started < measure_from:
                continue
            last_end = max(last_end, ended)
            if problem is None:
                latencies.append(ended - started)
            else:
                error_count += 1
                error_samples[problem] = error_samples.get(problem, 0) + 1

    gc.disable()  # a collection in the load generator would show up as server latency
    try:
        begin, client_cpu = time.perf_counter(), time.process_time()
        measure_from, stop = begin + warmup, begin + warmup + duration
        try:
            await asyncio.wait_for(
                asyncio.gather(*(one_client(i, measure_from, stop) for i in range(clients))),
                warmup + duration + timeout + 10,
            )
        except TimeoutError:  # cannot happen with per-request timeouts, but the run stays bounded
            error_count += 1
            error_samples["the level did not finish in time"] = 1
        client_cpu = (time.process_time() - client_cpu) / (time.perf_counter() - begin)
    finally:
        gc.enable()
        await asyncio.gather(*(session.aclose() for session in sessions))
    gc.collect()

    elapsed = max(last_end - measure_from, duration) if latencies or error_count else duration
    values = np.array(latencies) * 1000.0
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": error_count,
        "error_samples": dict(sorted(error_samples.items(), key=lambda item: -item[1])[:5]),
        "seconds": round(elapsed, 3),
        "rps": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(values, 50)) if len(values) else None,
        "p90_ms": float(np.percentile(values, 90)) if len(values) else None,
        "p99_ms": float(np.percentile(values, 99)) if len(values) else None,
        "mean_ms": float(values.mean()) if len(values) else None,
        "max_ms": float(values.max()) if len(values) else None,
        "load_generator_cpu_cores": round(client_cpu, 2),
    }


def batch_counters(url: str) -> tuple[float, float] | None:
    """(sum, count) of any batch-size histogram on /metrics, or None when the service exports none."""
    import httpx

    try:
        text = httpx.get(f"{url}/metrics", timeout=5).text
    except httpx.HTTPError:
        return None
    total = count = 0.0
    found = False
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        if "batch_size" not in name or name.startswith("bentoml_service_adaptive"):
            continue
        if name.endswith("_sum"):
            total += float(value)
            found = True
        elif name.endswith("_count"):
            count += float(value)
    return (total, count) if found else None


def server_cpu_seconds() -> float:
    """CPU seconds used so far by this process's children: the one target server running now."""
    import psutil

    total = 0.0
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            times = child.cpu_times()
            total += times.user + times.system
    return total


def sanity_check(url: str, body: bytes) -> str | None:
    """None when one request gets a 200 with predictions, else what went wrong."""
    import httpx

    try:
        response = httpx.post(f"{url}/classify", content=body, headers={"content-type": "application/json"}, timeout=60)
    except httpx.HTTPError as error:
        return f"{type(error).__name__}: {error}"
    if response.status_code != 200 or "predictions" not in response.json():
        return f"HTTP {response.status_code}: {response.text[:200]}"
    return None


def measure_target(target: str, model: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    started = time.perf_counter()
    with target_server(target, model, args) as url:
        print(f"\n[{target}] ready at {url} after {time.perf_counter() - started:.1f} s")
        if problem := sanity_check(url, model["bodies"][0]):
            print(f"[{target}] the first request failed: {problem}")
        for clients in args.levels:
            before = batch_counters(url) if target != "naive" else None
            server_cpu, began = server_cpu_seconds(), time.perf_counter()
            row = asyncio.run(run_level(url, model["bodies"], clients, args.duration, args.warmup, args.timeout))
            row["server_cpu_cores"] = round((server_cpu_seconds() - server_cpu) / (time.perf_counter() - began), 2)
            after = batch_counters(url) if before is not None else None
            row["target"] = target
            row["mean_batch_size"] = (
                (after[0] - before[0]) / (after[1] - before[1]) if after and after[1] > before[1] else None
            )
            rows.append(row)
            batch = f", mean batch {row['mean_batch_size']:.1f}" if row["mean_batch_size"] else ""
            print(
                f"[{target}] {clients:>3} clients: {row['rps']:8.1f} req/s, "
                f"p50 {fmt_ms(row['p50_ms'])} ms, p99 {fmt_ms(row['p99_ms'])} ms, "
                f"{row['errors']} errors{batch}; CPU cores used: server {row['server_cpu_cores']}, "
                f"load generator {row['load_generator_cpu_cores']}"
            )
            for problem, count in row["error_samples"].items():
                print(f"[{target}]     {count} x {problem}")
    return rows


# --- report ----------------------------------------------------------------------------------------


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def ratio(a: dict | None, b: dict | None) -> float | None:
    if not a or not b or not b["rps"]:
        return None
    return a["rps"] / b["rps"]


def summarize(rows: list[dict[str, Any]], levels: list[int]) -> dict[str, Any]:
    by = {(row["target"], row["clients"]): row for row in rows}
    ratios = {
        "batching_vs_naive": {
            clients: ratio(by.get(("batching", clients)), by.get(("naive", clients))) for clients in levels
        },
        "batching_vs_no_batching": {
            clients: ratio(by.get(("batching", clients)), by.get(("no-batching", clients))) for clients in levels
        },
    }
    goal_level = GOAL_CLIENTS if GOAL_CLIENTS in levels else max(levels)
    service = by.get(("batching", goal_level))
    speedup = ratios["batching_vs_naive"][goal_level]
    batching_errors = [row["errors"] for row in rows if row["target"] == "batching"]
    goals = {
        "clients": goal_level,
        "speedup_vs_naive": {
            "goal": GOAL_SPEEDUP,
            "value": speedup,
            "met": speedup is not None and speedup >= GOAL_SPEEDUP,
        },
        "p99_ms": {
            "goal": GOAL_P99_MS,
            "value": service and service["p99_ms"],
            "met": bool(service and service["p99_ms"] is not None and service["p99_ms"] < GOAL_P99_MS),
        },
        "errors": {
            "goal": 0,
            "value": sum(batching_errors) if batching_errors else None,
            "met": bool(batching_errors) and sum(batching_errors) == 0,
        },
    }
    return {"ratios": ratios, "goals": goals}


def report_text(rows: list[dict[str, Any]], summary: dict[str, Any], levels: list[int]) -> str:
    with_batches = any(row.get("mean_batch_size") for row in rows)
    header = (
        f"{'target':<12} {'clients':>7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'errors':>7} {'server CPU':>10} {'client CPU':>10}"
    )
    lines = [header + (f" {'batch':>6}" if with_batches else "")]
    for row in rows:
        line = (
            f"{row['target']:<12} {row['clients']:>7} {row['rps']:>9.1f} "
            f"{fmt_ms(row['p50_ms']):>8} {fmt_ms(row['p99_ms']):>8} "
            f"{row['errors']:>7} {row['server_cpu_cores']:>10.2f} {row['load_generator_cpu_cores']:>10.2f}"
        )
        if with_batches:
            line += f" {row['mean_batch_size']:>6.1f}" if row.get("mean_batch_size") else f" {'-':>6}"
        lines.append(line)
    lines.append(
        f"(CPU columns: cores used, of {os.cpu_count()}, by the target server's processes "
        "and by this load generator during the level)"
    )
    lines.append("")
    for key, title in (
        ("batching_vs_naive", "throughput batching / naive"),
        ("batching_vs_no_batching", "throughput batching / no-batching"),
    ):
        values = summary["ratios"][key]
        cells = "   ".join(
            f"{clients} clients: {'-' if values[clients] is None else f'{values[clients]:.1f}x'}" for clients in levels
        )
        lines.append(f"{title + ':':<37}{cells}")
    goals = summary["goals"]
    met = lambda goal: "MET" if goal["met"] else "NOT MET"  # noqa: E731
    speedup, p99, errors = goals["speedup_vs_naive"], goals["p99_ms"], goals["errors"]
    lines += [
        "",
        f"goals at {goals['clients']} clients"
        + ("" if goals["clients"] == GOAL_CLIENTS else f" ({GOAL_CLIENTS} not in --clients: the highest level instead)")
        + ":",
        f"  throughput >= {GOAL_SPEEDUP:g}x naive: {met(speedup)} "
        f"({'-' if speedup['value'] is None else format(speedup['value'], '.1f') + 'x'})",
        f"  p99 < {GOAL_P99_MS:g} ms:              {met(p99)} ({fmt_ms(p99['value'])} ms)",
        f"  zero errors (batching, all levels): {met(errors)} "
        f"({'-' if errors['value'] is None else errors['value']} errors)",
    ]
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], levels: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for target in TARGETS:
        mine = sorted((row for row in rows if row["target"] == target), key=lambda row: row["clients"])
        if not mine:
            continue
        clients = [row["clients"] for row in mine]
        left.plot(clients, [row["rps"] for row in mine], marker="o", label=target)
        right.plot(clients, [row["p99_ms"] or float("nan") for row in mine], marker="o", label=target)
    for axis, title, label in ((left, "Throughput", "requests/s"), (right, "p99 latency", "ms")):
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xticks(levels, [str(level) for level in levels])
        axis.set_xlabel("concurrent clients")
        axis.set_ylabel(label)
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    right.axhline(GOAL_P99_MS, color="grey", linestyle="--", linewidth=1)
    figure.suptitle("POST /classify, one 8x8 digit per request")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# --- main ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if "bentoml" in sys.modules:
        raise RuntimeError("bentoml was imported before BENTOML_HOME was set")
    bentoml_home = tempfile.mkdtemp(prefix="bentoml-bench-")
    workdir = Path(tempfile.mkdtemp(prefix="modelservice-bench-"))
    os.environ["BENTOML_HOME"] = bentoml_home
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("CI", "1")  # one line per training epoch, no progress bars
    args.out = args.out.resolve()
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        model = prepare_model(args, workdir)
        if "naive" in args.target_list and not model["keras_model"].is_file():
            raise SystemExit(
                f"the naive baseline needs a .keras file: {model['keras_model']} does not exist (pass --keras-model)"
            )
        lean_httpx()
        gc.collect()
        gc.freeze()  # the set-up's objects (TensorFlow's included) need no more collecting
        per_level = args.warmup + args.duration
        print(
            f"\n{len(args.target_list)} targets x {len(args.levels)} levels x {per_level:g} s; "
            f"clients {args.levels}; {os.cpu_count()} CPUs shared by servers and load generator"
        )
        rows = []
        for target in args.target_list:
            rows += measure_target(target, model, args)
        summary = summarize(rows, args.levels)
        text = report_text(rows, summary, args.levels)
        total = time.perf_counter() - started
        print("\n" + text)
        results = {
            "settings": {key: value for key, value in vars(args).items() if key not in ("out",)}
            | {"out": str(args.out)},
            "model": {"tag": model["tag"], "artifact": model["artifact"], "keras_model": str(model["keras_model"])},
            "environment": environment(
                ("tensorflow", "tensorflow-cpu", "keras", "bentoml", "fastapi", "uvicorn", "httpx")
            ),
            "results": rows,
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


if __name__ == "__main__":
    sys.exit(main())
