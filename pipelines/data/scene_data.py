"""Object detection data: "digit scenes" generated offline, plus COCO and Pascal VOC loaders.

A digit scene is a `size` x `size` grayscale canvas holding 1-6 handwritten digits from
scikit-learn's bundled set (nothing is downloaded). Each digit is cropped to its ink,
upscaled with a bicubic filter to a random height of `min_side`..`max_side` pixels (with a
slight random aspect change), given a random brightness and pasted with `max()` over a
background of a random gray gradient plus Gaussian noise. Digits may overlap a little, never
by more than `max_overlap` of the smaller box, so each one stays mostly visible.

Boxes are `[x1, y1, x2, y2]` float32 pixel edges: a box covers the pixel columns
`x1 .. x2 - 1` and rows `y1 .. y2 - 1`, and for generated scenes it is exactly the extent
of the pixels the digit's ink covers. Classes are int32 ids into `class_names`.

Usage:

    data = make_digit_scenes(2000, 200, 400, seed=0)   # DetectionDataset of Scene lists
    train = as_tf_dataset(data.train)                  # {"image", "boxes", "classes"}, K varies
    train = train.enumerate().map(lambda i, x: augment(x["image"], x["boxes"], x["classes"], seed=[7, i]))
    coco = load_dataset("coco:/data/shapes")           # /data/shapes/annotations.json + images/
    voc = load_dataset("voc:/data/VOC2012")            # Annotations/*.xml + JPEGImages/
    test = load_tfds("test", data_dir="/tmp/tfds", config="small")

    python -m pipelines.data.scene_data --samples 16 --out scenes.png
    python -m pipelines.data.scene_data --build-tfds /tmp/tfds --config small

Importing this module registers the TFDS builder "digit_scenes", so
`tfds.load("digit_scenes/small", data_dir=...)` works once prepared. Scenes depend on
NumPy's PCG64 streams and Pillow's bicubic filter: bump `DigitScenes.VERSION` if either
changes what a seed renders.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import xml.etree.ElementTree as ElementTree
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from models.image_graph import border_mean
from pipelines.data import generated_tfds
from pipelines.data.image_data import Split, load_digits, read_image

DIGIT_NAMES = [str(digit) for digit in range(10)]
SPEC_FORMS = (
    '"digit-scenes", "tfds:CONFIG" (digit_scenes/CONFIG), "coco:DIR" (DIR/annotations.json + DIR/images/) '
    'or "voc:DIR" (VOC layout)'
)

# Pixels of an upscaled digit below this are dropped: bicubic filtering leaves a faint halo
# that nobody would count as ink, and keeping it would make boxes looser than the digit.
INK_THRESHOLD = 32
# Source rows/columns whose brightest pixel is below this (0-255) are cropped before upscaling,
# so the upscaled edge rows stay well above INK_THRESHOLD and the box height is the drawn one.
SOURCE_INK_THRESHOLD = 128
MAX_ASPECT_JITTER = 0.15
MIN_BRIGHTNESS = 0.75
MAX_BACKGROUND_LEVEL = 100.0
MAX_GRADIENT = 50.0
MAX_NOISE_SIGMA = 10.0
PLACEMENT_TRIES = 50


@dataclass
class Scene:
    image: np.ndarray  # (H, W, C) uint8
    boxes: np.ndarray  # (K, 4) float32 [x1, y1, x2, y2] pixel edges
    classes: np.ndarray  # (K,) int32 ids into the dataset's class_names


@dataclass
class DetectionDataset:
    train: list[Scene]
    dev: list[Scene]
    test: list[Scene]
    class_names: list[str]
    name: str

    def summary(self) -> dict:
        scenes = self.train + self.dev + self.test
        counts = np.array([len(scene.classes) for scene in scenes])
        boxes = np.concatenate([scene.boxes for scene in scenes]) if scenes else np.zeros((0, 4), np.float32)
        widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        classes = Counter(int(label) for scene in scenes for label in scene.classes)
        return {
            "name": self.name,
            "sizes": {"train": len(self.train), "dev": len(self.dev), "test": len(self.test)},
            "boxes_per_image": _stats(counts),
            "box_width": _stats(widths),
            "box_height": _stats(heights),
            "class_counts": {name: classes.get(index, 0) for index, name in enumerate(self.class_names)},
        }


def _stats(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {"min": 0.0, "mean": 0.0, "max": 0.0}
    return {"min": float(np.min(values)), "mean": round(float(np.mean(values)), 3), "max": float(np.max(values))}


# --- Digit scenes ---------------------------------------------------------------------------


def _ink_extent(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) edges of the True pixels of a 2-D mask, which must have some."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _digit_patch(digit: np.ndarray, height: int, width_scale: float, max_width: int) -> np.ndarray:
    """The digit's ink upscaled to `height` rows, faint pixels zeroed, cropped tight to its ink."""
    x1, y1, x2, y2 = _ink_extent(digit >= SOURCE_INK_THRESHOLD)
    ink = digit[y1:y2, x1:x2]
    width = int(np.clip(round(height * ink.shape[1] / ink.shape[0] * width_scale), 1, max_width))
    patch = np.asarray(Image.fromarray(ink).resize((width, height), Image.Resampling.BICUBIC))
    patch = np.where(patch >= INK_THRESHOLD, patch, 0).astype(np.uint8)
    x1, y1, x2, y2 = _ink_extent(patch > 0)
    return patch[y1:y2, x1:x2]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A float gray canvas: random level, a linear gradient in a random direction, Gaussian noise."""
    level = rng.uniform(0, MAX_BACKGROUND_LEVEL)
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:size, 0:size] / max(size - 1, 1) - 0.5
    gradient = rng.uniform(0, MAX_GRADIENT) * (xs * math.cos(angle) + ys * math.sin(angle))
    noise = rng.normal(0, rng.uniform(0, MAX_NOISE_SIGMA), (size, size))
    return level + gradient + noise


def _overlap(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Intersection over the smaller box's area, for `box` against each of `others`."""
    width = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    height = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    other_areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return width * height / np.minimum(area, other_areas)


