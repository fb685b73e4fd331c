"""Tests for pipelines.data.image_data: loaders, splits, fingerprints and tf.data pipelines."""

import json

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from pipelines.data.image_data import (
    ImageDataset,
    Split,
    load_dataset,
    load_digits,
    load_image_folder,
    load_tfds,
    make_tf_dataset,
    pixel_statistics,
    stratified_split,
)

TINY_CLASSES = ["circle", "square", "triangle"]


def _rows(*splits: Split) -> list[tuple[bytes, int]]:
    """Each example as (pixel bytes, label), sorted, to compare splits as multisets."""
    return sorted((image.tobytes(), int(label)) for split in splits for image, label in zip(split.images, split.labels))


# --- digits -----------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> ImageDataset:
    return load_digits(seed=0)


def test_digits_are_8bit_grayscale(digits):
    splits = (digits.train, digits.dev, digits.test)
    assert sum(len(split.labels) for split in splits) == 1797
    for split in splits:
        assert split.images.dtype == np.uint8
        assert split.images.shape[1:] == (8, 8, 1)
        assert split.labels.dtype == np.int64
        assert len(split.images) == len(split.labels)
    all_images = np.concatenate([split.images for split in splits])
    assert all_images.min() == 0
    assert all_images.max() == 255
    assert digits.class_names == [str(i) for i in range(10)]
    assert digits.image_shape == (8, 8, 1)
    assert digits.num_classes == 10


def test_digits_pixels_are_rescaled_bundled_values(digits):
    import sklearn.datasets

    bundled = sklearn.datasets.load_digits()
    expected = np.round(bundled.images * 255 / 16).astype(np.uint8)[..., None]
    original = sorted((image.tobytes(), int(label)) for image, label in zip(expected, bundled.target))
    # Together the splits are exactly the dataset: nothing lost, nothing shared.
    assert _rows(digits.train, digits.dev, digits.test) == original


def test_digits_splits_are_stratified(digits):
    all_labels = np.concatenate([digits.train.labels, digits.dev.labels, digits.test.labels])
    overall = np.bincount(all_labels, minlength=10) / len(all_labels)
    for split in (digits.train, digits.dev, digits.test):
        counts = np.bincount(split.labels, minlength=10)
        assert (counts > 0).all()
        np.testing.assert_allclose(counts / counts.sum(), overall, atol=0.02)
    assert len(digits.dev.labels) == pytest.approx(0.15 * 1797, abs=2)
    assert len(digits.test.labels) == pytest.approx(0.15 * 1797, abs=2)


def test_digits_are_deterministic_per_seed(digits):
    again = load_digits(seed=0)
    for name in ("train", "dev", "test"):
        np.testing.assert_array_equal(getattr(again, name).images, getattr(digits, name).images)
        np.testing.assert_array_equal(getattr(again, name).labels, getattr(digits, name).labels)
    assert again.fingerprint() == digits.fingerprint()

    other = load_digits(seed=1)
    assert not np.array_equal(other.train.images, digits.train.images)
    assert other.fingerprint() != digits.fingerprint()


def test_summary_is_json_serialisable(digits):
    summary = json.loads(json.dumps(digits.summary()))
    assert summary == {
        "name": "digits",
        "fingerprint": digits.fingerprint(),
        "image_shape": [8, 8, 1],
        "num_classes": 10,
        "sizes": {
            "train": len(digits.train.labels),
            "dev": len(digits.dev.labels),
            "test": len(digits.test.labels),
        },
    }
    assert len(summary["fingerprint"]) == 64


def test_fingerprint_changes_with_class_names(digits):
    renamed = ImageDataset("digits", [f"digit {i}" for i in range(10)], digits.train, digits.dev, digits.test)
    assert renamed.fingerprint() != digits.fingerprint()


