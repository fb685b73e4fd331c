"""One protocol for the four model families, and the mechanics they share, written once.

A family is one object (`FAMILY` in `pipelines/<name>.py`) with the same methods and signatures:

    load_data(config) -> data                    the dataset its config names
    fit_preprocessing(config, data) -> fitted    what is fitted on the training data before the model (a
                                                 tokenizer, anchors); saved beside the run, reloaded on resume
    build_model(config, data, fitted) -> keras.Model
    train(config, data, run_dir) -> Trained      the config, the model and what was fitted
    evaluate(trained, data, run_dir) -> report   metrics and PNG plots in <run_dir>/evaluation/
    served_graph(trained, data) -> tf.Module     the graph the SavedModel holds, pre- and post-processing inside
    artifact_metadata(trained, data, report)     the serving.contract metadata of the export
    export(trained, data, report, root) -> Path  the next artifact version
    held_out(data) -> HeldOut                    the split the validation gate scores exported versions on
    dev_score(trained, data) -> float            the dev-split objective of `search_space`, which
                                                 `modelservice tune` searches (pipelines/training/tuning.py)

and the flows built on them: `run` (train → evaluate → export → validate → register), `evaluate_run`, `export_run`
and `main` (`python -m pipelines.<name>`). `family(name)` imports a family only when it is asked for, so
the `modelservice` command does not load training code to serve.
"""

import argparse
import dataclasses
import importlib
import json
import sys
import time
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self, TypeVar

if TYPE_CHECKING:
    from pipelines.export.artifact import DiskFullError
    from pipelines.training.search_space import SearchSpace
    from pipelines.validation.gate import GateOptions
    from pipelines.validation.scoring import HeldOut
    from pipelines.validation.thresholds import Thresholds

NAMES = ("classifier", "seq2seq", "detector", "transfer")
EXPORT_FAILED_EXIT = 4  # the disk filled up during the export: the trained run is kept (3 is "not blessed")
# The one-line help of `modelservice train FAMILY`, readable without importing the family (its module's first line).
SUMMARIES = {
    "classifier": "Image classifier, end to end: data → model → training → evaluation → export.",
    "seq2seq": "Seq2Seq date normalisation, end to end: generated data → model → training → evaluation → export.",
    "detector": "Object detector, end to end: digit scenes or COCO / VOC data → YOLO-style model → mAP → export.",
    "transfer": "Transfer learning, end to end: pretrained backbone → new head → fine-tuning → comparison → export.",
}

QUALITY_TOLERANCE = 0.005  # how much lower than the baseline's the optimizing metric may be: 0.5 points
RUN_RECORD = "run.json"
MODEL_FILE = "model.keras"
REPORT_FILE = "report.json"
# Raised when an evaluation report gains what an export reads (seq2seq's is_date calibration came at 2): an
# export from a run evaluated before it evaluates again instead of failing on the missing part.
REPORT_VERSION = 2


def family(name: str) -> "Family":
    """The family called `name`, imported on first use."""
    if name not in NAMES:
        raise ValueError(f"unknown family {name!r}; choose one of {', '.join(NAMES)}")
    return importlib.import_module(f"pipelines.{name}").FAMILY


class Config:
    """A family config: a dataclass with `name` and `training` fields, (de)serialised to run.json and metadata."""

    name: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        """The config recorded by `to_dict`: nested configs rebuilt, JSON lists back to tuples where typed so."""
        hints = typing.get_type_hints(cls)
        return cls(
            **{spec.name: _typed(hints[spec.name], values[spec.name]) for spec in fields(cls) if spec.name in values}
        )


def _typed(hint: Any, value: Any) -> Any:
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for option in options:
        if is_dataclass(option) and isinstance(value, dict):
            return option.from_dict(value) if hasattr(option, "from_dict") else option(**value)
        if typing.get_origin(option) is tuple and isinstance(value, list):
            return tuple(value)
    return value


C = TypeVar("C", bound=Config)
D = TypeVar("D")
F = TypeVar("F")


