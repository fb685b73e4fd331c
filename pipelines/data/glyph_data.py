"""Printed characters: a generated source task for transfer learning to handwritten digits, nothing downloaded.

62 classes, the digits 0-9 and the Latin letters A-Z and a-z (`GLYPH_NAMES`), printed in 22 fonts
and imaged the way the UCI handwritten digits behind scikit-learn's `load_digits` were imaged, as
8x8 grayscale images. It is the source task of the transfer-learning demo: a backbone pretrained on
printed characters is transferred to *handwritten* digits with 10 labelled images per class. The
digits are among the classes on purpose: printed-to-handwritten (synthetic-to-real) is the kind of
transfer people use in practice, the backbone has never seen a handwritten stroke, and the target
head is new anyway. Printing the glyphs through the same imaging (size-normalised 32x32 bitmaps
reduced to 4x4 block counts) leaves the writing style as the only gap.

Fonts (`FONT_FILES`): Pillow's embedded Aileron (`ImageFont.load_default`, Pillow >= 10.1 with
FreeType) and the TrueType fonts that ship inside matplotlib (DejaVu Sans, Sans Mono and Serif in
four styles each, STIX General in four, Computer Modern roman, bold, sans, italic and typewriter):
the same files on every machine with these packages, no system fonts.

Each image is rendered from its own random draws, in this order:

1. a font, uniformly; the character in it at size 40, white (255) at the centre of a black 96x96
   canvas, with a stroke of 0, 1 or 2 px to vary the weight;
2. a random affine map about the centre, drawn with bilinear resampling:
   `R(angle) @ [[1, shear], [0, 1]] @ diag(sx, sy)` with the angle uniform in +-15 degrees, the
   shear uniform in +-0.3 and each scale uniform in 0.8-1.2;
3. the ink's bounding box cropped and resized (bilinear, aspect kept) so its longer side is
   32 px, centred on a black 32x32 canvas, as the UCI digits were size-normalised;
4. an elastic distortion: per-pixel displacements dx and dy, each uniform noise in [-1, 1]
   smoothed by a Gaussian of sigma 4 px and multiplied by 20 (an image's largest is ~3 px on average),
   applied with bilinear interpolation (`scipy.ndimage.map_coordinates`, order 1, black outside);
5. thresholded to a binary bitmap (on where the value is >= 128) and reduced to 8x8 by counting
   the on pixels in each non-overlapping 4x4 block, giving counts 0-16 exactly like the UCI data;
   the counts are then scaled by `round(count * 255 / 16)` to uint8, the scaling that
   `image_data.load_digits` applies to the digits. So every pixel is one of 17 levels (`LEVELS`).

A bitmap that a distortion left without ink is drawn again from the same generator rather than
kept. Characters are normalised to one size, as the digits were, so case pairs that differ mainly
in size (C/c, O/o, S/s, V/v, W/w, X/x, Z/z) and look-alikes (0/O/o, 1/I/l) are hard or impossible
to tell apart: a harder source task, not a broken one. Rendering takes about 0.3 ms per image on
one CPU core (about 10 s for the default 34,000 images), so the data is generated rather than cached.

Usage:

    data = make_glyph_dataset(30000, 2000, 2000, seed=0)  # image_data.ImageDataset, 8x8x1 uint8
    data = image_data.load_dataset("glyphs", seed=0)      # the same
    train = make_tf_dataset(data.train, batch_size=64, training=True)
    test = load_tfds("test", data_dir="/tmp/tfds", config="small")  # {"image", "label"}

    python -m pipelines.data.glyph_data --samples 48 --out glyphs.png
    python -m pipelines.data.glyph_data --build-tfds /tmp/tfds --config small

Labels cycle through the classes and are then shuffled, so every split is balanced to within
one image per class. Each split draws from its own PCG64 stream
`np.random.default_rng([seed, split_number])`, so a split does not change when another split's
size does. Importing this module registers the TFDS builder "generated_glyphs" (supervised keys
image/label, so `image_data.load_tfds("generated_glyphs/small", ...)` reads it too). Images
depend on NumPy's PCG64 streams, Pillow's font, text rasteriser and resampling, and SciPy's
filters: bump `GeneratedGlyphs.VERSION` if any of them changes what a seed renders.
"""

