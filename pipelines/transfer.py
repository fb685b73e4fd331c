"""Transfer learning, end to end: pretrained backbone → new head → fine-tuning → comparison → export.

    python -m pipelines.transfer                          # the demo: a backbone pretrained on printed
                                                          # characters, 10 handwritten digits per class
    python -m pipelines.transfer --backbone mobilenet_v2 --weights imagenet \\
        --dataset folder:photos --image-size 160 160 --channels 3
    python -m pipelines.transfer --backbone artifacts/classifier   # one of this project's classifiers
    python -m pipelines.transfer --transfer-strategy partial --fine-tune-at 20

Phase 1 trains the new head on a frozen backbone. Phase 2, unless the strategy is "freeze", unfreezes
the backbone from layer `--fine-tune-at` ("partial") or entirely ("full") and trains on at a learning
rate 1/100 of phase 1's, BatchNormalization layers staying in inference mode. `--transfer-strategy auto`
picks by labelled images per class: < 100 freeze, < 1000 partial, else full (the fewer the labels, the
fewer weights they can retrain without overfitting).

The same architecture is also trained from random weights on the same images with the same budget
(skip with `--no-scratch`), so the report says what the pretraining was worth, and
`evaluation/transfer_vs_scratch.png` shows both learning curves. The result is exported as a classifier
artifact (task "classifier"), served by /classify and the TF Serving routes under its own name.

The default backbone, "glyphs", is this project's own: the ResNet of `pipelines.classifier` trained on
`pipelines.data.glyph_data` (62 printed characters in 22 fonts, imaged the way the handwritten digits were).
It is pretrained and exported as artifacts/glyphs the first time, and reused after that. The demo
profiles fine-tune the whole backbone at 1/10 of phase 1's rate without augmentation, which measured
best for this small backbone and an 8x8 target (README, "Transfer learning").
"""

import argparse
import csv
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np

from models.transfer import (
    BACKBONES,
    STRATEGIES,
    backbone_of,
    build_transfer_classifier,
    convolutional_part,
    default_fine_tune_at,
    freeze_backbone,
    strategy_for,
    unfreeze_from,
)
from pipelines.classifier import FAMILY as CLASSIFIER
from pipelines.classifier import ClassifierConfig, accuracy, evaluate_model
from pipelines.data.image_data import ImageDataset, Split, load_dataset, make_tf_dataset
from pipelines.evaluation import plots
from pipelines.export.classifier_graph import ClassifierGraph
from pipelines.export.warmup import WARMUP_EXAMPLES
from pipelines.family import MODEL_FILE, Config, Family, RunFolder, Trained
from pipelines.training import flags
from pipelines.training.distributed import is_chief, wait_for, worker_run_dir
from pipelines.training.loop import TrainingConfig, fit, is_resuming, read_history
from pipelines.training.search_space import Choice, LogUniform, SearchSpace, Uniform
from pipelines.validation.scoring import HeldOut, image_classes
from serving.contract import KERAS_MODEL_FILE, ArtifactMetadata, latest_version

SOURCE = "glyphs"  # the backbone pretrained here on printed characters
PHASES = ("head", "fine_tune", "scratch")
LOSS = "sparse_categorical_crossentropy"

# Both arms (transfer and scratch) train alike: 100 images in batches of 20, the rate decaying 3% per
# epoch, no early stopping (a 270-image dev set would be more labels than the 100 it is about).
DEMO = {
    "batch_size": 20,
    "learning_rate": 3e-3,
    "decay_rate": 0.97,
    "patience": 0,
    "transfer_strategy": "full",
    "fine_tune_learning_rate": 3e-4,
    "augment": False,
}
PROFILES: dict[str, dict[str, Any]] = {
    # quick: 2 min 28 s on the project's 2-core machine, pretraining included (issue 14: at most 3); over five
    # seeds transfer 0.948 ± 0.009 against scratch 0.903 ± 0.007, ahead on every one. 30,000 glyphs for 8 epochs
    # and 100 + 30 epochs took 7 min 41 s for 0.055 ahead.
    "quick": {"epochs": 40, "fine_tune_epochs": 15, "source_epochs": 4, "source_size": 8000, **DEMO},
    "default": {"epochs": 150, "fine_tune_epochs": 50, "source_epochs": 15, "source_size": None, **DEMO},
}
# `modelservice tune transfer`: the transferred model's dev accuracy; the from-scratch baseline is a comparison,
# not part of what is tuned, so trials skip it.
SEARCH_SPACE = SearchSpace(
    objective="dev_accuracy",
    dimensions=(
        LogUniform("learning_rate", low=1e-4, high=1e-2),
        LogUniform("fine_tune_learning_rate", low=1e-6, high=1e-4),
        Uniform("dropout", low=0.0, high=0.5, step=0.1),
        Choice("batch_size", values=(8, 16, 32)),
        Choice("transfer_strategy", values=STRATEGIES),
    ),
    fixed={"scratch": False},
)


