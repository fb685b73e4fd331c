"""Object detector, end to end: digit scenes or COCO / VOC data → YOLO-style model → mAP → export.

A person sends a picture; the exported SavedModel answers the objects in it: boxes in the picture's own
pixels, labels and scores. Letterboxing, decoding and class-aware non-max suppression run inside the graph.

    python -m pipelines.detector                                  # quick profile on generated digit scenes
    python -m pipelines.detector --profile default                # the full profile (mAP@0.5 ≥ 0.95)
    python -m pipelines.detector --dataset coco:my_data --channels 3   # my_data/annotations.json + my_data/images/
    python -m pipelines.detector --dataset voc:VOCdevkit/VOC2012 --channels 3
    python -m pipelines.detector --dataset tfds:small --data-dir ~/tensorflow_datasets   # the digit_scenes TFDS builder
"""

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from models import box_ops, detection_graph, image_graph
from models.detector import LOSS_METRICS, YoloLoss, build_yolo
from pipelines.data import scene_data
from pipelines.data.scene_data import DetectionDataset, Scene
from pipelines.evaluation import plots
from pipelines.evaluation.detection_metrics import Detections, GroundTruth, evaluate_detections, precision_recall_at
from pipelines.export.detector_graph import DetectorGraph
from pipelines.export.warmup import WARMUP_EXAMPLES
from pipelines.family import Config, Family, RunFolder, Trained
from pipelines.training import flags
from pipelines.training.loop import TrainingConfig, fit, read_history
from pipelines.training.search_space import Choice, LogUniform, SearchSpace
from pipelines.validation.scoring import HeldOut
from serving.contract import ArtifactMetadata, ImageInput, Postprocessing, Role, Task

# mAP ranks every detection, so evaluation keeps the low-scoring ones the served threshold would drop.
EVALUATION_SCORE_THRESHOLD = 0.01
EVALUATED_SCENES = 1000  # per split: COCO evaluation of more costs minutes and moves mAP by little
LOSS_PANELS = ("loss", "box_loss", "objectness_loss", "class_loss")

PROFILES: dict[str, dict[str, Any]] = {
    # Measured on the project's 2-core machine (issue 14): base 8 at full resolution, 4 min 22 s to 4 min 56 s and
    # test mAP@0.5 0.875-0.92 with the AVX2 CPU; on a 2-core AVX-512 one, 2 min 44 s and 0.826. A stride-2 stem
    # with base 24 costs the same per step (93 against 98 ms at batch 16) and reached 0.902 in 2 min 50 s there
    # (base 32: 0.921 at 1.3x the step; base 24 for 13 epochs: 0.910). Base 16 at full resolution on 3,000 scenes
    # reached 0.956 but took 43 min. Batch 16 at 3e-3 learns more per epoch than batch 32 at 2e-3. The cosine
    # schedule (one warm-up epoch, then to zero) instead of 0.93 per epoch: 0.925 in the same 2 min 52 s (5e-3: 0.930).
    # 12 epochs at 5e-3: 0.939; 15: 0.952 in 2 min 53 s on a faster AVX-512 machine, and 0.951 in 4 min 55 s there
    # with oneDNN held to AVX2 (ONEDNN_MAX_CPU_ISA=AVX2, standing in for the project's AVX2 machine).
    # Without the head's 3×3 convolution (a quarter of the FLOPs, at the widest filters), on the project's AVX2
    # machine: 16% less step time, and 0.952 and 0.947 in two runs whose first epochs already differed (with the
    # head: 0.951 in one); 12 epochs of it: 0.930. The quick profile sits at the 0.95 floor either way.
    # Over seeds 0-2 (mean 0.953), none of these moved the mean (README): every anchor overlapping a box by IoU
    # >= 0.5 made responsible, an EMA of the weights, 3,000 scenes for 10 epochs, the class loss weighted 5.
    # What did: a 16x16 grid (two downsamplings, not three) with the empty cells' objectness weighted a quarter
    # as much, so that their total weight stays that of the 8x8 grid's (4x the cells): 0.973, 0.963, 0.970
    # (mean 0.968), mAP@0.75 0.65-0.68 against 0.54-0.60, a better F1 at the served threshold, 10% less time.
    # The grid alone reached 0.964 but scored every detection lower (recall 0.74-0.77 at 0.6 against 0.84-0.87).
    "quick": {
        "train_size": 2000,
        "base_filters": 24,
        "downsamplings": 2,
        "stem_strides": 2,
        "residual_blocks": 1,
        "head_convolutions": 0,
        "no_object_weight": 0.125,
        "epochs": 15,
        "batch_size": 16,
        "learning_rate": 5e-3,
        "schedule": "cosine",
        "patience": 6,
        "clip_norm": 10.0,
    },
    "default": {
        "train_size": 6000,
        "base_filters": 16,
        "downsamplings": 4,
        "stem_strides": 1,
        "residual_blocks": 1,
        "head_convolutions": 1,
        "no_object_weight": 0.5,
        "epochs": 40,
        "batch_size": 32,
        "learning_rate": 2e-3,
        "decay_rate": 0.95,
        "patience": 8,
        "clip_norm": 10.0,
    },
}