def render_scene(
    rng: np.random.Generator,
    digits: Split,
    *,
    size: int = 128,
    min_digits: int = 1,
    max_digits: int = 6,
    min_side: int = 12,
    max_side: int = 48,
    max_overlap: float = 0.3,
    plain: bool = False,
) -> Scene:
    """One scene of digits drawn from `digits` (e.g. `load_digits().train`), each boxed exactly.

    Each digit's height is drawn from `min_side..max_side`; its width follows the digit's
    shape and never exceeds `max_side`. A digit may cover at most `max_overlap` of a smaller
    earlier box (or be covered by that much), which also bounds every IoU by `max_overlap`;
    a digit that finds no such spot in `PLACEMENT_TRIES` draws is left out, so a crowded
    scene can hold fewer than the drawn count (never fewer than one).
    `plain` renders on black without noise, so the pixels above 0 are exactly the ink.
    """
    if not 1 <= min_digits <= max_digits:
        raise ValueError(f"need 1 <= min_digits <= max_digits, got {min_digits} and {max_digits}")
    if not 1 <= min_side <= max_side <= size:
        raise ValueError(f"need 1 <= min_side <= max_side <= size, got {min_side}, {max_side}, {size}")
    canvas = np.zeros((size, size)) if plain else _background(rng, size)
    boxes, classes = np.zeros((0, 4), np.float32), []
    for _ in range(rng.integers(min_digits, max_digits + 1)):
        index = rng.integers(len(digits.labels))
        height = int(rng.integers(min_side, max_side + 1))
        width_scale = 1 + rng.uniform(-MAX_ASPECT_JITTER, MAX_ASPECT_JITTER)
        patch = _digit_patch(digits.images[index, ..., 0], height, width_scale, max_side)
        brightness = rng.uniform(MIN_BRIGHTNESS, 1.0)
        for _ in range(PLACEMENT_TRIES):
            x = int(rng.integers(size - patch.shape[1] + 1))
            y = int(rng.integers(size - patch.shape[0] + 1))
            box = np.array([x, y, x + patch.shape[1], y + patch.shape[0]], np.float32)
            if not len(boxes) or _overlap(box, boxes).max() <= max_overlap:
                break
        else:
            continue
        region = canvas[y : y + patch.shape[0], x : x + patch.shape[1]]
        # Zeroed halo pixels must leave the background alone, hence only where there is ink.
        np.maximum(region, patch * brightness, out=region, where=patch > 0)
        boxes = np.concatenate([boxes, box[np.newaxis]])
        classes.append(int(digits.labels[index]))
    image = np.clip(np.round(canvas), 0, 255).astype(np.uint8)[..., np.newaxis]
    return Scene(image, boxes, np.array(classes, np.int32))


