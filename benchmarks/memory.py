"""Memory given back after a spike of large images, and what the memory set-up costs the model calls.

    python -m benchmarks.memory                            # every set-up whose allocator is installed
    python -m benchmarks.memory --setups tensorflow,jemalloc --rounds 4 --out benchmarks/results

The set-ups (`SETUPS`): `tensorflow`, TensorFlow's defaults, where oneDNN's large tensors come from a pool
(a BFC allocator) that keeps the most it ever held; then with TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1 (every
tensor from malloc) on the C library's malloc (`glibc`), on jemalloc and on tcmalloc (preloaded).

1. **Memory.** For each set-up the real server (`python -m serving`, MODELSERVICE_ALLOCATOR naming it)
   serves the classifier and the detector. Its resident memory (the worker that holds the models) is read
   after `--settle` seconds of small uploads; then `--rounds` rounds of `--concurrent` simultaneous
   uploads of a 3000x3000 PNG per route (25.7 MiB once decoded, within the 64 MiB budget), each round
   once the one before is answered; then small uploads for `--settle` seconds, and the memory again.
   Goal (issue 18, tensorflow/serving#2142): back within 10% of the resting memory.
2. **Speed.** The same SavedModels called in a fresh process per set-up (classifier at batch 64, detector
   on 16 PNGs, date normaliser on 32 texts when there is one), `--speed-rounds` rounds taking the set-ups
   in turn; the median of each set-up's milliseconds over `tensorflow`'s, per model.

Prints both and writes `<out>/memory.json` and `memory.png`.
"""

import argparse
import asyncio
import functools
import io
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import (
    comma_separated,
    copy_latest_models,
    environment,
    plot_grouped_bars,
    save_results,
    server_rss_mib,
    settings,
)
from serving.contract import latest_version
from serving.memory import JEMALLOC_CONF, find_library
from serving.process import server_worker

GOAL_SETTLED_RATIO = 1.10
FAMILIES = ("classifier", "detector")
SPEED_FAMILIES = ("classifier", "detector", "seq2seq")


@dataclass(frozen=True)
class Setup:
    library: str | None  # the malloc preloaded; None: the C library's own
    system_allocator: bool  # TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1: oneDNN's tensors from malloc, not a pool

    def env(self) -> dict[str, str]:
        """For a process started from here; `python -m serving` adds nothing to what is set."""
        env = {"TF_ONEDNN_USE_SYSTEM_ALLOCATOR": "1" if self.system_allocator else "0"}
        if self.library is None:
            return env | {"MODELSERVICE_ALLOCATOR": "system"}
        return env | {"LD_PRELOAD": str(find_library(self.library)), "MALLOC_CONF": JEMALLOC_CONF}


SETUPS = {
    "tensorflow": Setup(None, system_allocator=False),
    "glibc": Setup(None, system_allocator=True),
    "jemalloc": Setup("libjemalloc.so.2", system_allocator=True),
    "tcmalloc": Setup("libtcmalloc_minimal.so.4", system_allocator=True),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.memory", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model-dir", type=Path, default=Path("artifacts"), help="where the classifier and detector are"
    )
    parser.add_argument("--setups", default=",".join(SETUPS), help=f"comma-separated, of {', '.join(SETUPS)}")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of large uploads")
    parser.add_argument("--concurrent", type=int, default=8, help="large uploads at once per route in a round")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds of small requests after the spike")
    parser.add_argument("--speed-rounds", type=int, default=3, help="rounds of model calls per set-up; 0: none")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    args.setup_list = comma_separated(parser, "--setups", args.setups, str, choices=list(SETUPS))
    return args


