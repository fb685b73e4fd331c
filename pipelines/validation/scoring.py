"""Score an exported version on a held-out split through its own SavedModel signatures, one scorer per task.

The gate compares versions by what they answer, not by the numbers their training runs wrote down: each
version is loaded with serving's loader (`serving.store.load`) and called through the signatures its
metadata names, on the same `HeldOut` split. A transfer-learned classifier is scored as any classifier.
"""

import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from pipelines.evaluation.detection_metrics import Detections, GroundTruth, evaluate_detections
from serving.contract import Role, Task
from serving.store import LoadedModel

BATCH_SIZE = 64
DETECTION_SCORE_THRESHOLD = 0.01  # mAP ranks every detection: the served threshold would cut the curve short

# The optimizing metric of each task, and what its per-group figure is.
TASK_METRICS: dict[Task, tuple[str, str]] = {
    Task.CLASSIFIER: ("accuracy", "recall"),
    Task.SEQ2SEQ: ("exact_match", "exact_match"),
    Task.DETECTOR: ("map_50", "ap_50"),
}


@dataclass(frozen=True)
class HeldOut:
    """The split the gate evaluates both versions on, in the form the task's signatures take.

    inputs: images (N, H, W, C) uint8 (a list when sizes differ), or texts.
    targets: class ids (classifier), target texts (seq2seq), `GroundTruth` per image (detector).
    groups: each example's group for the per-group floors (a seq2seq style); None: its class.
    """

    inputs: Sequence[Any]
    targets: Sequence[Any]
    class_names: tuple[str, ...] = ()
    groups: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.inputs)

    def fingerprint(self) -> str:
        """SHA-256 over class names, groups, inputs and targets: equal only for the same examples in order."""
        digest = hashlib.sha256()
        for text in (*self.class_names, "\x00", *(self.groups or ())):
            digest.update(text.encode() + b"\x00")
        for item in (*self.inputs, *self.targets):
            for part in _parts(item):
                digest.update(f"{part.dtype.str}{part.shape}".encode())
                digest.update(np.ascontiguousarray(part).tobytes())
        return digest.hexdigest()


def _parts(item: Any) -> Iterator[np.ndarray]:
    if isinstance(item, GroundTruth):
        yield np.asarray(item.boxes)
        yield np.asarray(item.classes)
    elif isinstance(item, str):
        yield np.frombuffer(item.encode(), np.uint8)
    else:
        yield np.asarray(item)


@dataclass(frozen=True)
class Scores:
    """A version's optimizing metric on the held-out split, and the per-group figure with each group's size."""

    metric: float
    groups: dict[str, tuple[float, int]]


def score(model: LoadedModel, held_out: HeldOut) -> Scores:
    return SCORERS[model.task](model, held_out)


def _score_classifier(model: LoadedModel, held_out: HeldOut) -> Scores:
    classify = model.signature(Role.IMAGES)
    predicted = np.concatenate(
        [classify(images=tf.constant(batch, tf.float32))["labels"].numpy() for batch in _batches(held_out.inputs)]
    )
    names = np.array(held_out.class_names)[np.asarray(held_out.targets)]
    correct = predicted.astype(str) == names
    return Scores(float(correct.mean()), _group_means(correct, held_out.groups or tuple(names)))


def _score_seq2seq(model: LoadedModel, held_out: HeldOut) -> Scores:
    translate = model.signature(Role.TEXTS)
    beam_width = tf.constant(model.metadata.decoding.default_beam_width)
    answers = [
        text.decode()
        for batch in _batches(held_out.inputs)
        for text in _answers(translate(texts=tf.constant(list(batch)), beam_width=beam_width))
    ]
    correct = np.array(answers) == np.array(held_out.targets)
    return Scores(float(correct.mean()), _group_means(correct, held_out.groups) if held_out.groups else {})


def _answers(outputs: dict[str, tf.Tensor]) -> np.ndarray:
    """What a client is told: the text, or the empty string (a "not a date" target) where the version says
    the input is no date. A version from before `is_date` answers every input."""
    texts = outputs["texts"].numpy()
    return np.where(outputs["is_date"].numpy(), texts, b"") if "is_date" in outputs else texts