def test_stratified_split_partitions_indices():
    labels = np.repeat(np.arange(4), 25)
    # Each image holds its own index, so the splits can be checked index by index.
    images = np.arange(100, dtype=np.uint8).reshape(100, 1, 1, 1)
    train, dev, test = stratified_split(images, labels, dev_fraction=0.2, test_fraction=0.2, seed=3)
    ids = [set(split.images.ravel().tolist()) for split in (train, dev, test)]
    assert (len(ids[0]), len(ids[1]), len(ids[2])) == (60, 20, 20)
    assert ids[0] | ids[1] | ids[2] == set(range(100))
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    for split in (train, dev, test):
        np.testing.assert_array_equal(split.labels, labels[split.images.ravel()])
        assert np.bincount(split.labels).tolist() == [len(split.labels) // 4] * 4


def test_stratified_split_rejects_bad_fractions():
    with pytest.raises(ValueError, match="sum to less than 1"):
        stratified_split(np.zeros((10, 1, 1, 1)), np.zeros(10), dev_fraction=0.5, test_fraction=0.5)


# --- image folders ----------------------------------------------------------


@pytest.fixture
def image_folder(tmp_path):
    """3 classes x 8 images of 10x12 (height x width); "square" is saved as JPEG."""
    rng = np.random.default_rng(0)
    root = tmp_path / "shapes"
    # Created out of order to check that classes are sorted by name.
    for class_name in ("triangle", "circle", "square"):
        (root / class_name).mkdir(parents=True)
        for i in range(8):
            pixels = rng.integers(0, 256, size=(10, 12, 3), dtype=np.uint8)
            suffix = ".JPG" if class_name == "square" else ".png"
            Image.fromarray(pixels).save(root / class_name / f"{i}{suffix}")
    (root / "circle" / "notes.txt").write_text("not an image")
    return root


def test_image_folder_loads_sorted_classes(image_folder):
    dataset = load_image_folder(image_folder, seed=0)
    assert dataset.class_names == TINY_CLASSES
    assert dataset.name == f"folder:{image_folder}"
    assert dataset.image_shape == (10, 12, 1)
    splits = (dataset.train, dataset.dev, dataset.test)
    assert sum(len(split.labels) for split in splits) == 24
    for split in splits:
        assert split.images.dtype == np.uint8
        assert split.labels.dtype == np.int64
        assert sorted(set(split.labels.tolist())) == [0, 1, 2]


def test_image_folder_grayscale_matches_pillow(image_folder):
    dataset = load_image_folder(image_folder, dev_fraction=0.25, test_fraction=0.25)
    expected = sorted(
        (np.asarray(Image.open(path).convert("L"))[..., None].tobytes(), class_id)
        for class_id, name in enumerate(TINY_CLASSES)
        for path in (image_folder / name).iterdir()
        if path.suffix != ".txt"
    )
    assert _rows(dataset.train, dataset.dev, dataset.test) == expected


def test_image_folder_resize_and_rgb(image_folder):
    resized = load_image_folder(image_folder, image_size=(6, 5))
    assert resized.image_shape == (6, 5, 1)
    rgb = load_image_folder(image_folder, channels=3)
    assert rgb.image_shape == (10, 12, 3)
    assert rgb.train.images.dtype == np.uint8


def test_image_folder_errors(tmp_path, image_folder):
    with pytest.raises(ValueError, match="does not exist"):
        load_image_folder(tmp_path / "missing")

    single = tmp_path / "single"
    (single / "only").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(single / "only" / "a.png")
    with pytest.raises(ValueError, match="at least 2 class"):
        load_image_folder(single)

    with pytest.raises(ValueError, match="channels"):
        load_image_folder(image_folder, channels=2)

    (image_folder / "square" / "broken.png").write_bytes(b"definitely not a png")
    with pytest.raises(ValueError, match=r"broken\.png"):
        load_image_folder(image_folder)


def test_load_dataset_specs(image_folder):
    assert load_dataset("digits").fingerprint() == load_digits().fingerprint()
    by_prefix = load_dataset(f"folder:{image_folder}", channels=3, image_size=(7, 7))
    assert by_prefix.image_shape == (7, 7, 3)
    by_path = load_dataset(str(image_folder))
    assert by_path.fingerprint() == load_image_folder(image_folder).fingerprint()
    with pytest.raises(ValueError, match="folder:PATH"):
        load_dataset("no-such-spec")


def test_train_size_keeps_the_first_training_images_and_every_dev_and_test_image(image_folder):
    full = load_digits()
    small = load_dataset("digits", train_size=50)
    np.testing.assert_array_equal(small.train.images, full.train.images[:50])
    np.testing.assert_array_equal(small.train.labels, full.train.labels[:50])
    np.testing.assert_array_equal(small.test.images, full.test.images)
    np.testing.assert_array_equal(small.dev.labels, full.dev.labels)
    assert (
        load_dataset(str(image_folder), train_size=10**6).fingerprint() == load_image_folder(image_folder).fingerprint()
    )
    glyphs = load_dataset("glyphs", train_size=62)  # generated: only 62 drawn, one of each class
    assert glyphs.train.images.shape == (62, 8, 8, 1) and sorted(glyphs.train.labels.tolist()) == list(range(62))
    with pytest.raises(ValueError, match="positive number of images"):
        load_dataset("digits", train_size=0)


def test_load_dataset_glyphs_are_8x8_like_the_digits():
    # Generating the default glyphs takes ~35 s (tests/data/test_glyph_data.py renders small ones), so
    # this checks the dispatch through its size check: glyphs, like digits, are never resized.
    with pytest.raises(ValueError, match="glyphs images are 8x8"):
        load_dataset("glyphs", image_size=(16, 16))
    with pytest.raises(ValueError, match='"glyphs"'):
        load_dataset("no-such-spec")


# --- TFDS ---------------------------------------------------------------------


class ImageDataTestTinyShapes(tfds.core.GeneratorBasedBuilder):
    """Deterministic 8x8 grayscale images; defined once here, registered by tfds."""

    VERSION = tfds.core.Version("1.0.0")
    TRAIN_PER_CLASS = 10
    TEST_PER_CLASS = 2

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(8, 8, 1)),
                    "label": tfds.features.ClassLabel(names=TINY_CLASSES),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {
            "train": self._generate_examples(self.TRAIN_PER_CLASS, offset=0),
            "test": self._generate_examples(self.TEST_PER_CLASS, offset=1000),
        }

    def _generate_examples(self, per_class, offset):
        for label in range(len(TINY_CLASSES)):
            for i in range(per_class):
                key = offset + label * 100 + i
                image = np.full((8, 8, 1), label * 100 + i, dtype=np.uint8)
                yield key, {"image": image, "label": label}