# `modelservice tune detector`: judged by mAP@0.5 on the dev scenes; the anchors are k-means-fitted per trial.
SEARCH_SPACE = SearchSpace(
    objective="dev_map_50",
    dimensions=(
        LogUniform("learning_rate", low=1e-3, high=1e-2),
        Choice("batch_size", values=(8, 16, 32)),
        Choice("base_filters", values=(16, 24, 32)),
        Choice("residual_blocks", values=(1, 2)),
        Choice("num_anchors", values=(2, 3, 4, 5)),
    ),
)


@dataclass
class DetectorConfig(Config):
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
    stem_strides: int = 1
    residual_blocks: int = 1
    head_convolutions: int = 1
    batch_norm_momentum: float = 0.99
    augment: bool = True
    class_weight: float = 3.0  # the class term learns slowest; weighting it up speeds the whole detector
    no_object_weight: float = 0.5  # the objectness loss of a prediction with no object: most cells are empty
    # Served defaults: a detection must be a little better than even odds, and a box overlapping a better one
    # of its class by more than half is taken to be the same object.
    score_threshold: float = 0.6
    iou_threshold: float = 0.5
    max_detections: int = 100
    name: str = "detector"
    training: TrainingConfig = field(default_factory=TrainingConfig)

    @property
    def input_size(self) -> tuple[int, int]:
        return self.image_size, self.image_size

    @property
    def grid(self) -> tuple[int, int]:
        cells = self.image_size // (self.stem_strides * 2**self.downsamplings)
        return cells, cells


def letterboxed_box_sizes(scenes: list[Scene], input_size: tuple[int, int]) -> np.ndarray:
    """(width, height) of every box once its image is letterboxed onto the model's input."""
    sizes = []
    for scene in scenes:
        fit = min(input_size[0] / scene.image.shape[0], input_size[1] / scene.image.shape[1])
        sizes.append((scene.boxes[:, 2:] - scene.boxes[:, :2]) * fit)
    return np.concatenate(sizes) if sizes else np.zeros((0, 2))


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


def detect_split(
    graph: DetectorGraph, dataset: DetectionDataset, split: str
) -> tuple[list[Detections], list[GroundTruth]]:
    """The detections on a split's evaluated scenes, and their ground truth."""
    scenes = getattr(dataset, split)[:EVALUATED_SCENES]
    detections = detect(graph, scenes, score_threshold=EVALUATION_SCORE_THRESHOLD, progress=f"detecting {split}")
    return detections, ground_truth(scenes)


def evaluate_graph(
    graph: DetectorGraph, config: DetectorConfig, dataset: DetectionDataset, run_dir: Path
) -> dict[str, Any]:
    """COCO mAP on every split, precision/recall at the served threshold, plots; writes `<run_dir>/evaluation/`."""
    out = RunFolder(run_dir).evaluation
    report: dict[str, Any] = {"evaluation_score_threshold": EVALUATION_SCORE_THRESHOLD}
    predictions: dict[str, list[Detections]] = {}
    truths: dict[str, list[GroundTruth]] = {}
    curves: dict[str, dict[str, list[float]]] = {}
    for split in ("train", "dev", "test"):
        predictions[split], truths[split] = detect_split(graph, dataset, split)
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
    RunFolder(run_dir).save_report(report)
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


