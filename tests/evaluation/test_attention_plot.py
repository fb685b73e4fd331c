import logging
import warnings

import numpy as np
import pytest
from PIL import Image

from pipelines.evaluation.plots import _char_label, _label_fonts, plot_attention_maps

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def attention(source: str, target: str, seed: int) -> np.ndarray:
    """Row-stochastic weights like a softmax attention layer produces: each output row sums to 1."""
    logits = np.random.default_rng(seed).normal(size=(len(target), len(source)))
    weights = np.exp(logits)
    return weights / weights.sum(axis=1, keepdims=True)


SAMPLES = [
    ("March 4, 1999", "1999-03-04"),
    ("1999년 3월 4일", "1999-03-04"),
    ("1999年3月4日 木曜日", "1999-03-04"),
]


def test_attention_maps_are_drawn_without_warnings(tmp_path, caplog):
    samples = [(source, target, attention(source, target, seed)) for seed, (source, target) in enumerate(SAMPLES)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = plot_attention_maps(samples, tmp_path / "attention" / "maps.png", title="Attention 注意")

    # Without a CJK font matplotlib warns "Glyph ... missing from font(s)" for every Hangul/Kanji label.
    assert [str(w.message) for w in caught] == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []  # e.g. findfont's
    assert path == tmp_path / "attention" / "maps.png"
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        assert image.format == "PNG"
        # Two columns by two rows of maps, each wide enough for a ~15-character input at 100 dpi.
        assert 600 <= image.width <= 3000
        assert 400 <= image.height <= 3000


def test_characters_missing_from_the_default_font_are_drawn_with_an_installed_font(tmp_path):
    # No CJK font may be installed, but matplotlib ships fonts (STIX, DejaVu Math) with SCRIPT SMALL G, which
    # DejaVu Sans lacks: this takes the same path as Hangul on a machine with a Korean font.
    families, drawable = _label_fonts(frozenset("date ℊ"))
    assert ord("ℊ") in drawable
    assert len(families) == 2  # the default font, and one more only for what it lacks
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plot_attention_maps([("ℊ 1", "1", np.array([[0.2, 0.3, 0.5]]))], tmp_path / "fallback.png")
    assert [str(w.message) for w in caught] == []


def test_empty_output_is_drawn(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = plot_attention_maps([("4 March", "", np.zeros((0, 7)))], tmp_path / "empty.png")
    assert [str(w.message) for w in caught] == []
    with Image.open(path) as image:
        assert image.format == "PNG"


@pytest.mark.parametrize("shape", [(10, 7), (7, 9), (70,)], ids=["transposed", "too-short", "1-d"])
def test_mismatched_weights_are_rejected(tmp_path, shape):
    samples = [("abc", "xy", np.full((2, 3), 0.5)), ("1999-03-04", "4 March", np.zeros(shape))]
    with pytest.raises(ValueError, match=r"sample 1: weights have shape .* expected .*\(7, 10\)"):
        plot_attention_maps(samples, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_no_samples_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="no attention samples"):
        plot_attention_maps([], tmp_path / "none.png")


def test_char_labels():
    drawable = {ord(c) for c in "ab1-\u2423한"}
    assert _char_label("a", drawable) == "a"
    assert _char_label(" ", drawable) == "\u2423"
    assert _char_label("한", drawable) == "한"  # drawn when some installed font has the glyph
    assert _char_label("月", drawable) == "U+6708"  # otherwise named, not drawn as a missing-glyph box
    assert _char_label("\t", drawable | {ord("\t")}) == "U+0009"  # invisible even where a font maps it