from __future__ import annotations

import argparse
import math
import string
import time
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import matplotlib
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from pipelines.data import generated_tfds
from pipelines.data.image_data import ImageDataset, Split

GLYPH_NAMES = list(string.digits + string.ascii_uppercase + string.ascii_lowercase)

CANVAS = 96  # the character is drawn and transformed here, with room to rotate and grow
FONT_SIZE = 40
# matplotlib's bundled TrueType files; "mpl-data/fonts/ttf" has held them since matplotlib 1.x.
FONT_FILES = (
    *(f"DejaVuSans{style}.ttf" for style in ("", "-Bold", "-Oblique", "-BoldOblique")),
    *(f"DejaVuSansMono{style}.ttf" for style in ("", "-Bold", "-Oblique", "-BoldOblique")),
    *(f"DejaVuSerif{style}.ttf" for style in ("", "-Bold", "-Italic", "-BoldItalic")),
    *(f"STIXGeneral{style}.ttf" for style in ("", "Bol", "Italic", "BolIta")),
    *(f"cm{face}10.ttf" for face in ("r", "b", "ss", "ti", "tt")),
)
# Pillow's embedded Aileron first (needs FreeType, which Pillow's wheels include; without it this raises ImportError).
FONTS = (
    ImageFont.load_default(size=FONT_SIZE),
    *(
        ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name), FONT_SIZE)
        for name in FONT_FILES
    ),
)
MAX_STROKE_WIDTH = 2
MAX_ROTATION_DEGREES = 15.0
MAX_SHEAR = 0.3
SCALE_RANGE = (0.8, 1.2)
BITMAP_SIZE = 32  # the UCI digits' normalised bitmaps
ELASTIC_SIGMA = 4.0
ELASTIC_ALPHA = 20.0
THRESHOLD = 128
BLOCK = 4
IMAGE_SIZE = BITMAP_SIZE // BLOCK
MAX_COUNT = BLOCK * BLOCK
# The 17 pixel values an image can hold: block counts 0-16 scaled like image_data.load_digits.
LEVELS = np.round(np.arange(MAX_COUNT + 1) * 255 / MAX_COUNT).astype(np.uint8)
# Redraws allowed for a bitmap that came out empty.
MAX_ATTEMPTS = 10

_ROWS, _COLUMNS = np.mgrid[0:BITMAP_SIZE, 0:BITMAP_SIZE].astype(np.float64)


# --- Rendering -----------------------------------------------------------------------------------


def random_affine(rng: np.random.Generator) -> np.ndarray:
    """A (2, 2) matrix: rotation @ shear @ per-axis scale, drawn in that order."""
    angle = math.radians(rng.uniform(-MAX_ROTATION_DEGREES, MAX_ROTATION_DEGREES))
    shear = rng.uniform(-MAX_SHEAR, MAX_SHEAR)
    scale_x, scale_y = rng.uniform(*SCALE_RANGE), rng.uniform(*SCALE_RANGE)
    cos, sin = math.cos(angle), math.sin(angle)
    return np.array([[cos, -sin], [sin, cos]]) @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([scale_x, scale_y])


def transform_about_centre(image: Image.Image, matrix: np.ndarray) -> Image.Image:
    """`image` mapped by the (2, 2) `matrix` (on x, y) about its centre, bilinear, black outside."""
    # Pillow's AFFINE takes the map from output to input pixels: the inverse, about the same centre.
    inverse = np.linalg.inv(matrix)
    centre = np.array([image.width / 2, image.height / 2])
    offset = centre - inverse @ centre
    coefficients = (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])
    return image.transform(image.size, Image.Transform.AFFINE, coefficients, resample=Image.Resampling.BILINEAR)


