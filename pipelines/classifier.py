"""Image classifier, end to end: data → model → training → evaluation → export.

python -m pipelines.classifier                      # quick profile on the bundled digits
python -m pipelines.classifier --profile default    # the full profile (ResNet, ≥ 0.98 test accuracy)
python -m pipelines.classifier --dataset folder:my_images --image-size 64 64 --channels 3
python -m pipelines.classifier --dataset tfds:mnist --data-dir ~/tensorflow_datasets
"""

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from models.classifier import MODEL_BUILDERS, build_classifier
from pipelines.data.figures import plot_image_gallery
from pipelines.data.image_data import ImageDataset, Split, load_dataset, make_tf_dataset, pixel_statistics
from pipelines.evaluation import classification, plots
from pipelines.export.classifier_graph import ClassifierGraph
from pipelines.export.warmup import WARMUP_EXAMPLES
from pipelines.family import Config, Family, RunFolder, Trained
from pipelines.training import flags
from pipelines.training.loop import TrainingConfig, fit, read_history
from pipelines.training.search_space import Choice, LogUniform, SearchSpace, Uniform
from pipelines.validation.scoring import HeldOut, image_classes
from serving.contract import ArtifactMetadata, ImageInput, Role, Task

PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "architecture": "mlp",
        "epochs": 40,
        "batch_size": 32,
        "learning_rate": 2e-3,
        "decay_rate": 0.93,
        "patience": 10,
    },
    "default": {
        "architecture": "resnet",
        "epochs": 60,
        "batch_size": 32,
        "learning_rate": 2e-3,
        "decay_rate": 0.95,
        "patience": 12,
    },
}

# `modelservice tune classifier`: random search by default, the learning rate on a log scale; a coarse search's
# best.json can start a finer one (--config).
SEARCH_SPACE = SearchSpace(
    objective="dev_accuracy",
    dimensions=(
        LogUniform("learning_rate", low=1e-4, high=3e-2),
        Uniform("dropout", low=0.0, high=0.5, step=0.1),
        Choice("batch_size", values=(16, 32, 64, 128)),
        Choice("architecture", values=("mlp", "resnet")),
        Choice("width", values=(64, 128, 256, 512, 1024), when=("architecture", ("mlp",))),
    ),
)


@dataclass
class ClassifierConfig(Config):
    dataset: str = "digits"
    data_dir: str | None = None
    image_size: tuple[int, int] | None = None
    channels: int = 1
    architecture: str = "mlp"
    width: int | None = None  # the first layer's: MLP units (the next layer has a quarter), ResNet filters (doubling)
    dropout: float = 0.0
    l2: float = 0.0
    augment: bool = True
    human_error: float = 0.0
    train_size: int | None = None  # None: every training image
    name: str = "classifier"
    training: TrainingConfig = field(default_factory=TrainingConfig)


def predict_ids(model: keras.Model, split: Split, batch_size: int = 256) -> np.ndarray:
    return np.argmax(model.predict(split.images.astype("float32"), batch_size=batch_size, verbose=0), axis=1)