@dataclass
class Trained(Generic[C, F]):
    """What training leaves: its config, the model, what was fitted on the data, and a baseline model if any."""

    config: C
    model: Any  # keras.Model
    fitted: F
    baseline: Any = None  # the transfer family's same architecture trained from scratch
    graph: Any = dataclasses.field(default=None, repr=False, compare=False)  # `Family.graph`'s, once built


@dataclass(frozen=True)
class RunFolder:
    """A training run's folder: run.json, model.keras, side files, checkpoints, logs, history, evaluation/."""

    path: Path

    @property
    def evaluation(self) -> Path:
        return self.path / "evaluation"

    def record(self, family_name: str, config: Config, dataset: dict[str, Any], **extra: Any) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        document = {"family": family_name, "config": config.to_dict(), "dataset": dataset, **extra}
        (self.path / RUN_RECORD).write_text(json.dumps(document, indent=2, ensure_ascii=False))

    def recorded(self) -> dict[str, Any]:
        return json.loads((self.path / RUN_RECORD).read_text())

    def family_name(self) -> str:
        """The family that trained this run (runs from before families were recorded are classifiers)."""
        return self.recorded().get("family", "classifier")

    def side_file(self, name: str, fit: Callable[[], F], dump: Callable[[F], Any], load: Callable[[Any], F]) -> F:
        """`fit()` on a new run, saved as `name`; reloaded when resuming, so a checkpoint keeps what it was
        trained with (a vocabulary, anchors)."""
        from pipelines.training.loop import is_resuming

        path = self.path / name
        if is_resuming(self.path) and path.exists():
            return load(json.loads(path.read_text()))
        fitted = fit()
        self.path.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dump(fitted), ensure_ascii=False, indent=1))
        return fitted

    def read_side_file(self, name: str, load: Callable[[Any], F]) -> F:
        return load(json.loads((self.path / name).read_text()))

    def save_model(self, model: Any) -> None:
        model.save(self.path / MODEL_FILE)

    def load_model(self, relative: str = MODEL_FILE) -> Any:
        import keras

        return keras.saving.load_model(self.path / relative)

    def save_report(self, report: dict[str, Any]) -> None:
        self.evaluation.mkdir(parents=True, exist_ok=True)
        saved = {**report, "report_version": REPORT_VERSION}
        (self.evaluation / REPORT_FILE).write_text(json.dumps(saved, indent=2, ensure_ascii=False))

    def saved_report(self) -> dict[str, Any] | None:
        """The saved evaluation; None where there is none, or it is from an older release (evaluate again)."""
        path = self.evaluation / REPORT_FILE
        if not path.exists():
            return None
        report = json.loads(path.read_text())
        if report.pop("report_version", 1) != REPORT_VERSION:
            print(f"{path} was written by an older release: evaluating the run again")
            return None
        return report


