"""Image classifier, end to end: data → model → training → evaluation → export.

python -m pipelines.classifier                      # quick profile on the bundled digits
python -m pipelines.classifier --profile default    # the full profile (ResNet, ≥ 0.98 test accuracy)
python -m pipelines.classifier --dataset folder:my_images --image-size 64 64 --channels 3
python -m pipelines.classifier --dataset tfds:mnist --data-dir ~/tensorflow_datasets
"""

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from models import image_graph
from models.classifier import MODEL_BUILDERS, build_classifier
from pipelines import script
from pipelines.data.image_data import ImageDataset, Split, load_dataset, make_tf_dataset, pixel_statistics
from pipelines.evaluation import classification as evaluation
from pipelines.evaluation import plots
from pipelines.export import artifact as export
from pipelines.training.loop import TrainingConfig, fit, read_history

TASK = "classifier"
TOP_K = 5

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


@dataclass
class ClassifierConfig:
    dataset: str = "digits"
    data_dir: str | None = None
    image_size: tuple[int, int] | None = None
    channels: int = 1
    architecture: str = "mlp"
    dropout: float = 0.0
    l2: float = 0.0
    augment: bool = True
    human_error: float = 0.0
    name: str = TASK
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def to_dict(self) -> dict[str, Any]:
        plain = {key: value for key, value in vars(self).items() if key != "training"}
        return {
            **plain,
            "image_size": list(self.image_size) if self.image_size else None,
            "training": self.training.to_dict(),
        }


