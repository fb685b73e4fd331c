"""Detection throughput: the exported detector graph vs. NumPy/Python post-processing after `model.predict`.

    python -m benchmarks.detection                                  # runs/detector + artifacts/detector
    python -m benchmarks.detection --run-dir /tmp/det/run --artifact /tmp/det/artifacts/detector --train-if-missing
    python -m benchmarks.detection --batch-sizes 1 8 32 --images 64 --repeats 3 --score-thresholds served 0.01
    python -m benchmarks.detection --image-size 96 160              # non-square images: both sides letterbox

Two detectors turn the same PNG-encoded test scenes (`pipelines.data.scene_data.make_digit_scenes`, seeded)
into boxes, scores and classes in original-image pixels, in batches of the same size, one call per batch:

  graph   the exported SavedModel, loaded with plain `tf.saved_model.load`, through its `detect_image_bytes`
          signature: PNG decoding, letterboxing, the model, box decoding, class-aware non-max suppression
          and the mapping back to the original pixels, all in one graph
  numpy   `NumpyDetector`, the way it is usually written: Pillow decodes each PNG and letterboxes it,
          `model.predict` runs the Keras model from the run folder on the batch, NumPy decodes the raw grid
          and a Python loop does greedy per-class NMS (sort by score, keep the best, drop the boxes of its
          class overlapping it by more than the IoU threshold), then keeps the best max_detections and maps
          the boxes back; the same coding and rules as `models/detection_graph.py`

Thresholds: every batch size is measured at the served defaults from the artifact's metadata.json (score
0.6, IoU 0.5 unless trained otherwise), where a trained model leaves a box or two per image, and by
default also at score 0.01 (same IoU), the threshold the project's own evaluation detects at
(`pipelines.detector.EVALUATION_SCORE_THRESHOLD`, every box that counts for mAP), as when a client asks for
everything: dozens to hundreds of candidates per image reach NMS, which is where the Python loop has the
most work. A barely trained model (--train-if-missing's) scores no box above 0.6, so there only the 0.01
rows exercise NMS.

Each setting is warmed up on both sides (the graph's first-call optimisation, Keras building its predict
function), then every image is detected --repeats times, or more until a second was timed; the fastest
pass counts (timeit's convention: it is the one least disturbed by other processes). Results: a table
of images/s, the ratio graph / numpy, where the numpy side's time goes (Pillow / predict / post-processing)
and the share of images whose detections agree: same count, and detections pairing up one-to-one with
the same class, boxes within 1e-3 px and scores within 1e-4 (both sides compute in float32 but in
different orders, and Pillow's resampling weights differ from TF's in the last bits, so bit equality is
not expected; pairing ignores order because two near-equal scores may swap places); `detection.json` and
`detection.png` under --out.

Where the numpy side's time goes (the pillow/predict/post column): `model.predict` builds a data adapter
and an iterator and dispatches a tf.function on every call, ~45 ms on 2 CPU cores whatever the batch, so
it is 75-99% of the time; Pillow takes a few per cent, and the Python NMS loop 1-3% at the served
threshold, up to ~20% at score 0.01 and batch 32 (~30 detections per image from a quick-profile model).
So the ratio is largest at batch 1 (~10x) and shrinks to ~2x at batch 32, where both sides are bound by
the same convolutions. (Calling the model directly, `model(batch, training=False)`, would avoid most of
that per-call overhead; `model.predict` is what such code usually calls.)
"""