def draw_character(rng: np.random.Generator, label: int) -> Image.Image:
    """Steps 1-2: the character in a random font, stroked and randomly transformed, on the black CANVAS x CANVAS
    "L" image."""
    canvas = Image.new("L", (CANVAS, CANVAS), 0)
    ImageDraw.Draw(canvas).text(
        (CANVAS // 2, CANVAS // 2),
        GLYPH_NAMES[label],
        fill=255,
        font=FONTS[int(rng.integers(len(FONTS)))],
        anchor="mm",
        stroke_width=int(rng.integers(0, MAX_STROKE_WIDTH + 1)),
        stroke_fill=255,
    )
    return transform_about_centre(canvas, random_affine(rng))


def fit_ink(image: Image.Image, size: int = BITMAP_SIZE) -> Image.Image:
    """Step 3: the ink's bounding box resized (aspect kept) to a longer side of `size`, centred on black."""
    out = Image.new("L", (size, size), 0)
    box = image.getbbox()
    if box is None:  # nothing to fit: render_glyph redraws
        return out
    ink = image.crop(box)
    longer = max(ink.size)
    ink = ink.resize(tuple(max(1, round(side * size / longer)) for side in ink.size), Image.Resampling.BILINEAR)
    out.paste(ink, ((size - ink.width) // 2, (size - ink.height) // 2))
    return out


def elastic_distortion(rng: np.random.Generator, pixels: np.ndarray) -> np.ndarray:
    """Step 4: (32, 32) float pixels resampled along smooth random displacements (dx drawn before dy)."""
    dx = ndimage.gaussian_filter(rng.uniform(-1, 1, pixels.shape), ELASTIC_SIGMA) * ELASTIC_ALPHA
    dy = ndimage.gaussian_filter(rng.uniform(-1, 1, pixels.shape), ELASTIC_SIGMA) * ELASTIC_ALPHA
    return ndimage.map_coordinates(pixels, [_ROWS + dy, _COLUMNS + dx], order=1)


def draw_bitmap(rng: np.random.Generator, label: int) -> np.ndarray:
    """Steps 1-4 and the threshold: a (32, 32) bool bitmap of one random instance of class `label`."""
    fitted = np.asarray(fit_ink(draw_character(rng, label)), np.float64)
    return elastic_distortion(rng, fitted) >= THRESHOLD


def block_counts(bitmap: np.ndarray) -> np.ndarray:
    """Step 5: the on pixels of a (32, 32) binary bitmap counted in each 4x4 block, (8, 8) int64 0-16."""
    bitmap = np.asarray(bitmap, bool)
    if bitmap.shape != (BITMAP_SIZE, BITMAP_SIZE):
        raise ValueError(f"expected a {BITMAP_SIZE}x{BITMAP_SIZE} bitmap, got shape {bitmap.shape}")
    return bitmap.reshape(IMAGE_SIZE, BLOCK, IMAGE_SIZE, BLOCK).sum(axis=(1, 3), dtype=np.int64)


def counts_to_pixels(counts: np.ndarray) -> np.ndarray:
    """Block counts 0-16 as uint8 0-255, scaled as `image_data.load_digits` scales the digits."""
    return np.round(np.asarray(counts) * 255 / MAX_COUNT).astype(np.uint8)


def render_glyph(rng: np.random.Generator, label: int) -> np.ndarray:
    """One random (8, 8) uint8 image of class `label`; a bitmap left without ink is drawn again."""
    for _ in range(MAX_ATTEMPTS):
        bitmap = draw_bitmap(rng, label)
        if bitmap.any():
            return counts_to_pixels(block_counts(bitmap))
    raise RuntimeError(f"{MAX_ATTEMPTS} renders of {GLYPH_NAMES[label]!r} in a row came out without ink")


def balanced_labels(rng: np.random.Generator, count: int) -> np.ndarray:
    """`count` int64 class ids, each class count//K or count//K + 1 times, in random order."""
    return rng.permutation(np.arange(count, dtype=np.int64) % len(GLYPH_NAMES))


def make_split(rng: np.random.Generator, count: int) -> Split:
    """`count` balanced, shuffled glyphs and their labels, all drawn from `rng`."""
    labels = balanced_labels(rng, count)
    images = np.zeros((count, IMAGE_SIZE, IMAGE_SIZE, 1), np.uint8)
    for index, label in enumerate(labels):
        images[index, ..., 0] = render_glyph(rng, int(label))
    return Split(images=images, labels=labels)


def make_glyph_dataset(
    train_size: int = 30000, dev_size: int = 2000, test_size: int = 2000, *, seed: int = 0
) -> ImageDataset:
    """The "glyphs" dataset: (N, 8, 8, 1) uint8 images, int64 ids into GLYPH_NAMES.

    Each split has its own generator, so a split does not change when another split's size does.
    """
    splits = {
        name: make_split(np.random.default_rng([seed, number]), count)
        for number, (name, count) in enumerate([("train", train_size), ("dev", dev_size), ("test", test_size)])
    }
    return ImageDataset("glyphs", list(GLYPH_NAMES), **splits)


# --- TFDS builder --------------------------------------------------------------------------------


class GeneratedGlyphs(generated_tfds.GeneratedDatasetBuilder):
    """62 classes of printed characters (0-9, A-Z, a-z) in 22 fonts, imaged as 8x8 block counts like the UCI
    digits, generated offline."""

    BUILDER_CONFIGS: ClassVar[list[generated_tfds.SplitSizes]] = [
        generated_tfds.SplitSizes(
            name="default",
            description="30000 / 2000 / 2000 images of 8x8.",
            train_size=30000,
            dev_size=2000,
            test_size=2000,
        ),
        generated_tfds.SplitSizes(
            name="small", description="500 / 100 / 100 images of 8x8.", train_size=500, dev_size=100, test_size=100
        ),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 1)),
                    "label": tfds.features.ClassLabel(names=GLYPH_NAMES),
                }
            ),
            supervised_keys=("image", "label"),
            # Keep make_glyph_dataset's order, so a split reads back exactly as generated.
            disable_shuffling=True,
        )

    def generate(self, config: generated_tfds.SplitSizes) -> SimpleNamespace:
        data = make_glyph_dataset(config.train_size, config.dev_size, config.test_size, seed=config.seed)
        # The base builder enumerates each split's items, and a Split holds arrays: pair them up.
        return SimpleNamespace(
            **{
                name: list(zip(split.images, split.labels))
                for name, split in (("train", data.train), ("dev", data.dev), ("test", data.test))
            }
        )

    def example(self, item: tuple[np.ndarray, np.int64]) -> dict:
        image, label = item
        return {"image": image, "label": int(label)}


