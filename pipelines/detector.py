"""Object detector, end to end: digit scenes (or COCO / VOC data) → YOLO-style model → training → mAP → export.

A person sends a picture; the exported SavedModel answers the objects in it: boxes in the picture's own
pixels, labels and scores. Letterboxing, decoding and class-aware non-max suppression run inside the graph.

    python -m pipelines.detector                                  # quick profile on generated digit scenes
    python -m pipelines.detector --profile default                # the full profile (mAP@0.5 ≥ 0.95)
    python -m pipelines.detector --dataset coco:my_data --channels 3   # my_data/annotations.json + my_data/images/
    python -m pipelines.detector --dataset voc:VOCdevkit/VOC2012 --channels 3
    python -m pipelines.detector --dataset tfds:small --data-dir ~/tensorflow_datasets   # the digit_scenes TFDS builder
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
from tqdm.auto import tqdm

from models import box_ops, detection_graph, image_graph
from models.detector import LOSS_METRICS, YoloLoss, build_yolo
from pipelines import script
from pipelines.data import scene_data
from pipelines.data.scene_data import DetectionDataset, Scene
from pipelines.evaluation import plots
from pipelines.evaluation.detection_metrics import Detections, GroundTruth, evaluate_detections, precision_recall_at
from pipelines.export import artifact as export
from pipelines.training.loop import TrainingConfig, fit, is_resuming, read_history

TASK = "detector"
ANCHORS_FILE = "anchors.json"
# mAP ranks every detection, so evaluation keeps the low-scoring ones the served threshold would drop.
EVALUATION_SCORE_THRESHOLD = 0.01
LOSS_PANELS = ("loss", "box_loss", "objectness_loss", "class_loss")

PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "train_size": 3000,
        "base_filters": 16,
        "residual_blocks": 1,
        "epochs": 20,
        "batch_size": 32,
        "learning_rate": 2e-3,
        "decay_rate": 0.93,
        "patience": 6,
        "clip_norm": 10.0,
    },
    "default": {
        "train_size": 6000,
        "base_filters": 16,
        "residual_blocks": 1,
        "epochs": 40,
        "batch_size": 32,
        "learning_rate": 2e-3,
        "decay_rate": 0.95,
        "patience": 8,
        "clip_norm": 10.0,
    },
}


@dataclass
class DetectorConfig:
    dataset: str = "digit-scenes"
    data_dir: str | None = None
    train_size: int = 2000  # generated digit scenes only
    dev_size: int = 200
    test_size: int = 400
    image_size: int = 128  # the model's square input; other sizes are letterboxed onto it
    channels: int = 1
    num_anchors: int = 3
    base_filters: int = 16
    downsamplings: int = 4
    residual_blocks: int = 1
    augment: bool = True
    class_weight: float = 3.0  # the class term learns slowest; weighting it up speeds the whole detector
    score_threshold: float = 0.6  # served defaults (chapter 35 of the notes)
    iou_threshold: float = 0.5
    max_detections: int = 100
    name: str = TASK
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def to_dict(self) -> dict[str, Any]:
        return {
            **{key: value for key, value in vars(self).items() if key != "training"},
            "training": self.training.to_dict(),
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "DetectorConfig":
        plain = {key: value for key, value in values.items() if key != "training"}
        return cls(**plain, training=TrainingConfig(**values["training"]))

    @property
    def input_size(self) -> tuple[int, int]:
        return self.image_size, self.image_size

    @property
    def grid(self) -> tuple[int, int]:
        cells = self.image_size // 2**self.downsamplings
        return cells, cells


class DetectorGraph(tf.Module):
    """The exported graph: images of any size (pixels or encoded bytes) in; boxes, scores, classes, labels, count out."""

    def __init__(
        self,
        model: keras.Model,
        class_names: list[str],
        anchors: np.ndarray,
        *,
        score_threshold: float = 0.6,
        iou_threshold: float = 0.5,
        max_detections: int = 100,
    ):
        super().__init__()
        self.model = model
        self.height, self.width, self.channels = (int(d) for d in model.input_shape[1:])
        self.class_names = tf.constant(class_names)
        self.anchors = tf.constant(anchors, tf.float32)
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.max_detections = max_detections

    def _detect(
        self,
        canvas: tf.Tensor,
        scale: tf.Tensor,
        offset: tf.Tensor,
        original_size: tf.Tensor,
        score_threshold: tf.Tensor,
        iou_threshold: tf.Tensor,
    ) -> dict[str, tf.Tensor]:
        checks = [
            tf.debugging.assert_equal(
                tf.logical_and(score_threshold >= 0.0, score_threshold <= 1.0),
                True,
                message="score_threshold must be a number from 0 to 1",
            ),
            tf.debugging.assert_equal(
                tf.logical_and(iou_threshold >= 0.0, iou_threshold <= 1.0),
                True,
                message="iou_threshold must be a number from 0 to 1",
            ),
        ]
        with tf.control_dependencies(checks):
            canvas = tf.identity(canvas)
        boxes, scores = detection_graph.decode_predictions(
            self.model(canvas, training=False), self.anchors, image_size=(self.height, self.width)
        )
        found = detection_graph.non_max_suppression(
            boxes,
            scores,
            image_size=(self.height, self.width),
            score_threshold=score_threshold,
            iou_threshold=iou_threshold,
            max_detections=self.max_detections,
        )
        valid = tf.sequence_mask(found["count"], self.max_detections)
        return {
            "boxes": detection_graph.to_original_pixels(found["boxes"], scale, offset, original_size),
            "scores": found["scores"],
            "classes": found["classes"],
            "labels": tf.where(valid, tf.gather(self.class_names, found["classes"]), ""),
            "count": found["count"],
        }

    def _detect_pixels(
        self, images: tf.Tensor, score_threshold: tf.Tensor, iou_threshold: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        images = image_graph.to_channels(tf.cast(images, tf.float32), self.channels)
        canvas, scale, offset = detection_graph.letterbox(images, self.height, self.width)
        original_size = tf.tile(tf.shape(images)[tf.newaxis, 1:3], [tf.shape(images)[0], 1])
        return self._detect(canvas, scale, offset, original_size, score_threshold, iou_threshold)

    def _letterbox_encoded(self, image_bytes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        image = image_graph.decode_pixels(image_bytes, self.channels)[tf.newaxis]
        canvas, scale, offset = detection_graph.letterbox(image, self.height, self.width)
        return canvas[0], scale[0], offset[0], tf.shape(image)[1:3]

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, None], tf.float32, name="images")])
    def detect_default(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._detect_pixels(images, tf.constant(self.score_threshold), tf.constant(self.iou_threshold))

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, None, None], tf.float32, name="images"),
            tf.TensorSpec([], tf.float32, name="score_threshold"),
            tf.TensorSpec([], tf.float32, name="iou_threshold"),
        ]
    )
    def detect_images(
        self, images: tf.Tensor, score_threshold: tf.Tensor, iou_threshold: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        return self._detect_pixels(images, score_threshold, iou_threshold)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="image_bytes"),
            tf.TensorSpec([], tf.float32, name="score_threshold"),
            tf.TensorSpec([], tf.float32, name="iou_threshold"),
        ]
    )
    def detect_image_bytes(
        self, image_bytes: tf.Tensor, score_threshold: tf.Tensor, iou_threshold: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        canvas, scale, offset, original_size = tf.map_fn(
            self._letterbox_encoded,
            image_bytes,
            fn_output_signature=(
                tf.TensorSpec([self.height, self.width, self.channels], tf.float32),
                tf.TensorSpec([2], tf.float32),
                tf.TensorSpec([2], tf.float32),
                tf.TensorSpec([2], tf.int32),
            ),
        )
        return self._detect(canvas, scale, offset, original_size, score_threshold, iou_threshold)

    def signatures(self) -> dict[str, Any]:
        return {
            "serving_default": self.detect_default,
            "detect_images": self.detect_images,
            "detect_image_bytes": self.detect_image_bytes,
        }


# --- data -----------------------------------------------------------------------------------------


def load_data(config: DetectorConfig) -> DetectionDataset:
    return scene_data.load_dataset(
        config.dataset,
        seed=config.training.seed,
        size=config.image_size,
        channels=config.channels,
        sizes=(config.train_size, config.dev_size, config.test_size),
        data_dir=config.data_dir,
    )


def letterboxed_box_sizes(scenes: list[Scene], input_size: tuple[int, int]) -> np.ndarray:
    """(width, height) of every box once its image is letterboxed onto the model's input."""
    sizes = []
    for scene in scenes:
        fit = min(input_size[0] / scene.image.shape[0], input_size[1] / scene.image.shape[1])
        sizes.append((scene.boxes[:, 2:] - scene.boxes[:, :2]) * fit)
    return np.concatenate(sizes) if sizes else np.zeros((0, 2))