class DetectorFamily(Family[DetectorConfig, DetectionDataset, np.ndarray]):
    name = "detector"
    config_type = DetectorConfig
    profiles = PROFILES
    quality_floor = 0.8  # 0.875-0.94 test mAP@0.5 in the quick profile
    group_floor = 0.6
    description = __doc__
    search_space = SEARCH_SPACE
    side_file = "anchors.json"  # a resumed run keeps the anchors its checkpoint was trained against

    def load_data(self, config: DetectorConfig) -> DetectionDataset:
        return scene_data.load_dataset(
            config.dataset,
            seed=config.training.seed,
            size=config.image_size,
            channels=config.channels,
            sizes=(config.train_size, config.dev_size, config.test_size),
            data_dir=config.data_dir,
        )

    def fit_preprocessing(self, config: DetectorConfig, data: DetectionDataset) -> np.ndarray:
        """k-means (1 − IoU distance) on the training boxes' shapes, smallest anchor first."""
        sizes = letterboxed_box_sizes(data.train, config.input_size)
        sizes = sizes[np.all(sizes > 0, axis=1)]
        if len(sizes) < config.num_anchors:
            raise ValueError(f"{len(sizes)} training boxes cannot fit {config.num_anchors} anchors")
        return box_ops.kmeans_anchors(sizes, config.num_anchors, seed=config.training.seed)

    def dump_fitted(self, fitted: np.ndarray) -> list[list[float]]:
        return np.asarray(fitted).tolist()

    def load_fitted(self, values: list[list[float]]) -> np.ndarray:
        return np.array(values, np.float32)

    def build_model(self, config: DetectorConfig, data: DetectionDataset, fitted: np.ndarray) -> keras.Model:
        return build_yolo(
            input_shape=(*config.input_size, config.channels),
            num_classes=len(data.class_names),
            num_anchors=config.num_anchors,
            base_filters=config.base_filters,
            downsamplings=config.downsamplings,
            stem_strides=config.stem_strides,
            residual_blocks=config.residual_blocks,
            head_convolutions=config.head_convolutions,
            batch_norm_momentum=config.batch_norm_momentum,
        )

    def fit(
        self,
        config: DetectorConfig,
        data: DetectionDataset,
        fitted: np.ndarray,
        run_dir: Path,
        extra_callbacks: Sequence = (),
    ) -> keras.Model:
        training = config.training
        print(f"anchors (w × h): {', '.join(f'{w:.1f}×{h:.1f}' for w, h in fitted)}")
        return fit(
            lambda: self.build_model(config, data, fitted),
            make_tf_dataset(data.train, config, fitted, batch_size=training.batch_size, training=True),
            make_tf_dataset(data.dev, config, fitted, batch_size=64, training=False),
            config=training,
            run_dir=run_dir,
            loss=YoloLoss(class_weight=config.class_weight, no_object_weight=config.no_object_weight),
            metrics=LOSS_METRICS,
            extra_callbacks=list(extra_callbacks),
        )

    def evaluate(self, trained: Trained, data: DetectionDataset, run_dir: Path) -> dict[str, Any]:
        return evaluate_graph(self.graph(trained, data), trained.config, data, run_dir)

    def dev_score(self, trained: Trained, data: DetectionDataset) -> float:
        detections, truths = detect_split(self.graph(trained, data), data, "dev")
        return detection_report(detections, truths, data.class_names)[0]["map_50"]

    def headline(self, report: dict[str, Any]) -> dict[str, Any]:
        return {key: report[key] for key in ("test", "dev", "test_at_served_threshold")}

    def describe(self, report: dict[str, Any]) -> str:
        test, served = report["test"], report["test_at_served_threshold"]
        return (
            f"test mAP@0.5 {test['map_50']:.4f}, mAP@0.75 {test['map_75']:.4f}, mAP@[.5:.95] {test['map_50_95']:.4f}\n"
            f"at score > {served['score_threshold']}: "
            f"precision {served['precision']:.4f}, recall {served['recall']:.4f}"
        )

    def served_graph(self, trained: Trained, data: DetectionDataset) -> DetectorGraph:
        """The exported graph with the run's served defaults."""
        config = trained.config
        return DetectorGraph(
            trained.model,
            data.class_names,
            trained.fitted,
            score_threshold=config.score_threshold,
            iou_threshold=config.iou_threshold,
            max_detections=config.max_detections,
        )

    def warmup_examples(self, data: DetectionDataset) -> list:
        return [scene.image for scene in data.test[:WARMUP_EXAMPLES]]

    def held_out(self, data: DetectionDataset) -> HeldOut:
        scenes = data.test[:EVALUATED_SCENES]
        return HeldOut([scene.image for scene in scenes], ground_truth(scenes), tuple(data.class_names))

    def artifact_metadata(self, trained: Trained, data: DetectionDataset, report: dict[str, Any]) -> ArtifactMetadata:
        config = trained.config
        served = report["test_at_served_threshold"]
        return ArtifactMetadata(
            task=Task.DETECTOR,
            family=self.name,
            name=config.name,
            labels=tuple(data.class_names),
            input=ImageInput(
                image_shape=(*config.input_size, config.channels),
                dtypes=("float32",),
                any_size=True,
                resize="letterbox (aspect ratio kept, padded with the border's mean)",
            ),
            signatures={
                Role.DEFAULT: "serving_default",
                Role.IMAGES: "detect_images",
                Role.IMAGE_BYTES: "detect_image_bytes",
            },
            outputs=DetectorGraph.OUTPUTS,
            postprocessing=Postprocessing(
                score_threshold=config.score_threshold,
                iou_threshold=config.iou_threshold,
                max_detections=config.max_detections,
                anchors=tuple(tuple(pair) for pair in np.asarray(trained.fitted).round(3).tolist()),
            ),
            metrics={
                "test_map_50": report["test"]["map_50"],
                "test_map_75": report["test"]["map_75"],
                "test_map_50_95": report["test"]["map_50_95"],
                "dev_map_50": report["dev"]["map_50"],
                "test_precision_at_served_threshold": served["precision"],
                "test_recall_at_served_threshold": served["recall"],
            },
            training=config.to_dict(),
            dataset=data.summary(),
        )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--dataset", default="digit-scenes", help=f"{scene_data.SPEC_FORMS} (default: %(default)s)")
        parser.add_argument(
            "--data-dir", help="TFDS data_dir for --dataset tfds:CONFIG (built there on first use, no downloads)"
        )
        parser.add_argument("--train-size", type=int, help="generated training scenes")
        parser.add_argument("--dev-size", type=int, default=200)
        parser.add_argument("--test-size", type=int, default=400)
        parser.add_argument(
            "--image-size",
            type=int,
            default=128,
            help="the model's square input; a multiple of 16 (default: %(default)s)",
        )
        parser.add_argument(
            "--channels", type=int, choices=(1, 3), default=1, help="1 = grayscale, 3 = RGB (default: %(default)s)"
        )
        parser.add_argument(
            "--anchors",
            dest="num_anchors",
            type=int,
            default=3,
            help="anchor boxes per grid cell, fitted by k-means (default: %(default)s)",
        )
        parser.add_argument(
            "--base-filters", type=int, help="filters of the first convolution; doubled at each downsampling"
        )
        parser.add_argument("--residual-blocks", type=int, help="residual blocks per stage")
        parser.add_argument(
            "--head-convolutions", type=int, help="3×3 convolutions between the last stage and the predictions"
        )
        parser.add_argument(
            "--downsamplings", type=int, help="stride-2 stages after the stem; with it, sets the grid's size"
        )
        parser.add_argument(
            "--stem-strides",
            type=int,
            choices=(1, 2),
            help="the first convolution's stride; 2 skips the costly full-resolution layers",
        )
        parser.add_argument(
            "--no-augment", action="store_true", help="turn off the random zoom/shift of training scenes"
        )
        parser.add_argument(
            "--no-object-weight",
            type=float,
            help="weight of the objectness loss where there is no object (quick: 0.125 on its 16x16 grid, default: "
            "0.5 on 8x8); lower it as the grid grows, since most cells are empty",
        )
        parser.add_argument(
            "--score-threshold",
            type=flags.threshold,
            default=0.6,
            help="served default: drop detections scoring at most this (default: %(default)s)",
        )
        parser.add_argument(
            "--iou-threshold",
            type=flags.threshold,
            default=0.5,
            help="served default: NMS drops a box overlapping a better one of its class by more (default: %(default)s)",
        )
        parser.add_argument(
            "--max-detections", type=int, default=100, help="detections kept per image (default: %(default)s)"
        )
        flags.add_training_arguments(parser, profiles=self.profiles, name=self.name)

    def config_from_args(self, args: argparse.Namespace) -> DetectorConfig:
        preset = self.profiles[args.profile]
        return DetectorConfig(
            dataset=args.dataset,
            data_dir=args.data_dir,
            train_size=flags.preset_value(args, preset, "train_size"),
            dev_size=args.dev_size,
            test_size=args.test_size,
            image_size=args.image_size,
            channels=args.channels,
            num_anchors=args.num_anchors,
            base_filters=flags.preset_value(args, preset, "base_filters"),
            residual_blocks=flags.preset_value(args, preset, "residual_blocks"),
            downsamplings=flags.preset_value(args, preset, "downsamplings"),
            stem_strides=flags.preset_value(args, preset, "stem_strides"),
            head_convolutions=flags.preset_value(args, preset, "head_convolutions"),
            augment=not args.no_augment,
            no_object_weight=flags.preset_value(args, preset, "no_object_weight"),
            score_threshold=args.score_threshold,
            iou_threshold=args.iou_threshold,
            max_detections=args.max_detections,
            name=args.name,
            training=flags.training_config(args, preset),
        )


FAMILY = DetectorFamily()

if __name__ == "__main__":
    sys.exit(FAMILY.main())
