"""Training speed per model family on this machine: examples per second, and the arithmetic rate reached
against the machine's dense matmul peak measured in the same process.

    python -m benchmarks.training                                   # every family, oneDNN on and off
    python -m benchmarks.training --families detector --steps 20 --onednn on

Each (family, oneDNN setting) runs in a process of its own, because TensorFlow reads TF_ENABLE_ONEDNN_OPTS
once, when it is imported. There the family trains as `python -m pipelines.<family>` would: its quick
profile's config, data pipeline, model, loss and optimizer, through `Family.fit` (callbacks included), for
two epochs of --steps steps each. Only the second epoch is timed: the first also traces and optimises the
graphs. Examples/s = batch size / mean step time.

"glyphs" is the transfer demo's costly part: pretraining its backbone, the classifier's ResNet on printed
characters. (Its own two phases train on 100 images.)

FLOPs per training example = 3 × the forward pass's (the backward pass of a matmul or a convolution costs
twice its forward), counted on one training batch from the model's layers: two FLOPs per kernel weight and
output position of every Dense and convolution call, and per time step of every LSTM / GRU. Attention's
own dot products and element-wise work are left out, so the rate is a lower bound. The peak: the fastest
of several float32 matmuls of --matmul-size squared matrices, 2n³ FLOPs each, measured in every measuring
process; each family's rate is given as a fraction of the best of them.

Results: a table on stdout, `training.json` and `training.png` under --out.
"""

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.common import comma_separated, environment, save_results, settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ("classifier", "seq2seq", "detector", "glyphs")
ONEDNN = {"on": "1", "off": "0"}
RESULT_PREFIX = "RESULT "


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.training", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--families",
        default=",".join(FAMILIES),
        help=f"comma-separated subset of {', '.join(FAMILIES)} (default: all)",
    )
    parser.add_argument(
        "--onednn", choices=("both", *ONEDNN), default="both", help="TensorFlow's oneDNN kernels (default: both)"
    )
    parser.add_argument("--steps", type=int, default=20, help="training steps per epoch (default: %(default)s)")
    parser.add_argument(
        "--matmul-size",
        type=int,
        default=2048,
        help="n of the n×n matmuls that measure the peak (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=PROJECT_ROOT / "benchmarks" / "results",
        help="folder for training.json and training.png (default: %(default)s)",
    )
    parser.add_argument("--child", choices=FAMILIES, help=argparse.SUPPRESS)  # one measurement, in this process
    args = parser.parse_args(argv)
    args.family_list = comma_separated(parser, "--families", args.families, str, choices=FAMILIES)
    if args.steps < 2 or args.matmul_size < 64:
        parser.error("--steps must be >= 2 and --matmul-size >= 64")
    return args


# --- what one process measures ----------------------------------------------------------------------


def quick_config(name: str, steps: int) -> tuple[Any, Any]:
    """(family, config): the family's quick profile, its training set cut to `steps` batches, two epochs."""
    from dataclasses import replace

    from pipelines.family import family

    if name == "glyphs":
        from pipelines import transfer

        config = transfer.source_config(transfer.FAMILY.config_from_args(profile_args(transfer.FAMILY)))
        target = family("classifier")
    else:
        target = family(name)
        config = target.config_from_args(profile_args(target))
    training = replace(config.training, epochs=2, patience=0)
    return target, replace(config, train_size=steps * training.batch_size, training=training)


def profile_args(target: Any) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    target.add_arguments(parser)
    return parser.parse_args(["--profile", "quick"])


def first_batch(name: str, config: Any, data: Any, fitted: Any) -> Any:
    """The model inputs of one training batch, through the family's own tf.data pipeline."""
    batch_size = config.training.batch_size
    if name == "seq2seq":
        from pipelines.seq2seq import make_tf_dataset

        dataset = make_tf_dataset(data.train, fitted, batch_size=batch_size, training=False)
    elif name == "detector":
        from pipelines.detector import make_tf_dataset

        dataset = make_tf_dataset(data.train, config, fitted, batch_size=batch_size, training=False)
    else:
        from pipelines.data.image_data import make_tf_dataset

        dataset = make_tf_dataset(data.train, batch_size=batch_size, training=False)
    return next(iter(dataset))[0]