class Family(ABC, Generic[C, D, F]):
    """A model family end to end. Subclasses set the class attributes and implement the abstract methods."""

    name: ClassVar[str]
    config_type: ClassVar[type]
    profiles: ClassVar[dict[str, dict[str, Any]]]
    description: ClassVar[str]  # the family script's --help text
    side_file: ClassVar[str | None] = None  # where `fit_preprocessing`'s result is kept in the run folder
    keeps_keras_model: ClassVar[bool] = False  # export model.keras beside the SavedModel (transfer backbones)
    # The validation gate's default floors (pipelines/validation): what the quick profile reaches, with margin.
    quality_floor: ClassVar[float]
    group_floor: ClassVar[float]
    # What `modelservice tune` searches (pipelines/training/search_space.py); None: the family cannot be tuned.
    search_space: ClassVar["SearchSpace | None"] = None

    # --- command line ---

    @abstractmethod
    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    @abstractmethod
    def config_from_args(self, args: argparse.Namespace) -> C: ...

    # --- stages ---

    @abstractmethod
    def load_data(self, config: C) -> D: ...

    def fit_preprocessing(self, config: C, data: D) -> F:
        """What the model is built around and the export needs, fitted on the training data (default: nothing)."""
        return None

    def record_extra(self, fitted: F) -> dict[str, Any]:
        """What run.json records beside the config and the dataset (default: nothing)."""
        return {}

    def dump_fitted(self, fitted: F) -> Any:
        return fitted

    def load_fitted(self, values: Any) -> F:
        return values

    @abstractmethod
    def build_model(self, config: C, data: D, fitted: F) -> Any: ...

    @abstractmethod
    def fit(self, config: C, data: D, fitted: F, run_dir: Path, extra_callbacks: Sequence[Any] = ()) -> Any:
        """Train a model built by `build_model` through `pipelines.training.loop.fit`; return it."""

    def train(self, config: C, data: D, run_dir: Path, extra_callbacks: Sequence[Any] = ()) -> Trained[C, F]:
        """Fit the preprocessing (or reload it when resuming), record the run, train, save model.keras."""
        import keras

        from pipelines.training.distributed import worker_run_dir

        # Before the data pipelines exist: their seeded shuffles and random streams also read the global
        # seed, so without this a run's batches would depend on what the process trained before.
        keras.utils.set_random_seed(config.training.seed)
        run_dir = worker_run_dir(run_dir)
        run = RunFolder(run_dir)
        fitted = self._fitted(config, data, run)
        run.record(self.name, config, data.summary(), **self.record_extra(fitted))
        model = self.fit(config, data, fitted, run_dir, extra_callbacks)
        run.save_model(model)
        return Trained(config, model, fitted)

    def _fitted(self, config: C, data: D, run: RunFolder) -> F:
        if self.side_file is None:
            return self.fit_preprocessing(config, data)
        return run.side_file(
            self.side_file, lambda: self.fit_preprocessing(config, data), self.dump_fitted, self.load_fitted
        )

    def load_trained(self, run_dir: Path) -> Trained[C, F]:
        """A finished run as `train` returned it."""
        run = RunFolder(run_dir)
        config = self.config_type.from_dict(run.recorded()["config"])
        fitted = None if self.side_file is None else run.read_side_file(self.side_file, self.load_fitted)
        return Trained(config, run.load_model(), fitted)

    @abstractmethod
    def evaluate(self, trained: Trained[C, F], data: D, run_dir: Path) -> dict[str, Any]: ...

    def dev_score(self, trained: Trained[C, F], data: D) -> float:
        """The search space's objective on the dev split, higher is better: what a tuning trial is judged by."""
        raise NotImplementedError(f"{self.name} declares no search space")

    @abstractmethod
    def headline(self, report: dict[str, Any]) -> dict[str, Any]:
        """The figures `modelservice evaluate` prints."""

    @abstractmethod
    def describe(self, report: dict[str, Any]) -> str:
        """One line for the end of a training run."""

    @abstractmethod
    def served_graph(self, trained: Trained[C, F], data: D) -> Any: ...

    def graph(self, trained: Trained[C, F], data: D) -> Any:
        """`served_graph`, built once per trained model: the evaluation and the export then trace the same
        tf.functions (and calibrate once), not each their own."""
        if trained.graph is None:
            trained.graph = self.served_graph(trained, data)
        return trained.graph

    @abstractmethod
    def artifact_metadata(self, trained: Trained[C, F], data: D, report: dict[str, Any]) -> Any: ...

    @abstractmethod
    def warmup_examples(self, data: D) -> list[Any]:
        """A few real test inputs (images (H, W, C) 0-255, or texts): the artifact's warm-up requests."""

    @abstractmethod
    def held_out(self, data: D) -> "HeldOut":
        """The test split as the task's signatures take it (pipelines.validation.scoring.HeldOut)."""

    def gate_defaults(self) -> "Thresholds":
        """The validation gate's thresholds before a file or flags change them."""
        from pipelines.validation.thresholds import ChangeThreshold, MetricThreshold, Thresholds

        return Thresholds(
            quality=MetricThreshold(lower=self.quality_floor, change=ChangeThreshold(absolute=QUALITY_TOLERANCE)),
            groups=MetricThreshold(lower=self.group_floor),
        )

    def export(
        self, trained: Trained[C, F], data: D, report: dict[str, Any], root: Path, *, pending: bool = False
    ) -> Path:
        """The next artifact version, its held-out split's fingerprint in the metadata; `pending`: marked
        waiting for the validation gate, so no server serves it before the gate has run."""
        from pipelines.export.artifact import export_artifact
        from serving.contract import Blessing

        keras_model = trained.model if self.keeps_keras_model else None
        metadata = self.artifact_metadata(trained, data, report)
        held_out = self.held_out(data)
        dataset = {**metadata.dataset, "held_out": {"size": len(held_out), "fingerprint": held_out.fingerprint()}}
        return export_artifact(
            self.graph(trained, data),
            root=root,
            metadata=dataclasses.replace(metadata, dataset=dataset),
            keras_model=keras_model,
            warmup_examples=self.warmup_examples(data),
            blessing=Blessing(blessed=False, pending=True) if pending else None,
        )

    # --- flows ---

    def train_and_evaluate(self, config: C, run_dir: Path) -> tuple[Trained[C, F], D, dict[str, Any]] | None:
        """Train, then evaluate; None on a worker other than the chief, which only trains."""
        from pipelines.training.distributed import finish_worker, is_chief

        data = self.load_data(config)
        print(f"dataset: {describe_dataset(data)}")
        trained = self.train(config, data, run_dir)
        if not is_chief():
            finish_worker(run_dir)
            return None
        report = self.evaluate(trained, data, run_dir)
        print(self.describe(report))
        print(f"checkpoints, logs, history and plots in {run_dir}")
        return trained, data, report

    def run(
        self, config: C, *, run_dir: Path, artifacts: Path, register: bool = True, gate: "GateOptions | None" = None
    ) -> Path | None:
        """Train, evaluate, export, validate (when given a `gate`) and register; returns the new artifact folder
        (None on a worker other than the chief)."""
        finished = self.train_and_evaluate(config, run_dir)
        if finished is None:
            return None
        trained, data, report = finished
        return publish(self.export_and_validate(trained, data, report, artifacts, gate), register=register)

    def export_and_validate(
        self, trained: Trained[C, F], data: D, report: dict[str, Any], artifacts: Path, gate: "GateOptions | None"
    ) -> Path:
        """Export; with a `gate`, the version waits as pending until the gate has written its verdict."""
        artifact = self.export(trained, data, report, artifacts, pending=gate is not None)
        print(f"exported {artifact}")
        if gate is not None:
            from pipelines.validation.gate import validate_and_print

            validate_and_print(artifact, gate, data=data)
        return artifact

    def evaluate_run(self, run_dir: Path) -> dict[str, Any]:
        """Re-evaluate a finished training run; returns the headline figures."""
        trained = self.load_trained(run_dir)
        return self.headline(self.evaluate(trained, self.load_data(trained.config), run_dir))

    def export_run(self, run_dir: Path, artifacts: Path, gate: "GateOptions | None" = None) -> Path:
        """Export a finished run as the next artifact version (its saved evaluation, else a fresh one), validated
        when given a `gate`."""
        trained = self.load_trained(run_dir)
        data = self.load_data(trained.config)
        report = RunFolder(run_dir).saved_report() or self.evaluate(trained, data, run_dir)
        return self.export_and_validate(trained, data, report, artifacts, gate)

    def argument_parser(self) -> argparse.ArgumentParser:
        """`python -m pipelines.<name>`'s flags before the export's: the family's own and the shared training ones."""
        parser = argparse.ArgumentParser(
            prog=f"python -m pipelines.{self.name}",
            description=self.description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        self.add_arguments(parser)
        return parser

    def main(self, argv: list[str] | None = None) -> int:
        """`python -m pipelines.<name>`: train → evaluate → export → validate → register, or skip if exported."""
        from pipelines.training.flags import apply_config_file
        from serving.contract import latest_version, read_blessing

        parser = self.argument_parser()
        parser.add_argument(
            "--skip-if-exported", action="store_true", help="do nothing when an artifact of this name already exists"
        )
        parser.add_argument(
            "--no-register", action="store_true", help="do not copy the artifact into the BentoML model store"
        )
        add_validation_arguments(parser)
        apply_config_file(parser, sys.argv[1:] if argv is None else argv)
        args = parser.parse_args(argv)
        if args.skip_if_exported and (found := latest_version(args.artifacts / args.name)):
            print(f"{found} exists; skipping training (drop --skip-if-exported to train a new version)")
            if not args.no_register:
                register_artifact(found)
            return 0 if read_blessing(found) is None else validation_status(found)
        config = self.prepared(args)
        gate = self.gate_options(args)
        from pipelines.export.artifact import DiskFullError
        from pipelines.training.distributed import WorkerLost, stopped

        started = time.monotonic()
        run_dir = args.run_dir or Path("runs") / args.name
        try:
            artifact = self.run(
                config, run_dir=run_dir, artifacts=args.artifacts, register=not args.no_register, gate=gate
            )
        except DiskFullError as error:
            return export_failed(error, run_dir)
        except WorkerLost as error:
            return stopped(error)
        if artifact is None:  # a worker: the chief exports
            return 0
        stages = "evaluation, export and validation" if gate else "evaluation and export"
        print(f"{self.name}: data, training, {stages} took {duration(time.monotonic() - started)}")
        return validation_status(artifact) if gate else 0

    def gate_options(self, args: argparse.Namespace) -> "GateOptions | None":
        """The gate the command line asks for (`add_validation_arguments`), None for --no-validate."""
        from pipelines.validation.gate import GateOptions

        if args.no_validate:
            return None
        return GateOptions.from_args(self.gate_defaults(), args)

    def prepared(self, args: argparse.Namespace) -> C:
        """The config the command line asks for, with the CPU split into the devices it names."""
        from pipelines.training.loop import split_cpu

        config = self.config_from_args(args)
        split_cpu(config.training.cpu_devices)
        if config.training.strategy == "multi-worker":
            from pipelines.training.distributed import multi_worker_strategy

            multi_worker_strategy()  # before any other TensorFlow operation, as collective ops require
        return config


def export_failed(error: "DiskFullError", run_dir: Path) -> int:
    """Say why the export failed and how to finish it: the trained run is kept."""
    print(
        f"export failed: {error.strerror}. The trained model is kept in {run_dir}: free some space, then "
        f"`modelservice export --run-dir {run_dir}`",
        file=sys.stderr,
    )
    return EXPORT_FAILED_EXIT


def add_validation_arguments(parser: argparse.ArgumentParser) -> None:
    """--no-validate and the validation gate's thresholds, for the commands that export."""
    from pipelines.validation.thresholds import add_gate_arguments

    parser.add_argument(
        "--no-validate",
        action="store_true",
        help="skip the validation gate: the version has no blessing record and is served as before the gate",
    )
    add_gate_arguments(parser)


def validation_status(artifact: Path) -> int:
    """The exit status for an exported and validated version: 0 when blessed, else NOT_BLESSED_EXIT."""
    from pipelines.validation import NOT_BLESSED_EXIT
    from serving.contract import read_blessing

    blessing = read_blessing(artifact)
    return 0 if blessing is not None and blessing.blessed else NOT_BLESSED_EXIT


def duration(seconds: float) -> str:
    """'7 min 05 s', or '42.0 s' under a minute."""
    if round(seconds, 1) < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def describe_dataset(data: Any) -> str:
    summary = data.summary()
    return f"{summary.get('name', '')} {summary['sizes']}".strip()


def register_artifact(artifact: Path) -> str:
    from pipelines.export.artifact import register_in_bentoml

    return register_in_bentoml(artifact)


def publish(artifact: Path, *, register: bool) -> Path:
    """Copy a new artifact version into the BentoML model store unless told not to."""
    if register:
        print(f"registered in the BentoML model store as {register_artifact(artifact)}")
    return artifact
