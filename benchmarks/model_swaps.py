"""New model versions while clients keep sending requests: errors, latency during swaps, memory per cycle.

    python -m benchmarks.model_swaps                       # the latest artifacts/classifier, or a small one trained now
    python -m benchmarks.model_swaps --swaps 5 --connections 64 --out benchmarks/results

Two parts, in one run:

1. **Swaps under load.** The real server serves a temporary model folder (MODELSERVICE_POLL_SECONDS=0.5).
   64 clients (keep-alive, asyncio + httpx in this process: every answer must say which version made it,
   which wrk cannot read) send POST /classify for `--baseline` seconds with no swap, then five new versions
   are exported into the folder one after another, each once the one before is AVAILABLE. It prints the
   requests served, the errors (must be 0), p99 latency during the swaps (export to AVAILABLE, plus 1 s)
   against p99 without them, and for each new version the latency of the first request sent after it was
   AVAILABLE that it answered, against the steady-state median.
2. **Memory per load/unload cycle.** In this process, a ModelManager loads a new version of the same model and
   unloads the old one, 20 times; it prints the resident memory after the first cycle and after the last (the
   growth must stay under 10%: TF Serving's users report growth here, tensorflow/serving#1215 and #2142).

Writes `<out>/model_swaps.json` and `model_swaps.png` (latency over time, swaps marked).
"""

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.common import environment, save_results, settings
from serving.contract import METADATA_FILE, latest_version