@dataclass
class TransferConfig(Config):
    dataset: str = "digits"
    data_dir: str | None = None
    image_size: tuple[int, int] | None = None
    channels: int = 1
    examples_per_class: int | None = 10  # None: every training image
    split_seed: int | None = (
        None  # seed of the train/dev/test split; None: training.seed (which always draws the few-shot sample)
    )
    backbone: str = SOURCE  # a BACKBONES name, SOURCE, or the path of a classifier artifact / .keras file
    weights: str | None = "imagenet"  # named backbones only: "imagenet", a weights file, or None
    backbone_size: int | None = None
    transfer_strategy: str = "auto"
    fine_tune_at: int | None = None  # None: models.transfer.default_fine_tune_at
    fine_tune_epochs: int = 30
    fine_tune_learning_rate: float | None = None  # None: 1/100 of phase 1's
    source_epochs: int = 8
    source_size: int | None = None  # glyphs the backbone is pretrained on; None: the generator's 30,000
    scratch: bool = True
    dropout: float = 0.2
    augment: bool = True
    name: str = "transfer"
    artifacts: str = "artifacts"
    training: TrainingConfig = field(default_factory=TrainingConfig)

    @property
    def fine_tune_rate(self) -> float:
        return self.fine_tune_learning_rate or self.training.learning_rate / 100


@dataclass(frozen=True)
class TransferPlan:
    """What a run is built around: the strategy its images per class choose, and its own backbone (None for
    a keras.applications one, which the builder makes)."""

    strategy: str
    backbone: keras.Model | None = None


def few_shot(dataset: ImageDataset, examples_per_class: int | None, *, seed: int) -> ImageDataset:
    """The dataset with only `examples_per_class` training images of each class (chosen with `seed`)."""
    if examples_per_class is None:
        return dataset
    rng = np.random.default_rng(seed)
    chosen = []
    for label, name in enumerate(dataset.class_names):
        members = np.flatnonzero(dataset.train.labels == label)
        if len(members) < examples_per_class:
            raise ValueError(
                f"class {name!r} has {len(members)} training images, "
                f"fewer than --examples-per-class {examples_per_class}"
            )
        chosen.append(rng.choice(members, examples_per_class, replace=False))
    keep = np.sort(np.concatenate(chosen))
    train = Split(images=dataset.train.images[keep], labels=dataset.train.labels[keep])
    return ImageDataset(
        f"{dataset.name}-{examples_per_class}-per-class", dataset.class_names, train, dataset.dev, dataset.test
    )


def chosen_strategy(config: TransferConfig, dataset: ImageDataset) -> str:
    if config.transfer_strategy != "auto":
        return config.transfer_strategy
    return strategy_for(float(np.bincount(dataset.train.labels).min()))


def source_config(config: TransferConfig) -> ClassifierConfig:
    """The glyph classifier whose convolutional part is the default backbone."""
    training = TrainingConfig(
        epochs=config.source_epochs,
        batch_size=64,
        learning_rate=2e-3,
        decay_rate=0.8,
        patience=3,
        seed=config.training.seed,
    )
    return ClassifierConfig(
        dataset="glyphs", architecture="resnet", train_size=config.source_size, name=SOURCE, training=training
    )


