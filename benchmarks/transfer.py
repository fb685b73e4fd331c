"""Transfer vs from scratch over several seeds: is the pretrained glyph backbone a clear win on 10 digits per class?

    python -m benchmarks.transfer                                  # quick profile, seeds 0-4, runs/ + artifacts/
    python -m benchmarks.transfer --profile default --seeds 0 1 2 3 4 5 6 7 8 9
    python -m benchmarks.transfer --runs /tmp/tb/runs --artifacts /tmp/tb/artifacts --out /tmp/tb/results
    python -m benchmarks.transfer --fine-tune-epochs 50 --augment  # any pipelines.transfer flag overrides the profile

`python -m pipelines.transfer` trains one transfer model and one from-scratch baseline and reports their
test accuracies, but one run says little: with 100 training images the figures move by about ±0.02
from seed to seed, as much as the gap between the two arms. This benchmark repeats that comparison
once per seed, exactly as the pipeline does it (`pipelines.transfer.train_and_evaluate`, no export):

  transfer   the glyph backbone (pretrained once on printed characters, artifacts/glyphs, reused if
             there) with a new head: phase 1 head only, phase 2 fine-tuning
  scratch    the same architecture from random weights, same images, augmentation, learning rate and
             number of epochs (phase 1 + phase 2)

Each seed draws a different 10-per-class training sample and seeds the initialisation and shuffling
(the pipeline's --seed); the digits' train/dev/test split stays the one of --split-seed, so every seed
is scored on the same 270 test images (the benchmark checks that). Per seed it prints both test
accuracies; at the end their mean ± standard deviation (sample, n - 1), the mean difference, the number
of seeds transfer won, and the ratio of test error rates scratch / transfer (of the mean accuracies):
how many times more mistakes the baseline makes in the same runs. "Clear win" means transfer ahead on
every seed and its mean ahead by more than 2 standard deviations of either arm (CLEAR_MARGIN).
`transfer.json` and `transfer.png` (per-seed pairs and the means) go under --out; each seed's run,
with its learning curves and transfer_vs_scratch.png, under <runs>/transfer-benchmark/seed-N.
"""

import argparse
import contextlib
import hashlib
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from benchmarks.common import environment, save_results, settings
from pipelines import transfer
from pipelines.data.image_data import ImageDataset, Split

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BENCHMARK_RUNS = "transfer-benchmark"
CLEAR_MARGIN = 2.0  # the mean difference must exceed this many standard deviations of each arm
REFUSED = (
    "--seed",
    "--run-dir",
    "--name",
    "--no-scratch",
    "--skip-if-exported",
    "--no-register",
)  # set by the benchmark itself


# --- set-up ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, transfer.TransferConfig]:
    """The benchmark's own options, and the pipeline's configuration from --profile and any pipeline flags."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.transfer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # unknown flags go to the pipeline's parser, so no prefix of them may match ours
        epilog="Any other flag of `python -m pipelines.transfer` (e.g. --epochs, --fine-tune-epochs, "
        "--fine-tune-learning-rate, --source-epochs, --dropout, --augment, --backbone) overrides the profile, "
        "for both arms alike.",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2, 3, 4],
        help="one transfer + one scratch run per seed (default: %(default)s)",
    )
    parser.add_argument(
        "--split-seed",
        type=int,
        default=0,
        help="seed of the train/dev/test split, the same for every run (default: %(default)s)",
    )
    parser.add_argument(
        "--profile",
        choices=sorted(transfer.PROFILES),
        default="quick",
        help="the pipeline's preset hyper-parameters (default: %(default)s)",
    )
    parser.add_argument(
        "--runs",
        type=Path,
        default=Path("runs"),
        help=f"runs root: glyphs/ when pretraining, {BENCHMARK_RUNS}/seed-N per seed (default: %(default)s)",
    )
    parser.add_argument(
        "--artifacts",
        type=Path,
        default=Path("artifacts"),
        help=f"artifact root holding (or receiving) the pretrained {transfer.SOURCE} backbone (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=PROJECT_ROOT / "benchmarks" / "results",
        help="folder for transfer.json and transfer.png (default: %(default)s)",
    )
    parser.add_argument("--verbose", action="store_true", help="show Keras's per-epoch output")
    args, pipeline_flags = parser.parse_known_args(argv)
    if refused := [flag for flag in pipeline_flags if flag.split("=")[0] in REFUSED]:
        parser.error(f"{', '.join(refused)}: set by the benchmark (use --seeds, --runs)")
    if len(set(args.seeds)) != len(args.seeds):
        parser.error("--seeds must be distinct")
    pipeline = argparse.ArgumentParser(prog="python -m benchmarks.transfer [pipeline flags]", allow_abbrev=False)
    transfer.FAMILY.add_arguments(pipeline)
    chosen = pipeline.parse_args([*pipeline_flags, "--profile", args.profile, "--artifacts", str(args.artifacts)])
    config = replace(transfer.FAMILY.config_from_args(chosen), split_seed=args.split_seed)
    args.pipeline_flags = pipeline_flags
    return args, config


def seed_config(config: transfer.TransferConfig, seed: int) -> transfer.TransferConfig:
    """The run of one seed: its own few-shot sample, initialisation and shuffling; the split of config.split_seed."""
    return replace(config, training=replace(config.training, seed=seed))


def fingerprint(split: Split) -> str:
    """A short digest of a split's images and labels, to show that every seed saw the same test images."""
    digest = hashlib.sha256(np.ascontiguousarray(split.images).tobytes())
    digest.update(np.ascontiguousarray(split.labels).tobytes())
    return digest.hexdigest()[:16]


