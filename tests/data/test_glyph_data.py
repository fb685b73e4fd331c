import string

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image
from sklearn.neighbors import NearestCentroid

from pipelines.data import glyph_data
from pipelines.data.image_data import make_tf_dataset

NUM_CLASSES = len(glyph_data.GLYPH_NAMES)
# The 17 values a block count 0-16 becomes, scaled as image_data.load_digits scales the digits.
LEVELS = {round(count * 255 / 16) for count in range(17)}


@pytest.fixture(scope="module")
def glyphs():
    return glyph_data.make_glyph_dataset(2480, 31, 620, seed=0)


def test_class_list():
    assert list(string.digits) + list(string.ascii_uppercase) + list(string.ascii_lowercase) == glyph_data.GLYPH_NAMES
    assert NUM_CLASSES == 62 and len(set(glyph_data.GLYPH_NAMES)) == NUM_CLASSES


def test_every_font_loads_and_draws_every_character():
    assert len(glyph_data.FONTS) == len(glyph_data.FONT_FILES) + 1 == 22
    for font in glyph_data.FONTS:
        for character in ("0", "8", "A", "g"):
            left, top, right, bottom = font.getbbox(character)
            assert right - left > 5 and bottom - top > 10, (font.getname(), character)


def test_glyphs_dtypes_shapes_and_levels(glyphs):
    assert glyphs.name == "glyphs" and glyphs.class_names == glyph_data.GLYPH_NAMES
    assert glyphs.image_shape == (8, 8, 1) and glyphs.num_classes == NUM_CLASSES
    for split, count in ((glyphs.train, 2480), (glyphs.dev, 31), (glyphs.test, 620)):
        assert split.images.shape == (count, 8, 8, 1) and split.images.dtype == np.uint8
        assert split.labels.shape == (count,) and split.labels.dtype == np.int64
        assert split.labels.min() >= 0 and split.labels.max() < NUM_CLASSES
        # Every pixel is a scaled 4x4 block count, like the digits' pixels.
        assert set(np.unique(split.images).tolist()) <= LEVELS
    assert glyphs.train.images.max() == 255 and glyphs.train.images.min() == 0
    assert set(np.unique(glyphs.train.images).tolist()) == LEVELS
    assert glyphs.summary()["sizes"] == {"train": 2480, "dev": 31, "test": 620}


def test_empty_and_tiny_splits():
    data = glyph_data.make_glyph_dataset(3, 0, 1, seed=0)
    assert len(data.train.labels) == 3 and data.test.images.shape == (1, 8, 8, 1)
    assert data.dev.images.shape == (0, 8, 8, 1) and data.dev.labels.shape == (0,)


def test_classes_are_balanced_and_shuffled(glyphs):
    assert np.bincount(glyphs.train.labels, minlength=NUM_CLASSES).tolist() == [40] * NUM_CLASSES
    counts = np.bincount(glyphs.dev.labels, minlength=NUM_CLASSES)
    assert counts.sum() == 31 and counts.max() - counts.min() <= 1
    # Shuffled, not cycled: the order is not 0, 1, 2, ...
    assert not np.array_equal(glyphs.train.labels[:NUM_CLASSES], np.arange(NUM_CLASSES))


def test_same_seed_same_arrays_other_seed_other_arrays():
    first = glyph_data.make_glyph_dataset(30, 5, 5, seed=3)
    again = glyph_data.make_glyph_dataset(30, 5, 5, seed=3)
    other = glyph_data.make_glyph_dataset(30, 5, 5, seed=4)
    for a, b in ((first.train, again.train), (first.dev, again.dev), (first.test, again.test)):
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.labels, b.labels)
    assert first.fingerprint() == again.fingerprint() != other.fingerprint()
    assert not np.array_equal(first.train.images, other.train.images)


def test_a_split_does_not_depend_on_the_others_sizes():
    small = glyph_data.make_glyph_dataset(10, 7, 6, seed=1)
    large = glyph_data.make_glyph_dataset(40, 7, 20, seed=1)
    np.testing.assert_array_equal(small.dev.images, large.dev.images)
    np.testing.assert_array_equal(small.dev.labels, large.dev.labels)
    resized_dev = glyph_data.make_glyph_dataset(10, 30, 6, seed=1)
    np.testing.assert_array_equal(small.test.images, resized_dev.test.images)
    np.testing.assert_array_equal(small.train.images, resized_dev.train.images)


def test_rendering_is_pinned():
    # NumPy's streams, Pillow's font, rasteriser and resampling and SciPy's filters fix what a seed
    # renders. If this fails after an upgrade, check the contact sheet and bump GeneratedGlyphs.VERSION.
    data = glyph_data.make_glyph_dataset(62, 0, 0, seed=0)
    assert data.fingerprint() == "3634461313dc6e1df345cf57197be74feb77f57129a37d2aa77ab109049b755f"


def test_block_counts_on_a_hand_built_bitmap():
    bitmap = np.zeros((32, 32), bool)
    bitmap[4:8, 8:12] = True  # one full 4x4 block: block row 1, column 2
    bitmap[31, 0] = True  # a single pixel in the bottom-left block
    bitmap[12:14, 28:32] = True  # half a block: block row 3, column 7
    counts = glyph_data.block_counts(bitmap)
    assert counts.shape == (8, 8) and counts.dtype == np.int64
    expected = np.zeros((8, 8), np.int64)
    expected[1, 2], expected[7, 0], expected[3, 7] = 16, 1, 8
    np.testing.assert_array_equal(counts, expected)
    pixels = glyph_data.counts_to_pixels(counts)
    assert pixels.dtype == np.uint8
    assert (pixels[1, 2], pixels[7, 0], pixels[3, 7]) == (255, 16, 128) and pixels.sum() == 255 + 16 + 128
    assert glyph_data.counts_to_pixels(np.arange(17)).tolist() == sorted(LEVELS)
    with pytest.raises(ValueError, match="32x32"):
        glyph_data.block_counts(np.zeros((28, 28), bool))