def load_keras_classifier(path: Path) -> keras.Model:
    """The Keras model of a classifier artifact (latest version of a model folder, or one version) or a .keras file."""
    if path.suffix == ".keras":
        return keras.saving.load_model(path)
    version = latest_version(path) or path
    model_file = version / KERAS_MODEL_FILE
    if not model_file.is_file():
        raise FileNotFoundError(
            f"{path} holds no {KERAS_MODEL_FILE}: "
            "give a classifier artifact (artifacts/NAME or artifacts/NAME/VERSION), "
            f"a .keras file, or one of {', '.join(BACKBONES)}"
        )
    return keras.saving.load_model(model_file)


def source_path(config: TransferConfig) -> Path:
    return Path(config.artifacts) / SOURCE if config.backbone == SOURCE else Path(config.backbone)


def ensure_source(config: TransferConfig, *, runs: Path, register: bool) -> None:
    """Pretrain the glyph backbone (in `runs`/glyphs) and export it when it is the backbone and missing."""
    path = source_path(config)
    if config.backbone != SOURCE or latest_version(path) is not None:
        return
    if not is_chief():  # one source for every worker: the chief's
        print(f"waiting for the chief to pretrain and export the {SOURCE} backbone to {path}")
        wait_for(lambda: latest_version(path) is not None, str(path))
        return
    print(f"pretraining the {SOURCE} backbone on printed characters ({config.source_epochs} epochs); reused later")
    CLASSIFIER.run(source_config(config), run_dir=runs / SOURCE, artifacts=Path(config.artifacts), register=register)


def build_transfer_model(
    config: TransferConfig, dataset: ImageDataset, backbone: keras.Model | None, *, pretrained: bool = True
) -> keras.Model:
    """The transfer classifier; with `pretrained=False` the same architecture from random weights."""
    common = {
        "num_classes": dataset.num_classes,
        "input_shape": dataset.image_shape,
        "backbone_size": config.backbone_size,
        "dropout": config.dropout,
    }
    if backbone is None:  # a keras.applications backbone
        return build_transfer_classifier(
            backbone=config.backbone, weights=config.weights if pretrained else None, **common
        )
    if not pretrained:
        backbone = keras.models.clone_model(backbone)  # fresh random weights, same layers
        for layer in backbone.layers:  # the clone copies each layer's trainable flag, frozen by phase 1
            layer.trainable = True
    return build_transfer_classifier(backbone=backbone, **common)


def reusable_phases(run_dir: Path) -> set[str]:
    """Phases finished before an interruption: those before the phase a backup says was cut short."""
    interrupted = next((index for index, phase in enumerate(PHASES) if is_resuming(run_dir / phase)), None)
    if interrupted is None:
        return set()
    return {phase for phase in PHASES[:interrupted] if (run_dir / phase / "model.keras").is_file()}


def train_phase(
    phase: str, build, train_ds, dev_ds, training: TrainingConfig, run_dir: Path, reuse: set[str]
) -> keras.Model:
    phase_dir = run_dir / phase
    if phase in reuse:
        print(f"{phase}: finished before the interruption, reusing {phase_dir / 'model.keras'}")
        return keras.saving.load_model(phase_dir / "model.keras")
    print(f"{phase}: {training.epochs} epochs at learning rate {training.learning_rate:g}")
    model = fit(build, train_ds, dev_ds, config=training, run_dir=phase_dir, loss=LOSS, metrics=["accuracy"])
    model.save(phase_dir / "model.keras")
    return model


def fine_tuned(model: keras.Model, strategy: str, fine_tune_at: int | None) -> keras.Model:
    """Phase 2's model: "full" unfreezes the whole backbone, "partial" from `fine_tune_at`
    (default: default_fine_tune_at)."""
    if strategy == "full":
        fine_tune_at = 0
    elif fine_tune_at is None:
        fine_tune_at = default_fine_tune_at(backbone_of(model))
    unfreeze_from(model, fine_tune_at)
    return model


def write_history(run_dir: Path, phases: list[str]) -> None:
    """The phases' histories one after the other in `run_dir/history.csv`, which the evaluation plots."""
    histories = [read_history(run_dir / phase) for phase in phases]
    columns = sorted({key for history in histories for key in history})
    with (run_dir / "history.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", *columns])
        epoch = 0
        for history in histories:
            for row in range(len(next(iter(history.values()), []))):
                writer.writerow([epoch, *(history[key][row] if key in history else "" for key in columns)])
                epoch += 1