def load_tfds(split: str, *, data_dir: str, config: str = "default") -> tf.data.Dataset:
    """`tfds.load("generated_glyphs/<config>")`, preparing it into `data_dir` first if needed.

    Splits are "train", "validation" (the `dev` split) and "test"; examples are
    {"image": uint8 (8, 8, 1), "label": int64}, in `make_glyph_dataset` order.
    """
    return generated_tfds.load_split(GeneratedGlyphs, split, data_dir=data_dir, config=config)


# --- CLI -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.data.glyph_data",
        description=(
            "Generate printed characters (62 classes, 0-9, A-Z and a-z in 22 fonts, 8x8 grayscale made like the UCI "
            "digits: a 32x32 bitmap reduced to 4x4 block counts) as a source task for transfer learning to digits."
        ),
        epilog=(
            "examples: python -m pipelines.data.glyph_data --samples 48 --out glyphs.png; "
            "python -m pipelines.data.glyph_data --build-tfds /tmp/tfds --config small"
        ),
    )
    generated_tfds.add_cli_arguments(
        parser,
        GeneratedGlyphs,
        samples_help="render N images (balanced over the classes) into a labelled contact sheet (needs --out)",
    )
    parser.add_argument("--out", type=Path, metavar="PNG", help="where --samples saves its contact sheet")
    args = parser.parse_args(argv)

    if args.samples is not None:
        if args.out is None:
            parser.error("--samples needs --out PNG")
        from pipelines.data.figures import plot_image_gallery  # matplotlib is only needed here

        start = time.perf_counter()
        split = make_split(np.random.default_rng([args.seed, 0]), args.samples)
        seconds = time.perf_counter() - start
        titles = [GLYPH_NAMES[label] for label in split.labels]
        path = plot_image_gallery(
            split.images, titles, args.out, max_images=max(1, args.samples), title="printed characters"
        )
        print(f"{len(titles)} glyphs in {seconds:.2f} s -> {path}")
        return 0

    return generated_tfds.build_and_report(GeneratedGlyphs, args.build_tfds, args.config)


if __name__ == "__main__":
    raise SystemExit(main())
