"""Date normalisation data: human-written dates paired with their ISO 8601 form.

A character-level Seq2Seq model learns to turn what a person typed into one
canonical string:

    "Thursday, March 4th 1999"  ->  "1999-03-04"
    "2023년 1월 20일 금요일"       ->  "2023-01-20"
    "20.01.2023"                ->  "2023-01-20"

Nothing is downloaded. Dates are drawn uniformly from 1900-01-01..2099-12-31
and rendered either with Babel's CLDR formats for `LOCALES` ("full", "long",
"medium", "short" and two weekday skeletons) or with English hand-written
styles (ordinals, "the 4th of March", "Mar." / "Mar", YYYY/MM/DD, YYYY-M-D,
DD.MM.YYYY). Some renderings then get extra spaces or an UPPER / lower case
change. Every text is at most `MAX_TEXT_LENGTH` characters; every target is
exactly 10.

The model sees no locale, so a text must never stand for two dates. Numeric
forms are therefore only rendered where a convention fixes the field order
(see `_needs_day_over_12`), two-digit years only inside
`TWO_DIGIT_YEAR_WINDOW`, and `find_conflicts` checks a corpus for the rest.

Usage:

    data = make_dataset(20000, 1000, 2000, seed=0)      # DateDataset of DatePair lists
    train = as_tf_dataset(data.train)                   # {"text", "target"} tf.string scalars
    test = load_tfds("test", data_dir="/tmp/tfds", config="small")

    python -m pipelines.data.date_data --samples 20 --seed 1
    python -m pipelines.data.date_data --build-tfds /tmp/tfds --config small

Importing this module registers the TFDS builder "date_normalization", so
`tfds.load("date_normalization/small", data_dir=...)` works once prepared.
Renderings come from Babel's CLDR data: a Babel upgrade can change texts, so
bump `DateNormalization.VERSION` when that happens.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import itertools
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import tensorflow as tf
import tensorflow_datasets as tfds
from babel import Locale
from babel.dates import format_date, tokenize_pattern, untokenize_pattern

from pipelines.data import generated_tfds

LOCALES: tuple[str, ...] = ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "ko_KR", "ja_JP")
TARGET_FORMAT = "%Y-%m-%d"
MIN_YEAR, MAX_YEAR = 1900, 2099
FIRST_DATE = datetime.date(MIN_YEAR, 1, 1)
LAST_DATE = datetime.date(MAX_YEAR, 12, 31)
DAY_COUNT = LAST_DATE.toordinal() - FIRST_DATE.toordinal() + 1

# A two-digit year is read with a fixed pivot: 50-99 -> 1950-1999, 00-49 -> 2000-2049.
# Dates outside this window are always written with four digits, so "99" never means 2099.
TWO_DIGIT_YEAR_WINDOW = (1950, 2049)

# The longest rendering is "Wednesday, the 22nd of September 1999" plus two extra spaces
# (39 characters); the ceiling leaves room for new styles. Models can size their input to it.
MAX_TEXT_LENGTH = 48

HAND = "hand"  # the `locale` of hand-written English styles
BABEL_STYLES = ("full", "long", "medium", "short")
# Babel's "full" is the only standard format with a weekday; these skeletons add one to the others.
WEEKDAY_SKELETONS = {"medium+weekday": "yMMMEd", "short+weekday": "yMEd"}

# About a third of the pairs are hand-written English: that is what people type most.
HAND_STYLE_WEIGHT = 4.0
UPPER_PROBABILITY = 0.08
LOWER_PROBABILITY = 0.08
EXTRA_SPACE_PROBABILITY = 0.1


@dataclass(frozen=True)
class DatePair:
    text: str  # what a person typed
    target: str  # ISO date "YYYY-MM-DD"
    locale: str  # Babel locale used, or "hand" for the hand-written English styles
    style: str  # "babel:<format>" or a hand-written style name, see `styles()`


Renderer = Callable[[datetime.date, random.Random], str | None]  # None: the style is not allowed for this date


@dataclass(frozen=True)
class _Style:
    locale: str
    style: str
    weight: float
    render: Renderer


# --- Babel (CLDR) renderings -------------------------------------------------------------


def _in_two_digit_year_window(date: datetime.date) -> bool:
    return TWO_DIGIT_YEAR_WINDOW[0] <= date.year <= TWO_DIGIT_YEAR_WINDOW[1]


def _needs_day_over_12(pattern: str) -> bool:
    """Whether a CLDR pattern may only render days 13-31, so its day/month order cannot be misread.

    Patterns with a month name are unambiguous. Numeric ones follow one convention per
    separator, and the corpus holds only that reading:
    - year first (ko "y. M. d.", ja "y/MM/dd"): year-month-day, always allowed;
    - dots, day first (de "dd.MM.y"): day-month-year, always allowed;
    - slashes, month first (en_US "M/d/yy"): month-day-year, always allowed;
    - slashes, day first (en_GB / fr "dd/MM/y", es "d/M/yy"): only when the day is over 12,
      where the month-first reading is impossible, so "4/3/99" always means April 3rd.
    Any other numeric layout raises: a new locale needs a decision, not a silent collision.
    """
    tokens = tokenize_pattern(pattern)
    fields = [value for kind, value in tokens if kind == "field"]
    if any(char in "ML" and count >= 3 for char, count in fields):
        return False
    order = "".join(char.replace("L", "M") for char, _ in fields if char in "dMLy")
    literals = "".join(value for kind, value in tokens if kind == "chars")
    if order == "yMd" or (order == "dMy" and "." in literals) or (order == "Mdy" and "/" in literals):
        return False
    if order == "dMy" and "/" in literals:
        return True
    raise ValueError(f"no day/month convention for the numeric pattern {pattern!r}")


def _with_four_digit_year(pattern: str) -> str:
    return untokenize_pattern(
        ("field", ("y", 1)) if value == ("y", 2) else (kind, value) for kind, value in tokenize_pattern(pattern)
    )


def _babel_renderer(locale: Locale, pattern: str) -> Renderer:
    day_over_12 = _needs_day_over_12(pattern)
    four_digit_pattern = _with_four_digit_year(pattern)

    def render(date: datetime.date, rng: random.Random) -> str | None:
        if day_over_12 and date.day <= 12:
            return None
        return format_date(date, pattern if _in_two_digit_year_window(date) else four_digit_pattern, locale=locale)

    return render


def _babel_patterns(locale: Locale) -> dict[str, str]:
    patterns = {name: locale.date_formats[name].pattern for name in BABEL_STYLES}
    patterns |= {name: locale.datetime_skeletons[skeleton].pattern for name, skeleton in WEEKDAY_SKELETONS.items()}
    return patterns


# --- Hand-written English renderings ------------------------------------------------------

_ENGLISH = Locale.parse("en_US")

ORDINAL_TEMPLATES = (
    "{month} {day}, {year}",
    "{month} {day} {year}",
    "{day} {month} {year}",
    "{weekday}, {month} {day} {year}",
    "{weekday}, {month} {day}, {year}",
    "{weekday} {day} {month} {year}",
)
OF_MONTH_TEMPLATES = (
    "the {day} of {month} {year}",
    "the {day} of {month}, {year}",
    "{day} of {month} {year}",
    "{weekday}, the {day} of {month} {year}",
)
ABBREVIATED_TEMPLATES = (
    "{month} {day}, {year}",
    "{month} {day} {year}",
    "{day} {month} {year}",
    "{weekday}, {month} {day}, {year}",
)


def ordinal(day: int) -> str:
    """1 -> "1st", 2 -> "2nd", 11 -> "11th", 22 -> "22nd"."""
    if 11 <= day % 100 <= 13:
        return f"{day}th"
    return f"{day}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(day % 10, 'th') }"


def _abbreviated_month(date: datetime.date, rng: random.Random) -> str:
    """ "Mar" or "Mar."; "May" never gets a dot because it is not shortened."""
    short = _ENGLISH.months["format"]["abbreviated"][date.month]
    dotted = short != _ENGLISH.months["format"]["wide"][date.month] and rng.random() < 0.5
    return short + "." if dotted else short


def _english_fields(date: datetime.date, rng: random.Random, *, day: str, month: str) -> dict[str, str]:
    # Babel numbers weekdays from Monday = 0, like `date.weekday()`.
    weekday = _ENGLISH.days["format"][rng.choice(("wide", "abbreviated"))][date.weekday()]
    return {"weekday": weekday, "day": day, "month": month, "year": str(date.year)}


def _any_month(date: datetime.date, rng: random.Random) -> str:
    if rng.random() < 0.6:
        return _ENGLISH.months["format"]["wide"][date.month]
    return _abbreviated_month(date, rng)


def _ordinal(date: datetime.date, rng: random.Random) -> str:
    fields = _english_fields(date, rng, day=ordinal(date.day), month=_any_month(date, rng))
    return rng.choice(ORDINAL_TEMPLATES).format(**fields)


def _of_month(date: datetime.date, rng: random.Random) -> str:
    fields = _english_fields(date, rng, day=ordinal(date.day), month=_any_month(date, rng))
    return rng.choice(OF_MONTH_TEMPLATES).format(**fields)


def _abbreviated(date: datetime.date, rng: random.Random) -> str:
    fields = _english_fields(date, rng, day=str(date.day), month=_abbreviated_month(date, rng))
    return rng.choice(ABBREVIATED_TEMPLATES).format(**fields)


def _iso_slash(date: datetime.date, rng: random.Random) -> str:
    return f"{date.year}/{date.month:02d}/{date.day:02d}"


def _iso_dash(date: datetime.date, rng: random.Random) -> str:
    # Unpadded is what people type; padded is the target itself, which the model should copy.
    if rng.random() < 0.5:
        return f"{date.year}-{date.month}-{date.day}"
    return date.strftime(TARGET_FORMAT)


def _dotted(date: datetime.date, rng: random.Random) -> str:
    if rng.random() < 0.5:
        return f"{date.day}.{date.month}.{date.year}"
    return f"{date.day:02d}.{date.month:02d}.{date.year}"


HAND_STYLES: dict[str, Renderer] = {
    "ordinal": _ordinal,
    "of_month": _of_month,
    "abbreviated": _abbreviated,
    "iso_slash": _iso_slash,
    "iso_dash": _iso_dash,
    "dotted": _dotted,
}


@functools.cache
def _styles() -> tuple[_Style, ...]:
    # Built on first use: loading seven CLDR locales is not worth paying for at import time.
    all_styles = []
    for name in LOCALES:
        locale = Locale.parse(name)
        for style, pattern in _babel_patterns(locale).items():
            all_styles.append(_Style(name, f"babel:{style}", 1.0, _babel_renderer(locale, pattern)))
    for style, render in HAND_STYLES.items():
        all_styles.append(_Style(HAND, style, HAND_STYLE_WEIGHT, render))
    return tuple(all_styles)


@functools.cache
def _cumulative_weights() -> list[float]:
    return list(itertools.accumulate(style.weight for style in _styles()))


def styles() -> list[str]:
    """Every `DatePair.style` that `render` can produce."""
    return sorted({style.style for style in _styles()})


# --- Noise and sampling -------------------------------------------------------------------


def _add_noise(text: str, rng: random.Random) -> str:
    roll = rng.random()
    if roll < UPPER_PROBABILITY:
        text = text.upper()
    elif roll < UPPER_PROBABILITY + LOWER_PROBABILITY:
        text = text.lower()
    if rng.random() < EXTRA_SPACE_PROBABILITY:
        # Widen an existing space or pad an end; never split a token, which could change its meaning.
        positions = [0, len(text)] + [i for i, char in enumerate(text) if char == " "]
        at = rng.choice(positions)
        text = text[:at] + " " * rng.randint(1, 2) + text[at:]
    return text


def render(date: datetime.date, rng: random.Random) -> DatePair:
    """One random rendering of `date`, with the style drawn by weight among those allowed for it."""
    all_styles = _styles()
    while True:
        style = rng.choices(all_styles, cum_weights=_cumulative_weights())[0]
        text = style.render(date, rng)
        if text is not None:
            return DatePair(_add_noise(text, rng), date.strftime(TARGET_FORMAT), style.locale, style.style)


def random_dates(count: int, rng: random.Random) -> list[datetime.date]:
    """`count` distinct dates drawn uniformly from `FIRST_DATE`..`LAST_DATE`."""
    ordinals = rng.sample(range(FIRST_DATE.toordinal(), LAST_DATE.toordinal() + 1), count)
    return [datetime.date.fromordinal(day) for day in ordinals]


def find_conflicts(pairs: list[DatePair]) -> dict[str, set[str]]:
    """Texts that map to more than one target, with those targets; empty when the corpus is consistent."""
    targets: dict[str, set[str]] = {}
    for pair in pairs:
        targets.setdefault(pair.text, set()).add(pair.target)
    return {text: found for text, found in targets.items() if len(found) > 1}


# --- Dataset --------------------------------------------------------------------------------


@dataclass
class DateDataset:
    """Train, dev and test pairs whose dates do not overlap between splits."""

    train: list[DatePair]
    dev: list[DatePair]
    test: list[DatePair]

    def summary(self) -> dict:
        pairs = self.train + self.dev + self.test
        return {
            "sizes": {"train": len(self.train), "dev": len(self.dev), "test": len(self.test)},
            "locales": dict(sorted(Counter(pair.locale for pair in pairs).items())),
            "styles": dict(sorted(Counter(pair.style for pair in pairs).items())),
            "max_text_length": max((len(pair.text) for pair in pairs), default=0),
        }


def make_dataset(train_size: int = 20000, dev_size: int = 1000, test_size: int = 2000, *, seed: int = 0) -> DateDataset:
    """Disjoint date sets per split (test dates never in train/dev), then one rendering per pair.

    The held-out splits take distinct dates. Train takes the remaining dates and, if it asks
    for more pairs than there are days left, goes through them again with fresh renderings.
    Each split is rendered with its own seeded generator, so a split's texts do not depend on
    the other splits' sizes once its dates are fixed.
    """
    held_out = test_size + dev_size
    if held_out >= DAY_COUNT:
        raise ValueError(f"dev + test need {held_out} distinct dates; only {DAY_COUNT} days exist")
    # A permutation of every day, so the test dates for a seed stay the same whatever the split sizes.
    dates = random_dates(DAY_COUNT, random.Random(seed))
    train_days = dates[held_out:]
    split_dates = {
        "train": [train_days[i % len(train_days)] for i in range(train_size)],
        "dev": dates[test_size:held_out],
        "test": dates[:test_size],
    }
    splits = {}
    for name, days in split_dates.items():
        rng = random.Random(f"{seed}:{name}")
        splits[name] = [render(date, rng) for date in days]
    dataset = DateDataset(**splits)
    if conflicts := find_conflicts(dataset.train + dataset.dev + dataset.test):
        examples = dict(itertools.islice(conflicts.items(), 5))
        raise RuntimeError(f"bug in the renderers, texts with more than one target: {examples}")
    return dataset


def as_tf_dataset(pairs: list[DatePair]) -> tf.data.Dataset:
    """Unbatched dataset of {"text": tf.string scalar, "target": tf.string scalar} (UTF-8)."""
    return tf.data.Dataset.from_tensor_slices(
        {
            "text": tf.constant([pair.text for pair in pairs], dtype=tf.string, shape=[len(pairs)]),
            "target": tf.constant([pair.target for pair in pairs], dtype=tf.string, shape=[len(pairs)]),
        }
    )


# --- TFDS builder ---------------------------------------------------------------------------


class DateNormalization(generated_tfds.GeneratedDatasetBuilder):
    """Human-written dates in several languages paired with ISO 8601 dates, generated with Babel."""

    BUILDER_CONFIGS: ClassVar[list[generated_tfds.SplitSizes]] = [
        generated_tfds.SplitSizes(
            name="default", description="60000 / 2000 / 5000 pairs.", train_size=60000, dev_size=2000, test_size=5000
        ),
        generated_tfds.SplitSizes(
            name="small", description="2000 / 200 / 200 pairs.", train_size=2000, dev_size=200, test_size=200
        ),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {name: tfds.features.Text() for name in ("text", "target", "locale", "style")}
            ),
            supervised_keys=("text", "target"),
            # Keep make_dataset's order, so a split reads back exactly as generated.
            disable_shuffling=True,
        )

    def generate(self, config: generated_tfds.SplitSizes) -> DateDataset:
        return make_dataset(config.train_size, config.dev_size, config.test_size, seed=config.seed)

    def example(self, pair: DatePair) -> dict[str, str]:
        return dataclasses.asdict(pair)


def load_tfds(split: str, *, data_dir: str, config: str = "default") -> tf.data.Dataset:
    """`tfds.load("date_normalization/<config>")`, preparing it into `data_dir` first if needed.

    Splits are "train", "validation" (the `dev` split) and "test"; examples are dicts of
    "text", "target", "locale" and "style" tf.string scalars, in `make_dataset` order.
    """
    return generated_tfds.load_split(DateNormalization, split, data_dir=data_dir, config=config)


# --- CLI -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.data.date_data",
        description="Generate (human-written date, ISO 8601 date) pairs for date normalisation.",
    )
    generated_tfds.add_cli_arguments(
        parser, DateNormalization, samples_help="print N random pairs: text → target, locale, style"
    )
    args = parser.parse_args(argv)

    if args.samples is not None:
        rng = random.Random(args.seed)
        for date in random_dates(args.samples, rng):
            pair = render(date, rng)
            print(f"{pair.text!r:<{MAX_TEXT_LENGTH + 2}} → {pair.target}  {pair.locale:<6} {pair.style}")
        return 0

    return generated_tfds.build_and_report(DateNormalization, args.build_tfds, args.config)


if __name__ == "__main__":
    raise SystemExit(main())
