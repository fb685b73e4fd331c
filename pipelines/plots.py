"""PNG plots for training reports: learning curves, confusion matrices and image galleries."""

import math
from pathlib import Path

import matplotlib

# Training runs headless (servers, CI, containers), so never ask for a display.
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    # Figures live in pyplot's global registry until closed; long runs would leak them.
    plt.close(fig)
    return path


def plot_learning_curves(history: dict[str, list[float]], path: Path) -> Path:
    """Plots loss and accuracy, with their `val_` counterparts, against the epoch in two panels."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        curves = {key: history[key] for key in (metric, f"val_{metric}") if history.get(key)}
        for key, values in curves.items():
            ax.plot(range(1, len(values) + 1), values, marker=".", label=key)
        if curves:
            ax.legend()
        else:
            ax.text(0.5, 0.5, f"no {metric} recorded", ha="center", va="center", transform=ax.transAxes)
        ax.set(title=metric, xlabel="epoch", ylabel=metric)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion_matrix(matrix, class_names: list[str], path: Path, *, normalize: bool = True) -> Path:
    """Draws an annotated heat-map of a confusion matrix (rows true, columns predicted).

    With `normalize`, each row is divided by its total so cells read as per-class recall rates.
    """
    counts = np.asarray(matrix, dtype=np.float64)
    num_classes = len(class_names)
    if counts.shape != (num_classes, num_classes):
        raise ValueError(f"matrix shape {counts.shape} does not match {num_classes} class names")
    if normalize:
        totals = counts.sum(axis=1, keepdims=True)
        values = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
        fmt, vmax = "{:.2f}", 1.0
    else:
        values = counts
        fmt, vmax = "{:.0f}", max(counts.max(), 1.0)

    size = max(4.0, 0.6 * num_classes + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax)
    fig.colorbar(image, ax=ax)
    ticks = np.arange(num_classes)
    ax.set_xticks(ticks, labels=class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, labels=class_names)
    title = "confusion matrix (row-normalised)" if normalize else "confusion matrix"
    ax.set(xlabel="predicted", ylabel="true", title=title)
    for (row, col), value in np.ndenumerate(values):
        # Light text on dark cells keeps annotations readable across the colour map.
        color = "white" if value > vmax / 2 else "black"
        ax.text(col, row, fmt.format(value), ha="center", va="center", color=color, fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


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
        return _save(fig, path)

    cols = min(columns, len(images))
    rows = math.ceil(len(images) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, image_title in zip(axes.flat, images, titles):
        if image.shape[-1] == 1:
            ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
        else:
            ax.imshow(image)
        ax.set_title(image_title, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)