def _score_detector(model: LoadedModel, held_out: HeldOut) -> Scores:
    detect = model.signature(Role.IMAGES)
    # The version's class ids index its own labels; the split's index the dataset's names.
    to_split = np.array([_index(held_out.class_names, label) for label in model.metadata.labels], np.int64)
    iou = tf.constant(model.metadata.postprocessing.iou_threshold, tf.float32)
    predictions: list[Detections] = []
    for batch in _same_size_batches(held_out.inputs):
        found = detect(
            images=tf.constant(np.stack(batch), tf.float32),
            score_threshold=tf.constant(DETECTION_SCORE_THRESHOLD, tf.float32),
            iou_threshold=iou,
        )
        found = {key: value.numpy() for key, value in found.items()}
        for row, count in enumerate(found["count"]):
            classes = to_split[found["classes"][row, :count].astype(np.int64)]
            kept = classes >= 0
            predictions.append(
                Detections(found["boxes"][row, :count][kept], found["scores"][row, :count][kept], classes[kept])
            )
    truths = list(held_out.targets)
    metrics = evaluate_detections(predictions, truths, num_classes=len(held_out.class_names))
    boxes = np.bincount(np.concatenate([truth.classes for truth in truths]), minlength=len(held_out.class_names))
    groups = {
        name: (value, int(count))
        for name, value, count in zip(held_out.class_names, metrics["per_class_ap_50"], boxes)
        if value is not None
    }
    return Scores(metrics["map_50"], groups)


SCORERS: dict[Task, Callable[[LoadedModel, HeldOut], Scores]] = {
    Task.CLASSIFIER: _score_classifier,
    Task.SEQ2SEQ: _score_seq2seq,
    Task.DETECTOR: _score_detector,
}


def _index(names: Sequence[str], name: str) -> int:
    return names.index(name) if name in names else -1


def _group_means(correct: np.ndarray, groups: Sequence[str]) -> dict[str, tuple[float, int]]:
    keys = np.array(groups)
    return {
        str(group): (float(correct[keys == group].mean()), int((keys == group).sum())) for group in sorted(set(groups))
    }


def _batches(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), BATCH_SIZE):
        yield items[start : start + BATCH_SIZE]


def _same_size_batches(images: Sequence[np.ndarray]) -> Iterator[list[np.ndarray]]:
    batch: list[np.ndarray] = []
    for image in images:
        if batch and (len(batch) == BATCH_SIZE or batch[0].shape != image.shape):
            yield batch
            batch = []
        batch.append(image)
    if batch:
        yield batch


def default_call(model: LoadedModel, example: Any) -> Callable[[], Any]:
    """One request at batch 1 to the version's default signature (the one TF Serving calls without a name)."""
    function = model.signature(Role.DEFAULT)
    _, specs = function.structured_input_signature
    (name, spec), *_ = ((key, spec) for key, spec in specs.items() if spec.shape.rank)
    value = tf.constant([example], spec.dtype)
    return lambda: function(**{name: value})


LATENCY_ROUNDS = 3


def latency_p99_ms(calls: dict[Any, Callable[[], Any]], count: int) -> dict[Any, float]:
    """Each call's p99 wall time over `count` runs, interleaved so that both see the same machine load; of
    LATENCY_ROUNDS such rounds the lowest p99 counts (timeit's convention, as in benchmarks/: the round least
    disturbed by other processes, so one burst of another job's work does not decide the verdict)."""
    for call in calls.values():  # the first calls trace and allocate: not what a served request pays
        for _ in range(3):
            call()
    rounds: list[dict[Any, float]] = []
    for _ in range(LATENCY_ROUNDS):
        times: dict[Any, list[float]] = {key: [] for key in calls}
        for _ in range(count):
            for key, call in calls.items():
                started = time.perf_counter()
                call()
                times[key].append((time.perf_counter() - started) * 1000)
        rounds.append({key: float(np.percentile(values, 99)) for key, values in times.items()})
    return {key: min(figures[key] for figures in rounds) for key in calls}


def image_classes(data: Any) -> HeldOut:
    """An image classification dataset's test split (pipelines.data.image_data.ImageDataset)."""
    return HeldOut(data.test.images, data.test.labels, tuple(data.class_names))
