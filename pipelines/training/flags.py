"""Command-line flags every family script shares: profiles, training hyper-parameters, run and artifact folders.

Importing this module is light (no TensorFlow), so `modelservice --help` and `predict` stay quick.
"""

import argparse
import json
from collections.abc import Sequence
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
    parser.add_argument(
        "--config",
        type=Path,
        metavar="JSON",
        help="flag values from a file (e.g. best.json from `modelservice tune`): they override the profile, "
        "and flags given on the command line override them",
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


def read_config_file(path: Path) -> dict[str, object]:
    """A --config file: one JSON object of flag names (as in `args`, with underscores) and their values."""
    values = json.loads(path.read_text())
    if not isinstance(values, dict):
        raise SystemExit(f"--config {path}: expected a JSON object of flag values, found {type(values).__name__}")
    return values


def apply_config_file(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """When `argv` names a --config file, its values become `parser`'s defaults: the profile gives way to them
    (families read a profile's value only where a flag is None) and flags on the command line still win."""
    found, _ = _config_only().parse_known_args(argv)
    if found.config is None:
        return
    values = read_config_file(found.config)
    # Every flag's destination, and the profile's training values that have no flag of their own.
    known = set(vars(parser.parse_known_args([])[0])) | set(TRAINING_FLAGS)
    if unknown := sorted(set(values) - known):
        raise SystemExit(f"--config {found.config}: no such flag: {', '.join(unknown)}")
    parser.set_defaults(**values)


def _config_only() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--config", type=Path)
    return parser


TUNERS = ("random", "hyperband", "bayesian")
SEARCH_DESCRIPTION = """\
Search the family's hyperparameters with KerasTuner: its search space (SEARCH_SPACE, beside its PROFILES) is
applied onto the config the profile and the flags below choose, each trial trains with the family's own training
loop in <project-dir>/trial_<id>/ and is scored on the dev split (never the test split). Running the same command
again resumes the search; a larger --trials continues it. The project folder then holds trials.csv and
trials.json (hyperparameters, dev metric, epochs, seconds), tuning.png (the dev metric against each
hyperparameter) and best.json, which trains the best trial again: modelservice train FAMILY --config best.json.

Distributed: start one chief (KERASTUNER_TUNER_ID=chief) and any number of workers (KERASTUNER_TUNER_ID=tuner0,
tuner1, …), all with KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT naming the chief's address, the same
flags and the same --project-dir; the workers share out the trial budget and the chief writes the report.
"""


def add_search_arguments(parser: argparse.ArgumentParser) -> None:
    """`modelservice tune`'s own flags: the tuner, its budget, the project folder."""
    search = parser.add_argument_group("search")
    search.add_argument(
        "--tuner",
        choices=TUNERS,
        default="random",
        help="random search (the default: better than a grid when few hyperparameters matter), Hyperband "
        "(successive halving of epochs) or Bayesian optimisation",
    )
    search.add_argument("--trials", type=positive_int, default=10, help="trials in all (default: %(default)s)")
    search.add_argument(
        "--max-epochs",
        type=positive_int,
        default=10,
        help="epochs of a trial; Hyperband's largest round (default: %(default)s)",
    )
    search.add_argument(
        "--time-budget",
        type=float,
        metavar="SECONDS",
        help="start no new trial after this long (default: no limit; not for a worker)",
    )
    search.add_argument(
        "--project-dir",
        type=Path,
        help="KerasTuner's project folder: trials, table, plot, best.json (default: runs/tune-<name>)",
    )
