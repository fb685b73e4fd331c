"""Command-line flags every family script shares: profiles, training hyper-parameters, run and artifact folders.

Importing this module is light (no TensorFlow), so `modelservice --help` and `predict` stay quick.
"""

import argparse
from pathlib import Path
from typing import Any

TRAINING_FLAGS = ("epochs", "batch_size", "learning_rate", "patience", "schedule", "decay_rate", "clip_norm")


def threshold(text: str) -> float:
    """An argparse type: a number from 0 to 1 (score and IoU thresholds)."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a number from 0 to 1")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number from 1 up (sizes)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a whole number of at least 1")
    return value


def add_training_arguments(parser: argparse.ArgumentParser, *, profiles: dict[str, dict[str, Any]], name: str) -> None:
    from pipelines.training.loop import SCHEDULES, STRATEGIES

    parser.add_argument(
        "--profile",
        choices=sorted(profiles),
        default="quick",
        help="preset hyper-parameters (default: %(default)s); flags below override it",
    )
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--schedule", choices=SCHEDULES, help="learning-rate schedule (default: exponential)")
    parser.add_argument("--patience", type=int, help="early-stopping patience in epochs on dev loss; 0 disables")
    parser.add_argument(
        "--clip-norm", type=float, help="clip gradients to this global norm (default: the profile's, else none)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--strategy", choices=STRATEGIES, default="default", help="tf.distribute strategy (default: one device)"
    )
    parser.add_argument(
        "--cpu-devices",
        type=int,
        default=1,
        help="split the CPU into N logical devices (for `mirrored` without GPUs)",
    )
    parser.add_argument(
        "--name", default=name, help="model name in artifacts/ and the BentoML store (default: %(default)s)"
    )
    parser.add_argument(
        "--run-dir",
        type=Path,
        help="checkpoints, logs, history and plots (default: runs/<name>); re-running resumes",
    )
    parser.add_argument(
        "--artifacts", type=Path, default=Path("artifacts"), help="artifact root (default: %(default)s)"
    )


def preset_value(args: argparse.Namespace, preset: dict[str, Any], name: str) -> Any:
    """A flag's value if given on the command line, else the profile's."""
    value = getattr(args, name, None)
    return preset.get(name) if value is None else value


def training_config(args: argparse.Namespace, preset: dict[str, Any]) -> Any:
    """The TrainingConfig the flags and the profile choose."""
    from pipelines.training.loop import TrainingConfig

    chosen = {key: value for key in TRAINING_FLAGS if (value := preset_value(args, preset, key)) is not None}
    return TrainingConfig(**chosen, seed=args.seed, strategy=args.strategy, cpu_devices=args.cpu_devices)