# --- measurement -----------------------------------------------------------------------------------


def error_ratio(scratch_accuracy: float, transfer_accuracy: float) -> float | None:
    """Test error rate of scratch / that of transfer; None when transfer made no mistake."""
    transfer_error = 1.0 - transfer_accuracy
    return (1.0 - scratch_accuracy) / transfer_error if transfer_error > 0 else None


def run_seed(config: transfer.TransferConfig, run_dir: Path) -> tuple[dict[str, Any], ImageDataset]:
    """One transfer + scratch run through the pipeline (no export), afresh in `run_dir`; (row, dataset)."""
    if run_dir.exists():
        shutil.rmtree(run_dir)  # measure a fresh run, never resume one trained with other settings
    started = time.perf_counter()
    _, dataset, report = transfer.FAMILY.train_and_evaluate(config, run_dir)
    comparison = report["comparison"]
    transfer_accuracy, scratch_accuracy = comparison["transfer_test_accuracy"], comparison["scratch_test_accuracy"]
    row = {
        "seed": config.training.seed,
        "transfer_test_accuracy": transfer_accuracy,
        "scratch_test_accuracy": scratch_accuracy,
        "difference": transfer_accuracy - scratch_accuracy,
        "error_ratio": error_ratio(scratch_accuracy, transfer_accuracy),
        "train_images": comparison["train_images"],
        "train_sample": fingerprint(dataset.train),
        "seconds": round(time.perf_counter() - started, 1),
        "run_dir": str(run_dir),
    }
    return row, dataset