def make_digit_scenes(
    train_size: int = 2000, dev_size: int = 200, test_size: int = 400, *, size: int = 128, seed: int = 0
) -> DetectionDataset:
    """Scenes whose digits come from the matching split of `load_digits(seed=seed)`.

    Test scenes therefore only show digit images that no train scene uses. Each split has
    its own generator, so a split does not change when another split's size does.
    """
    sources = load_digits(seed=seed)
    splits = {}
    for number, (name, count, digits) in enumerate(
        [("train", train_size, sources.train), ("dev", dev_size, sources.dev), ("test", test_size, sources.test)]
    ):
        rng = np.random.default_rng([seed, number])
        splits[name] = [render_scene(rng, digits, size=size) for _ in range(count)]
    return DetectionDataset(**splits, class_names=list(DIGIT_NAMES), name="digit-scenes")


# --- COCO and Pascal VOC ----------------------------------------------------------------------


def _mode(channels: int) -> str:
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    return "L" if channels == 1 else "RGB"


def _scene(image: np.ndarray, boxes: list[list[float]], classes: list[int]) -> Scene:
    return Scene(image, np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int32))


def load_coco(annotations_json: Path, images_dir: Path, *, channels: int = 1) -> tuple[list[Scene], list[str]]:
    """COCO "instances" annotations: one scene per listed image, in image id order.

    COCO boxes `[x, y, width, height]` become `[x, y, x + width, y + height]`; category ids
    become 0..C-1 in sorted id order. Crowd regions (`iscrowd: 1`) are skipped: they mark
    groups, not instances a detector should box one by one.
    """
    mode = _mode(channels)
    coco = json.loads(Path(annotations_json).read_text())
    categories = sorted(coco["categories"], key=lambda category: category["id"])
    class_ids = {category["id"]: index for index, category in enumerate(categories)}
    objects: dict[int, list[dict]] = {}
    for annotation in coco.get("annotations", []):
        if not annotation.get("iscrowd", 0):
            objects.setdefault(annotation["image_id"], []).append(annotation)
    scenes = []
    for info in sorted(coco["images"], key=lambda image: image["id"]):
        image = read_image(Path(images_dir) / info["file_name"], mode, None)
        found = objects.get(info["id"], [])
        boxes = [[x, y, x + width, y + height] for x, y, width, height in (item["bbox"] for item in found)]
        scenes.append(_scene(image, boxes, [class_ids[item["category_id"]] for item in found]))
    return scenes, [category["name"] for category in categories]


def _voc_objects(root: ElementTree.Element) -> Iterator[tuple[str, list[float]]]:
    for item in root.iter("object"):
        box = item.find("bndbox")
        xmin, ymin, xmax, ymax = (float(box.findtext(tag)) for tag in ("xmin", "ymin", "xmax", "ymax"))
        # VOC counts pixels from 1 and includes xmax, so pixel columns xmin..xmax are edges xmin - 1 .. xmax.
        yield item.findtext("name").strip(), [xmin - 1, ymin - 1, xmax, ymax]


