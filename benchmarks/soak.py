"""A long run of mixed traffic on every inference route: no error, no memory growth, steady latency.

    python -m benchmarks.soak                              # 30 minutes at 32 connections, models from artifacts/
    python -m benchmarks.soak --duration 120 --interval 5 --out benchmarks/results

The real server (`python -m serving`) serves the classifier, the date normaliser and the detector. Clients
in this process (asyncio, `--connections` keep-alive connections, each sending its next request once
answered) take the requests in `ROUTES` in turn: JSON pixels and PNG uploads to /classify, uploads to
/detect (JSON boxes, and drawn as a PNG), dates to /translate, and TF Serving's :predict. Every
`--interval` seconds it notes the answers, their p99 latency and errors, and the server worker's resident
memory (its largest process).

Goals (issue 18): zero errors (any answer but 200, or none), and resident memory at the end (the median
of the last three intervals) within 5% of what it was once `--warmup` seconds had passed. Writes
`<out>/soak.json` and `<out>/soak.png` (memory and p99 over time).
"""

import argparse
import asyncio
import contextlib
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import copy_latest_models, environment, save_results, server_rss_mib, settings

GOAL_RSS_GROWTH = 0.05
FAMILIES = ("classifier", "seq2seq", "detector")


@dataclass(frozen=True)
class Route:
    name: str
    path: str
    bodies: str  # a key of benchmarks.serving.request_bodies
    content_type: str


def routes() -> list[Route]:
    from benchmarks.serving import JSON_TYPE, MULTIPART_TYPE

    return [
        Route("classify-json", "/classify", "digits", JSON_TYPE),
        Route("classify-png", "/classify", "digit_pngs", MULTIPART_TYPE),
        Route("tfserving-predict", "/v1/models/classifier:predict", "digits", JSON_TYPE),
        Route("translate", "/translate", "texts", JSON_TYPE),
        Route("detect", "/detect", "scene_pngs", MULTIPART_TYPE),
        Route("detect-drawn", "/detect?format=png", "scene_pngs", MULTIPART_TYPE),
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model-dir", type=Path, default=Path("artifacts"), help="where the classifier, seq2seq and detector are"
    )
    parser.add_argument("--duration", type=float, default=1800.0, help="seconds of traffic")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds per measured interval")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before the memory baseline")
    parser.add_argument("--connections", type=int, default=32, help="concurrent clients")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    if args.duration < args.warmup + 3 * args.interval:
        parser.error("--duration must leave at least three intervals after --warmup")
    return args