def fit_anchors(config: DetectorConfig, dataset: DetectionDataset) -> np.ndarray:
    """k-means (1 − IoU distance) on the training boxes' shapes, smallest anchor first."""
    sizes = letterboxed_box_sizes(dataset.train, config.input_size)
    sizes = sizes[np.all(sizes > 0, axis=1)]
    if len(sizes) < config.num_anchors:
        raise ValueError(f"{len(sizes)} training boxes cannot fit {config.num_anchors} anchors")
    return box_ops.kmeans_anchors(sizes, config.num_anchors, seed=config.training.seed)


def make_tf_dataset(
    scenes: list[Scene], config: DetectorConfig, anchors: np.ndarray, *, batch_size: int, training: bool
) -> tf.data.Dataset:
    """(image float32 (H, W, C) 0–255, target (S, S, A, 6)) batches; training batches are shuffled and augmented."""
    height, width = config.input_size
    anchors = tf.constant(anchors, tf.float32)

    def fit_to_input(example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        image = image_graph.to_channels(tf.cast(example["image"], tf.float32)[tf.newaxis], config.channels)
        canvas, scale, offset = detection_graph.letterbox(image, height, width)
        boxes = example["boxes"] * tf.tile(scale, [1, 2]) + tf.tile(offset, [1, 2])
        return {"image": tf.cast(tf.round(canvas[0]), tf.uint8), "boxes": boxes, "classes": example["classes"]}

    def augmented(example: dict[str, tf.Tensor], seed: tf.Tensor) -> dict[str, tf.Tensor]:
        return scene_data.augment(example["image"], example["boxes"], example["classes"], seed=seed)

    def to_training_pair(example: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        target = detection_graph.encode_targets(
            example["boxes"], example["classes"], image_size=(height, width), grid=config.grid, anchors=anchors
        )
        return tf.cast(example["image"], tf.float32), target

    dataset = scene_data.as_tf_dataset(scenes).map(fit_to_input, num_parallel_calls=tf.data.AUTOTUNE).cache()
    if training:
        dataset = dataset.shuffle(len(scenes), seed=config.training.seed, reshuffle_each_iteration=True)
        if config.augment:
            # A fresh pair of seeds per example and epoch, drawn from one seeded stream.
            seeds = tf.data.Dataset.random(seed=config.training.seed, rerandomize_each_iteration=True).batch(2)
            dataset = tf.data.Dataset.zip(dataset, seeds).map(augmented, num_parallel_calls=tf.data.AUTOTUNE)
    return (
        dataset.map(to_training_pair, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE)
    )


# --- model and training ---------------------------------------------------------------------------


def build_model(config: DetectorConfig, num_classes: int) -> keras.Model:
    return build_yolo(
        input_shape=(*config.input_size, config.channels),
        num_classes=num_classes,
        num_anchors=config.num_anchors,
        base_filters=config.base_filters,
        downsamplings=config.downsamplings,
        residual_blocks=config.residual_blocks,
    )


def train(
    config: DetectorConfig, dataset: DetectionDataset, run_dir: Path, extra_callbacks=()
) -> tuple[keras.Model, np.ndarray]:
    training = config.training
    run_dir.mkdir(parents=True, exist_ok=True)
    anchors_path = run_dir / ANCHORS_FILE
    # A resumed run keeps the anchors its checkpoint was trained against.
    if is_resuming(run_dir) and anchors_path.exists():
        anchors = np.array(json.loads(anchors_path.read_text()), np.float32)
    else:
        anchors = fit_anchors(config, dataset)
        anchors_path.write_text(json.dumps(anchors.tolist()))
    (run_dir / "run.json").write_text(
        json.dumps({"family": TASK, "config": config.to_dict(), "dataset": dataset.summary()}, indent=2)
    )
    print(f"anchors (w × h): {', '.join(f'{w:.1f}×{h:.1f}' for w, h in anchors)}")
    model = fit(
        lambda: build_model(config, len(dataset.class_names)),
        make_tf_dataset(dataset.train, config, anchors, batch_size=training.batch_size, training=True),
        make_tf_dataset(dataset.dev, config, anchors, batch_size=64, training=False),
        config=training,
        run_dir=run_dir,
        loss=YoloLoss(class_weight=config.class_weight),
        metrics=LOSS_METRICS,
        extra_callbacks=list(extra_callbacks),
    )
    model.save(run_dir / "model.keras")
    return model, anchors


def load_run(run_dir: Path) -> tuple[DetectorConfig, keras.Model, np.ndarray]:
    config = DetectorConfig.from_dict(json.loads((run_dir / "run.json").read_text())["config"])
    anchors = np.array(json.loads((run_dir / ANCHORS_FILE).read_text()), np.float32)
    return config, keras.saving.load_model(run_dir / "model.keras"), anchors


# --- evaluation -----------------------------------------------------------------------------------


def detect(
    graph: DetectorGraph,
    scenes: list[Scene],
    *,
    score_threshold: float,
    batch_size: int = 64,
    progress: str | None = None,
) -> list[Detections]:
    """Run the exported graph's own detection over `scenes`; consecutive scenes of one size share a batch."""
    results: list[Detections] = []
    batches = _same_size_batches(scenes, batch_size)
    for batch in tqdm(batches, desc=progress, disable=progress is None, unit="batch"):
        images = tf.constant(np.stack([scene.image for scene in batch]), tf.float32)
        found = graph.detect_images(images, tf.constant(score_threshold), tf.constant(graph.iou_threshold))
        found = {key: value.numpy() for key, value in found.items()}
        for row, count in enumerate(found["count"]):
            results.append(
                Detections(found["boxes"][row, :count], found["scores"][row, :count], found["classes"][row, :count])
            )
    return results


def _same_size_batches(scenes: list[Scene], batch_size: int) -> list[list[Scene]]:
    batches: list[list[Scene]] = []
    for scene in scenes:
        if batches and len(batches[-1]) < batch_size and batches[-1][0].image.shape == scene.image.shape:
            batches[-1].append(scene)
        else:
            batches.append([scene])
    return batches


def ground_truth(scenes: list[Scene]) -> list[GroundTruth]:
    return [GroundTruth(scene.boxes, scene.classes) for scene in scenes]


def detection_report(
    predictions: list[Detections], truths: list[GroundTruth], class_names: list[str]
) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """COCO mAPs with AP@0.5 per class, and the precision-recall curve at IoU 0.5 (for the plot)."""
    metrics = evaluate_detections(predictions, truths, num_classes=len(class_names))
    report = {
        "map_50": metrics["map_50"],
        "map_75": metrics["map_75"],
        "map_50_95": metrics["map_50_95"],
        "ap_50_per_class": dict(zip(class_names, metrics["per_class_ap_50"])),
    }
    return report, metrics["precision_recall_50"]


def served_graph(
    model: keras.Model, anchors: np.ndarray, config: DetectorConfig, class_names: list[str]
) -> DetectorGraph:
    """The exported graph with the run's served defaults."""
    return DetectorGraph(
        model,
        class_names,
        anchors,
        score_threshold=config.score_threshold,
        iou_threshold=config.iou_threshold,
        max_detections=config.max_detections,
    )


def evaluate(
    model: keras.Model, anchors: np.ndarray, config: DetectorConfig, dataset: DetectionDataset, run_dir: Path
) -> dict[str, Any]:
    """COCO mAP on every split, precision/recall at the served threshold, plots; writes `<run_dir>/evaluation/`."""
    out = run_dir / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    graph = served_graph(model, anchors, config, dataset.class_names)
    report: dict[str, Any] = {"evaluation_score_threshold": EVALUATION_SCORE_THRESHOLD}
    predictions: dict[str, list[Detections]] = {}
    truths: dict[str, list[GroundTruth]] = {}
    curves: dict[str, dict[str, list[float]]] = {}
    for split in ("train", "dev", "test"):
        scenes = getattr(dataset, split)[:1000]
        predictions[split] = detect(
            graph, scenes, score_threshold=EVALUATION_SCORE_THRESHOLD, progress=f"detecting {split}"
        )
        truths[split] = ground_truth(scenes)
        report[split], curves[split] = detection_report(predictions[split], truths[split], dataset.class_names)
    report["test_at_served_threshold"] = {
        "score_threshold": config.score_threshold,
        "iou_threshold": 0.5,
        **precision_recall_at(
            predictions["test"],
            truths["test"],
            num_classes=len(dataset.class_names),
            score_threshold=config.score_threshold,
        ),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    plots.plot_learning_curves(read_history(run_dir), out / "learning_curves.png", metrics=LOSS_PANELS)
    curve = curves["test"]
    plots.plot_precision_recall(
        {f"test, IoU 0.5 (mAP {report['test']['map_50']:.3f})": (curve["recall"], curve["precision"])},
        out / "precision_recall.png",
    )
    plot_test_detections(dataset, predictions["test"], config.score_threshold, out / "test_detections.png")
    return report


def plot_test_detections(
    dataset: DetectionDataset, predictions: list[Detections], score_threshold: float, path: Path, count: int = 12
) -> Path:
    """The first test images: ground truth next to the detections the served model would return."""
    names = dataset.class_names
    truths, shown = [], []
    for scene, found in zip(dataset.test[:count], predictions[:count]):
        truths.append((scene.boxes, [names[label] for label in scene.classes]))
        kept = found.scores > score_threshold
        shown.append(
            (
                found.boxes[kept],
                [f"{names[label]} {score:.2f}" for label, score in zip(found.classes[kept], found.scores[kept])],
            )
        )
    images = [scene.image for scene in dataset.test[:count]]
    return plots.plot_detections(
        images, truths, shown, path, title=f"test images: truth (green) and detections above {score_threshold} (red)"
    )


# --- export ---------------------------------------------------------------------------------------


def export_model(
    model: keras.Model,
    anchors: np.ndarray,
    report: dict[str, Any],
    config: DetectorConfig,
    dataset: DetectionDataset,
    root: Path,
) -> Path:
    graph = served_graph(model, anchors, config, dataset.class_names)
    served = report["test_at_served_threshold"]
    metadata = {
        "task": TASK,
        "labels": dataset.class_names,
        "input": {
            "image_shape": [*config.input_size, config.channels],
            "any_size": True,
            "resize": "letterbox (aspect ratio kept, padded with the border's mean)",
            "value_range": [0, 255],
            "dtypes": ["float32"],
            "encoded_formats": ["png", "jpeg", "gif", "bmp"],
        },
        "signatures": {
            "images_default": "serving_default",
            "images": "detect_images",
            "image_bytes": "detect_image_bytes",
        },
        "outputs": ["boxes", "scores", "classes", "labels", "count"],
        "postprocessing": {
            "score_threshold": config.score_threshold,
            "iou_threshold": config.iou_threshold,
            "max_detections": config.max_detections,
            "box_format": "[x1, y1, x2, y2] pixels of the original image",
            "anchors": np.asarray(anchors).round(3).tolist(),
        },
        "metrics": {
            "test_map_50": report["test"]["map_50"],
            "test_map_75": report["test"]["map_75"],
            "test_map_50_95": report["test"]["map_50_95"],
            "dev_map_50": report["dev"]["map_50"],
            "test_precision_at_served_threshold": served["precision"],
            "test_recall_at_served_threshold": served["recall"],
        },
        "training": config.to_dict(),
        "dataset": dataset.summary(),
    }
    return export.export_artifact(graph, signatures=graph.signatures(), root=root, name=config.name, metadata=metadata)


def train_and_evaluate(
    config: DetectorConfig, run_dir: Path
) -> tuple[keras.Model, np.ndarray, DetectionDataset, dict[str, Any]]:
    dataset = load_data(config)
    print(f"dataset {dataset.name}: {dataset.summary()['sizes']} images, {len(dataset.class_names)} classes")
    model, anchors = train(config, dataset, run_dir)
    report = evaluate(model, anchors, config, dataset, run_dir)
    test, served = report["test"], report["test_at_served_threshold"]
    print(f"test mAP@0.5 {test['map_50']:.4f}, mAP@0.75 {test['map_75']:.4f}, mAP@[.5:.95] {test['map_50_95']:.4f}")
    print(f"at score > {served['score_threshold']}: precision {served['precision']:.4f}, recall {served['recall']:.4f}")
    print(f"checkpoints, logs, history and plots in {run_dir}")
    return model, anchors, dataset, report


def evaluate_run(run_dir: Path) -> dict[str, Any]:
    """Re-evaluate a finished training run; returns the headline figures."""
    config, model, anchors = load_run(run_dir)
    report = evaluate(model, anchors, config, load_data(config), run_dir)
    return {key: report[key] for key in ("test", "dev", "test_at_served_threshold")}


def export_run(run_dir: Path, artifacts: Path) -> Path:
    """Export a finished training run as the next artifact version (its saved evaluation, else a fresh one)."""
    config, model, anchors = load_run(run_dir)
    dataset = load_data(config)
    report = script.saved_or_fresh_report(run_dir, lambda: evaluate(model, anchors, config, dataset, run_dir))
    return export_model(model, anchors, report, config, dataset, artifacts)


def run(config: DetectorConfig, *, run_dir: Path, artifacts: Path, register: bool = True) -> Path:
    """Train, evaluate, export and register one detector; returns the new artifact folder."""
    model, anchors, dataset, report = train_and_evaluate(config, run_dir)
    return script.publish(export_model(model, anchors, report, config, dataset, artifacts), register=register)


# --- command line ---------------------------------------------------------------------------------


def threshold(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a number from 0 to 1")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="digit-scenes", help=f"{scene_data.SPEC_FORMS} (default: %(default)s)")
    parser.add_argument(
        "--data-dir", help="TFDS data_dir for --dataset tfds:CONFIG (built there on first use, no downloads)"
    )
    parser.add_argument("--train-size", type=int, help="generated training scenes")
    parser.add_argument("--dev-size", type=int, default=200)
    parser.add_argument("--test-size", type=int, default=400)
    parser.add_argument(
        "--image-size", type=int, default=128, help="the model's square input; a multiple of 16 (default: %(default)s)"
    )
    parser.add_argument(
        "--channels", type=int, choices=(1, 3), default=1, help="1 = grayscale, 3 = RGB (default: %(default)s)"
    )
    parser.add_argument(
        "--anchors", type=int, default=3, help="anchor boxes per grid cell, fitted by k-means (default: %(default)s)"
    )
    parser.add_argument(
        "--base-filters", type=int, help="filters of the first convolution; doubled at each downsampling"
    )
    parser.add_argument("--residual-blocks", type=int, help="residual blocks per stage")
    parser.add_argument("--no-augment", action="store_true", help="turn off the random zoom/shift of training scenes")
    parser.add_argument(
        "--score-threshold",
        type=threshold,
        default=0.6,
        help="served default: drop detections scoring at most this (default: %(default)s)",
    )
    parser.add_argument(
        "--iou-threshold",
        type=threshold,
        default=0.5,
        help="served default: NMS drops a box overlapping a better one of its class by more (default: %(default)s)",
    )
    parser.add_argument(
        "--max-detections", type=int, default=100, help="detections kept per image (default: %(default)s)"
    )
    script.add_training_arguments(parser, profiles=PROFILES, name=TASK)


def config_from_args(args: argparse.Namespace) -> DetectorConfig:
    preset = PROFILES[args.profile]
    return DetectorConfig(
        dataset=args.dataset,
        data_dir=args.data_dir,
        train_size=script.preset_value(args, preset, "train_size"),
        dev_size=args.dev_size,
        test_size=args.test_size,
        image_size=args.image_size,
        channels=args.channels,
        num_anchors=args.anchors,
        base_filters=script.preset_value(args, preset, "base_filters"),
        residual_blocks=script.preset_value(args, preset, "residual_blocks"),
        augment=not args.no_augment,
        score_threshold=args.score_threshold,
        iou_threshold=args.iou_threshold,
        max_detections=args.max_detections,
        name=args.name,
        training=script.training_config(args, preset),
    )


def main(argv: list[str] | None = None) -> int:
    return script.pipeline_main(
        argv,
        prog="python -m pipelines.detector",
        description=__doc__,
        add_arguments=add_arguments,
        config_from_args=config_from_args,
        run=run,
    )


if __name__ == "__main__":
    sys.exit(main())