import argparse
import contextlib
import functools
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from benchmarks.common import environment, fastest_pass, plot_ratio_bars, save_results, saved_model_dir, settings
from models.box_ops import iou_matrix
from models.detection_graph import MAX_LOG_SCALE
from pipelines import detector
from pipelines.data.scene_data import make_digit_scenes
from pipelines.evaluation.detection_metrics import Detections
from pipelines.training.flags import threshold
from pipelines.training.loop import TrainingConfig
from serving.contract import read_metadata

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RUN_DIR = Path("runs") / detector.FAMILY.name
DEFAULT_ARTIFACT = Path("artifacts") / detector.FAMILY.name
LOW_SCORE_THRESHOLD = detector.EVALUATION_SCORE_THRESHOLD
BOX_TOLERANCE = 1e-3  # pixels
SCORE_TOLERANCE = 1e-4
STAGES = ("pillow", "predict", "postprocess")
# tf.image.rgb_to_grayscale's weights, so an RGB picture becomes the same gray on both sides.
RGB_TO_GRAY = np.array([0.2989, 0.5870, 0.1140], np.float32)
# --train-if-missing: a minute or two on 2 CPU cores. The quick profile's architecture (DetectorConfig's
# defaults), whose cost per image is what is measured, but far fewer scenes and epochs: its boxes are
# placed, its classes barely learnt, so few if any scores pass the served threshold.
SMALL_MODEL: dict[str, Any] = {"train_size": 600, "dev_size": 100, "test_size": 100}
SMALL_TRAINING: dict[str, Any] = {
    "epochs": 5,
    "batch_size": 32,
    "learning_rate": 2e-3,
    "decay_rate": 0.9,
    "patience": 0,
}

Detect = Callable[..., list[Detections]]


# --- the NumPy baseline ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Letterboxed:
    """An image fitted onto the model's input; a point p of the original lands at p * scale + offset."""

    canvas: np.ndarray  # (height, width, C) float32, 0-255
    scale: np.ndarray  # (x, y)
    offset: np.ndarray  # (x, y)
    original_size: tuple[int, int]  # (height, width)


def decode_png(data: bytes, channels: int) -> np.ndarray:
    """Encoded image → float32 (H, W, channels), values 0-255, at its own size."""
    with Image.open(io.BytesIO(data)) as image:
        if image.mode not in ("L", "LA", "RGB", "RGBA"):
            # Palette images decode to colour in TF as well (with alpha when they have transparency).
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        pixels = np.asarray(image, np.float32)
    return to_channels(pixels if pixels.ndim == 3 else pixels[..., np.newaxis], channels)


def to_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    """Gray, gray + alpha, RGB or RGBA (H, W, C) → 1 or 3 channels, as `image_graph.to_channels` converts."""
    if pixels.shape[-1] >= 3:
        return (pixels[..., :3] @ RGB_TO_GRAY)[..., np.newaxis] if channels == 1 else pixels[..., :3]
    gray = pixels[..., :1]
    return gray if channels == 1 else np.repeat(gray, 3, axis=-1)