class StepTimer:
    """Times each epoch's steps, from the end of its first step to the end of its last (`callback()` for Keras)."""

    def __init__(self):
        self.ends: dict[int, list[float]] = {}
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.ends[epoch] = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends[self.epoch].append(time.perf_counter())

    def callback(self) -> Any:
        import keras

        return keras.callbacks.LambdaCallback(
            on_epoch_begin=self.on_epoch_begin, on_train_batch_end=self.on_train_batch_end
        )

    def mean_step_seconds(self, epoch: int) -> float:
        ends = self.ends[epoch]
        return (ends[-1] - ends[0]) / (len(ends) - 1)


# The layers whose multiply-adds are counted, and how: 2 FLOPs per kernel weight and output position.
def _dense_flops(layer: Any, inputs: Any, outputs: Any) -> int:
    return 2 * math.prod(inputs.shape[:-1]) * math.prod(layer.kernel.shape)


def _conv_flops(layer: Any, inputs: Any, outputs: Any) -> int:
    return 2 * math.prod(outputs.shape[:-1]) * math.prod(layer.kernel.shape)  # channels last


def _recurrent_flops(layer: Any, inputs: Any, outputs: Any) -> int:
    """An LSTM / GRU / SimpleRNN over (batch, steps, features): its cell's input and recurrent kernels per step."""
    cell = layer.cell
    batch, steps = inputs.shape[:2]
    return 2 * batch * steps * (math.prod(cell.kernel.shape) + math.prod(cell.recurrent_kernel.shape))


@contextlib.contextmanager
def counting_flops() -> Iterator[list[int]]:
    """While active, every counted layer call (eager) adds its FLOPs to the yielded one-item list."""
    import keras

    rules = {
        keras.layers.Dense: _dense_flops,
        keras.layers.Conv1D: _conv_flops,
        keras.layers.Conv2D: _conv_flops,
        keras.layers.DepthwiseConv2D: _conv_flops,
        # Whole layers, not cells: Keras calls a cell once more than there are steps, to learn its output shape.
        keras.layers.LSTM: _recurrent_flops,
        keras.layers.GRU: _recurrent_flops,
        keras.layers.SimpleRNN: _recurrent_flops,
    }
    total = [0]
    originals = {kind: kind.call for kind in rules}

    def counted(kind: type, rule: Any) -> Any:
        original = originals[kind]

        def call(layer, inputs, *args, **kwargs):
            outputs = original(layer, inputs, *args, **kwargs)
            # The closest ruled class counts a call, once: a subclass's super().call() is not counted again.
            if next(base for base in type(layer).__mro__ if base in rules) is kind:
                first = outputs[0] if isinstance(outputs, list | tuple) else outputs
                total[0] += rule(layer, inputs, first)
            return outputs

        return call

    try:
        for kind, rule in rules.items():
            kind.call = counted(kind, rule)
        yield total
    finally:
        for kind, original in originals.items():
            kind.call = original


def forward_flops_per_example(model: Any, inputs: Any) -> float:
    """The forward pass's counted FLOPs on `inputs` (one batch, run eagerly), per example."""
    import tensorflow as tf

    examples = int(tf.nest.flatten(inputs)[0].shape[0])
    with counting_flops() as total:
        model(inputs, training=False)
    return total[0] / examples


def matmul_peak_flops(size: int, repeats: int = 8) -> float:
    """FLOP/s of the fastest of `repeats` float32 size×size matmuls (after one warm-up)."""
    import tensorflow as tf

    a = tf.random.stateless_uniform((size, size), seed=(1, 2))
    b = tf.random.stateless_uniform((size, size), seed=(3, 4))
    tf.linalg.matmul(a, b).numpy()
    fastest = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        tf.linalg.matmul(a, b).numpy()
        fastest = min(fastest, time.perf_counter() - started)
    return 2 * size**3 / fastest


def measure(name: str, steps: int, matmul_size: int, workdir: Path) -> dict[str, Any]:
    """One family's training speed in this process."""
    family, config = quick_config(name, steps)
    data = family.load_data(config)
    fitted = family.fit_preprocessing(config, data)
    timer = StepTimer()
    model = family.fit(config, data, fitted, workdir / name, extra_callbacks=[timer.callback()])
    step_seconds = timer.mean_step_seconds(epoch=1)
    batch_size = config.training.batch_size
    examples_per_s = batch_size / step_seconds
    train_flops = 3 * forward_flops_per_example(model, first_batch(name, config, data, fitted))
    peak = matmul_peak_flops(matmul_size)
    return {
        "family": name,
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "batch_size": batch_size,
        "steps_timed": len(timer.ends[1]) - 1,
        "step_ms": 1000 * step_seconds,
        "examples_per_s": examples_per_s,
        "train_gflop_per_example": train_flops / 1e9,
        "gflop_per_s": train_flops * examples_per_s / 1e9,
        "peak_gflop_per_s": peak / 1e9,
    }