def load_voc(folder: Path, *, channels: int = 1) -> tuple[list[Scene], list[str]]:
    """A Pascal VOC folder: `Annotations/*.xml` naming images in `JPEGImages/`, in file name order.

    Class names are every object name, sorted; "difficult" objects are kept as ordinary ones.
    """
    mode = _mode(channels)
    folder = Path(folder)
    documents = [ElementTree.parse(path).getroot() for path in sorted((folder / "Annotations").glob("*.xml"))]
    if not documents:
        raise ValueError(f"{folder / 'Annotations'} has no .xml files")
    class_names = sorted({name for root in documents for name, _ in _voc_objects(root)})
    class_ids = {name: index for index, name in enumerate(class_names)}
    scenes = []
    for root in documents:
        image = read_image(folder / "JPEGImages" / root.findtext("filename").strip(), mode, None)
        found = list(_voc_objects(root))
        scenes.append(_scene(image, [box for _, box in found], [class_ids[name] for name, _ in found]))
    return scenes, class_names


def split_scenes(
    scenes: list[Scene], *, seed: int = 0, dev_fraction: float = 0.15, test_fraction: float = 0.15
) -> tuple[list[Scene], list[Scene], list[Scene]]:
    """A seeded shuffle cut into train, dev and test."""
    order = np.random.default_rng(seed).permutation(len(scenes))
    test_count = round(len(scenes) * test_fraction)
    dev_count = round(len(scenes) * dev_fraction)
    shuffled = [scenes[index] for index in order]
    return shuffled[test_count + dev_count :], shuffled[test_count : test_count + dev_count], shuffled[:test_count]


def load_dataset(
    spec: str,
    *,
    seed: int = 0,
    size: int = 128,
    channels: int = 1,
    sizes: tuple[int, int, int] = (2000, 200, 400),
    data_dir: str | None = None,
) -> DetectionDataset:
    """Loads `spec`: "digit-scenes", "tfds:CONFIG" (the digit_scenes builder), "coco:DIR" or "voc:DIR".

    `size` and `sizes` (train, dev, test scenes) only apply to generated digit scenes, `data_dir` to
    TFDS, `channels` to COCO and VOC images.
    """
    if spec == "digit-scenes":
        return make_digit_scenes(*sizes, size=size, seed=seed)
    if spec.startswith("tfds:"):
        if not data_dir:
            raise ValueError("a tfds: dataset needs data_dir (the TFDS data_dir to build into or read from)")
        config = spec.removeprefix("tfds:")
        splits = {
            name: scenes_from_tfds(load_tfds(split, data_dir=data_dir, config=config))
            for name, split in generated_tfds.SPLITS.items()
        }
        return DetectionDataset(**splits, class_names=list(DIGIT_NAMES), name=f"digit_scenes/{config}")
    if spec.startswith("coco:"):
        folder = Path(spec.removeprefix("coco:"))
        scenes, class_names = load_coco(folder / "annotations.json", folder / "images", channels=channels)
    elif spec.startswith("voc:"):
        scenes, class_names = load_voc(Path(spec.removeprefix("voc:")), channels=channels)
    else:
        raise ValueError(f"Unknown detection dataset spec {spec!r}; expected {SPEC_FORMS}")
    train, dev, test = split_scenes(scenes, seed=seed)
    return DetectionDataset(train, dev, test, class_names, spec)


# --- tf.data ----------------------------------------------------------------------------------


def as_tf_dataset(scenes: list[Scene]) -> tf.data.Dataset:
    """Unbatched {"image": uint8 (H, W, C), "boxes": float32 (K, 4), "classes": int32 (K,)}.

    K varies per image, so batch with `padded_batch` (or `ragged_batch`). H and W are static
    when every scene has the same size.
    """
    if not scenes:
        raise ValueError("no scenes to make a dataset of")
    shapes = {scene.image.shape for scene in scenes}
    image_shape = shapes.pop() if len(shapes) == 1 else (None, None, scenes[0].image.shape[2])

    def generate() -> Iterator[dict[str, np.ndarray]]:
        for scene in scenes:
            yield {"image": scene.image, "boxes": scene.boxes, "classes": scene.classes}

    return tf.data.Dataset.from_generator(
        generate,
        output_signature={
            "image": tf.TensorSpec(image_shape, tf.uint8),
            "boxes": tf.TensorSpec((None, 4), tf.float32),
            "classes": tf.TensorSpec((None,), tf.int32),
        },
    ).apply(tf.data.experimental.assert_cardinality(len(scenes)))  # so steps per epoch are known


