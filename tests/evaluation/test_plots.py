import numpy as np
import pytest
from PIL import Image

from pipelines.evaluation.plots import plot_confusion_matrix, plot_image_gallery, plot_learning_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width > 0 and image.height > 0


@pytest.mark.parametrize(
    "history",
    [
        {
            "loss": [1.0, 0.6, 0.4],
            "val_loss": [1.1, 0.8, 0.7],
            "accuracy": [0.5, 0.7, 0.8],
            "val_accuracy": [0.4, 0.6, 0.7],
        },
        {"loss": [1.0, 0.6]},
        {},
    ],
    ids=["full", "loss-only", "empty"],
)
def test_learning_curves(tmp_path, history):
    path = plot_learning_curves(history, tmp_path / "nested" / "dir" / "curves.png")
    assert path == tmp_path / "nested" / "dir" / "curves.png"
    assert_png(path)


@pytest.mark.parametrize("normalize", [True, False])
def test_confusion_matrix(tmp_path, normalize):
    matrix = [[5, 1, 0], [2, 7, 1], [0, 0, 0]]  # the empty last row must not divide by zero
    path = plot_confusion_matrix(matrix, ["a", "b", "c"], tmp_path / "cm" / "matrix.png", normalize=normalize)
    assert_png(path)


def test_confusion_matrix_rejects_mismatched_names(tmp_path):
    with pytest.raises(ValueError):
        plot_confusion_matrix([[1, 0], [0, 1]], ["a", "b", "c"], tmp_path / "matrix.png")


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