GOAL_RSS_GROWTH = 0.10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.model_swaps",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model-dir", type=Path, default=Path("artifacts"), help="where the classifier is")
    parser.add_argument("--swaps", type=int, default=5, help="new versions exported under load")
    parser.add_argument("--connections", type=int, default=64, help="concurrent clients")
    parser.add_argument("--baseline", type=float, default=10.0, help="seconds of load before the first swap")
    parser.add_argument("--cycles", type=int, default=20, help="load/unload cycles for the memory part")
    parser.add_argument(
        "--cycle-artifact", type=Path, help="the artifact version the memory part cycles (default: the classifier)"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    return parser.parse_args(argv)


def copy_as_version(artifact: Path, root: Path, version: int, *, name: str = "classifier") -> Path:
    """`artifact` published again as `root/name/version`: staged, its metadata saying that version, renamed."""
    target = root / name / str(version)
    staging = root / name / f".staging-{version}"
    shutil.copytree(artifact, staging)
    metadata = json.loads((staging / METADATA_FILE).read_text())
    (staging / METADATA_FILE).write_text(json.dumps(metadata | {"version": version}))
    staging.rename(target)
    return target


# --- 1. swaps under load -------------------------------------------------------------------------


async def client(url: str, body: dict, until: list[float], samples: list[tuple]) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        while time.monotonic() < until[0]:
            began = time.monotonic()
            try:
                answer = await http.post(f"{url}/classify", json=body)
                version = answer.json()["model"]["version"] if answer.status_code == 200 else None
                samples.append((began, time.monotonic() - began, answer.status_code, version))
            except (httpx.HTTPError, ValueError, KeyError) as error:
                samples.append((began, time.monotonic() - began, type(error).__name__, None))


async def version_available(url: str, version: int) -> bool:
    async with httpx.AsyncClient(timeout=30) as http:
        statuses = (await http.get(f"{url}/v1/models/classifier")).json()["model_version_status"]
    return any(status["version"] == str(version) and status["state"] == "AVAILABLE" for status in statuses)


async def drive(url: str, models: Path, artifact: Path, args: argparse.Namespace) -> dict[str, Any]:
    body = {"instances": np.zeros((1, *image_shape(artifact)), np.uint8).tolist()}
    samples: list[tuple] = []
    until = [float("inf")]
    clients = [asyncio.create_task(client(url, body, until, samples)) for _ in range(args.connections)]
    load_started = time.monotonic()
    await asyncio.sleep(args.baseline)
    swaps = []
    for version in range(2, args.swaps + 2):
        exported = time.monotonic()
        await asyncio.to_thread(copy_as_version, artifact, models, version)
        while not await version_available(url, version):
            await asyncio.sleep(0.05)
        swaps.append({"version": str(version), "exported": exported, "available": time.monotonic()})
        await asyncio.sleep(1.0)  # let the old version unload under load before the next one
    until[0] = time.monotonic()
    await asyncio.gather(*clients)
    return summarize(samples, swaps, load_started, args)


def summarize(samples: list[tuple], swaps: list[dict], load_started: float, args: argparse.Namespace) -> dict:
    began, latency, status, version = (np.array(column, dtype=object) for column in zip(*samples, strict=True))
    latency = latency.astype(float)
    errors = int(sum(code != 200 for code in status))
    # The first second opens the connections and fills the batches: steady state starts after it.
    baseline = latency[(began > load_started + 1.0) & (began < load_started + args.baseline)]
    steady_median = float(np.median(baseline))
    during = np.zeros(len(samples), bool)
    for swap in swaps:
        during |= (began >= swap["exported"]) & (began <= swap["available"] + 1.0)
        # Sent once the version was AVAILABLE: what the warm-up is for, apart from waiting behind the load itself.
        answered = [
            (b, lat)
            for b, lat, v in zip(began, latency, version, strict=True)
            if v == swap["version"] and b >= swap["available"]
        ]
        swap["first_request_ms"] = 1000 * min(answered)[1] if answered else None
        swap["load_seconds"] = swap["available"] - swap["exported"]
    return {
        "requests": len(samples),
        "errors": errors,
        "p99_without_swaps_ms": 1000 * float(np.percentile(baseline, 99)),
        "p99_during_swaps_ms": 1000 * float(np.percentile(latency[during], 99)) if during.any() else None,
        "steady_median_ms": 1000 * steady_median,
        "swaps": [
            {key: value for key, value in swap.items() if key not in ("exported", "available")} for swap in swaps
        ],
        "timeline": [(float(b - load_started), float(lat)) for b, lat in zip(began, latency, strict=True)][::5],
        "swap_times": [
            (swap_row["exported"] - load_started, swap_row["available"] - load_started) for swap_row in swaps
        ],
    }


def image_shape(artifact: Path) -> tuple[int, int, int]:
    from serving.contract import read_metadata

    return tuple(read_metadata(artifact).image_input.image_shape)


# --- 2. memory per load/unload cycle ---------------------------------------------------------------


def resident_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def memory_cycles(artifact: Path, workdir: Path, cycles: int) -> dict[str, Any]:
    from serving import store
    from serving.contract import read_metadata
    from serving.model_manager import ModelManager

    root, name = workdir / "cycles", read_metadata(artifact).name
    copy_as_version(artifact, root, 1, name=name)
    manager = ModelManager([], store.FolderSource(root))
    manager.poll()
    rss = []
    for cycle in range(1, cycles + 1):
        copy_as_version(artifact, root, cycle + 1, name=name)
        manager.poll()  # loads and warms up the new version, unloads the old one
        shutil.rmtree(root / name / str(cycle))
        assert sorted(manager.served.runtimes[name]) == [cycle + 1]
        rss.append(resident_mib())
    return {"model": name, "rss_mib": rss, "growth": rss[-1] / rss[0] - 1}


# --- the run -------------------------------------------------------------------------------------


def classifier_artifact(args: argparse.Namespace, workdir: Path) -> Path:
    found = latest_version(args.model_dir / "classifier")
    if found is not None:
        return found.resolve()
    from benchmarks.serving import train_small_classifier

    print(f"no classifier in {args.model_dir}: training a small one")
    return train_small_classifier(workdir / "classifier")


def report(results: dict[str, Any]) -> str:
    swaps = results["swaps"]
    memory = results["memory"]
    lines = [
        f"requests {swaps['requests']}, errors {swaps['errors']} (goal 0)",
        f"p99 without swaps {swaps['p99_without_swaps_ms']:.1f} ms, during swaps {swaps['p99_during_swaps_ms']:.1f} ms "
        f"({swaps['p99_during_swaps_ms'] / swaps['p99_without_swaps_ms']:.2f}x)",
        f"steady-state median {swaps['steady_median_ms']:.1f} ms; per swap (export → AVAILABLE, first answer):",
    ]
    for swap in swaps["swaps"]:
        first = swap["first_request_ms"]
        ratio = f"{first / swaps['steady_median_ms']:.2f}x the median" if first is not None else "none answered"
        lines.append(f"  version {swap['version']}: {swap['load_seconds']:.2f} s, first {first or 0:.1f} ms ({ratio})")
    verdict = "MET" if memory["growth"] < GOAL_RSS_GROWTH else "NOT MET"
    lines.append(
        f"{memory['model']}: resident memory after 1 load/unload cycle {memory['rss_mib'][0]:.0f} MiB, "
        f"after {len(memory['rss_mib'])} "
        f"{memory['rss_mib'][-1]:.0f} MiB: growth {100 * memory['growth']:.1f}% (goal < 10%: {verdict})"
    )
    lines.append(f"errors = 0: {'MET' if swaps['errors'] == 0 else 'NOT MET'}")
    return "\n".join(lines)


def plot(results: dict[str, Any]):
    def draw(path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, (timeline, memory) = plt.subplots(1, 2, figsize=(12, 4))
        points = np.array(results["swaps"]["timeline"])
        timeline.scatter(points[:, 0], 1000 * points[:, 1], s=2)
        for exported, available in results["swaps"]["swap_times"]:
            timeline.axvspan(exported, available, color="orange", alpha=0.3)
        timeline.set(xlabel="seconds", ylabel="latency (ms)", title="POST /classify, 64 clients; swaps shaded")
        memory.plot(range(1, len(results["memory"]["rss_mib"]) + 1), results["memory"]["rss_mib"], marker="o")
        memory.set(xlabel="load/unload cycle", ylabel="resident MiB", title="memory per cycle")
        figure.tight_layout()
        figure.savefig(path, dpi=100)

    return draw


def main(argv: list[str] | None = None) -> int:
    from serving.process import running_server

    args = parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        artifact = classifier_artifact(args, workdir)
        models = workdir / "models"
        copy_as_version(artifact, models, 1)
        env = {"MODELSERVICE_MODEL_DIR": str(models), "MODELSERVICE_POLL_SECONDS": "0.5"}
        with running_server(env=env, log_path=workdir / "server.log") as url:
            swaps = asyncio.run(drive(url, models, artifact, args))
        memory = memory_cycles(args.cycle_artifact or artifact, workdir, args.cycles)
    results = {
        "swaps": swaps,
        "memory": memory,
        "environment": environment(),
        "settings": settings(args),
        "total_seconds": time.monotonic() - started,
    }
    print(report(results))
    save_results(args.out, "model_swaps", results, plot(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