def test_render_glyph_is_block_counts_of_the_bitmap():
    for label in (0, 26, 51):
        bitmap = glyph_data.draw_bitmap(np.random.default_rng(label), label)
        assert bitmap.shape == (32, 32) and bitmap.dtype == bool and bitmap.any()
        image = glyph_data.render_glyph(np.random.default_rng(label), label)
        assert image.shape == (8, 8) and image.dtype == np.uint8
        np.testing.assert_array_equal(image, glyph_data.counts_to_pixels(glyph_data.block_counts(bitmap)))


def test_an_inkless_bitmap_is_drawn_again(monkeypatch):
    real = glyph_data.draw_bitmap
    calls = []

    def first_one_empty(rng, label):
        calls.append(label)
        bitmap = real(rng, label)
        return np.zeros_like(bitmap) if len(calls) == 1 else bitmap

    monkeypatch.setattr(glyph_data, "draw_bitmap", first_one_empty)
    image = glyph_data.render_glyph(np.random.default_rng(0), 7)
    assert calls == [7, 7] and image.max() > 0

    monkeypatch.setattr(glyph_data, "draw_bitmap", lambda rng, label: np.zeros((32, 32), bool))
    with pytest.raises(RuntimeError, match="without ink"):
        glyph_data.render_glyph(np.random.default_rng(0), 7)


def test_characters_stay_on_the_canvas_and_fill_the_bitmap():
    rng = np.random.default_rng(7)
    for index in range(620):
        letter = glyph_data.draw_character(rng, index % NUM_CLASSES)
        left, top, right, bottom = letter.getbbox()
        # The largest affine leaves at least 16 px to spare (measured): nothing is clipped.
        assert min(left, top, glyph_data.CANVAS - right, glyph_data.CANVAS - bottom) >= 8
        left, top, right, bottom = glyph_data.fit_ink(letter).getbbox()
        assert max(right - left, bottom - top) == 32  # size-normalised, like the UCI digits


def test_every_image_has_ink_on_a_dark_background(glyphs):
    counts = np.round(glyphs.train.images.reshape(len(glyphs.train.labels), -1).astype(np.float64) * 16 / 255)
    # At least a full block's worth of ink (the least measured is 54 pixels of 1024)...
    assert (counts.sum(axis=1) >= 16).all()
    # ...and some background in every image, most of it in a typical one.
    assert ((counts == 0).mean(axis=1) > 0).all()
    assert np.median((counts == 0).mean(axis=1)) > 0.3


def test_classes_are_distinguishable(glyphs):
    # A nearest-centroid classifier on raw pixels is deterministic: 0.45 for seed 0 (0.43-0.48
    # over seeds 0-2) against a chance of 1/62. Case pairs such as o/O are alike once size-normalised.
    train = glyphs.train.images.reshape(len(glyphs.train.labels), -1)
    test = glyphs.test.images.reshape(len(glyphs.test.labels), -1)
    accuracy = NearestCentroid().fit(train, glyphs.train.labels).score(test, glyphs.test.labels)
    assert accuracy > 0.3


def test_make_tf_dataset_works_unchanged(glyphs):
    images, labels = next(iter(make_tf_dataset(glyphs.dev, batch_size=8, training=True)))
    assert images.shape == (8, 8, 8, 1) and labels.shape == (8,)
    assert float(images.numpy().min()) >= 0 and float(images.numpy().max()) <= 255


def arrays(dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """A `load_tfds` split's images and labels, stacked."""
    examples = list(dataset.as_numpy_iterator())
    return np.stack([example["image"] for example in examples]), np.array([example["label"] for example in examples])


def test_tfds_builder_reads_back_exactly_the_generated_arrays(tmp_path):
    config = next(config for config in glyph_data.GeneratedGlyphs.BUILDER_CONFIGS if config.name == "small")
    assert (config.train_size, config.dev_size, config.test_size) == (500, 100, 100)
    expected = glyph_data.make_glyph_dataset(config.train_size, config.dev_size, config.test_size, seed=config.seed)
    images, labels = arrays(glyph_data.load_tfds("test", data_dir=str(tmp_path), config="small"))
    np.testing.assert_array_equal(images, expected.test.images)
    np.testing.assert_array_equal(labels, expected.test.labels)
    for split, want in (("train", expected.train), ("validation", expected.dev)):
        loaded = tfds.load("generated_glyphs/small", split=split, data_dir=str(tmp_path), download=False)
        images, labels = arrays(loaded)
        np.testing.assert_array_equal(images, want.images)
        np.testing.assert_array_equal(labels, want.labels)
    builder = tfds.builder("generated_glyphs/small", data_dir=str(tmp_path))
    assert builder.info.features["label"].names == glyph_data.GLYPH_NAMES
    assert builder.info.features["image"].shape == (8, 8, 1)
    assert builder.info.supervised_keys == ("image", "label")


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        glyph_data.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--samples" in text and "--build-tfds" in text and "generated_glyphs" in text and "characters" in text


def test_cli_saves_a_labelled_contact_sheet(tmp_path, capsys):
    out = tmp_path / "sheet.png"
    assert glyph_data.main(["--samples", "12", "--out", str(out), "--seed", "2"]) == 0
    assert Image.open(out).size[0] > 0
    assert "12 glyphs" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        glyph_data.main(["--samples", "4"])  # no --out
