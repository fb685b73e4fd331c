import numpy as np
import pytest
from PIL import Image

from pipelines.data.figures import plot_image_gallery

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width > 0 and image.height > 0


@pytest.mark.parametrize("shape", [(8, 8, 1), (32, 32, 3)], ids=["grayscale", "rgb"])
def test_image_gallery(tmp_path, shape):
    images = np.random.default_rng(0).integers(0, 256, size=(11, *shape), dtype=np.uint8)
    titles = [f"{i}→{(i + 1) % 10}" for i in range(11)]
    path = plot_image_gallery(images, titles, tmp_path / "gallery" / "wrong.png", columns=4, title="misclassified")
    assert_png(path)


def test_image_gallery_caps_the_number_drawn(tmp_path):
    images = np.zeros((30, 8, 8, 1), dtype=np.uint8)
    path = plot_image_gallery(images, [str(i) for i in range(30)], tmp_path / "capped.png", max_images=5)
    with Image.open(path) as capped:
        capped_width = capped.width
    path = plot_image_gallery(images[:5], [str(i) for i in range(5)], tmp_path / "five.png")
    with Image.open(path) as five:
        assert capped_width == five.width


def test_empty_image_gallery(tmp_path):
    path = plot_image_gallery(np.zeros((0, 8, 8, 1), dtype=np.uint8), [], tmp_path / "empty" / "none.png")
    assert_png(path)


def test_image_gallery_rejects_mismatched_titles(tmp_path):
    with pytest.raises(ValueError):
        plot_image_gallery(np.zeros((2, 8, 8, 1), dtype=np.uint8), ["only one"], tmp_path / "bad.png")


def test_the_gallery_places_every_image_whole_on_a_white_mosaic():
    from pipelines.data.figures import tile

    images = np.arange(1, 6, dtype=np.uint8)[:, None, None, None] * np.ones((5, 8, 6, 1), dtype=np.uint8)
    mosaic, origins = tile(images, columns=2)
    assert mosaic.shape == (3 * (8 + 4), 2 * (6 + 2))  # 3 rows of 2, a title's gap above each image
    for value, (left, top) in zip(range(1, 6), origins):
        assert (mosaic[top : top + 8, left : left + 6] == value).all()
    assert (mosaic == 255).sum() == mosaic.size - 5 * 8 * 6  # everything else is white background
