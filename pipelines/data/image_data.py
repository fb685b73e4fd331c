"""Image classification data: load a dataset into uint8 arrays, split it, feed it to Keras.

Every loader returns an `ImageDataset` whose splits hold `(N, H, W, C)` uint8
images (0-255) and int64 class ids, so models and exporters never need to know
where the pixels came from. `make_tf_dataset` turns a split into a batched
`tf.data.Dataset` of float32 images in 0-255; scaling is left to the model
(a `keras.layers.Normalization` set from `pixel_statistics`), so a
SavedModel accepts raw pixels.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import sklearn.datasets
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image
from sklearn.model_selection import train_test_split

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SPEC_FORMS = '"digits", "glyphs", "folder:PATH", "tfds:NAME" or the path of an existing directory'


@dataclass(frozen=True)
class Split:
    """Images `(N, H, W, C)` uint8 in 0-255 and their int64 class ids `(N,)`."""

    images: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class ImageDataset:
    """A named image classification dataset with train, dev and test splits."""

    name: str
    class_names: list[str]
    train: Split
    dev: Split
    test: Split

    @property
    def image_shape(self) -> tuple[int, int, int]:
        height, width, channels = self.train.images.shape[1:]
        return int(height), int(width), int(channels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def fingerprint(self) -> str:
        """SHA-256 over the class names and every split's arrays."""
        digest = hashlib.sha256()
        digest.update("\n".join(self.class_names).encode())
        for split in (self.train, self.dev, self.test):
            for array in (split.images, split.labels):
                # Shape and dtype go in too: equal bytes can hold different arrays.
                digest.update(f"{array.dtype.str}{array.shape}".encode())
                digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()

    def summary(self) -> dict:
        return {
            "name": self.name,
            "fingerprint": self.fingerprint(),
            "image_shape": list(self.image_shape),
            "num_classes": self.num_classes,
            "sizes": {
                "train": len(self.train.labels),
                "dev": len(self.dev.labels),
                "test": len(self.test.labels),
            },
        }


def _carve(indices: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Splits `indices` into (rest, carved), stratified on `labels[indices]`."""
    if fraction == 0:
        return indices, indices[:0]
    rest, carved = train_test_split(
        indices,
        test_size=fraction,
        random_state=seed,
        stratify=labels[indices],
    )
    return rest, carved


def _subset(images: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> Split:
    return Split(images=images[indices], labels=labels[indices])


def stratified_split(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    dev_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> tuple[Split, Split, Split]:
    """Splits into train, dev and test with the class balance kept in each."""
    if not (dev_fraction >= 0 and test_fraction >= 0 and dev_fraction + test_fraction < 1):
        raise ValueError(
            "dev_fraction and test_fraction must be >= 0 and sum to less than 1, "
            f"got {dev_fraction} and {test_fraction}"
        )
    labels = np.asarray(labels, dtype=np.int64)
    indices = np.arange(len(labels))
    rest, test = _carve(indices, labels, test_fraction, seed)
    # dev_fraction is of the whole dataset, so rescale it to what is left.
    train, dev = _carve(rest, labels, dev_fraction / (1 - test_fraction), seed)
    return (
        _subset(images, labels, train),
        _subset(images, labels, dev),
        _subset(images, labels, test),
    )


def load_digits(*, seed: int = 0, dev_fraction: float = 0.15, test_fraction: float = 0.15) -> ImageDataset:
    """scikit-learn's bundled 8x8 digits (1,797 images), as 8-bit grayscale."""
    digits = sklearn.datasets.load_digits()
    # The bundled pixels are 0..16; rescale so they look like any other image.
    images = np.round(digits.images * 255 / 16).astype(np.uint8)[..., np.newaxis]
    train, dev, test = stratified_split(
        images,
        digits.target,
        dev_fraction=dev_fraction,
        test_fraction=test_fraction,
        seed=seed,
    )
    class_names = [str(name) for name in digits.target_names]
    return ImageDataset("digits", class_names, train, dev, test)


def read_image(path: Path, mode: str, image_size: tuple[int, int] | None) -> np.ndarray:
    """Decodes one file to `(H, W, C)` uint8; `image_size` is (height, width)."""
    try:
        with Image.open(path) as image:
            image = image.convert(mode)
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"Cannot decode image file {path}: {error}") from error
    if image_size is not None and image.size != (image_size[1], image_size[0]):
        image = image.resize((image_size[1], image_size[0]), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8).reshape(image.height, image.width, -1)