def large_png(side: int = 3000) -> bytes:
    """A smooth RGB image: small as a file (well within the request limit), large once decoded."""
    import numpy as np
    from PIL import Image

    ramp = np.linspace(0, 255, side, dtype=np.uint8)
    pixels = np.stack(np.broadcast_arrays(ramp[:, None], ramp[None, :], ramp[::-1, None]), axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


async def spike(url: str, port: int, image: bytes, args: argparse.Namespace) -> float:
    """--rounds rounds of --concurrent large uploads per route at once; the peak memory sampled meanwhile."""
    import httpx

    peak = 0.0
    async with httpx.AsyncClient(timeout=120) as http:
        for _ in range(args.rounds):
            sends = [
                http.post(f"{url}/{route}", files={"image": ("large.png", image, "image/png")})
                for route in ("classify", "detect")
                for _ in range(args.concurrent)
            ]
            pending = asyncio.ensure_future(asyncio.gather(*sends))
            while not pending.done():
                peak = max(peak, server_rss_mib(port))
                await asyncio.sleep(0.05)
            statuses = {response.status_code for response in pending.result()}
            if statuses != {200}:
                raise RuntimeError(f"the large uploads were answered {sorted(statuses)}, not 200")
    return peak


async def small_requests(url: str, seconds: float) -> None:
    """Uploads of a small image to both routes for `seconds`: the code paths of the spike, without its sizes."""
    import httpx

    small = large_png(64)
    async with httpx.AsyncClient(timeout=30) as http:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            for route in ("classify", "detect"):
                response = await http.post(f"{url}/{route}", files={"image": ("small.png", small, "image/png")})
                assert response.status_code == 200, response.text
            await asyncio.sleep(0.05)


def preloaded(library: str | None, port: int) -> bool:
    """Whether the server's worker has `library` mapped (LD_PRELOAD reached it through every process start)."""
    worker = server_worker(port)
    return library is None or any(Path(mapped.path).name.startswith(library) for mapped in worker.memory_maps())


def measure_memory(name: str, models: Path, image: bytes, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from serving.process import free_port, running_process

    setup = SETUPS[name]
    port = free_port()
    command = [sys.executable, "-m", "serving", "--model-dir", str(models), "--port", str(port)]
    with running_process(command, port=port, env=setup.env(), log_path=workdir / f"{name}.log", timeout=240) as url:
        asyncio.run(small_requests(url, args.settle))
        if not preloaded(setup.library, port):
            raise RuntimeError(f"{setup.library} is not mapped in the server's worker")
        resting = server_rss_mib(port)
        peak = asyncio.run(spike(url, port, image, args))
        after_spike = server_rss_mib(port)
        asyncio.run(small_requests(url, args.settle))
        settled = server_rss_mib(port)
    return {
        "setup": name,
        "env": setup.env(),
        "resting_mib": round(resting, 1),
        "peak_mib": round(peak, 1),
        "after_spike_mib": round(after_spike, 1),
        "settled_mib": round(settled, 1),
        "settled_ratio": round(settled / resting, 3),
    }


# --- 2. what the set-up costs the model calls --------------------------------------------------------


def model_call_ms(model_dir: str) -> None:
    """In a fresh process started with a set-up's environment: print {family: fastest ms per call} as JSON."""
    import json

    import numpy as np
    import tensorflow as tf

    from benchmarks.common import fastest_pass
    from serving.contract import Role, read_metadata

    calls = {}
    for family in SPEED_FAMILIES:
        artifact = latest_version(Path(model_dir) / family)
        if artifact is None:
            continue
        metadata = read_metadata(artifact)
        signatures = tf.saved_model.load(str(artifact)).signatures
        if family == "classifier":
            function = signatures[metadata.signature(Role.IMAGES)]
            shape = (64, *metadata.image_input.image_shape)
            pixels = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
            (name, spec), *_ = function.structured_input_signature[1].items()
            arguments = {name: tf.constant(pixels, dtype=spec.dtype)}
        elif family == "detector":
            function = signatures[metadata.signature(Role.IMAGE_BYTES)]
            arguments = {"image_bytes": tf.constant([large_png(128)] * 16)}
        else:
            function = signatures[metadata.signature(Role.TEXTS)]
            arguments = {"texts": tf.constant(["March 4, 1999", "4 mars 1999", "1999-03-04", "3/4/99"] * 8)}
        inputs = function.structured_input_signature[1]
        arguments |= {
            name: tf.constant(metadata.decoding.default_beam_width if family == "seq2seq" else 0.5, dtype=spec.dtype)
            for name, spec in inputs.items()
            if not spec.shape.rank
        }
        function(**arguments)
        seconds, _ = fastest_pass(functools.partial(function, **arguments), repeats=20)
        calls[family] = round(seconds * 1000, 3)
    print(json.dumps(calls))


def measure_speed(names: list[str], model_dir: Path, rounds: int) -> dict[str, dict[str, float]]:
    """{setup: {family: median ms}} over `rounds` rounds that take the set-ups in turn."""
    import json
    import statistics
    import subprocess

    samples: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    code = f"from benchmarks.memory import model_call_ms; model_call_ms({str(model_dir.resolve())!r})"
    for _ in range(rounds):
        for name in names:
            finished = subprocess.run(
                [sys.executable, "-c", code],
                env={**os.environ, **SETUPS[name].env(), "TF_CPP_MIN_LOG_LEVEL": "2"},
                capture_output=True,
                text=True,
                check=True,
            )
            samples[name].append(json.loads(finished.stdout.strip().splitlines()[-1]))
    return {
        name: {family: statistics.median(run[family] for run in runs) for family in runs[0]}
        for name, runs in samples.items()
    }


# --- the run -------------------------------------------------------------------------------------


def report(rows: list[dict[str, Any]], speed: dict[str, dict[str, float]]) -> str:
    lines = [
        f"{'set-up':<11} {'resting':>8} {'peak':>8} {'settled':>8}  settled/resting (goal <= {GOAL_SETTLED_RATIO})"
    ]
    for row in rows:
        verdict = "met" if row["settled_ratio"] <= GOAL_SETTLED_RATIO else "missed"
        lines.append(
            f"{row['setup']:<11} {row['resting_mib']:>5.0f} MiB {row['peak_mib']:>5.0f} MiB "
            f"{row['settled_mib']:>5.0f} MiB  {row['settled_ratio']:.2f} ({verdict})"
        )
    if speed:
        baseline = speed.get("tensorflow") or next(iter(speed.values()))
        lines.append("\nmodel call, median ms (x the first set-up's)")
        for name, calls in speed.items():
            figures = ", ".join(f"{family} {ms:.2f} ({ms / baseline[family]:.2f}x)" for family, ms in calls.items())
            lines.append(f"{name:<11} {figures}")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]]):
    return functools.partial(
        plot_grouped_bars,
        rows,
        group=lambda row: row["setup"],
        series=(("resting_mib", "at rest"), ("peak_mib", "peak"), ("settled_mib", "settled")),
        ylabel="worker resident memory (MiB)",
        title="a spike of large images, then small uploads",
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="modelservice-memory-"))
    try:
        models = copy_latest_models(args.model_dir, FAMILIES, workdir / "models")
        names = []
        for name in args.setup_list:
            library = SETUPS[name].library
            if library and find_library(library) is None:
                print(f"{name}: {library} is not installed (Debian: libjemalloc2, libtcmalloc-minimal4); left out")
            else:
                names.append(name)
        image = large_png()
        rows = []
        for name in names:
            rows.append(measure_memory(name, models, image, args, workdir))
            print(report(rows[-1:], {}).splitlines()[-1], flush=True)
        speed = measure_speed(names, args.model_dir, args.speed_rounds) if args.speed_rounds else {}
        print("\n" + report(rows, speed))
        results = {
            "settings": settings(args),
            "environment": environment(),
            "memory": rows,
            "model_call_ms": speed,
            "total_seconds": round(time.perf_counter() - began, 1),
        }
        save_results(args.out.resolve(), "memory", results, plot(rows))
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