class Recorder:
    """The answers of the interval under way: latencies, errors, and answers per route."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.routes: dict[str, int] = {}

    def note(self, route: str, seconds: float, problem: str | None) -> None:
        self.latencies.append(seconds)
        self.routes[route] = self.routes.get(route, 0) + 1
        if problem:
            self.errors.append(f"{route}: {problem}")


async def client(url: str, requests: list[tuple[str, str, bytes, str]], offset: int, until: float, state) -> None:
    import httpx

    async with httpx.AsyncClient(timeout=60) as http:
        index = offset
        while time.monotonic() < until:
            route, path, body, content_type = requests[index % len(requests)]
            index += 1
            started = time.perf_counter()
            problem = None
            try:
                response = await http.post(url + path, content=body, headers={"content-type": content_type})
                if response.status_code != 200:
                    problem = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.HTTPError as error:
                problem = f"{type(error).__name__}: {error}"
            state["recorder"].note(route, time.perf_counter() - started, problem)


async def drive(
    url: str, port: int, requests: list[tuple[str, str, bytes, str]], args: argparse.Namespace
) -> list[dict]:
    """The clients for --duration seconds, and one row per --interval."""
    state = {"recorder": Recorder()}
    began = time.monotonic()
    until = began + args.duration
    clients = [asyncio.create_task(client(url, requests, offset, until, state)) for offset in range(args.connections)]
    intervals = []
    while time.monotonic() < until:
        await asyncio.sleep(min(args.interval, max(0.0, until - time.monotonic())))
        recorder, state["recorder"] = state["recorder"], Recorder()
        intervals.append(interval_row(time.monotonic() - began, recorder, args.interval, server_rss_mib(port)))
        print(format_row(intervals[-1]), flush=True)
    await asyncio.gather(*clients)
    return intervals


def interval_row(elapsed: float, recorder: Recorder, seconds: float, rss_mib: float) -> dict[str, Any]:
    latencies = recorder.latencies
    return {
        "seconds": round(elapsed, 1),
        "answers": len(latencies),
        "answers_per_s": round(len(latencies) / seconds, 1),
        "p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 1) if latencies else None,
        "p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 1) if latencies else None,
        "errors": len(recorder.errors),
        "first_errors": recorder.errors[:3],
        "routes": recorder.routes,
        "rss_mib": round(rss_mib, 1),
    }


def format_row(row: dict[str, Any]) -> str:
    return (
        f"{row['seconds']:>7.0f} s  {row['answers_per_s']:>6.0f} answers/s  p50 {row['p50_ms']} ms  "
        f"p99 {row['p99_ms']} ms  errors {row['errors']}  worker {row['rss_mib']:.0f} MiB"
    )


def summarize(intervals: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    settled = [row for row in intervals if row["seconds"] > args.warmup]
    baseline = settled[0]["rss_mib"]
    final = statistics.median(row["rss_mib"] for row in settled[-3:])
    growth = final / baseline - 1
    errors = sum(row["errors"] for row in intervals)
    answered: dict[str, int] = {}
    for row in intervals:
        for route, count in row["routes"].items():
            answered[route] = answered.get(route, 0) + count
    return {
        "answers": sum(row["answers"] for row in intervals),
        "answers_per_route": answered,
        "errors": errors,
        "first_errors": [error for row in intervals for error in row["first_errors"]][:5],
        "rss_baseline_mib": baseline,
        "rss_final_mib": final,
        "rss_growth": round(growth, 4),
        "p99_ms_after_warmup": {
            "median": statistics.median(row["p99_ms"] for row in settled),
            "max": max(row["p99_ms"] for row in settled),
        },
        "goals": {
            "errors": {"value": errors, "goal": "0", "met": errors == 0},
            "rss_growth": {"value": round(growth, 4), "goal": f"< {GOAL_RSS_GROWTH}", "met": growth < GOAL_RSS_GROWTH},
        },
    }


def report(summary: dict[str, Any], args: argparse.Namespace) -> str:
    goals = summary["goals"]
    routes_line = ", ".join(f"{route} {count}" for route, count in summary["answers_per_route"].items())
    return "\n".join(
        [
            f"{summary['answers']} answers in {args.duration:.0f} s at {args.connections} connections ({routes_line})",
            f"errors: {summary['errors']} ({'met' if goals['errors']['met'] else 'missed'}; goal 0)"
            + (f": {summary['first_errors']}" if summary["first_errors"] else ""),
            f"worker memory: {summary['rss_baseline_mib']:.0f} MiB after {args.warmup:.0f} s, "
            f"{summary['rss_final_mib']:.0f} MiB at the end: {100 * summary['rss_growth']:+.1f}% "
            f"({'met' if goals['rss_growth']['met'] else 'missed'}; goal under {100 * GOAL_RSS_GROWTH:.0f}%)",
            f"p99 per interval after warm-up: median {summary['p99_ms_after_warmup']['median']} ms, "
            f"max {summary['p99_ms_after_warmup']['max']} ms",
        ]
    )


def plot(intervals: list[dict[str, Any]], args: argparse.Namespace):
    def draw(path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        minutes = [row["seconds"] / 60 for row in intervals]
        figure, (memory, latency) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
        memory.plot(minutes, [row["rss_mib"] for row in intervals], marker=".")
        memory.set_ylabel("worker resident memory (MiB)")
        latency.plot(minutes, [row["p99_ms"] for row in intervals], marker=".", color="tab:orange")
        latency.set_ylabel("p99 latency (ms)")
        latency.set_xlabel("minutes")
        for axis in (memory, latency):
            axis.axvspan(0, args.warmup / 60, color="gray", alpha=0.15, label="warm-up")
            axis.grid(True, alpha=0.3)
        memory.legend(loc="lower right")
        memory.set_title(f"mixed traffic on every route, {args.connections} connections")
        figure.tight_layout()
        figure.savefig(path, dpi=120)
        plt.close(figure)

    return draw


def request_list(bodies: dict[str, list[bytes]]) -> list[tuple[str, str, bytes, str]]:
    """(route name, path, body, content type), the routes interleaved."""
    chosen = routes()
    count = min(len(bodies[route.bodies]) for route in chosen)
    return [
        (route.name, route.path, bodies[route.bodies][index], route.content_type)
        for index in range(count)
        for route in chosen
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from benchmarks.detection import sample_images
    from benchmarks.serving import request_bodies
    from serving.process import free_port, running_process

    began = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="modelservice-soak-"))
    try:
        models = copy_latest_models(args.model_dir, FAMILIES, workdir / "models")
        requests = request_list(request_bodies(sample_images(16, seed=0), count=16))
        port = free_port()
        command = [sys.executable, "-m", "serving", "--model-dir", str(models), "--port", str(port)]
        print(f"{args.duration:.0f} s of mixed traffic on {len(routes())} routes, {args.connections} connections")
        with running_process(command, port=port, log_path=workdir / "server.log", timeout=240) as url:
            intervals = asyncio.run(drive(url, port, requests, args))
        summary = summarize(intervals, args)
        print("\n" + report(summary, args))
        results = {
            "settings": settings(args),
            "environment": environment(),
            "intervals": intervals,
            **summary,
            "total_seconds": round(time.perf_counter() - began, 1),
        }
        save_results(args.out.resolve(), "soak", results, plot(intervals, args))
        return 0
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(workdir)


if __name__ == "__main__":
    sys.exit(main())