def layer_widths(architecture: str, width: int | None) -> dict[str, tuple[int, ...]]:
    """The builder's widths grown from the first layer's; none given: the builder's own defaults."""
    if width is None:
        return {}
    return {"hidden_units": (width, max(width // 4, 1))} if architecture == "mlp" else {"filters": (width, 2 * width)}


def accuracy(model: keras.Model, split: Split) -> float:
    return float(np.mean(predict_ids(model, split) == split.labels))


def evaluate_model(
    model: keras.Model, dataset: ImageDataset, run_dir: Path, *, human_error: float = 0.0
) -> dict[str, Any]:
    """Metrics, bias/variance diagnosis and PNG plots; writes `<run_dir>/evaluation/`."""
    run = RunFolder(run_dir)
    out = run.evaluation
    predictions = {name: predict_ids(model, getattr(dataset, name)) for name in ("train", "dev", "test")}
    errors = {name: float(np.mean(predictions[name] != getattr(dataset, name).labels)) for name in predictions}
    test_report = classification.classification_report(dataset.test.labels, predictions["test"], dataset.class_names)
    diagnosis = classification.diagnose_bias_variance(
        train_error=errors["train"], dev_error=errors["dev"], test_error=errors["test"], human_error=human_error
    )
    report = {
        "test_accuracy": test_report["accuracy"],
        "dev_accuracy": 1.0 - errors["dev"],
        "train_accuracy": 1.0 - errors["train"],
        "errors": errors,
        "diagnosis": diagnosis.to_dict(),
        "test": test_report,
    }
    run.save_report(report)
    plots.plot_learning_curves(read_history(run_dir), out / "learning_curves.png")
    plots.plot_confusion_matrix(test_report["confusion_matrix"], dataset.class_names, out / "confusion_matrix.png")
    wrong = np.flatnonzero(predictions["dev"] != dataset.dev.labels)
    titles = [
        f"{dataset.class_names[dataset.dev.labels[i]]}→{dataset.class_names[predictions['dev'][i]]}" for i in wrong
    ]
    plot_image_gallery(
        dataset.dev.images[wrong],
        titles,
        out / "misclassified_dev.png",
        title="Misclassified dev images (true→predicted)",
    )
    return report


class ClassifierFamily(Family[ClassifierConfig, ImageDataset, None]):
    name = "classifier"
    config_type = ClassifierConfig
    profiles = PROFILES
    quality_floor = 0.95  # digits: 0.98-0.99 test accuracy in the quick profile, every class's recall above 0.9
    group_floor = 0.85
    description = __doc__
    search_space = SEARCH_SPACE
    keeps_keras_model = True  # a later transfer-learning run can take its convolutional part as a backbone

    def load_data(self, config: ClassifierConfig) -> ImageDataset:
        return load_dataset(
            config.dataset,
            data_dir=config.data_dir,
            image_size=config.image_size,
            channels=config.channels,
            seed=config.training.seed,
            train_size=config.train_size,
        )

    def build_model(self, config: ClassifierConfig, data: ImageDataset, fitted: None) -> keras.Model:
        mean, variance = pixel_statistics(data.train.images)
        return build_classifier(
            config.architecture,
            input_shape=data.image_shape,
            num_classes=data.num_classes,
            mean=mean,
            variance=variance,
            dropout=config.dropout,
            l2=config.l2,
            **layer_widths(config.architecture, config.width),
        )

    def fit(
        self, config: ClassifierConfig, data: ImageDataset, fitted: None, run_dir: Path, extra_callbacks: Sequence = ()
    ) -> keras.Model:
        training = config.training
        return fit(
            lambda: self.build_model(config, data, fitted),
            make_tf_dataset(
                data.train, batch_size=training.batch_size, training=True, seed=training.seed, augment=config.augment
            ),
            make_tf_dataset(data.dev, batch_size=training.batch_size, training=False),
            config=training,
            run_dir=run_dir,
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            extra_callbacks=list(extra_callbacks),
        )

    def evaluate(self, trained: Trained, data: ImageDataset, run_dir: Path) -> dict[str, Any]:
        return evaluate_model(trained.model, data, run_dir, human_error=trained.config.human_error)

    def dev_score(self, trained: Trained, data: ImageDataset) -> float:
        return accuracy(trained.model, data.dev)

    def headline(self, report: dict[str, Any]) -> dict[str, Any]:
        return {key: report[key] for key in ("test_accuracy", "dev_accuracy", "train_accuracy", "diagnosis")}

    def describe(self, report: dict[str, Any]) -> str:
        diagnosis = report["diagnosis"]
        return (
            f"test accuracy {report['test_accuracy']:.4f}; diagnosis: {diagnosis['diagnosis']} → {diagnosis['action']}"
        )

    def served_graph(self, trained: Trained, data: ImageDataset) -> ClassifierGraph:
        return ClassifierGraph(trained.model, data.class_names)

    def warmup_examples(self, data: ImageDataset) -> list:
        return list(data.test.images[:WARMUP_EXAMPLES])

    def held_out(self, data: ImageDataset) -> HeldOut:
        return image_classes(data)

    def artifact_metadata(self, trained: Trained, data: ImageDataset, report: dict[str, Any]) -> ArtifactMetadata:
        metrics = {key: report[key] for key in ("test_accuracy", "dev_accuracy", "train_accuracy")}
        return ArtifactMetadata(
            task=Task.CLASSIFIER,
            family=self.name,
            name=trained.config.name,
            labels=tuple(data.class_names),
            input=ImageInput(image_shape=data.image_shape),
            signatures={
                Role.DEFAULT: "serving_default",
                Role.IMAGES: "serving_default",
                Role.IMAGES_UINT8: "classify_uint8",
                Role.IMAGE_BYTES: "classify_image_bytes",
            },
            outputs=ClassifierGraph.OUTPUTS,
            metrics=metrics
            | {"macro_f1": report["test"]["macro"]["f1"], "diagnosis": report["diagnosis"]["diagnosis"]},
            training=trained.config.to_dict(),
            dataset=data.summary(),
        )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--dataset",
            default="digits",
            help="digits | glyphs | folder:PATH (class_name/*.png|jpg) | tfds:NAME (default: %(default)s)",
        )
        parser.add_argument(
            "--train-size",
            type=flags.positive_int,
            help="train on the first N training images only (glyphs: generate only N; default: all)",
        )
        parser.add_argument("--data-dir", help="TFDS data_dir holding the prepared dataset (no downloads)")
        parser.add_argument(
            "--image-size", type=int, nargs=2, metavar=("H", "W"), help="resize images (folder and TFDS datasets)"
        )
        parser.add_argument(
            "--channels", type=int, choices=(1, 3), default=1, help="1 = grayscale, 3 = RGB (default: %(default)s)"
        )
        parser.add_argument(
            "--architecture",
            choices=sorted(MODEL_BUILDERS),
            help="mlp (Sequential, batch norm) or resnet (Functional, residual blocks)",
        )
        parser.add_argument(
            "--width", type=int, help="the first layer's units (mlp) or filters (resnet); default: the builder's"
        )
        parser.add_argument("--dropout", type=float, default=0.0)
        parser.add_argument("--l2", type=float, default=0.0)
        parser.add_argument(
            "--no-augment", action="store_true", help="turn off random shifts/rotations of training images"
        )
        parser.add_argument(
            "--human-error", type=float, default=0.0, help="Bayes-error proxy for the bias/variance diagnosis"
        )
        flags.add_training_arguments(parser, profiles=self.profiles, name=self.name)

    def config_from_args(self, args: argparse.Namespace) -> ClassifierConfig:
        preset = self.profiles[args.profile]
        return ClassifierConfig(
            dataset=args.dataset,
            data_dir=args.data_dir,
            image_size=tuple(args.image_size) if args.image_size else None,
            channels=args.channels,
            architecture=flags.preset_value(args, preset, "architecture"),
            width=args.width,
            dropout=args.dropout,
            l2=args.l2,
            augment=not args.no_augment,
            human_error=args.human_error,
            train_size=args.train_size,
            name=args.name,
            training=flags.training_config(args, preset),
        )


FAMILY = ClassifierFamily()

if __name__ == "__main__":
    sys.exit(FAMILY.main())