def augment(
    image: tf.Tensor,
    boxes: tf.Tensor,
    classes: tf.Tensor,
    *,
    seed: tf.Tensor | Sequence[int],
    scale_range: tuple[float, float] = (0.75, 1.25),
    max_shift: float = 0.15,
    min_visible: float = 0.5,
) -> dict[str, tf.Tensor]:
    """Random zoom (`scale_range`) about the centre plus a shift of up to `max_shift` of the size.

    The output keeps the input's size; uncovered areas take the mean of the image's border,
    so they look like background. Boxes move with the pixels, are clipped to the image, and
    are dropped (with their classes) when less than `min_visible` of their area is left.
    There are no flips: they change what a digit means. `seed` is a stateless seed of two
    ints, e.g. `[base_seed, example_index]`, so results do not depend on call order.
    """
    seeds = tf.random.split(tf.cast(seed, tf.int64), 2)
    scale = tf.random.stateless_uniform([], seeds[0], scale_range[0], scale_range[1])
    size = tf.cast(tf.shape(image)[:2], tf.float32)  # (height, width)
    shift = tf.random.stateless_uniform([2], seeds[1], -max_shift, max_shift) * size  # (dy, dx)

    # Edge coordinates: output = scale * (input - centre) + centre + shift, per axis.
    centre = size / 2
    offset = centre + shift - scale * centre  # (y, x)
    # The transform maps output pixel indices to input ones; index i is centred at edge i + 0.5.
    to_input = (0.5 - offset - 0.5 * scale) / scale
    transform = tf.stack([1 / scale, 0.0, to_input[1], 0.0, 1 / scale, to_input[0], 0.0, 0.0])[tf.newaxis]
    pixels = tf.cast(image, tf.float32)[tf.newaxis]
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=pixels,
        transforms=transform,
        output_shape=tf.shape(image)[:2],
        fill_value=border_mean(pixels)[0],
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )[0]
    warped = tf.cast(tf.clip_by_value(tf.round(warped), 0, 255), tf.uint8)

    xy_scale_offset = tf.stack([offset[1], offset[0], offset[1], offset[0]])
    moved = boxes * scale + xy_scale_offset
    limits = tf.stack([size[1], size[0], size[1], size[0]])
    clipped = tf.clip_by_value(moved, 0.0, limits)
    area = (moved[:, 2] - moved[:, 0]) * (moved[:, 3] - moved[:, 1])
    visible = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = visible >= min_visible * area
    return {
        "image": warped,
        "boxes": tf.boolean_mask(clipped, keep),
        "classes": tf.boolean_mask(classes, keep),
    }


# --- TFDS builder -------------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)  # TFDS's BuilderConfig is a mutable dataclass; keep its identity equality
class DigitScenesConfig(generated_tfds.SplitSizes):
    size: int = 128


class DigitScenes(generated_tfds.GeneratedDatasetBuilder):
    """Scenes of 1-6 scikit-learn handwritten digits with exact boxes, generated offline."""

    BUILDER_CONFIGS: ClassVar[list[DigitScenesConfig]] = [
        DigitScenesConfig(
            name="default",
            description="2000 / 200 / 400 scenes of 128x128.",
            train_size=2000,
            dev_size=200,
            test_size=400,
        ),
        DigitScenesConfig(
            name="small", description="200 / 40 / 40 scenes of 128x128.", train_size=200, dev_size=40, test_size=40
        ),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.size
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(size, size, 1)),
                    "objects": tfds.features.Sequence(
                        {"bbox": tfds.features.BBoxFeature(), "label": tfds.features.ClassLabel(names=DIGIT_NAMES)}
                    ),
                }
            ),
            # Keep make_digit_scenes' order, so a split reads back exactly as generated.
            disable_shuffling=True,
        )

    def generate(self, config: DigitScenesConfig) -> DetectionDataset:
        return make_digit_scenes(
            config.train_size, config.dev_size, config.test_size, size=config.size, seed=config.seed
        )

    def example(self, scene: Scene) -> dict:
        return {"image": scene.image, "objects": {"bbox": to_tfds_boxes(scene), "label": scene.classes}}


