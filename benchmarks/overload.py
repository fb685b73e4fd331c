"""Past capacity: how fast the service refuses, and how long the requests it accepts wait.

    python -m benchmarks.overload                          # the latest artifacts/classifier, or a small one trained now
    python -m benchmarks.overload --connections 1000 --duration 20 --out benchmarks/results

The real server (`python -m serving`) serves the classifier. wrk keeps `--capacity-connections` (64)
keep-alive connections busy on POST /classify for `--duration` seconds, then `--connections` (1000), far
past what 2 cores answer in time. wrk's connections behave as well-made clients do: one answered 503 waits
its `Retry-After` before sending again (a client that retries at once only turns refusals into load).
wrk cannot tell a 200's latency from a 503's, so `--probes` of the connections are clients in this process
that time every answer by its status and send again at once, to sample as many answers as they can.
The server's own counters (/metrics, by status) give the totals.

It prints, per level: answers per second by status, the probes' p50/p99 for accepted (200) and refused (503)
requests, and the goals of issue 18: refusals within 50 ms (p99), accepted requests' p99 under 100 ms at
1000 connections, no other status and no connection error; and the goodput ratio, 200s per second at 1000
connections over 200s per second at 64 (the same run), which shedding should keep near 1.
Writes `<out>/overload.json` and `<out>/overload.png`.
"""

import argparse
import asyncio
import functools
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import wrk
from benchmarks.common import environment, plot_grouped_bars, save_results, settings
from benchmarks.model_swaps import classifier_artifact  # the latest in --model-dir, else a small one trained

JSON_HEADERS = {"content-type": "application/json"}
GOAL_REFUSAL_P99_MS = 50.0
GOAL_ACCEPTED_P99_MS = 100.0
REQUEST_COUNT = ":tensorflow:serving:request_count_total{"  # prometheus_client adds _total to a Counter
CLASSIFY_LIMIT = 'modelservice_concurrency_limit{route="/classify"}'


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.overload",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model-dir", type=Path, default=Path("artifacts"), help="where the classifier is")
    parser.add_argument("--connections", type=int, default=1000, help="clients past capacity (wrk's and the probes)")
    parser.add_argument("--capacity-connections", type=int, default=64, help="clients within capacity")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per level")
    parser.add_argument("--probes", type=int, default=8, help="timed clients in this process, beside wrk")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    return parser.parse_args(argv)


def request_bodies(artifact: Path, count: int = 64) -> list[bytes]:
    """Seeded JSON bodies of one image each, of the classifier's input shape."""
    import orjson

    from serving.contract import read_metadata

    shape = tuple(read_metadata(artifact).image_input.image_shape)
    images = np.random.default_rng(0).integers(0, 256, size=(count, *shape), dtype=np.uint8)
    return [orjson.dumps({"instances": [image.tolist()]}) for image in images]


# --- probes and counters ---------------------------------------------------------------------------


def probe(url: str, bodies: list[bytes], clients: int, seconds: float) -> list[tuple[int, float]]:
    """(status, seconds) of every answer `clients` sequential clients got in `seconds`; status 0: no answer."""
    import httpx

    async def client(index: int, http: httpx.AsyncClient, until: float, answers: list) -> None:
        sent = index
        while time.monotonic() < until:
            body = bodies[sent % len(bodies)]
            started = time.perf_counter()
            try:
                response = await http.post(url + "/classify", content=body, headers=JSON_HEADERS)
                status = response.status_code
            except httpx.HTTPError:
                status = 0
            answers.append((status, time.perf_counter() - started))
            sent += clients

    async def run() -> list[tuple[int, float]]:
        answers: list[tuple[int, float]] = []
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:
            until = time.monotonic() + seconds
            await asyncio.gather(*(client(index, http, until, answers) for index in range(clients)))
        return answers

    return asyncio.run(run())


def server_figures(url: str) -> tuple[dict[str, float], float | None]:
    """The server's inference answers so far by HTTP status, and /classify's concurrency limit now."""
    import httpx

    counts: dict[str, float] = {}
    limit = None
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        labels, _, value = line.rpartition(" ")
        if line.startswith(REQUEST_COUNT):
            status = labels.split('status="', 1)[1].split('"', 1)[0]
            counts[status] = counts.get(status, 0.0) + float(value)
        elif line.startswith(CLASSIFY_LIMIT):
            limit = float(value)
    return counts, limit


def percentile_ms(latencies: list[float], q: float) -> float | None:
    return round(float(np.percentile(latencies, q)) * 1000, 1) if latencies else None


