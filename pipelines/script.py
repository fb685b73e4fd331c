"""What every family's pipeline script shares: training flags, profile presets and the train → export `main`.

A family module provides PROFILES, `add_arguments`, `config_from_args` and `run`; `pipeline_main`
turns them into `python -m pipelines.<family>` with `--skip-if-exported` and `--no-register`.
"""

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.export import artifact as export
from pipelines.training.loop import SCHEDULES, STRATEGIES, TrainingConfig, split_cpu

TRAINING_FLAGS = ("epochs", "batch_size", "learning_rate", "patience", "schedule", "decay_rate", "clip_norm")


def add_training_arguments(parser: argparse.ArgumentParser, *, profiles: dict[str, dict[str, Any]], name: str) -> None:
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
        "--cpu-devices", type=int, default=1, help="split the CPU into N logical devices (for `mirrored` without GPUs)"
    )
    parser.add_argument(
        "--name", default=name, help="model name in artifacts/ and the BentoML store (default: %(default)s)"
    )
    parser.add_argument(
        "--run-dir", type=Path, help="checkpoints, logs, history and plots (default: runs/<name>); re-running resumes"
    )
    parser.add_argument(
        "--artifacts", type=Path, default=Path("artifacts"), help="artifact root (default: %(default)s)"
    )


def preset_value(args: argparse.Namespace, preset: dict[str, Any], name: str) -> Any:
    """A flag's value if given on the command line, else the profile's."""
    value = getattr(args, name, None)
    return preset.get(name) if value is None else value


def training_config(args: argparse.Namespace, preset: dict[str, Any]) -> TrainingConfig:
    chosen = {key: value for key in TRAINING_FLAGS if (value := preset_value(args, preset, key)) is not None}
    return TrainingConfig(**chosen, seed=args.seed, strategy=args.strategy, cpu_devices=args.cpu_devices)


def saved_or_fresh_report(run_dir: Path, evaluate: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A finished run's saved evaluation report, or a fresh evaluation when it has none."""
    report_path = run_dir / "evaluation" / "report.json"
    return json.loads(report_path.read_text()) if report_path.exists() else evaluate()


def publish(artifact: Path, *, register: bool) -> Path:
    """Announce a new artifact version and copy it into the BentoML model store unless told not to."""
    print(f"exported {artifact}")
    if register:
        print(f"registered in the BentoML model store as {export.register_in_bentoml(artifact)}")
    return artifact


def pipeline_main(
    argv: list[str] | None,
    *,
    prog: str,
    description: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    config_from_args: Callable[[argparse.Namespace], Any],
    run: Callable[..., Path],
) -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    parser.add_argument(
        "--skip-if-exported", action="store_true", help="do nothing when an artifact of this name already exists"
    )
    parser.add_argument(
        "--no-register", action="store_true", help="do not copy the artifact into the BentoML model store"
    )
    args = parser.parse_args(argv)
    if args.skip_if_exported and (found := export.latest_version(args.artifacts / args.name)):
        print(f"{found} exists; skipping training (drop --skip-if-exported to train a new version)")
        if not args.no_register:
            export.register_in_bentoml(found)
        return 0
    config = config_from_args(args)
    split_cpu(config.training.cpu_devices)
    run(
        config,
        run_dir=args.run_dir or Path("runs") / args.name,
        artifacts=args.artifacts,
        register=not args.no_register,
    )
    return 0