def border_mean(image: np.ndarray) -> np.float32:
    """Mean of the outermost rows and columns (corners twice, as the graph counts them)."""
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    return border.mean(dtype=np.float32)


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Antialiased bilinear resize of float (H, W, C) with Pillow, one float ("F") plane per channel."""
    planes = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(image[..., c])).resize((width, height), Image.Resampling.BILINEAR)
        )
        for c in range(image.shape[-1])
    ]
    return np.stack(planes, axis=-1)


def letterbox(image: np.ndarray, height: int, width: int) -> Letterboxed:
    "Fit (H, W, C) onto (height, width, C): scaled to fit, aspect ratio kept, centred, padded with the border's mean."
    # float32 like the graph, so the rounded size is the same even when the product lands on .5
    original = np.array(image.shape[:2], np.float32)
    target = np.array([height, width], np.float32)
    fit = (target / original).min()
    resized_size = np.clip(np.round(original * fit), 1.0, target)
    new_height, new_width = (int(size) for size in resized_size)
    resized = image if image.shape[:2] == (new_height, new_width) else resize_bilinear(image, new_height, new_width)
    top, left = (height - new_height) // 2, (width - new_width) // 2
    fill = border_mean(image)
    padding = ((top, height - new_height - top), (left, width - new_width - left), (0, 0))
    canvas = np.pad(resized - fill, padding) + fill
    return Letterboxed(
        canvas.astype(np.float32), (resized_size / original)[::-1], np.array([left, top], np.float32), image.shape[:2]
    )


def sigmoid(values: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp overflows to inf for very negative logits: 1 / inf = 0 is right
        return 1.0 / (1.0 + np.exp(-values))


def softmax(logits: np.ndarray) -> np.ndarray:
    exponentials = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exponentials / exponentials.sum(axis=-1, keepdims=True)


def decode_grid(raw: np.ndarray, anchors: np.ndarray, *, image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    (
        """Raw output (N, S_h, S_w, A, 5 + C) → boxes (N, S_h·S_w·A, 4) xyxy canvas pixels """
        """and class scores (N, S_h·S_w·A, C)."""
    )
    raw = raw.astype(np.float32, copy=False)
    batch, grid_h, grid_w, _, fields = raw.shape
    cell_size = np.array([image_size[1] / grid_w, image_size[0] / grid_h], np.float32)  # (x, y)
    columns, rows = np.meshgrid(np.arange(grid_w, dtype=np.float32), np.arange(grid_h, dtype=np.float32))
    cells = np.stack([columns, rows], axis=-1)[np.newaxis, :, :, np.newaxis]  # (1, S_h, S_w, 1, 2)
    centre = (cells + sigmoid(raw[..., 0:2])) * cell_size
    size = anchors * np.exp(np.minimum(raw[..., 2:4], MAX_LOG_SCALE))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=-1)
    scores = sigmoid(raw[..., 4:5]) * softmax(raw[..., 5:])
    return boxes.reshape(batch, -1, 4), scores.reshape(batch, -1, fields - 5)


def greedy_nms(boxes: np.ndarray, scores: np.ndarray, *, iou_threshold: float, limit: int) -> list[int]:
    """Textbook NMS of one class: indices of the kept boxes, best first."""
    order = np.argsort(-scores, kind="stable")  # equal scores: the lower index first, as the TF op breaks ties
    keep: list[int] = []
    while order.size and len(keep) < limit:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        order = rest[iou_matrix(boxes[best], boxes[rest])[0] <= iou_threshold]
    return keep


def class_aware_nms(
    boxes: np.ndarray, scores: np.ndarray, *, score_threshold: float, iou_threshold: float, max_detections: int
) -> Detections:
    """One image's boxes (B, 4) and class scores (B, C) → the best max_detections after per-class NMS.

    Overlaps are measured on the boxes as decoded, not clipped to the canvas: the TF op clips only its output.
    """
    found_boxes, found_scores, found_classes = [], [], []
    for label in range(scores.shape[1]):
        # Strictly above, compared in float32 like the graph.
        candidates = np.flatnonzero(scores[:, label] > np.float32(score_threshold))
        kept = candidates[
            greedy_nms(boxes[candidates], scores[candidates, label], iou_threshold=iou_threshold, limit=max_detections)
        ]
        found_boxes.append(boxes[kept])
        found_scores.append(scores[kept, label])
        found_classes.append(np.full(len(kept), label, np.int32))
    all_scores = np.concatenate(found_scores)
    best = np.argsort(-all_scores, kind="stable")[:max_detections]
    return Detections(np.concatenate(found_boxes)[best], all_scores[best], np.concatenate(found_classes)[best])


def to_original_pixels(boxes: np.ndarray, fitted: Letterboxed) -> np.ndarray:
    """Undo `letterbox` for boxes (M, 4) on the canvas; clip to the original image."""
    height, width = fitted.original_size
    original = (boxes - np.tile(fitted.offset, 2)) / np.tile(fitted.scale, 2)
    return np.clip(original, 0.0, np.array([width, height, width, height], np.float32))


class NumpyDetector:
    """Pillow, `model.predict`, then NumPy decoding and Python NMS; called like the graph, with per-stage timing."""

    def __init__(self, model: keras.Model, anchors: np.ndarray, *, max_detections: int):
        self.model = model
        self.anchors = np.asarray(anchors, np.float32)
        self.max_detections = max_detections
        self.height, self.width, self.channels = (int(size) for size in model.input_shape[1:])
        self.stage_seconds = dict.fromkeys(STAGES, 0.0)

    @contextlib.contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.stage_seconds[name] += time.perf_counter() - started

    def __call__(self, image_bytes: list[bytes], *, score_threshold: float, iou_threshold: float) -> list[Detections]:
        with self._stage("pillow"):
            fitted = [letterbox(decode_png(data, self.channels), self.height, self.width) for data in image_bytes]
        with self._stage("predict"):
            raw = self.model.predict(np.stack([image.canvas for image in fitted]), batch_size=len(fitted), verbose=0)
        with self._stage("postprocess"):
            boxes, scores = decode_grid(raw, self.anchors, image_size=(self.height, self.width))
            canvas = np.array([self.width, self.height, self.width, self.height], np.float32)
            results = []
            for image_boxes, image_scores, image in zip(boxes, scores, fitted):
                found = class_aware_nms(
                    image_boxes,
                    image_scores,
                    score_threshold=score_threshold,
                    iou_threshold=iou_threshold,
                    max_detections=self.max_detections,
                )
                on_canvas = np.clip(
                    found.boxes, 0.0, canvas
                )  # the graph clips to the canvas before undoing the letterbox
                results.append(Detections(to_original_pixels(on_canvas, image), found.scores, found.classes))
            return results


# --- the exported graph ---------------------------------------------------------------------------


def graph_detector(signature: Callable[..., dict[str, tf.Tensor]]) -> Detect:
    """The SavedModel's `detect_image_bytes` signature with `NumpyDetector`'s interface."""

    def detect(image_bytes: list[bytes], *, score_threshold: float, iou_threshold: float) -> list[Detections]:
        found = signature(
            image_bytes=tf.constant(image_bytes, tf.string),
            score_threshold=tf.constant(score_threshold, tf.float32),
            iou_threshold=tf.constant(iou_threshold, tf.float32),
        )
        boxes, scores, classes = found["boxes"].numpy(), found["scores"].numpy(), found["classes"].numpy()
        return [
            Detections(boxes[row, :count], scores[row, :count], classes[row, :count])
            for row, count in enumerate(found["count"].numpy())
        ]

    return detect


# --- comparing the two sides ----------------------------------------------------------------------


def pair_up(a: Detections, b: Detections) -> list[tuple[int, int]] | None:
    """One-to-one pairs (i, j) of same-class detections, each of a's (best first) taking the nearest
    unpaired box of b; None when the counts or the classes differ."""
    if len(a.scores) != len(b.scores) or sorted(a.classes.tolist()) != sorted(b.classes.tolist()):
        return None
    free = list(range(len(b.scores)))
    pairs = []
    for i in np.argsort(-a.scores, kind="stable"):
        same_class = [j for j in free if b.classes[j] == a.classes[i]]
        j = min(same_class, key=lambda j: float(np.abs(a.boxes[i] - b.boxes[j]).max()))
        free.remove(j)
        pairs.append((int(i), j))
    return pairs


def compare(graph: list[Detections], baseline: list[Detections]) -> dict[str, float]:
    """Share of images whose detections agree, and the largest differences between paired detections."""
    agreeing, box_differences, score_differences = 0, [0.0], [0.0]
    for a, b in zip(graph, baseline, strict=True):
        pairs = pair_up(a, b)
        if pairs is None:
            continue
        boxes = [float(np.abs(a.boxes[i] - b.boxes[j]).max()) for i, j in pairs]
        scores = [abs(float(a.scores[i]) - float(b.scores[j])) for i, j in pairs]
        agreeing += all(d <= BOX_TOLERANCE for d in boxes) and all(d <= SCORE_TOLERANCE for d in scores)
        box_differences += boxes
        score_differences += scores
    return {
        "agreement": agreeing / len(graph),
        "max_box_difference_px": max(box_differences),
        "max_score_difference": max(score_differences),
        "detections_per_image": float(np.mean([len(found.scores) for found in graph])),
    }


# --- set-up ----------------------------------------------------------------------------------------


def threshold_or_served(text: str) -> float | None:
    """A score threshold from 0 to 1, or "served" (None) for the artifact's default."""
    if text == "served":
        return None
    return threshold(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.detection", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--run-dir",
        type=Path,
        help="training run with model.keras, run.json and anchors.json, for the numpy side "
        f"(default: {DEFAULT_RUN_DIR})",
    )
    parser.add_argument(
        "--artifact",
        type=Path,
        help="exported model: a version folder, or a model folder whose latest version is used "
        f"(default: {DEFAULT_ARTIFACT})",
    )
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[1, 8, 32], help="images per detector call (default: %(default)s)"
    )
    parser.add_argument(
        "--score-thresholds", type=threshold_or_served, nargs="+", default=[None, LOW_SCORE_THRESHOLD],
        metavar="{served,0..1}",
        help="score thresholds to measure at; 'served' = the artifact's default "
        f"(default: served {LOW_SCORE_THRESHOLD})",
    )  # fmt: skip
    parser.add_argument(
        "--iou-threshold", type=threshold, help="NMS IoU threshold (default: the artifact's served one)"
    )
    parser.add_argument(
        "--images", type=int, default=64, help="test scenes detected per pass and setting (default: %(default)s)"
    )
    parser.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        metavar=("HEIGHT", "WIDTH"),
        help="resize the test scenes to this before PNG encoding, so both sides letterbox "
        "(default: as generated, 128 128)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="minimum number of timed passes per side and setting; the fastest counts (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated test scenes (default: %(default)s)")
    parser.add_argument(
        "--train-if-missing", action="store_true",
        help="when the run or the artifact is missing, train a small model (a minute or two) into --run-dir and "
        "export it into --artifact; a location not given on the command line is a temporary folder, so a toy model "
        "never lands in runs/ or artifacts/",
    )  # fmt: skip
    parser.add_argument(
        "--out",
        type=Path,
        default=PROJECT_ROOT / "benchmarks" / "results",
        help="folder for detection.json and detection.png (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if min(args.batch_sizes) < 1 or args.images < 1 or args.repeats < 1:
        parser.error("--batch-sizes, --images and --repeats must be >= 1")
    if args.image_size and min(args.image_size) < 1:
        parser.error("--image-size must be positive")
    return args


def is_run(run_dir: Path) -> bool:
    return all((run_dir / name).is_file() for name in ("model.keras", "run.json", detector.FAMILY.side_file))


def train_small_model(run_dir: Path, model_folder: Path) -> Path:
    """Train and export a small model (or export the finished run already in run_dir); returns the new version."""
    started = time.perf_counter()
    if is_run(run_dir):
        artifact = detector.FAMILY.export_run(run_dir, model_folder.parent)
        print(f"exported the run in {run_dir} as {artifact}\n")
        return artifact
    config = detector.DetectorConfig(**SMALL_MODEL, name=model_folder.name, training=TrainingConfig(**SMALL_TRAINING))
    artifact = detector.FAMILY.run(config, run_dir=run_dir, artifacts=model_folder.parent, register=False)
    print(f"trained and exported a small model in {time.perf_counter() - started:.0f} s\n")
    return artifact


def find_model(args: argparse.Namespace, workdir: Path) -> tuple[Path, Path] | None:
    """(run dir, SavedModel folder), training them first with --train-if-missing; None when missing."""
    run_dir, artifact = args.run_dir or DEFAULT_RUN_DIR, saved_model_dir(args.artifact or DEFAULT_ARTIFACT)
    if is_run(run_dir) and artifact is not None:
        return run_dir, artifact
    if args.train_if_missing:
        run_dir = args.run_dir or workdir / "run"
        return run_dir, train_small_model(run_dir, args.artifact or workdir / "artifacts" / detector.FAMILY.name)
    missing = []
    if not is_run(run_dir):
        missing.append(f"a finished run in {run_dir} (model.keras, run.json, {detector.FAMILY.side_file})")
    if artifact is None:
        missing.append(f"an exported version in {args.artifact or DEFAULT_ARTIFACT}")
    print(
        f"no trained detector: missing {' and '.join(missing)}.\n"
        "Run `python -m pipelines.detector` first (or point --run-dir and --artifact at a run),\n"
        "or pass --train-if-missing to train a small model.",
        file=sys.stderr,
    )
    return None


def encode_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="PNG")
    return buffer.getvalue()


def sample_images(count: int, seed: int, size: tuple[int, int] | None = None) -> list[bytes]:
    """PNG bytes of `count` generated test scenes, resized (Pillow, bilinear) to (height, width) if given."""
    encoded = []
    for scene in make_digit_scenes(0, 0, count, seed=seed).test:
        image = scene.image
        if size is not None:
            resized = Image.fromarray(image[..., 0]).resize((size[1], size[0]), Image.Resampling.BILINEAR)
            image = np.asarray(resized)[..., np.newaxis]
        encoded.append(encode_png(image))
    return encoded


# --- measurement ------------------------------------------------------------------------------------


def warm_up(detect: Detect, batches: list[list[bytes]], **thresholds: float) -> None:
    """One call per distinct batch length: a shorter last batch is a new shape for both sides."""
    for batch in {len(batch): batch for batch in batches}.values():
        detect(batch, **thresholds)


def time_detector(
    detect: Detect, batches: list[list[bytes]], *, repeats: int, **thresholds: float
) -> tuple[float, list[Detections]]:
    """(fastest pass in seconds, detections) over every batch."""
    fastest, results = fastest_pass(lambda: [detect(batch, **thresholds) for batch in batches], repeats=repeats)
    return fastest, [found for batch in results for found in batch]


def measure(
    graph: Detect,
    baseline: NumpyDetector,
    images: list[bytes],
    *,
    batch_size: int,
    score_threshold: float,
    iou_threshold: float,
    repeats: int,
) -> dict[str, Any]:
    batches = [images[start : start + batch_size] for start in range(0, len(images), batch_size)]
    thresholds = {"score_threshold": score_threshold, "iou_threshold": iou_threshold}
    row: dict[str, Any] = {"batch_size": batch_size, **thresholds, "images": len(images)}
    for detect in (graph, baseline):
        warm_up(detect, batches, **thresholds)
    baseline.stage_seconds = dict.fromkeys(STAGES, 0.0)  # the timed passes only
    outputs: dict[str, list[Detections]] = {}
    for name, detect in (("graph", graph), ("numpy", baseline)):
        seconds, outputs[name] = time_detector(detect, batches, repeats=repeats, **thresholds)
        row[name] = {"seconds": seconds, "images_per_s": len(images) / seconds}
    total = sum(baseline.stage_seconds.values())
    row["numpy"]["stage_shares"] = {stage: seconds / total for stage, seconds in baseline.stage_seconds.items()}
    row["ratio"] = row["graph"]["images_per_s"] / row["numpy"]["images_per_s"]
    row.update(compare(outputs["graph"], outputs["numpy"]))
    return row


# --- report ----------------------------------------------------------------------------------------


def report_text(rows: list[dict[str, Any]]) -> str:
    header = (
        f"{'score':>5} {'batch':>5} {'graph img/s':>12} {'numpy img/s':>12} {'ratio':>7} "
        f"{'numpy: pillow/predict/post':>27} {'det/img':>7} {'agreement':>10} {'max |Δbox|':>11} {'max |Δscore|':>13}"
    )
    lines = [header]
    for row in rows:
        shares = "/".join(f"{100 * row['numpy']['stage_shares'][stage]:.0f}" for stage in STAGES) + " %"
        lines.append(
            f"{row['score_threshold']:>5.2f} {row['batch_size']:>5} {row['graph']['images_per_s']:>12.1f} "
            f"{row['numpy']['images_per_s']:>12.1f} "
            f"{row['ratio']:>6.1f}x {shares:>27} {row['detections_per_image']:>7.1f} {row['agreement']:>9.1%} "
            f"{row['max_box_difference_px']:>8.1e} px {row['max_score_difference']:>13.1e}"
        )
    lowest, highest = min(rows, key=lambda row: row["ratio"]), max(rows, key=lambda row: row["ratio"])
    agree = all(row["agreement"] == 1.0 for row in rows)
    lines += [
        "",
        f"ratio graph / numpy: {lowest['ratio']:.1f}x (batch {lowest['batch_size']}, "
        f"score {lowest['score_threshold']:g}) to {highest['ratio']:.1f}x (batch {highest['batch_size']}, "
        f"score {highest['score_threshold']:g})",
        f"detections agree on both sides (within {BOX_TOLERANCE:g} px, {SCORE_TOLERANCE:g} score): "
        f"{'yes' if agree else 'NO (see the agreement column)'}",
    ]
    empty = sorted({row["score_threshold"] for row in rows if row["detections_per_image"] == 0})
    if empty:
        lines.append(
            f"no detections at score {', '.join(f'{value:g}' for value in empty)}: NMS had nothing to do there "
            "(a barely trained model, such as --train-if-missing's, scores few boxes that high)"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    plot_ratio_bars(
        rows,
        path,
        sides=(
            ("graph", "graph (detect_image_bytes signature)"),
            ("numpy", "Pillow + model.predict + NumPy/Python NMS"),
        ),
        rate="images_per_s",
        tick_label=lambda row: f"batch {row['batch_size']}\nscore {row['score_threshold']:g}",
        title="Detection throughput (ratio graph / numpy above the bars)",
    )


# --- main ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="detection-bench-") as workdir:
        if (found := find_model(args, Path(workdir))) is None:
            return 2
        run_dir, artifact = found
        trained = detector.FAMILY.load_trained(run_dir)
        config, model, anchors = trained.config, trained.model, trained.fitted
        served = read_metadata(artifact).postprocessing
        if not np.allclose(served.anchors, anchors, atol=1e-3):
            print(
                f"warning: the anchors of {artifact} are not those of {run_dir}: the two sides run different models",
                file=sys.stderr,
            )
        saved_model = tf.saved_model.load(str(artifact))  # kept referenced: its signatures need it alive
        graph = graph_detector(saved_model.signatures["detect_image_bytes"])
        baseline = NumpyDetector(model, anchors, max_detections=served.max_detections)
        images = sample_images(args.images, args.seed, args.image_size)
        iou_threshold = served.iou_threshold if args.iou_threshold is None else args.iou_threshold
        size = "×".join(map(str, args.image_size)) if args.image_size else "128×128"
        print(
            f"detector from {run_dir} (input {config.image_size}×{config.image_size}×{config.channels}), "
            f"SavedModel {artifact}; {len(images)} test scenes of {size} px, IoU {iou_threshold:g}, "
            f"at most {served.max_detections} detections; fastest of >= {args.repeats} passes, {os.cpu_count()} CPUs"
        )
        rows = []
        for score_threshold in dict.fromkeys(
            served.score_threshold if value is None else value for value in args.score_thresholds
        ):
            for batch_size in args.batch_sizes:
                row = measure(
                    graph,
                    baseline,
                    images,
                    batch_size=batch_size,
                    score_threshold=score_threshold,
                    iou_threshold=iou_threshold,
                    repeats=args.repeats,
                )
                rows.append(row)
                print(
                    f"score {score_threshold:g}, batch {batch_size:>3}: "
                    f"graph {row['graph']['images_per_s']:7.1f} img/s, "
                    f"numpy {row['numpy']['images_per_s']:6.1f} img/s ({row['ratio']:.1f}x), "
                    f"{row['detections_per_image']:.1f} detections/image, agreement {row['agreement']:.0%}"
                )
    text = report_text(rows)
    total = time.perf_counter() - started
    print("\n" + text)
    results = {
        "settings": settings(args),
        "model": {
            "run_dir": str(run_dir),
            "artifact": str(artifact),
            "input_shape": [config.image_size, config.image_size, config.channels],
            "served": {key: getattr(served, key) for key in ("score_threshold", "iou_threshold", "max_detections")},
        },
        "tolerances": {"box_px": BOX_TOLERANCE, "score": SCORE_TOLERANCE},
        "environment": environment(),
        "results": rows,
        "total_seconds": round(total, 1),
    }
    save_results(args.out, "detection", results, functools.partial(plot, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