def compare(trained: Trained, dataset: ImageDataset, run_dir: Path, report: dict[str, Any]) -> dict[str, Any]:
    """The classifier's `report` of the transfer model with the comparison to the scratch baseline added."""
    scratch = trained.baseline
    comparison: dict[str, Any] = {
        "strategy": trained.fitted.strategy,
        "train_images": len(dataset.train.labels),
        "test_images": len(dataset.test.labels),
        "transfer_test_accuracy": report["test_accuracy"],
    }
    curves = {"transfer": read_history(run_dir)}
    if scratch is not None:
        comparison["scratch_test_accuracy"] = accuracy(scratch, dataset.test)
        curves["from scratch"] = read_history(run_dir / "scratch")
    head_epochs = len(read_history(run_dir / "head").get("loss", []))
    marks = {"fine-tuning starts": head_epochs} if (run_dir / "fine_tune" / "history.csv").exists() else {}
    plots.plot_compared_histories(
        curves,
        run_dir / "evaluation" / "transfer_vs_scratch.png",
        marks=marks,
        title=f"{dataset.name}: transfer vs from scratch",
    )
    report["comparison"] = comparison
    RunFolder(run_dir).save_report(report)
    return report


# Transfer learning goes through the classifier family for its evaluation, exported graph and metadata, and
# adds the comparison with the same architecture trained from scratch. (No class docstring: `description`
# below is the module's.)
class TransferFamily(Family[TransferConfig, ImageDataset, TransferPlan]):
    name = "transfer"
    config_type = TransferConfig
    profiles = PROFILES
    quality_floor = 0.88  # 0.933-0.948 test accuracy in the quick profile (scratch: 0.90)
    group_floor = 0.6
    description = __doc__
    search_space = SEARCH_SPACE
    keeps_keras_model = True

    def load_data(self, config: TransferConfig) -> ImageDataset:
        """The dataset split with `split_seed` (default: the training seed), then few-shot sampled with the
        training seed."""
        split_seed = config.training.seed if config.split_seed is None else config.split_seed
        full = load_dataset(
            config.dataset,
            data_dir=config.data_dir,
            image_size=config.image_size,
            channels=config.channels,
            seed=split_seed,
        )
        return few_shot(full, config.examples_per_class, seed=config.training.seed)

    def fit_preprocessing(self, config: TransferConfig, data: ImageDataset) -> TransferPlan:
        backbone = (
            None if config.backbone in BACKBONES else convolutional_part(load_keras_classifier(source_path(config)))
        )
        return TransferPlan(chosen_strategy(config, data), backbone)

    def record_extra(self, fitted: TransferPlan) -> dict[str, Any]:
        return {"strategy": fitted.strategy}

    def build_model(self, config: TransferConfig, data: ImageDataset, fitted: TransferPlan) -> keras.Model:
        """Phase 1's model: the pretrained backbone, frozen, under a new head."""
        model = build_transfer_model(config, data, fitted.backbone)
        freeze_backbone(model)
        return model

    def fit(
        self,
        config: TransferConfig,
        data: ImageDataset,
        fitted: TransferPlan,
        run_dir: Path,
        extra_callbacks: Sequence = (),
    ) -> keras.Model:
        """Phase 1 (the head on the frozen backbone), then phase 2 unless the strategy is freeze."""
        print(f"{data.num_classes} classes, {len(data.train.labels)} training images; strategy {fitted.strategy}")
        phase = self._phase_runner(config, data, run_dir)
        model = phase("head", lambda: self.build_model(config, data, fitted), config.training)
        if fitted.strategy != "freeze":
            fine = replace(config.training, epochs=config.fine_tune_epochs, learning_rate=config.fine_tune_rate)
            head_model = run_dir / "head" / "model.keras"
            model = phase(
                "fine_tune",
                lambda: fine_tuned(keras.saving.load_model(head_model), fitted.strategy, config.fine_tune_at),
                fine,
            )
        write_history(run_dir, [phase for phase in PHASES[:2] if (run_dir / phase / "history.csv").exists()])
        return model

    def train(
        self, config: TransferConfig, data: ImageDataset, run_dir: Path, extra_callbacks: Sequence = ()
    ) -> Trained:
        """Both phases, then (unless `scratch` is off) the same architecture from random weights, with the same
        images, augmentation, learning rate and number of epochs."""
        ensure_source(config, runs=run_dir.parent, register=False)
        run_dir = worker_run_dir(run_dir)
        trained = super().train(config, data, run_dir, extra_callbacks)
        if not config.scratch:
            return trained
        epochs = config.training.epochs + (config.fine_tune_epochs if trained.fitted.strategy != "freeze" else 0)
        scratch = self._phase_runner(config, data, run_dir)(
            "scratch",
            lambda: build_transfer_model(config, data, trained.fitted.backbone, pretrained=False),
            replace(config.training, epochs=epochs),
        )
        return replace(trained, baseline=scratch)

    def _phase_runner(self, config: TransferConfig, data: ImageDataset, run_dir: Path) -> Callable[..., keras.Model]:
        training = config.training
        train_ds = make_tf_dataset(
            data.train, batch_size=training.batch_size, training=True, seed=training.seed, augment=config.augment
        )
        dev_ds = make_tf_dataset(data.dev, batch_size=256, training=False)
        reuse = reusable_phases(run_dir)
        return lambda phase, build, phase_training: train_phase(
            phase, build, train_ds, dev_ds, phase_training, run_dir, reuse
        )

    def load_trained(self, run_dir: Path) -> Trained:
        run = RunFolder(run_dir)
        recorded = run.recorded()
        config = TransferConfig.from_dict(recorded["config"])
        has_scratch = config.scratch and (run_dir / "scratch" / MODEL_FILE).is_file()
        scratch = run.load_model(f"scratch/{MODEL_FILE}") if has_scratch else None
        return Trained(config, run.load_model(), TransferPlan(recorded["strategy"]), baseline=scratch)

    def evaluate(self, trained: Trained, data: ImageDataset, run_dir: Path) -> dict[str, Any]:
        return compare(trained, data, run_dir, evaluate_model(trained.model, data, run_dir))

    def dev_score(self, trained: Trained, data: ImageDataset) -> float:
        return accuracy(trained.model, data.dev)

    def headline(self, report: dict[str, Any]) -> dict[str, Any]:
        return {"test_accuracy": report["test_accuracy"], "comparison": report["comparison"]}

    def describe(self, report: dict[str, Any]) -> str:
        comparison = report["comparison"]
        line = f"test accuracy: transfer {comparison['transfer_test_accuracy']:.4f}"
        if "scratch_test_accuracy" in comparison:
            line += f", same architecture from scratch {comparison['scratch_test_accuracy']:.4f}"
        return f"{line} ({comparison['train_images']} training images, strategy {comparison['strategy']})"

    def served_graph(self, trained: Trained, data: ImageDataset) -> ClassifierGraph:
        return CLASSIFIER.served_graph(trained, data)

    def warmup_examples(self, data: ImageDataset) -> list:
        return list(data.test.images[:WARMUP_EXAMPLES])

    def held_out(self, data: ImageDataset) -> HeldOut:
        return image_classes(data)

    def artifact_metadata(self, trained: Trained, data: ImageDataset, report: dict[str, Any]) -> ArtifactMetadata:
        """A classifier artifact (served by /classify) that says it was transfer-learned, from what, and how it
        compares."""
        metadata = CLASSIFIER.artifact_metadata(trained, data, report)
        extra = {"backbone": trained.config.backbone, "comparison": report["comparison"]}
        return replace(metadata, family=self.name, extra=extra)

    def run(
        self, config: TransferConfig, *, run_dir: Path, artifacts: Path, register: bool = True, gate: Any = None
    ) -> Path:
        """Pretrain the glyph backbone first if needed (registering it too), then train, evaluate, export and
        validate (the backbone is a means, not a served product: it is not gated)."""
        config = replace(config, artifacts=str(artifacts))
        ensure_source(config, runs=run_dir.parent, register=register)
        return super().run(config, run_dir=run_dir, artifacts=artifacts, register=register, gate=gate)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--dataset", default="digits", help="digits | glyphs | folder:PATH | tfds:NAME (default: %(default)s)"
        )
        parser.add_argument("--data-dir", help="TFDS data_dir holding the prepared dataset (no downloads)")
        parser.add_argument(
            "--image-size",
            type=int,
            nargs=2,
            metavar=("H", "W"),
            help="resize images on loading (folder and TFDS datasets)",
        )
        parser.add_argument(
            "--channels", type=int, choices=(1, 3), default=1, help="1 = grayscale, 3 = RGB (default: %(default)s)"
        )
        parser.add_argument(
            "--examples-per-class",
            type=int,
            help="keep only N training images per class "
            "(default: 10 for the bundled digits, the demo; every image otherwise; 0 = every image)",
        )
        parser.add_argument(
            "--backbone",
            default=SOURCE,
            help=f"{' | '.join(BACKBONES)} (keras.applications) | {SOURCE} (pretrained here on printed characters) | "
            "PATH of one of this project's classifier artifacts or a .keras file (default: %(default)s)",
        )
        parser.add_argument(
            "--weights",
            default="imagenet",
            help="keras.applications backbones: imagenet | PATH of a weights file | none (default: %(default)s)",
        )
        parser.add_argument(
            "--backbone-size",
            type=int,
            help="side the images are resized to inside the model (default: the backbone's own)",
        )
        parser.add_argument(
            "--transfer-strategy",
            choices=("auto", *STRATEGIES),
            help="freeze: head only; partial: then fine-tune from --fine-tune-at; full: then fine-tune all; "
            "auto: by images per class (default: the profile's)",
        )
        parser.add_argument(
            "--fine-tune-at",
            type=int,
            help="first backbone layer phase 2 trains (default: 100, or half the layers of a smaller backbone)",
        )
        parser.add_argument("--fine-tune-epochs", type=int, help="phase 2 epochs (default: the profile's)")
        parser.add_argument(
            "--fine-tune-learning-rate",
            type=float,
            help="phase 2 learning rate (default: the profile's, else 1/100 of --learning-rate)",
        )
        parser.add_argument(
            "--source-epochs",
            type=int,
            help=f"epochs to pretrain the {SOURCE} backbone when artifacts/{SOURCE} is missing "
            "(default: the profile's)",
        )
        parser.add_argument(
            "--source-size",
            type=flags.positive_int,
            help=f"printed characters generated to pretrain the {SOURCE} backbone "
            "(default: the profile's; quick 8000, default all 30000)",
        )
        parser.add_argument(
            "--dropout", type=float, default=0.2, help="before the new Dense layer (default: %(default)s)"
        )
        parser.add_argument(
            "--augment",
            action=argparse.BooleanOptionalAction,
            help="random shifts/rotations of training images (default: the profile's)",
        )
        parser.add_argument(
            "--no-scratch",
            action="store_true",
            help="skip training the same architecture from random weights for comparison",
        )
        flags.add_training_arguments(parser, profiles=self.profiles, name=self.name)

    def config_from_args(self, args: argparse.Namespace) -> TransferConfig:
        preset = self.profiles[args.profile]
        per_class = (
            args.examples_per_class if args.examples_per_class is not None else (10 if args.dataset == "digits" else 0)
        )
        return TransferConfig(
            dataset=args.dataset,
            data_dir=args.data_dir,
            image_size=tuple(args.image_size) if args.image_size else None,
            channels=args.channels,
            examples_per_class=per_class or None,
            backbone=args.backbone,
            weights=None if args.weights == "none" else args.weights,
            backbone_size=args.backbone_size,
            transfer_strategy=flags.preset_value(args, preset, "transfer_strategy"),
            fine_tune_at=args.fine_tune_at,
            fine_tune_epochs=flags.preset_value(args, preset, "fine_tune_epochs"),
            fine_tune_learning_rate=flags.preset_value(args, preset, "fine_tune_learning_rate"),
            source_epochs=flags.preset_value(args, preset, "source_epochs"),
            source_size=flags.preset_value(args, preset, "source_size"),
            scratch=not args.no_scratch,
            dropout=args.dropout,
            augment=flags.preset_value(args, preset, "augment"),
            name=args.name,
            artifacts=str(args.artifacts),
            training=flags.training_config(args, preset),
        )


FAMILY = TransferFamily()

if __name__ == "__main__":
    sys.exit(FAMILY.main())
