"""PNG plots for training reports: learning curves, confusion matrices, detections, precision-recall curves,
score separations and attention maps, drawn with the primitives of `pipelines.data.figures` (which also draws
the image galleries)."""

import functools
import math
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import font_manager
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.ticker import MaxNLocator

# figures chooses the headless backend before pyplot loads, so plt comes from there.
from pipelines.data.figures import (
    GROUND_TRUTH_COLOR,
    PREDICTION_COLOR,
    draw_boxes,
    plt,
    save_figure,
    show_image,
)
from pipelines.training.search_space import Choice, Dimension, LogUniform


def plot_learning_curves(
    history: dict[str, list[float]], path: Path, *, metrics: Sequence[str] = ("loss", "accuracy")
) -> Path:
    """Plots each of `metrics`, with its `val_` counterpart, against the epoch, one panel per metric."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
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
    return save_figure(fig, path)


def plot_compared_histories(
    histories: dict[str, dict[str, list[float]]],
    path: Path,
    *,
    metrics: Sequence[str] = ("accuracy", "loss"),
    marks: dict[str, int] | None = None,
    title: str = "",
) -> Path:
    """Several runs' learning curves in one figure, one panel per metric: dev (solid) and train (dashed)
    per run, one colour per run; `marks` draws labelled vertical lines after the given epochs."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.5), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        for colour, (run, history) in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"], histories.items()):
            for key, style, kind in ((f"val_{metric}", "-", "dev"), (metric, "--", "train")):
                if history.get(key):
                    ax.plot(range(1, len(history[key]) + 1), history[key], style, color=colour, label=f"{run} ({kind})")
        for label, epoch in (marks or {}).items():
            ax.axvline(epoch + 0.5, color="gray", linestyle=":")
            ax.annotate(
                label,
                (epoch + 0.5, 0.98),
                xycoords=("data", "axes fraction"),
                rotation=90,
                va="top",
                ha="right",
                fontsize=8,
                color="gray",
            )
        if ax.lines:
            ax.legend(fontsize=8)
        ax.set(title=metric, xlabel="epoch", ylabel=metric)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


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
    # Empty cells stay blank: with many classes (62 glyphs) they are most of the matrix, and thousands of
    # "0" labels hide the errors and take seconds to draw.
    for row, col in zip(*np.nonzero(counts), strict=True):
        value = values[row, col]
        # Light text on dark cells keeps annotations readable across the colour map.
        color = "white" if value > vmax / 2 else "black"
        ax.text(col, row, fmt.format(value), ha="center", va="center", color=color, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


# --- object detection -------------------------------------------------------------------------------


def plot_detections(
    images: Sequence[np.ndarray],
    truths: Sequence[tuple[np.ndarray, Sequence[str]]],
    predictions: Sequence[tuple[np.ndarray, Sequence[str]]],
    path: Path,
    *,
    columns: int = 4,
    title: str = "",
) -> Path:
    """Each image twice, side by side: its ground truth boxes (green) and the predicted ones (red).

    `truths` and `predictions` hold (boxes (K, 4), captions) per image.
    """
    if not len(images) == len(truths) == len(predictions):
        raise ValueError(f"{len(images)} images, {len(truths)} ground truths and {len(predictions)} predictions")
    rows = max(1, math.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, 2 * columns, figsize=(2.6 * 2 * columns, 2.8 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for index, (image, truth, prediction) in enumerate(zip(images, truths, predictions)):
        truth_axis, prediction_axis = axes.flat[2 * index], axes.flat[2 * index + 1]
        for axis, (boxes, captions), color, name in (
            (truth_axis, truth, GROUND_TRUTH_COLOR, "truth"),
            (prediction_axis, prediction, PREDICTION_COLOR, "predicted"),
        ):
            show_image(axis, image)
            draw_boxes(axis, boxes, captions, color=color)
            axis.set_title(f"{name} ({len(captions)})", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_precision_recall(
    curves: dict[str, tuple[Sequence[float], Sequence[float]]], path: Path, *, title: str = "Precision-recall"
) -> Path:
    """One line per entry of `curves`: name (e.g. "IoU 0.5, AP 0.97") → (recall, precision)."""
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for name, (recall, precision) in curves.items():
        ax.plot(recall, precision, label=name)
    ax.set(title=title, xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(loc="lower left")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_score_separation(
    scores: Sequence[float],
    positives: Sequence[bool],
    threshold: float,
    path: Path,
    *,
    labels: tuple[str, str] = ("negative", "positive"),
    xlabel: str = "score (log scale)",
    floor: float = 1e-8,
) -> Path:
    """Histograms of a binary decision's scores, negatives and positives apart, on a log axis, with the
    threshold: how far apart the two sides lie, and which examples fall on the wrong side."""
    values = np.maximum(np.asarray(scores, np.float64), floor)
    actual = np.asarray(positives, bool)
    bins = np.logspace(np.log10(floor), 0, 41)
    fig, ax = plt.subplots(figsize=(6, 4))
    for selected, label in ((~actual, labels[0]), (actual, labels[1])):
        ax.hist(values[selected], bins=bins, alpha=0.6, label=f"{label} ({int(selected.sum())})")
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3g}")
    ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel="examples")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


# Fonts that map every code point to a "missing glyph" box: choosing them would hide characters, not draw them.
_PLACEHOLDER_FONTS = ("Last Resort",)
_SPACE_SYMBOL = "\u2423"  # "␣": a blank tick label would be indistinguishable from a missing one


@functools.cache
def _code_points(font_path: str) -> frozenset[int]:
    return frozenset(font_manager.get_font(font_path).get_charmap())


def _label_fonts(chars: frozenset[str]) -> tuple[list[str], frozenset[int]]:
    """A font fallback chain for `chars`, and every code point the chain can draw.

    The default font comes first; installed fonts are appended only for characters it lacks (DejaVu Sans has no
    Hangul, Kana or Kanji). Matplotlib draws each glyph with the first family in the chain that has it.
    """
    default_path = font_manager.findfont(font_manager.FontProperties())
    families = [font_manager.get_font(default_path).family_name]
    drawable = set(_code_points(default_path))
    missing = {ord(char) for char in chars} - drawable
    # Only families with a regular face: labels are drawn regular, and resolving a family that lacks one makes
    # findfont log a substitution.
    candidates = sorted(
        {
            entry.name
            for entry in font_manager.fontManager.ttflist
            if entry.style == "normal" and entry.weight == 400 and not entry.name.startswith(_PLACEHOLDER_FONTS)
        }
    )
    for family in candidates:
        if not missing:
            break
        # Coverage is read from the file matplotlib will resolve the family name to when drawing.
        code_points = _code_points(font_manager.findfont(font_manager.FontProperties(family=family)))
        if missing & code_points:
            families.append(family)
            drawable |= code_points
            missing -= code_points
    return families, frozenset(drawable)


def _char_label(char: str, drawable: Collection[int]) -> str:
    """How one character appears as a tick label: spaces as "␣", undrawable or invisible ones as U+XXXX.

    Replacing what no font can draw keeps matplotlib from warning once per missing glyph and per draw.
    """
    shown = _SPACE_SYMBOL if char == " " else char
    if shown.isprintable() and ord(shown) in drawable:
        return shown
    return f"U+{ord(char):04X}"


def _attention_weights(index: int, sample: tuple[str, str, np.ndarray]) -> np.ndarray:
    source, target, weights = sample
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (len(target), len(source)):
        raise ValueError(
            f"sample {index}: weights have shape {weights.shape}, expected (len(output), len(input)) = "
            f"({len(target)}, {len(source)}) for input {source!r} and output {target!r}"
        )
    return weights


def _draw_attention(
    ax: plt.Axes, source: str, target: str, weights: np.ndarray, families: list[str], drawable: Collection[int]
) -> None:
    if weights.size == 0:
        # imshow of an empty array warns about singular limits; an empty prediction is worth showing, though.
        ax.text(0.5, 0.5, "empty output" if not target else "empty input", ha="center", va="center")
        ax.set(xticks=[], yticks=[])
        return
    ax.imshow(weights, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    ax.set_xticks(np.arange(len(source)), labels=[_char_label(c, drawable) for c in source], family=families)
    ax.set_yticks(np.arange(len(target)), labels=[_char_label(c, drawable) for c in target], family=families)
    for label in ax.get_xticklabels():
        if len(label.get_text()) > 1:  # U+XXXX labels would overlap their neighbours if left horizontal
            label.set_rotation(90)
    ax.tick_params(labelsize=8)
    ax.set(xlabel="input", ylabel="output")


def plot_attention_maps(
    samples: Sequence[tuple[str, str, np.ndarray]], path: Path, *, title: str = "Attention"
) -> Path:
    """Draws one attention heat-map per (input text, output text, weights) sample, in a grid.

    `weights` has shape (len(output), len(input)): row i is how much output character i attended to each input
    character. All maps share one 0-1 colour scale so samples can be compared with each other.
    """
    if not samples:
        raise ValueError("no attention samples to plot")
    grids = [_attention_weights(index, sample) for index, sample in enumerate(samples)]
    texts = [title, _SPACE_SYMBOL] + [source + target for source, target, _ in samples]
    families, drawable = _label_fonts(frozenset("".join(texts)))

    cols = min(2, len(samples))
    rows = math.ceil(len(samples) / cols)
    # Cells grow with the longest texts so that one character keeps roughly one label's width.
    width = max(3.0, 0.25 * max(len(source) for source, _, _ in samples) + 1.5)
    height = max(2.5, 0.25 * max(len(target) for _, target, _ in samples) + 1.5)
    fig, axes = plt.subplots(
        rows, cols, figsize=(width * cols + 1.0, height * rows + 0.5), squeeze=False, layout="constrained"
    )
    for ax in axes.flat[len(samples) :]:
        ax.axis("off")
    for ax, (source, target, _), weights in zip(axes.flat, samples, grids):
        _draw_attention(ax, source, target, weights, families, drawable)
    colour_scale = ScalarMappable(norm=Normalize(vmin=0.0, vmax=1.0), cmap="Blues")
    fig.colorbar(colour_scale, ax=axes.ravel().tolist(), label="attention weight", shrink=0.8)
    fig.suptitle("".join(c if c == " " else _char_label(c, drawable) for c in title), family=families)
    return save_figure(fig, path)


def plot_trials(
    values: Sequence[dict[str, Any]],
    scores: Sequence[float],
    *,
    dimensions: Sequence[Dimension],
    objective: str,
    path: Path,
) -> Path:
    """A hyperparameter search's objective against each searched hyperparameter, one panel each, the best
    trial starred: log-uniform ones (the learning rate) on a log axis, choices as categories in their order."""
    shown = list({dimension.name: dimension for dimension in dimensions}.values())
    fig, axes = plt.subplots(1, len(shown), figsize=(3.6 * len(shown), 3.6), squeeze=False, sharey=True)
    best = int(np.argmax(scores))
    for ax, dimension in zip(axes.flat, shown):
        # A conditional hyperparameter that did not apply to a trial has no point in its panel.
        tried = [(i, trial[dimension.name], score) for i, (trial, score) in enumerate(zip(values, scores))]
        tried = [(i, value, score) for i, value, score in tried if value is not None]
        if isinstance(dimension, Choice):
            positions = {value: i for i, value in enumerate(dimension.values)}
            tried = [(i, positions[value], score) for i, value, score in tried]
            ax.set_xticks(range(len(dimension.values)), [str(value) for value in dimension.values])
            ax.set_xlim(-0.5, len(dimension.values) - 0.5)
        elif isinstance(dimension, LogUniform):
            ax.set_xscale("log")
        for i, x, score in tried:
            starred = i == best
            ax.scatter(x, score, marker="*" if starred else "o", s=200 if starred else 30, color=f"C{int(starred)}")
        ax.set(xlabel=dimension.name)
        ax.grid(alpha=0.3)
    axes.flat[0].set_ylabel(f"{objective} (dev)")
    fig.suptitle(f"{len(scores)} trials; ★ the best: {objective} {scores[best]:.4f}")
    fig.tight_layout()
    return save_figure(fig, path)