# --- the run: one process per measurement -------------------------------------------------------------


def run_child(name: str, onednn: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "benchmarks.training",
        "--child",
        name,
        "--steps",
        str(args.steps),
        "--matmul-size",
        str(args.matmul_size),
        "--out",
        str(workdir),
    ]
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": ONEDNN[onednn], "CI": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    finished = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=1800)
    lines = [line for line in finished.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if finished.returncode != 0 or not lines:
        raise RuntimeError(f"measuring {name} (oneDNN {onednn}) failed:\n{finished.stderr[-3000:]}")
    return {**json.loads(lines[-1].removeprefix(RESULT_PREFIX)), "onednn": onednn}


def print_table(rows: list[dict[str, Any]]) -> None:
    header = (
        f"{'family':<11} {'oneDNN':<6} {'batch':>5} {'step ms':>8} {'examples/s':>10} "
        f"{'GFLOP/ex':>9} {'GFLOP/s':>8} {'peak':>7} {'of peak':>7}"
    )
    print(header)
    for row in rows:
        print(
            f"{row['family']:<11} {row['onednn']:<6} {row['batch_size']:>5} {row['step_ms']:>8.1f} "
            f"{row['examples_per_s']:>10.1f} {row['train_gflop_per_example']:>9.4f} {row['gflop_per_s']:>8.1f} "
            f"{row['peak_gflop_per_s']:>7.1f} {row['fraction_of_peak']:>7.1%}"
        )


def onednn_speedups(rows: list[dict[str, Any]]) -> dict[str, float]:
    """examples/s with oneDNN on / off, per family measured both ways."""
    by = {(row["family"], row["onednn"]): row["examples_per_s"] for row in rows}
    return {name: by[name, "on"] / by[name, "off"] for name, setting in by if setting == "on" and (name, "off") in by}


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(1.3 * len(rows) + 3, 4))
    labels = [f"{row['family']}\noneDNN {row['onednn']}" for row in rows]
    bars = axis.bar(range(len(rows)), [100 * row["fraction_of_peak"] for row in rows])
    for bar, row in zip(bars, rows):
        axis.annotate(
            f"{row['examples_per_s']:.0f}/s", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
            va="bottom", fontsize=8,
        )  # fmt: skip
    axis.set_xticks(range(len(rows)), labels, fontsize=8)
    axis.set_ylabel("% of the matmul peak (counted FLOPs)")
    axis.set_title("Training: arithmetic rate against this machine's float32 matmul peak")
    axis.grid(True, axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        result = measure(args.child, args.steps, args.matmul_size, args.out)
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return 0
    import tempfile

    started = time.perf_counter()
    settings_list = list(ONEDNN) if args.onednn == "both" else [args.onednn]
    rows = []
    with tempfile.TemporaryDirectory(prefix="training-benchmark-") as workdir:
        for name in args.family_list:
            for onednn in settings_list:
                print(f"measuring {name}, oneDNN {onednn} ...", flush=True)
                rows.append(run_child(name, onednn, args, Path(workdir)))
    best_peak = max(row["peak_gflop_per_s"] for row in rows)  # oneDNN's matmul is the faster: the limit
    for row in rows:
        row["fraction_of_peak"] = row["gflop_per_s"] / best_peak
    print()
    print_table(rows)
    print(f"peak: the fastest {args.matmul_size}² float32 matmul, {best_peak:.1f} GFLOP/s")
    speedups = onednn_speedups(rows)
    for name, speedup in speedups.items():
        print(f"{name}: oneDNN on trains {speedup:.2f}x as many examples/s as off")
    results = {
        "environment": environment(),
        "settings": settings(args),
        "rows": rows,
        "onednn_speedups": speedups,
        "total_seconds": time.perf_counter() - started,
    }
    save_results(args.out, "training", results, lambda path: plot(rows, path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