def measure(url: str, bodies: list[bytes], connections: int, args: argparse.Namespace) -> dict[str, Any]:
    """wrk at `connections` and the probes at once, for --duration seconds."""
    level: dict[str, Any] = {}
    load = wrk.Load("/classify", JSON_HEADERS["content-type"], bodies, backs_off=True)

    def drive() -> None:
        # The probes are clients too: with them, `connections` in all.
        level["wrk"] = wrk.run(url, load, connections=connections - args.probes, seconds=args.duration + 2).to_dict()

    before, _ = server_figures(url)
    loader = threading.Thread(target=drive)
    loader.start()
    time.sleep(1.0)  # wrk's connections are open and busy before the probes start timing
    answers = probe(url, bodies, args.probes, args.duration)
    loader.join()
    after, limit = server_figures(url)
    seconds = level["wrk"]["seconds"]
    by_status = {status: after[status] - before.get(status, 0.0) for status in after}
    accepted = [latency for status, latency in answers if status == 200]
    refused = [latency for status, latency in answers if status == 503]
    return level | {
        "connections": connections,
        "concurrency_limit_at_end": limit,
        "answers_per_s": {status: round(count / seconds, 1) for status, count in sorted(by_status.items()) if count},
        "probe_answers": len(answers),
        "probe_statuses": dict(Counter(str(status) for status, _ in answers)),
        "accepted_p50_ms": percentile_ms(accepted, 50),
        "accepted_p99_ms": percentile_ms(accepted, 99),
        "refused_p50_ms": percentile_ms(refused, 50),
        "refused_p99_ms": percentile_ms(refused, 99),
        "refused_max_ms": round(max(refused) * 1000, 1) if refused else None,
        "connection_errors": sum(1 for status, _ in answers if status == 0),
        "other_statuses": sum(1 for status, _ in answers if status not in (0, 200, 503))
        + round(sum(count for status, count in by_status.items() if status not in ("200", "503"))),
    }


def summarize(capacity: dict[str, Any], overload: dict[str, Any]) -> dict[str, Any]:
    goodput = overload["answers_per_s"].get("200", 0.0) / max(capacity["answers_per_s"].get("200", 0.0), 1e-9)
    return {
        "goodput_ratio": round(goodput, 2),
        "goals": {
            "refused_p99_ms": {"value": overload["refused_p99_ms"], "goal": f"<= {GOAL_REFUSAL_P99_MS:g}"},
            "accepted_p99_ms": {"value": overload["accepted_p99_ms"], "goal": f"< {GOAL_ACCEPTED_P99_MS:g}"},
            "errors": {"value": overload["connection_errors"] + overload["other_statuses"], "goal": "0"},
        },
    }


def report(levels: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    lines = [
        f"{'connections':>11}  {'200/s':>7}  {'503/s':>7}  {'accepted p50':>12}  {'accepted p99':>12}  "
        f"{'refused p50':>11}  {'refused p99':>11}  errors"
    ]
    for level in levels:
        rates = level["answers_per_s"]
        lines.append(
            f"{level['connections']:>11}  {rates.get('200', 0):>7.0f}  {rates.get('503', 0):>7.0f}  "
            f"{level['accepted_p50_ms'] or '-':>9} ms  {level['accepted_p99_ms'] or '-':>9} ms  "
            f"{level['refused_p50_ms'] or '-':>8} ms  {level['refused_p99_ms'] or '-':>8} ms  "
            f"{level['connection_errors'] + level['other_statuses']}"
        )
    goals = summary["goals"]
    overloaded, within = levels[-1]["connections"], levels[0]["connections"]
    lines.append(f"\n200s per second at {overloaded} connections / at {within}: {summary['goodput_ratio']}")
    for name, entry in goals.items():
        lines.append(f"{name}: {entry['value']} (goal {entry['goal']})")
    return "\n".join(lines)


def plot(levels: list[dict[str, Any]]):
    return functools.partial(
        plot_grouped_bars,
        levels,
        group=lambda level: f"{level['connections']} connections",
        series=(
            ("accepted_p50_ms", "accepted p50"),
            ("accepted_p99_ms", "accepted p99"),
            ("refused_p50_ms", "refused p50"),
            ("refused_p99_ms", "refused p99"),
        ),
        ylabel="latency seen by the probes (ms)",
        title="POST /classify past capacity",
        lines=(GOAL_REFUSAL_P99_MS, GOAL_ACCEPTED_P99_MS),
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk.executable()
    from serving.process import free_port, running_process

    began = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="modelservice-overload-"))
    try:
        artifact = classifier_artifact(args, workdir)
        models = workdir / "models"
        shutil.copytree(artifact, models / artifact.parent.name / artifact.name)
        bodies = request_bodies(artifact)
        port = free_port()
        command = [sys.executable, "-m", "serving", "--model-dir", str(models), "--port", str(port)]
        with running_process(command, port=port, log_path=workdir / "server.log") as url:
            levels = [measure(url, bodies, count, args) for count in (args.capacity_connections, args.connections)]
        summary = summarize(*levels)
        print(report(levels, summary))
        results = {
            "settings": settings(args),
            "environment": environment(),
            "levels": levels,
            **summary,
            "total_seconds": round(time.perf_counter() - began, 1),
        }
        save_results(args.out.resolve(), "overload", results, plot(levels))
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