class ImageDataTestTrainOnly(ImageDataTestTinyShapes):
    """The same images with no "test" split, so the loader must carve one out."""

    TRAIN_PER_CLASS = 20

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(self.TRAIN_PER_CLASS, offset=0)}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    config = tfds.download.DownloadConfig(try_download_gcs=False)
    for builder_cls in (ImageDataTestTinyShapes, ImageDataTestTrainOnly):
        builder_cls(data_dir=data_dir).download_and_prepare(download_config=config)
    return data_dir


def test_load_tfds_uses_train_and_test_splits(tfds_dir):
    dataset = load_tfds("image_data_test_tiny_shapes", data_dir=tfds_dir, dev_fraction=0.2)
    assert dataset.name == "tfds:image_data_test_tiny_shapes"
    assert dataset.class_names == TINY_CLASSES
    assert dataset.image_shape == (8, 8, 1)
    assert dataset.summary()["sizes"] == {"train": 24, "dev": 6, "test": 6}
    for split in (dataset.train, dataset.dev, dataset.test):
        assert split.images.dtype == np.uint8
        assert split.labels.dtype == np.int64
        # Every pixel encodes label * 100 + index, so labels must match pixels.
        np.testing.assert_array_equal(split.images[:, 0, 0, 0] // 100, split.labels)
    assert sorted(dataset.test.images[:, 0, 0, 0].tolist()) == [0, 1, 100, 101, 200, 201]
    assert np.bincount(dataset.dev.labels).tolist() == [2, 2, 2]


def test_load_tfds_resizes_and_goes_through_load_dataset(tfds_dir):
    dataset = load_dataset("tfds:image_data_test_tiny_shapes", data_dir=tfds_dir, image_size=(4, 6))
    assert dataset.image_shape == (4, 6, 1)
    assert dataset.train.images.dtype == np.uint8
    assert dataset.class_names == TINY_CLASSES
    # A constant image stays constant when resized.
    np.testing.assert_array_equal(dataset.train.images.min(axis=(1, 2, 3)), dataset.train.images.max(axis=(1, 2, 3)))


def test_load_tfds_carves_test_when_there_is_no_test_split(tfds_dir):
    dataset = load_tfds("image_data_test_train_only", data_dir=tfds_dir, dev_fraction=0.2)
    assert dataset.summary()["sizes"] == {"train": 36, "dev": 12, "test": 12}
    assert _rows(dataset.train, dataset.dev, dataset.test) == sorted(
        (np.full((8, 8, 1), label * 100 + i, np.uint8).tobytes(), label) for label in range(3) for i in range(20)
    )


def test_load_tfds_never_downloads(tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("load_tfds tried to download or prepare a dataset")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", forbidden)
    monkeypatch.setattr(tfds.download.DownloadManager, "download", forbidden)
    empty = tmp_path / "empty"
    empty.mkdir()
    # Known to this process but not prepared in data_dir.
    with pytest.raises(FileNotFoundError, match=r"not found in .*downloads are disabled"):
        load_tfds("image_data_test_tiny_shapes", data_dir=empty)
    # Unknown everywhere.
    with pytest.raises(FileNotFoundError, match=r"image_data_test_nowhere.*not found"):
        load_dataset("tfds:image_data_test_nowhere", data_dir=empty)
    assert list(empty.iterdir()) == []


# --- statistics and tf.data -------------------------------------------------


def test_pixel_statistics_are_exact():
    images = np.array([0, 10, 20, 30, 40, 255], dtype=np.uint8).reshape(2, 1, 3, 1)
    mean, variance = pixel_statistics(images)
    expected_mean = (0 + 10 + 20 + 30 + 40 + 255) / 6
    expected_variance = sum((v - expected_mean) ** 2 for v in (0, 10, 20, 30, 40, 255)) / 6
    assert isinstance(mean, float) and isinstance(variance, float)
    assert mean == pytest.approx(expected_mean, rel=1e-12)
    assert variance == pytest.approx(expected_variance, rel=1e-12)


@pytest.fixture(scope="module")
def small_split(digits) -> Split:
    return Split(digits.train.images[:50], digits.train.labels[:50])


def _epoch(dataset) -> tuple[np.ndarray, np.ndarray]:
    images, labels = zip(*dataset.as_numpy_iterator())
    return np.concatenate(images), np.concatenate(labels)


def test_eval_dataset_yields_the_split_in_order(small_split):
    dataset = make_tf_dataset(small_split, batch_size=16, training=False)
    batches = list(dataset.as_numpy_iterator())
    assert [len(labels) for _, labels in batches] == [16, 16, 16, 2]
    first_images, first_labels = batches[0]
    assert first_images.dtype == np.float32 and first_images.shape == (16, 8, 8, 1)
    assert first_labels.dtype == np.int64
    images, labels = _epoch(dataset)
    np.testing.assert_array_equal(images, small_split.images.astype(np.float32))
    np.testing.assert_array_equal(labels, small_split.labels)


def test_training_dataset_augments_within_range(small_split):
    dataset = make_tf_dataset(small_split, batch_size=16, training=True, seed=0)
    images, labels = _epoch(dataset)
    assert images.shape == (50, 8, 8, 1) and images.dtype == np.float32
    assert labels.dtype == np.int64
    assert images.min() >= 0 and images.max() <= 255
    assert sorted(labels.tolist()) == sorted(small_split.labels.tolist())
    originals = {image.tobytes() for image in small_split.images.astype(np.float32)}
    changed = sum(image.tobytes() not in originals for image in images)
    assert changed > 25


def test_training_dataset_is_reproducible_per_seed(small_split):
    def first_epoch(seed):
        return _epoch(make_tf_dataset(small_split, batch_size=16, training=True, seed=seed))

    images, labels = first_epoch(0)
    again_images, again_labels = first_epoch(0)
    np.testing.assert_array_equal(images, again_images)
    np.testing.assert_array_equal(labels, again_labels)
    other_images, _ = first_epoch(1)
    assert not np.array_equal(images, other_images)


def test_training_without_augment_only_shuffles(small_split):
    dataset = make_tf_dataset(small_split, batch_size=16, training=True, augment=False)
    first_images, first_labels = _epoch(dataset)
    second_images, _ = _epoch(dataset)
    originals = sorted(image.tobytes() for image in small_split.images.astype(np.float32))
    assert sorted(image.tobytes() for image in first_images) == originals
    assert sorted(first_labels.tolist()) == sorted(small_split.labels.tolist())
    # Reshuffled every epoch, so the order differs from the split's and between epochs.
    assert not np.array_equal(first_images, small_split.images.astype(np.float32))
    assert not np.array_equal(first_images, second_images)