def _class_files(root: Path) -> dict[str, list[Path]]:
    if not root.is_dir():
        raise ValueError(f"Image folder {root} does not exist or is not a directory")
    # Hidden folders are tool debris (.ipynb_checkpoints, .DS_Store dirs), not classes.
    class_dirs = sorted(path for path in root.iterdir() if path.is_dir() and not path.name.startswith("."))
    if len(class_dirs) < 2:
        raise ValueError(
            f"Image folder {root} needs at least 2 class sub-folders "
            f"(root/CLASS_NAME/*.png|*.jpg|*.jpeg), found {len(class_dirs)}"
        )
    class_files = {}
    for class_dir in class_dirs:
        files = sorted(path for path in class_dir.iterdir() if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"Class folder {class_dir} has no .png, .jpg or .jpeg images")
        class_files[class_dir.name] = files
    return class_files


def load_image_folder(
    root: str | Path,
    *,
    image_size: tuple[int, int] | None = None,
    channels: int = 1,
    seed: int = 0,
    dev_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> ImageDataset:
    """Images laid out as `root/CLASS_NAME/*.png|*.jpg|*.jpeg`, one folder per class.

    `image_size` is (height, width); by default every image is resized to the
    size of the first one.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    mode = "L" if channels == 1 else "RGB"
    root = Path(root)
    class_files = _class_files(root)

    images, labels = [], []
    for class_id, files in enumerate(class_files.values()):
        for path in files:
            image = read_image(path, mode, image_size)
            image_size = image_size or image.shape[:2]
            images.append(image)
            labels.append(class_id)

    train, dev, test = stratified_split(
        np.stack(images),
        np.array(labels, dtype=np.int64),
        dev_fraction=dev_fraction,
        test_fraction=test_fraction,
        seed=seed,
    )
    return ImageDataset(f"folder:{root}", list(class_files), train, dev, test)


def _tfds_builder(name: str, data_dir: str | Path | None) -> tfds.core.DatasetBuilder:
    """The builder for data already prepared in `data_dir`; never downloads."""
    where = data_dir or "the default TFDS data_dir"
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise FileNotFoundError(
            f"TFDS dataset {name!r} was not found in {where}; downloads are disabled, so prepare it there first"
        ) from error
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"TFDS dataset {name!r} was not found in {where} (looked in "
            f"{builder.data_path}); downloads are disabled, so prepare it there first"
        )
    return builder


def _tfds_arrays(dataset: tf.data.Dataset, image_size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    if image_size is not None:

        def resize(image, label):
            image = tf.image.resize(image, image_size)
            return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8), label

        dataset = dataset.map(resize)
    images, labels = [], []
    for image_batch, label_batch in dataset.batch(4096).as_numpy_iterator():
        images.append(image_batch)
        labels.append(label_batch)
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)


def load_tfds(
    name: str,
    *,
    data_dir: str | Path | None = None,
    image_size: tuple[int, int] | None = None,
    seed: int = 0,
    dev_fraction: float = 0.15,
) -> ImageDataset:
    """A TFDS image dataset that is already prepared in `data_dir`.

    Dev is carved out of the "train" split; test is the "test" split, or is
    carved out of "train" as well when there is none.
    """
    builder = _tfds_builder(name, data_dir)
    image_shape = builder.info.features["image"].shape
    if image_size is None and None in image_shape[:2]:
        raise ValueError(f"TFDS dataset {name!r} has images of varying size; pass image_size")
    splits = builder.as_dataset(as_supervised=True)

    images, labels = _tfds_arrays(splits["train"], image_size)
    if "test" in splits:
        train, dev, _ = stratified_split(images, labels, dev_fraction=dev_fraction, test_fraction=0, seed=seed)
        test = Split(*_tfds_arrays(splits["test"], image_size))
    else:
        train, dev, test = stratified_split(
            images, labels, dev_fraction=dev_fraction, test_fraction=dev_fraction, seed=seed
        )
    class_names = list(builder.info.features["label"].names)
    return ImageDataset(f"tfds:{name}", class_names, train, dev, test)


def load_dataset(
    spec: str,
    *,
    data_dir: str | Path | None = None,
    image_size: tuple[int, int] | None = None,
    channels: int = 1,
    seed: int = 0,
    train_size: int | None = None,
) -> ImageDataset:
    """Loads `spec`: "digits", "glyphs", "folder:PATH", "tfds:NAME" or a directory path.

    "glyphs" is `glyph_data.make_glyph_dataset(seed=seed)`: 62 classes of printed characters
    imaged like the digits, generated (30,000 training images take about 35 s on 2 cores).
    `data_dir` is only used by TFDS specs and `channels` only by folder specs; digits and
    glyphs are always 8x8 grayscale. `train_size` keeps the first N training images (already
    shuffled); the glyph generator then draws only N.
    """
    if train_size is not None and train_size < 1:
        raise ValueError(f"train_size must be a positive number of images, got {train_size}")
    if spec == "glyphs":
        from pipelines.data import glyph_data  # imported here: glyph_data imports this module

        _check_8x8(spec, image_size)
        return glyph_data.make_glyph_dataset(**({"train_size": train_size} if train_size else {}), seed=seed)
    return _first_training_images(_load(spec, data_dir, image_size, channels, seed), train_size)


def _check_8x8(spec: str, image_size: tuple[int, int] | None) -> None:
    if image_size is not None and tuple(image_size) != (8, 8):
        raise ValueError(f"{spec} images are 8x8 and cannot be resized to {image_size}")


def _load(
    spec: str, data_dir: str | Path | None, image_size: tuple[int, int] | None, channels: int, seed: int
) -> ImageDataset:
    if spec == "digits":
        _check_8x8(spec, image_size)
        return load_digits(seed=seed)
    if spec.startswith("folder:"):
        return load_image_folder(spec.removeprefix("folder:"), image_size=image_size, channels=channels, seed=seed)
    if spec.startswith("tfds:"):
        return load_tfds(spec.removeprefix("tfds:"), data_dir=data_dir, image_size=image_size, seed=seed)
    if Path(spec).is_dir():
        return load_image_folder(spec, image_size=image_size, channels=channels, seed=seed)
    raise ValueError(f"Unknown dataset spec {spec!r}; expected {SPEC_FORMS}")


def _first_training_images(dataset: ImageDataset, train_size: int | None) -> ImageDataset:
    if train_size is None or train_size >= len(dataset.train.labels):
        return dataset
    train = Split(images=dataset.train.images[:train_size], labels=dataset.train.labels[:train_size])
    return ImageDataset(dataset.name, dataset.class_names, train, dataset.dev, dataset.test)


def pixel_statistics(images: np.ndarray) -> tuple[float, float]:
    """Mean and variance over every pixel, for `keras.layers.Normalization`."""
    if images.size == 0:
        raise ValueError("Cannot compute pixel statistics of an empty image array")
    # float64 accumulation: float32 sums over millions of pixels drift.
    return float(np.mean(images, dtype=np.float64)), float(np.var(images, dtype=np.float64))


def make_tf_dataset(
    split: Split,
    *,
    batch_size: int,
    training: bool,
    seed: int = 0,
    augment: bool = True,
    max_shift: float = 0.1,
    max_rotation_degrees: float = 10.0,
) -> tf.data.Dataset:
    """Batches of (float32 images in 0-255, int64 labels).

    Training batches are reshuffled every epoch and, with `augment`, randomly
    shifted by up to `max_shift` of the image size and rotated by up to
    `max_rotation_degrees`. There are no flips: they change what a digit means.
    """
    dataset = tf.data.Dataset.from_tensor_slices((split.images, split.labels.astype(np.int64))).cache()
    if training:
        dataset = dataset.shuffle(len(split.labels), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size).map(lambda images, labels: (tf.cast(images, tf.float32), labels))
    if training and augment:
        shift = keras.layers.RandomTranslation(max_shift, max_shift, fill_mode="constant", fill_value=0.0, seed=seed)
        # RandomRotation takes its range as a fraction of a full turn; its own
        # seed keeps the angle from mirroring the shift drawn from the same stream.
        rotate = keras.layers.RandomRotation(
            max_rotation_degrees / 360, fill_mode="constant", fill_value=0.0, seed=seed + 1
        )

        def augment_batch(images, labels):
            images = rotate(shift(images, training=True), training=True)
            # Interpolation mixes in-range pixels but float rounding can overshoot.
            return tf.clip_by_value(images, 0.0, 255.0), labels

        # No num_parallel_calls: the layers draw from one seeded random state,
        # and parallel calls would consume it in a nondeterministic order.
        dataset = dataset.map(augment_batch)
    return dataset.prefetch(tf.data.AUTOTUNE)
