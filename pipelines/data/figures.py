"""Matplotlib primitives shared by the data contact sheets and the evaluation plots: saving, images, boxes, galleries.

Every stage that draws imports matplotlib through here, so the headless backend is chosen before pyplot loads.
"""

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

# Training runs headless (servers, CI, containers), so never ask for a display.
matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

GROUND_TRUTH_COLOR = "lime"
PREDICTION_COLOR = "orangered"


def save_figure(fig: plt.Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    # Figures live in pyplot's global registry until closed; long runs would leak them.
    plt.close(fig)
    return path


def show_image(axis: plt.Axes, image: np.ndarray) -> None:
    axis.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255)
    axis.axis("off")


def draw_boxes(axis: plt.Axes, boxes: np.ndarray, captions: Sequence[str], *, color: str) -> None:
    """Outline `[x1, y1, x2, y2]` pixel-edge boxes over an image drawn with `show_image`, each with its caption."""
    for (x1, y1, x2, y2), caption in zip(np.asarray(boxes).reshape(-1, 4), captions):
        # imshow puts pixel i's centre at i, so edge coordinates shift by half a pixel.
        axis.add_patch(plt.Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, edgecolor=color, linewidth=1))
        axis.text(x1 - 0.5, y1 - 1.5, caption, color=color, fontsize=7)


def plot_image_gallery(
    images: np.ndarray,
    titles: list[str],
    path: Path,
    *,
    columns: int = 8,
    title: str = "",
    max_images: int = 64,
) -> Path:
    """Draws (N, H, W, C) uint8 images in a grid, each with its title, e.g. "true→pred" for dev errors.

    Only the first `max_images` are drawn: a weak model can have thousands of errors, and a figure with
    thousands of axes is slow to render and unreadable anyway.
    """
    images = np.asarray(images)
    if len(images) != len(titles):
        raise ValueError(f"{len(images)} images but {len(titles)} titles")
    if len(images) > max_images:
        title = f"{title} (first {max_images} of {len(images)})".strip()
        images, titles = images[:max_images], titles[:max_images]
    if len(images) == 0:
        fig, ax = plt.subplots(figsize=(4, 2))
        ax.text(0.5, 0.5, "no misclassified images", ha="center", va="center")
        ax.axis("off")
        if title:
            fig.suptitle(title)
        return save_figure(fig, path)

    cols = min(columns, len(images))
    rows = math.ceil(len(images) / cols)
    fig, ax = plt.subplots(figsize=(1.6 * cols, 1.8 * rows))
    # One mosaic in one axis: a grid of 64 axes took ~4 s to draw, most of an evaluation's plotting time.
    mosaic, origins = tile(images, cols)
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    for (left, top), image_title in zip(origins, titles):
        ax.text(left + images.shape[2] / 2, top - 0.5, image_title, fontsize=8, ha="center", va="bottom")
    ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def tile(images: np.ndarray, columns: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """(N, H, W, C) images on a white mosaic, `columns` across, with a gap around each (room for its title above);
    also each image's top-left corner in the mosaic."""
    count, height, width, channels = images.shape
    gap_x, gap_y = max(2, width // 4), max(4, height // 2)
    rows = math.ceil(count / columns)
    shape = (rows * (height + gap_y), columns * (width + gap_x), channels)
    mosaic = np.full(shape, 255, dtype=np.uint8)
    origins = []
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        top, left = row * (height + gap_y) + gap_y, column * (width + gap_x) + gap_x // 2
        mosaic[top : top + height, left : left + width] = image
        origins.append((left, top))
    return (mosaic[..., 0] if channels == 1 else mosaic), origins
