"""What the graph-vs-baseline benchmarks share: timing, where the model is, the environment, the bar plot."""

import argparse
import contextlib
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from serving.contract import latest_version  # the artifact layout, without TensorFlow

# A graph pass over a few dozen inputs takes ~20 ms: more passes, so one scheduler hiccup cannot decide its figure.
MIN_TIMED_SECONDS = 1.0

Result = TypeVar("Result")
Item = TypeVar("Item")


def comma_separated(
    parser: argparse.ArgumentParser,
    option: str,
    text: str,
    kind: Callable[[str], Item],
    *,
    choices: Sequence[str] | None = None,
) -> list[Item]:
    """The comma-separated values of `option` (blanks dropped), each read by `kind`; a parser error when
    one does not read, is not among `choices`, or none is given."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        parser.error(f"{option} names nothing")
    if choices is not None and (unknown := sorted(set(parts) - set(choices))):
        parser.error(f"{option}: unknown {', '.join(unknown)}; choose from {', '.join(choices)}")
    try:
        return [kind(part) for part in parts]
    except ValueError:
        parser.error(f"{option} must be comma-separated {kind.__name__} values, got {text!r}")


def fastest_pass(run_pass: Callable[[], Result], *, repeats: int) -> tuple[float, Result]:
    """(seconds of the fastest pass, its result): at least `repeats` passes, more until MIN_TIMED_SECONDS were timed.

    The fastest pass is the one least disturbed by other processes (timeit's convention).
    """
    fastest, timed, passes = float("inf"), 0.0, 0
    while passes < repeats or timed < MIN_TIMED_SECONDS:
        started = time.perf_counter()
        result = run_pass()
        elapsed = time.perf_counter() - started
        fastest, timed, passes = min(fastest, elapsed), timed + elapsed, passes + 1
    return fastest, result


def saved_model_dir(path: Path) -> Path | None:
    """`path` if it is a SavedModel, else the latest exported version under it, else None."""
    if (path / "saved_model.pb").is_file():
        return path
    return latest_version(path)


def environment(packages: Sequence[str] = ("tensorflow", "tensorflow-cpu", "keras", "numpy")) -> dict[str, Any]:
    """Where the figures were measured: Python, platform, CPU count and the installed versions of `packages`."""
    from importlib import metadata

    versions = {}
    for package in packages:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "packages": versions,
    }


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The command line's values, paths as text, for the results file."""
    return {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}


def save_results(out: Path, name: str, results: dict[str, Any], plot: Callable[[Path], None]) -> None:
    """`<out>/<name>.json` and the plot `<out>/<name>.png`, then say where they are."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(results, indent=2))
    plot(out / f"{name}.png")
    print(f"\nwrote {out / f'{name}.json'} and {out / f'{name}.png'}; total {results['total_seconds']:.0f} s")


def plot_ratio_bars(
    rows: Sequence[dict[str, Any]],
    path: Path,
    *,
    sides: Sequence[tuple[str, str]],
    rate: str,
    tick_label: Callable[[dict[str, Any]], str],
    title: str,
) -> None:
    """Two bars per row (`sides`: (key in the row, legend)), heights row[key][rate] on a log scale.

    row["ratio"] is written above the first bar.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    positions = np.arange(len(rows))
    width = 0.38
    figure, axis = plt.subplots(figsize=(1.6 * len(rows) + 3, 4.2))
    for offset, (name, label) in zip((-width / 2, width / 2), sides):
        axis.bar(positions + offset, [row[name][rate] for row in rows], width, label=label)
    first = sides[0][0]
    for position, row in zip(positions, rows):
        axis.annotate(
            f"{row['ratio']:.1f}x", (position - width / 2, row[first][rate]), ha="center", va="bottom", fontsize=9
        )
    axis.set_xticks(positions, [tick_label(row) for row in rows])
    axis.set_yscale("log")
    # Head-room above the tallest bar for its ratio label and the legend.
    axis.set_ylim(top=4 * max(row[first][rate] for row in rows))
    axis.set_ylabel(rate.replace("_per_s", "/s"))
    axis.set_title(title)
    axis.grid(True, axis="y", which="both", alpha=0.3)
    axis.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def server_rss_mib(port: int) -> float:
    """The resident memory of the process that holds the models of the server on `port` started from here."""
    from serving.process import server_worker

    return server_worker(port).memory_info().rss / 2**20


def copy_latest_models(model_dir: Path, families: Sequence[str], into: Path) -> Path:
    """`into/<family>/<version>/`: the latest version of each family in `model_dir`, for a server of its own."""
    import shutil

    for family in families:
        found = latest_version(model_dir / family)
        if found is None:
            raise SystemExit(f"no {family} in {model_dir}: run `make train` first")
        shutil.copytree(found, into / family / found.name)
    return into


def plot_grouped_bars(
    rows: Sequence[dict[str, Any]],
    path: Path,
    *,
    group: Callable[[dict[str, Any]], str],
    series: Sequence[tuple[str, str]],
    ylabel: str,
    title: str,
    lines: Sequence[float] = (),
) -> None:
    """One group of bars per row, one bar per `series` (key in the row, legend; a missing value is 0), dashed
    horizontal `lines` (goals)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axis = plt.subplots(figsize=(7, 4))
    positions = np.arange(len(rows))
    width = 0.8 / len(series)
    for number, (key, label) in enumerate(series):
        offset = (number - (len(series) - 1) / 2) * width
        axis.bar(positions + offset, [row[key] or 0 for row in rows], width, label=label)
    for value in lines:
        axis.axhline(value, color="gray", linestyle="--", linewidth=1)
    axis.set_xticks(positions, [group(row) for row in rows])
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