class ClassifierGraph(tf.Module):
    """The exported graph: raw pixels or encoded image bytes in, probabilities and label strings out."""

    def __init__(self, model: keras.Model, class_names: list[str]):
        super().__init__()
        self.model = model
        self.height, self.width, self.channels = (int(d) for d in model.input_shape[1:])
        self.class_names = tf.constant(class_names)
        self.top_k = min(TOP_K, len(class_names))

    def _classify(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        probabilities = self.model(
            image_graph.fit_images(images, self.height, self.width, self.channels), training=False
        )
        top_scores, top_ids = tf.math.top_k(probabilities, k=self.top_k)
        return {
            "probabilities": probabilities,
            "class_ids": top_ids[:, 0],
            "labels": tf.gather(self.class_names, top_ids[:, 0]),
            "scores": top_scores[:, 0],
            "top_k_labels": tf.gather(self.class_names, top_ids),
            "top_k_scores": top_scores,
        }

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, None], tf.float32, name="images")])
    def classify_images(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._classify(images)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, None], tf.uint8, name="images")])
    def classify_uint8(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._classify(images)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def classify_image_bytes(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._classify(image_graph.decode_images(image_bytes, self.height, self.width, self.channels))

    def signatures(self) -> dict[str, Any]:
        return {
            "serving_default": self.classify_images,
            "classify_uint8": self.classify_uint8,
            "classify_image_bytes": self.classify_image_bytes,
        }


def build_model(config: ClassifierConfig, dataset: ImageDataset) -> keras.Model:
    mean, variance = pixel_statistics(dataset.train.images)
    return build_classifier(
        config.architecture,
        input_shape=dataset.image_shape,
        num_classes=dataset.num_classes,
        mean=mean,
        variance=variance,
        dropout=config.dropout,
        l2=config.l2,
    )


def train(config: ClassifierConfig, dataset: ImageDataset, run_dir: Path, extra_callbacks=()) -> keras.Model:
    training = config.training
    train_ds = make_tf_dataset(
        dataset.train, batch_size=training.batch_size, training=True, seed=training.seed, augment=config.augment
    )
    dev_ds = make_tf_dataset(dataset.dev, batch_size=training.batch_size, training=False)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.json").write_text(
        json.dumps({"family": TASK, "config": config.to_dict(), "dataset": dataset.summary()}, indent=2)
    )
    model = fit(
        lambda: build_model(config, dataset),
        train_ds,
        dev_ds,
        config=training,
        run_dir=run_dir,
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        extra_callbacks=list(extra_callbacks),
    )
    model.save(run_dir / "model.keras")
    return model


def predict_ids(model: keras.Model, split: Split, batch_size: int = 256) -> np.ndarray:
    return np.argmax(model.predict(split.images.astype("float32"), batch_size=batch_size, verbose=0), axis=1)


def evaluate(model: keras.Model, dataset: ImageDataset, run_dir: Path, *, human_error: float = 0.0) -> dict[str, Any]:
    """Metrics, bias/variance diagnosis and PNG plots; writes `<run_dir>/evaluation/`."""
    out = run_dir / "evaluation"
    predictions = {name: predict_ids(model, getattr(dataset, name)) for name in ("train", "dev", "test")}
    errors = {name: float(np.mean(predictions[name] != getattr(dataset, name).labels)) for name in predictions}
    test_report = evaluation.classification_report(dataset.test.labels, predictions["test"], dataset.class_names)
    diagnosis = evaluation.diagnose_bias_variance(
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
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    plots.plot_learning_curves(read_history(run_dir), out / "learning_curves.png")
    plots.plot_confusion_matrix(test_report["confusion_matrix"], dataset.class_names, out / "confusion_matrix.png")
    wrong = np.flatnonzero(predictions["dev"] != dataset.dev.labels)
    titles = [
        f"{dataset.class_names[dataset.dev.labels[i]]}→{dataset.class_names[predictions['dev'][i]]}" for i in wrong
    ]
    plots.plot_image_gallery(
        dataset.dev.images[wrong],
        titles,
        out / "misclassified_dev.png",
        title="Misclassified dev images (true→predicted)",
    )
    return report


def export_model(
    model: keras.Model,
    dataset: ImageDataset,
    report: dict[str, Any],
    config: Any,
    root: Path,
    *,
    extra_metadata: dict[str, Any] | None = None,
) -> Path:
    """Export as the next version of `config.name` (any config with `name` and `to_dict()`), the Keras model included."""
    graph = ClassifierGraph(model, dataset.class_names)
    height, width, channels = dataset.image_shape
    metadata = {
        "task": TASK,
        "labels": dataset.class_names,
        "input": {
            "image_shape": [height, width, channels],
            "value_range": [0, 255],
            "dtypes": ["uint8", "float32"],
            "encoded_formats": ["png", "jpeg", "gif", "bmp"],
        },
        "signatures": {
            "images": "serving_default",
            "images_uint8": "classify_uint8",
            "image_bytes": "classify_image_bytes",
        },
        "outputs": ["probabilities", "class_ids", "labels", "scores", "top_k_labels", "top_k_scores"],
        "metrics": {key: report[key] for key in ("test_accuracy", "dev_accuracy", "train_accuracy")}
        | {"macro_f1": report["test"]["macro"]["f1"], "diagnosis": report["diagnosis"]["diagnosis"]},
        "training": config.to_dict(),
        "dataset": dataset.summary(),
        **(extra_metadata or {}),
    }
    return export.export_artifact(
        graph, signatures=graph.signatures(), root=root, name=config.name, metadata=metadata, keras_model=model
    )


def load_data(config: ClassifierConfig) -> ImageDataset:
    return load_dataset(
        config.dataset,
        data_dir=config.data_dir,
        image_size=config.image_size,
        channels=config.channels,
        seed=config.training.seed,
    )


def train_and_evaluate(config: ClassifierConfig, run_dir: Path) -> tuple[keras.Model, ImageDataset, dict[str, Any]]:
    dataset = load_data(config)
    print(
        f"dataset {dataset.name}: {dataset.summary()['sizes']} images of {dataset.image_shape}, {dataset.num_classes} classes"
    )
    model = train(config, dataset, run_dir)
    report = evaluate(model, dataset, run_dir, human_error=config.human_error)
    print(
        f"test accuracy {report['test_accuracy']:.4f}; diagnosis: {report['diagnosis']['diagnosis']} → {report['diagnosis']['action']}"
    )
    print(f"checkpoints, logs, history and plots in {run_dir}")
    return model, dataset, report


def run(config: ClassifierConfig, *, run_dir: Path, artifacts: Path, register: bool = True) -> Path:
    """Train, evaluate, export and register one classifier; returns the new artifact folder."""
    model, dataset, report = train_and_evaluate(config, run_dir)
    return script.publish(export_model(model, dataset, report, config, artifacts), register=register)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        default="digits",
        help="digits | folder:PATH (class_name/*.png|jpg) | tfds:NAME (default: %(default)s)",
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
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--l2", type=float, default=0.0)
    parser.add_argument("--no-augment", action="store_true", help="turn off random shifts/rotations of training images")
    parser.add_argument(
        "--human-error", type=float, default=0.0, help="Bayes-error proxy for the bias/variance diagnosis"
    )
    script.add_training_arguments(parser, profiles=PROFILES, name=TASK)


def config_from_args(args: argparse.Namespace) -> ClassifierConfig:
    preset = PROFILES[args.profile]
    return ClassifierConfig(
        dataset=args.dataset,
        data_dir=args.data_dir,
        image_size=tuple(args.image_size) if args.image_size else None,
        channels=args.channels,
        architecture=script.preset_value(args, preset, "architecture"),
        dropout=args.dropout,
        l2=args.l2,
        augment=not args.no_augment,
        human_error=args.human_error,
        name=args.name,
        training=script.training_config(args, preset),
    )


def config_from_dict(values: dict[str, Any]) -> ClassifierConfig:
    """Rebuild the config recorded in a run's run.json."""
    plain = {key: value for key, value in values.items() if key not in ("training", "image_size")}
    image_size = tuple(values["image_size"]) if values.get("image_size") else None
    return ClassifierConfig(**plain, image_size=image_size, training=TrainingConfig(**values["training"]))


def load_run(run_dir: Path) -> tuple[ClassifierConfig, ImageDataset, keras.Model]:
    config = config_from_dict(json.loads((run_dir / "run.json").read_text())["config"])
    return config, load_data(config), keras.saving.load_model(run_dir / "model.keras")


def evaluate_run(run_dir: Path) -> dict[str, Any]:
    """Re-evaluate a finished training run; returns the headline figures."""
    config, dataset, model = load_run(run_dir)
    report = evaluate(model, dataset, run_dir, human_error=config.human_error)
    return {key: report[key] for key in ("test_accuracy", "dev_accuracy", "train_accuracy", "diagnosis")}


def export_run(run_dir: Path, artifacts: Path) -> Path:
    """Export a finished training run as the next artifact version (its saved evaluation, else a fresh one)."""
    config, dataset, model = load_run(run_dir)
    report = script.saved_or_fresh_report(
        run_dir, lambda: evaluate(model, dataset, run_dir, human_error=config.human_error)
    )
    return export_model(model, dataset, report, config, artifacts)


def main(argv: list[str] | None = None) -> int:
    return script.pipeline_main(
        argv,
        prog="python -m pipelines.classifier",
        description=__doc__,
        add_arguments=add_arguments,
        config_from_args=config_from_args,
        run=run,
    )


if __name__ == "__main__":
    sys.exit(main())