def spread(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (n - 1; 0 for a single value)."""
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    arms = {arm: spread([row[f"{arm}_test_accuracy"] for row in rows]) for arm in ("transfer", "scratch")}
    difference = spread([row["difference"] for row in rows])
    wins = sum(row["difference"] > 0 for row in rows)
    margin = CLEAR_MARGIN * max(arms["transfer"]["std"], arms["scratch"]["std"])
    return {
        **arms,
        "difference": difference,
        "wins": wins,
        "seeds": len(rows),
        "error_ratio": error_ratio(arms["scratch"]["mean"], arms["transfer"]["mean"]),
        "clear_win": wins == len(rows) and difference["mean"] > margin,
        "clear_margin": margin,
    }


# --- report ----------------------------------------------------------------------------------------


def ratio_text(ratio: float | None) -> str:
    return "inf (transfer made no mistake)" if ratio is None else f"{ratio:.2f}x"


def report_text(rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    lines = [f"{'seed':>4} {'transfer':>9} {'scratch':>8} {'difference':>11} {'error ratio':>12}"]
    for row in rows:
        ratio = "inf" if row["error_ratio"] is None else f"{row['error_ratio']:.2f}x"
        lines.append(
            f"{row['seed']:>4} {row['transfer_test_accuracy']:>9.4f} {row['scratch_test_accuracy']:>8.4f} "
            f"{row['difference']:>+11.4f} {ratio:>12}"
        )
    transfer_arm, scratch_arm, difference = summary["transfer"], summary["scratch"], summary["difference"]
    lines += [
        "",
        f"test accuracy over {summary['seeds']} seeds (mean ± sample std): "
        f"transfer {transfer_arm['mean']:.4f} ± {transfer_arm['std']:.4f}, "
        f"scratch {scratch_arm['mean']:.4f} ± {scratch_arm['std']:.4f}",
        f"mean difference transfer - scratch: {difference['mean']:+.4f} ± {difference['std']:.4f}; "
        f"transfer won {summary['wins']} of {summary['seeds']} seeds",
        f"test error rate scratch / transfer: {ratio_text(summary['error_ratio'])}",
        f"clear win (ahead on every seed, mean ahead by > {CLEAR_MARGIN:g} std of either arm = "
        f"{summary['clear_margin']:.4f}): {'YES' if summary['clear_win'] else 'NO'}",
    ]
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], summary: dict[str, Any], title: str, path: Path) -> None:
    """Per seed the two test accuracies joined by a line, then both means with ± one standard deviation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    positions = np.arange(len(rows))
    mean_at = len(rows) + 0.5
    offset = 0.12
    arms = (
        ("transfer", "transfer (pretrained glyph backbone)", "tab:blue"),
        ("scratch", "same architecture from scratch", "tab:orange"),
    )
    figure, axis = plt.subplots(figsize=(max(8.0, 1.0 * len(rows) + 4), 4.8))
    for position, row in zip(positions, rows):
        axis.plot(
            [position - offset, position + offset],
            [row["transfer_test_accuracy"], row["scratch_test_accuracy"]],
            color="gray",
            alpha=0.6,
            zorder=1,
        )
    for sign, (arm, label, color) in zip((-1, 1), arms):
        axis.scatter(
            positions + sign * offset, [row[f"{arm}_test_accuracy"] for row in rows], color=color, label=label, zorder=2
        )
        mean, std = summary[arm]["mean"], summary[arm]["std"]
        axis.errorbar(mean_at + sign * offset, mean, yerr=std, fmt="D", color=color, capsize=5, markersize=8, zorder=2)
        axis.annotate(
            f"{mean:.3f}",
            (mean_at + sign * offset, mean),
            xytext=(8 * sign, 0),
            textcoords="offset points",
            ha="left" if sign > 0 else "right",
            va="center",
            fontsize=9,
        )
    axis.axvline(len(rows) - 0.25, color="gray", linewidth=0.8, linestyle=":")
    axis.set_xticks([*positions, mean_at], [f"seed {row['seed']}" for row in rows] + ["mean ± std"])
    axis.set_xlim(-0.6, mean_at + 0.9)
    axis.set_ylabel("test accuracy")
    ratio = ratio_text(summary["error_ratio"]).split(" ")[0]
    axis.set_title(
        f"{title}\ntransfer won {summary['wins']}/{summary['seeds']} seeds, test error scratch / transfer {ratio}",
        fontsize=10,
    )
    axis.grid(True, axis="y", alpha=0.3)
    axis.legend(loc="best", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# --- main ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def quiet_keras() -> Iterator[None]:
    """No per-epoch lines (Keras sends them to absl logging, hidden by default) and no retracing warnings
    from evaluating each seed's fresh models; both restored afterwards."""
    interactive, level = keras.utils.is_interactive_logging_enabled(), tf.get_logger().level
    keras.utils.disable_interactive_logging()
    tf.get_logger().setLevel("ERROR")
    try:
        yield
    finally:
        if interactive:
            keras.utils.enable_interactive_logging()
        tf.get_logger().setLevel(level)


def run_seeds(args: argparse.Namespace, config: transfer.TransferConfig) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Pretrain the glyph backbone if missing, then one run per seed; (rows, the test split they all share)."""
    print(
        f"transfer vs scratch on {config.dataset}, {config.examples_per_class or 'all'} per class, "
        f"profile {args.profile}{' ' + ' '.join(args.pipeline_flags) if args.pipeline_flags else ''}; "
        f"seeds {args.seeds}, split seed {args.split_seed}"
    )
    transfer.ensure_source(config, runs=args.runs, register=False)  # pretrains the glyph backbone once if missing
    rows: list[dict[str, Any]] = []
    test_split: dict[str, Any] | None = None
    for index, seed in enumerate(args.seeds, 1):
        print(f"\n=== seed {seed} ({index}/{len(args.seeds)}) ===")
        row, dataset = run_seed(seed_config(config, seed), args.runs / BENCHMARK_RUNS / f"seed-{seed}")
        split = {
            "split_seed": args.split_seed,
            "images": len(dataset.test.labels),
            "fingerprint": fingerprint(dataset.test),
        }
        if test_split is not None and split != test_split:
            raise RuntimeError(
                f"seed {seed} was tested on other images than seed {args.seeds[0]}: {split} != {test_split}"
            )
        test_split = split
        rows.append(row)
        wins = sum(done["difference"] > 0 for done in rows)
        print(
            f"seed {seed} ({index}/{len(args.seeds)}): transfer {row['transfer_test_accuracy']:.4f}, "
            f"scratch {row['scratch_test_accuracy']:.4f} "
            f"({row['difference']:+.4f}) in {row['seconds']:.0f} s; transfer ahead on {wins}/{index} so far"
        )
    return rows, test_split


def main(argv: list[str] | None = None) -> int:
    args, config = parse_args(argv)
    started = time.perf_counter()
    with contextlib.nullcontext() if args.verbose else quiet_keras():
        rows, test_split = run_seeds(args, config)
    summary = summarize(rows)
    total = time.perf_counter() - started
    print("\n" + report_text(rows, summary))
    results = {
        "settings": settings(args),
        "config": {
            **config.to_dict(),
            "training": {key: value for key, value in config.training.to_dict().items() if key != "seed"},
        },
        "environment": environment(),
        "test_split": test_split,
        "seeds": rows,
        "summary": summary,
        "total_seconds": round(total, 1),
    }
    title = (
        f"{config.dataset}: transfer vs from scratch, {rows[0]['train_images']} training images per seed, "
        f"the same {test_split['images']} test images"
    )
    save_results(args.out, "transfer", results, lambda path: plot(rows, summary, title, path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
