import pytest
from PIL import Image

from pipelines.evaluation.plots import plot_confusion_matrix, plot_learning_curves, plot_score_separation

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


@pytest.mark.parametrize(
    ("scores", "positives"),
    [([0.0, 1e-12, 0.2, 0.99, 1.0], [False, False, True, True, True]), ([0.5], [True])],
    ids=["zeros-and-ones", "one-side-only"],
)
def test_score_separation(tmp_path, scores, positives):
    path = plot_score_separation(scores, positives, 0.1, tmp_path / "is_date.png", labels=("no", "yes"))
    assert_png(path)