def to_tfds_boxes(scene: Scene) -> np.ndarray:
    """`[x1, y1, x2, y2]` pixels -> TFDS's normalised `[ymin, xmin, ymax, xmax]`."""
    height, width = scene.image.shape[:2]
    x1, y1, x2, y2 = scene.boxes.T
    return np.stack([y1 / height, x1 / width, y2 / height, x2 / width], axis=-1).astype(np.float32)


def scenes_from_tfds(dataset: tf.data.Dataset) -> list[Scene]:
    """TFDS examples (normalised yxyx boxes) back to Scenes (xyxy pixel boxes)."""
    scenes = []
    for example in dataset.as_numpy_iterator():
        height, width = example["image"].shape[:2]
        ymin, xmin, ymax, xmax = example["objects"]["bbox"].reshape(-1, 4).T
        boxes = np.stack([xmin * width, ymin * height, xmax * width, ymax * height], axis=-1)
        scenes.append(Scene(example["image"], boxes.astype(np.float32), example["objects"]["label"].astype(np.int32)))
    return scenes


def load_tfds(split: str, *, data_dir: str, config: str = "default") -> tf.data.Dataset:
    """`tfds.load("digit_scenes/<config>")`, preparing it into `data_dir` first if needed.

    Splits are "train", "validation" (the `dev` split) and "test"; examples are
    {"image": uint8 (H, W, 1), "objects": {"bbox": (K, 4) normalised ymin/xmin/ymax/xmax,
    "label": (K,) int64}}, in `make_digit_scenes` order.
    """
    return generated_tfds.load_split(DigitScenes, split, data_dir=data_dir, config=config)


# --- CLI -----------------------------------------------------------------------------------------


def save_contact_sheet(scenes: list[Scene], class_names: list[str], path: Path, *, columns: int = 4) -> Path:
    """A PNG grid of scenes with their boxes and class names drawn on."""
    # matplotlib is only needed here, so importing this module does not load it.
    from pipelines.data.figures import GROUND_TRUTH_COLOR, draw_boxes, plt, save_figure, show_image

    rows = max(1, math.ceil(len(scenes) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, scene in zip(axes.flat, scenes):
        show_image(axis, scene.image)
        draw_boxes(axis, scene.boxes, [class_names[label] for label in scene.classes], color=GROUND_TRUTH_COLOR)
    fig.tight_layout()
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.data.scene_data",
        description="Generate 'digit scenes' (handwritten digits with boxes) for object detection.",
    )
    generated_tfds.add_cli_arguments(
        parser, DigitScenes, samples_help="render N scenes into a contact sheet (needs --out)"
    )
    parser.add_argument("--out", type=Path, metavar="PNG", help="where --samples saves its contact sheet")
    parser.add_argument("--size", type=int, default=128, help="canvas size for --samples (default: %(default)s)")
    args = parser.parse_args(argv)

    if args.samples is not None:
        if args.out is None:
            parser.error("--samples needs --out PNG")
        rng = np.random.default_rng(args.seed)
        digits = load_digits(seed=args.seed).train
        scenes = [render_scene(rng, digits, size=args.size) for _ in range(args.samples)]
        path = save_contact_sheet(scenes, DIGIT_NAMES, args.out)
        print(f"{len(scenes)} scenes, {sum(len(s.classes) for s in scenes)} digits -> {path}")
        return 0

    return generated_tfds.build_and_report(DigitScenes, args.build_tfds, args.config)


if __name__ == "__main__":
    raise SystemExit(main())
