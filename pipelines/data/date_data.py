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

Each split also mixes in texts that are not dates (`NON_DATE_SHARE` of its dates), whose target is
the empty string: partial dates ("March 2001", "4 mars"), words ("yesterday", "hola", a month alone),
numbers, times, prices and other strings, and, in dev and test only, dates that do not exist
("February 30, 2001", "29.02.1900", "13/25/2013") written in the styles above.

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
import calendar
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


def _year_first(separator: str) -> Renderer:
    """Year, month and day joined by `separator`, the month and day unpadded half the time."""

    def render(date: datetime.date, rng: random.Random) -> str:
        if rng.random() < 0.5:
            return f"{date.year}{separator}{date.month}{separator}{date.day}"
        return f"{date.year}{separator}{date.month:02d}{separator}{date.day:02d}"

    return render


# Unpadded is what people type; padded, with dashes, is the target itself, which the model should copy.
_iso_dash = _year_first("-")


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


# --- Dates as people type them in mail, forms and chat --------------------------------------

TYPED = "typed:"  # the style prefix of these renderings; their locale is the language's
# Words around a date, per language: (before, after). Spanish also writes "del" before the year.
SMALL_WORDS: dict[str, tuple[tuple[str, str], ...]] = {
    "en_US": (("on ", ""), ("dated ", ""), ("by ", "")),
    "en_GB": (("on ", ""), ("dated ", ""), ("by ", "")),
    "de_DE": (("am ", ""), ("vom ", ""), ("bis ", "")),
    "fr_FR": (("le ", ""), ("du ", ""), ("daté du ", "")),
    "es_ES": (("el ", ""), ("del ", ""), ("hasta el ", "")),
    "ko_KR": (("", "에"), ("", "까지"), ("", "부터")),
    "ja_JP": (("", "に"), ("", "まで"), ("", "から")),
}
DAY_FIRST_LOCALES = ("en_GB", "de_DE", "fr_FR", "es_ES")  # where "4 Mar 1999" is how a day-month-year reads
BRACKETS = (" ({})", "({})", " [{}]", "（{}）")  # full-width ones too: the graph folds them as NFKC does
TRAILING_PUNCTUATION = (".", ",", ";", "!", "?", ")")
PUNCTUATION_PROBABILITY = 0.06
# Whole styles no training split holds: the report scores them apart (`unseen_style_pairs`), to say how the
# model does on a way of writing a date it has not seen. Each has relatives it has seen in other languages.
HELD_OUT_STYLES: frozenset[tuple[str, str]] = frozenset(
    {
        ("de_DE", TYPED + "with_words"),
        ("fr_FR", TYPED + "month_abbreviation"),
        ("es_ES", TYPED + "apostrophe_year"),
        ("ja_JP", TYPED + "weekday_brackets"),
        (HAND, "iso_dotted"),
    }
)


def _month_abbreviation(locale: Locale, date: datetime.date, rng: random.Random) -> str:
    short = locale.months["format"]["abbreviated"][date.month]
    return short.rstrip(".") if rng.random() < 0.4 else short


def _with_words_renderer(locale: Locale, pattern: str, words: tuple[tuple[str, str], ...]) -> Renderer:
    def render(date: datetime.date, rng: random.Random) -> str:
        text = format_date(date, pattern, locale=locale)
        if str(locale) == "es_ES" and rng.random() < 0.3:
            text = text.replace(f" de {date.year}", f" del {date.year}")
        before, after = rng.choice(words)
        return f"{before}{text}{after}"

    return render


def _month_abbreviation_renderer(locale: Locale) -> Renderer:
    def render(date: datetime.date, rng: random.Random) -> str:
        month = _month_abbreviation(locale, date, rng)
        if str(locale) == "de_DE" and rng.random() < 0.5:
            return f"{date.day}. {month} {date.year}"
        separator = rng.choice((" ", "-", "/"))
        return f"{date.day}{separator}{month.rstrip('.') if separator != ' ' else month}{separator}{date.year}"

    return render


def _apostrophe_year_renderer(locale: Locale) -> Renderer:
    def render(date: datetime.date, rng: random.Random) -> str | None:
        if not _in_two_digit_year_window(date):
            return None
        month = (
            locale.months["format"]["wide"][date.month]
            if rng.random() < 0.5
            else _month_abbreviation(locale, date, rng)
        )
        year = f"'{date.year % 100:02d}"
        if str(locale) == "en_US":
            return f"{month} {date.day} {year}"
        day = f"{date.day}." if str(locale) == "de_DE" else str(date.day)
        return f"{day} {month} {year}"

    return render


def _weekday_brackets_renderer(locale: Locale) -> Renderer:
    patterns = (locale.date_formats["long"].pattern, locale.date_formats["medium"].pattern)

    def render(date: datetime.date, rng: random.Random) -> str:
        weekday = locale.days["format"]["abbreviated"][date.weekday()]
        return format_date(date, rng.choice(patterns), locale=locale) + rng.choice(BRACKETS).format(weekday)

    return render


def _compact(date: datetime.date, rng: random.Random) -> str:
    return f"{date.year}{date.month:02d}{date.day:02d}"


def _typed_styles() -> list[_Style]:
    styles = [_Style(HAND, "compact", 1.0, _compact), _Style(HAND, "iso_dotted", 1.0, _year_first("."))]
    for name in LOCALES:
        locale = Locale.parse(name)
        long = locale.date_formats["long"].pattern
        styles.append(_Style(name, TYPED + "with_words", 1.0, _with_words_renderer(locale, long, SMALL_WORDS[name])))
        if name in ("ko_KR", "ja_JP"):
            styles.append(_Style(name, TYPED + "weekday_brackets", 1.0, _weekday_brackets_renderer(locale)))
        else:
            styles.append(_Style(name, TYPED + "apostrophe_year", 1.0, _apostrophe_year_renderer(locale)))
        if name in DAY_FIRST_LOCALES:
            styles.append(_Style(name, TYPED + "month_abbreviation", 1.0, _month_abbreviation_renderer(locale)))
    return styles


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
    return tuple(all_styles) + tuple(_typed_styles())


@functools.cache
def _style_choice(held_out: bool) -> tuple[tuple[_Style, ...], list[float]]:
    """The styles `render` draws from (the held-out ones, or all the others) and their cumulative weights."""
    chosen = tuple(style for style in _styles() if ((style.locale, style.style) in HELD_OUT_STYLES) == held_out)
    return chosen, list(itertools.accumulate(style.weight for style in chosen))


def styles(*, held_out: bool = False) -> list[str]:
    """Every `DatePair.style` that `render` can produce (`held_out`: that `unseen_style_pairs` can)."""
    return sorted({style.style for style in _style_choice(held_out)[0]})


# --- Noise and sampling -------------------------------------------------------------------


def _add_noise(text: str, rng: random.Random) -> str:
    roll = rng.random()
    if roll < UPPER_PROBABILITY:
        text = text.upper()
    elif roll < UPPER_PROBABILITY + LOWER_PROBABILITY:
        text = text.lower()
    if rng.random() < PUNCTUATION_PROBABILITY:
        mark = rng.choice(TRAILING_PUNCTUATION)
        text = f"({text})" if mark == ")" else text + mark
    if rng.random() < EXTRA_SPACE_PROBABILITY:
        # Widen an existing space or pad an end; never split a token, which could change its meaning.
        positions = [0, len(text)] + [i for i, char in enumerate(text) if char == " "]
        at = rng.choice(positions)
        text = text[:at] + " " * rng.randint(1, 2) + text[at:]
    return text


def _rendered(date: datetime.date, rng: random.Random, *, held_out: bool = False) -> tuple[_Style, str]:
    choice, cumulative = _style_choice(held_out)
    while True:
        style = rng.choices(choice, cum_weights=cumulative)[0]
        text = style.render(date, rng)
        if text is not None:
            return style, _add_noise(text, rng)


def render(date: datetime.date, rng: random.Random, *, held_out: bool = False) -> DatePair:
    """One random rendering of `date`, with the style drawn by weight among those allowed for it
    (`held_out`: among `HELD_OUT_STYLES` only)."""
    style, text = _rendered(date, rng, held_out=held_out)
    return DatePair(text, date.strftime(TARGET_FORMAT), style.locale, style.style)


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


# --- Not a date ----------------------------------------------------------------------------
#
# What people paste into a date field that is not one: impossible dates written in the same styles as real
# ones, partial dates (no year, or no day), words, numbers and other strings. Their target is the empty
# string, "no date": the model learns to answer nothing, and the exported graph says "not a date".

NOT_A_DATE = ""  # the target of a text that names no date, or one that does not exist
NOT_A_DATE_LOCALE = "none"
NOT_A_DATE_STYLE = "not_a_date:"  # + the kind: the style groups that reports and the gate show
NON_DATE_SHARE = 0.15  # non-dates added to a split, as a share of its dates
# The kinds of non-date in the held-out splits, and in training. Training holds no day past its month's end:
# the exported graph's date constraint finds those exactly (the model wants to write a day the month does
# not have), while a model taught to refuse them learned to doubt every real 29th, 30th and 31st. A month
# over 12 never looks like a real date, so the model learns to refuse it (left alone, it read "2027/19/25"
# as September).
NON_DATE_KINDS = {
    "impossible_day": 0.3,
    "impossible_month": 0.1,
    "partial": 0.25,
    "word": 0.17,
    "number": 0.11,
    "other": 0.07,
}
TRAINING_NON_DATE_KINDS = {"impossible_month": 0.1, "partial": 0.38, "word": 0.26, "number": 0.16, "other": 0.1}
PARTIAL_SKELETONS = ("yMMMM", "yMMM", "MMMMd", "MMMd", "MMMEd", "yM", "Md")
PARTIAL_TEMPLATES = (
    "{month} {day}",
    "{day} {month}",
    "the {day} of {month}",
    "{weekday}, {month} {day}",
    "{month} {year}",
    "{month}, {year}",
    "{year}",
)
WORDS = (
    # The date-like words a form receives, in the six languages, that name no one date.
    "today",
    "tomorrow",
    "yesterday",
    "now",
    "soon",
    "next week",
    "last Monday",
    "this Friday",
    "ASAP",
    "heute",
    "morgen",
    "gestern",
    "übermorgen",
    "nächste Woche",
    "bald",
    "aujourd'hui",
    "demain",
    "hier",
    "la semaine prochaine",
    "bientôt",
    "hoy",
    "mañana",
    "ayer",
    "pasado mañana",
    "la próxima semana",
    "pronto",
    "오늘",
    "내일",
    "어제",
    "다음 주",
    "곧",
    "今日",
    "明日",
    "昨日",
    "来週",
    "すぐ",
    # And what else people type into one.
    "hello",
    "hi there",
    "thanks",
    "hallo",
    "danke",
    "bonjour",
    "merci",
    "hola",
    "gracias",
    "안녕하세요",
    "감사합니다",
    "こんにちは",
    "ありがとう",
    "n/a",
    "N/A",
    "TBD",
    "unknown",
    "none",
    "null",
    "test",
    "see above",
    "same as before",
    "not sure",
    "weiß nicht",
    "je ne sais pas",
    "no sé",
    "date",
    "Datum",
    "fecha",
    "날짜",
    "日付",
    "birthday",
    "my birthday",
    "Christmas",
    "Weihnachten",
    "Noël",
    "Navidad",
    "New Year",
    "Ostern",
    "Easter",
    "Pâques",
    "Semana Santa",
)
WORD_LETTERS = "abcdefghijklmnopqrstuvwxyzäöüßéèàçñáíóú"


class ImpossibleDate(datetime.date):
    """A "date" with a day or month the calendar does not have (30 February 2001), for rendering only:
    year, month and day are the impossible ones, the weekday is the one the calendar would continue with."""

    def __new__(cls, year: int, month: int, day: int, weekday: int) -> ImpossibleDate:
        date = super().__new__(cls, year, 1, 1)
        date._fields = (year, month, day, weekday)
        return date

    year = property(lambda self: self._fields[0])
    month = property(lambda self: self._fields[1])
    day = property(lambda self: self._fields[2])

    def weekday(self) -> int:
        return self._fields[3]

    def isoweekday(self) -> int:
        return self._fields[3] + 1


def _month_days(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1]


def impossible_day(rng: random.Random) -> ImpossibleDate:
    """A day past the end of its month: 29 February in a year that is not leap a third of the time (the
    hardest to tell), else the 30th or 31st of February or the 31st of a 30-day month."""
    year = rng.randint(MIN_YEAR, MAX_YEAR)
    if rng.random() < 1 / 3:
        year = rng.choice([y for y in range(year - 3, year + 1) if not calendar.isleap(y) and y >= MIN_YEAR])
        month, day = 2, 29
    else:
        month = rng.choice((2, 4, 6, 9, 11))
        day = rng.randint(_month_days(year, month) + 1, 31)
    last = datetime.date(year, month, _month_days(year, month))
    return ImpossibleDate(year, month, day, (last.weekday() + day - last.day) % 7)


def impossible_month(rng: random.Random) -> ImpossibleDate:
    """A month over 12 with a day over 12, so that neither day/month order reads it as a real date."""
    return ImpossibleDate(rng.randint(MIN_YEAR, MAX_YEAR), rng.randint(13, 19), rng.randint(13, 31), rng.randrange(7))


def _impossible_day(rng: random.Random) -> str:
    return _rendered(impossible_day(rng), rng)[1]


def _slashed_year_last(date: datetime.date, rng: random.Random) -> str:
    """Day and month in either order, then the year: with both over 12, neither order is a real date."""
    first, second = (date.day, date.month) if rng.random() < 0.5 else (date.month, date.day)
    return f"{first}/{second}/{date.year}"


def _impossible_month(rng: random.Random) -> str:
    # Month names stop at 12: only the numeric styles can write it.
    style = rng.choice((HAND_STYLES["iso_slash"], HAND_STYLES["iso_dash"], HAND_STYLES["dotted"], _slashed_year_last))
    return _add_noise(style(impossible_month(rng), rng), rng)


@functools.cache
def _partial_patterns() -> tuple[tuple[Locale, str], ...]:
    patterns = []
    for name in LOCALES:
        locale = Locale.parse(name)
        patterns += [(locale, locale.datetime_skeletons[skeleton].pattern) for skeleton in PARTIAL_SKELETONS]
    return tuple(patterns)


def _partial(rng: random.Random) -> str:
    date = random_dates(1, rng)[0]
    if rng.random() < 0.5:
        locale, pattern = rng.choice(_partial_patterns())
        return _add_noise(format_date(date, pattern, locale=locale), rng)
    day = ordinal(date.day) if rng.random() < 0.6 else str(date.day)
    fields = _english_fields(date, rng, day=day, month=_any_month(date, rng))
    return _add_noise(rng.choice(PARTIAL_TEMPLATES).format(**fields), rng)


def _word(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.5:
        return _add_noise(rng.choice(WORDS), rng)
    if roll < 0.75:  # a month or a weekday alone
        locale = Locale.parse(rng.choice(LOCALES))
        names = locale.months if rng.random() < 0.5 else locale.days
        return _add_noise(rng.choice(list(names["format"][rng.choice(("wide", "abbreviated"))].values())), rng)
    words = ["".join(rng.choices(WORD_LETTERS, k=rng.randint(2, 9))) for _ in range(rng.randint(1, 3))]
    return _add_noise(" ".join(words), rng)


def _number(rng: random.Random) -> str:
    # No 6 or 8 digits in a row: compact dates (19950516) are written that way.
    digits = rng.choice((1, 2, 3, 4, 5, 7, 9, 10, 11, 12))
    forms = (
        lambda: str(rng.randrange(10 ** (digits - 1), 10**digits)),
        lambda: f"{rng.uniform(0, 1000):.{rng.randint(1, 3)}f}",
        lambda: f"{rng.randint(1, 99999):,}.{rng.randint(0, 99):02d}",
        lambda: f"{rng.randint(0, 23)}:{rng.randint(0, 59):02d}",
        lambda: f"{rng.randint(1, 12)}:{rng.randint(0, 59):02d} {rng.choice(('AM', 'PM', 'am', 'pm'))}",
        lambda: f"+{rng.randint(1, 99)} {rng.randint(100, 999)} {rng.randint(1000, 9999)} {rng.randint(100, 999)}",
        lambda: f"{rng.randint(100, 999)}-{rng.randint(1000, 9999)}",
        lambda: f"{rng.choice('$€£¥₩')}{rng.randint(1, 9999)}.{rng.randint(0, 99):02d}",
        lambda: f"{rng.randint(1, 9999)},{rng.randint(0, 99):02d} {rng.choice('€$')}",
        lambda: f"{rng.randint(0, 100)}%",
        lambda: f"-{rng.randint(1, 9999)}",
    )
    return rng.choice(forms)()


def _other(rng: random.Random) -> str:
    name = "".join(rng.choices(WORD_LETTERS[:26], k=rng.randint(3, 8)))
    forms = (
        lambda: "",
        lambda: " " * rng.randint(1, 3),
        lambda: f"{name}@{rng.choice(('example.com', 'mail.de', 'correo.es'))}",
        lambda: f"https://{name}.{rng.choice(('com', 'org', 'fr'))}/{rng.randint(1, 999)}",
        lambda: "".join(rng.choices("!?.,:;-_/()[]#*+=~ ", k=rng.randint(1, 6))),
        lambda: "".join(rng.choices(WORD_LETTERS[:26] + "0123456789 -/.", k=rng.randint(3, 20))),
        lambda: f"#{rng.randint(1, 99999)}",
    )
    return rng.choice(forms)()


NON_DATE_RENDERERS: dict[str, Callable[[random.Random], str]] = {
    "impossible_day": _impossible_day,
    "impossible_month": _impossible_month,
    "partial": _partial,
    "word": _word,
    "number": _number,
    "other": _other,
}


def render_non_date(rng: random.Random, kinds: dict[str, float] = NON_DATE_KINDS) -> DatePair:
    """One text that names no date, or a date that does not exist; the kind drawn by weight from `kinds`."""
    kind = rng.choices(list(kinds), weights=list(kinds.values()))[0]
    text = NON_DATE_RENDERERS[kind](rng)[:MAX_TEXT_LENGTH]
    return DatePair(text, NOT_A_DATE, NOT_A_DATE_LOCALE, NOT_A_DATE_STYLE + kind)


def is_date(pair: DatePair) -> bool:
    return pair.target != NOT_A_DATE


def is_taught(pair: DatePair) -> bool:
    """Whether training teaches the pair's target: not so for the kinds of non-date only the held-out splits
    hold. Their loss grows as the model learns to copy the day it reads, so a validation loss that counted
    them would stop training early for the wrong reason."""
    kind = pair.style.removeprefix(NOT_A_DATE_STYLE) if not is_date(pair) else None
    return kind is None or kind in TRAINING_NON_DATE_KINDS


# --- Dataset --------------------------------------------------------------------------------


SPLITS = ("train", "dev", "test")


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
            "non_dates": {split: sum(not is_date(pair) for pair in getattr(self, split)) for split in SPLITS},
            "locales": dict(sorted(Counter(pair.locale for pair in pairs).items())),
            "styles": dict(sorted(Counter(pair.style for pair in pairs).items())),
            "max_text_length": max((len(pair.text) for pair in pairs), default=0),
        }


def make_dataset(
    train_size: int = 20000,
    dev_size: int = 1000,
    test_size: int = 2000,
    *,
    seed: int = 0,
    non_date_share: float = NON_DATE_SHARE,
) -> DateDataset:
    """Disjoint date sets per split (test dates never in train/dev), one rendering per pair, and
    `non_date_share` × the split's size texts that are not dates, mixed in at random places.

    The held-out splits take distinct dates. Train takes the remaining dates and, if it asks
    for more pairs than there are days left, goes through them again with fresh renderings.
    Each split is rendered with its own seeded generator, so a split's texts do not depend on
    the other splits' sizes once its dates are fixed.
    """
    held_out = test_size + dev_size
    if held_out >= DAY_COUNT:
        raise ValueError(f"dev + test need {held_out} distinct dates; only {DAY_COUNT} days exist")
    if not 0 <= non_date_share <= 1:
        raise ValueError(f"non_date_share must lie in 0..1, got {non_date_share}")
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
        pairs = [render(date, rng) for date in days]
        non_dates = random.Random(f"{seed}:{name}:non-dates")
        kinds = TRAINING_NON_DATE_KINDS if name == "train" else NON_DATE_KINDS
        for _ in range(round(len(days) * non_date_share)):
            pairs.insert(non_dates.randint(0, len(pairs)), render_non_date(non_dates, kinds))
        splits[name] = pairs
    dataset = DateDataset(**splits)
    if conflicts := find_conflicts(dataset.train + dataset.dev + dataset.test):
        examples = dict(itertools.islice(conflicts.items(), 5))
        raise RuntimeError(f"bug in the renderers, texts with more than one target: {examples}")
    return dataset


def unseen_style_pairs(count: int, *, seed: int = 0) -> list[DatePair]:
    """`count` of `make_dataset`'s test dates (for the same seed), each written in a style of
    `HELD_OUT_STYLES`, which no split holds: how the model reads a way of writing it has not seen."""
    if count > DAY_COUNT:
        raise ValueError(f"{count} distinct dates asked for; only {DAY_COUNT} days exist")
    rng = random.Random(f"{seed}:unseen-styles")
    return [render(date, rng, held_out=True) for date in random_dates(DAY_COUNT, random.Random(seed))[:count]]


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
    """Human-written dates in several languages paired with ISO 8601 dates, generated with Babel, and texts
    that are not dates paired with the empty string."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Initial release.",
        "1.1.0": f"Non-dates (target empty) mixed into every split: {NON_DATE_SHARE:.0%} of its dates.",
    }

    BUILDER_CONFIGS: ClassVar[list[generated_tfds.SplitSizes]] = [
        generated_tfds.SplitSizes(
            name="default",
            description="60000 / 2000 / 5000 dates, and non-dates.",
            train_size=60000,
            dev_size=2000,
            test_size=5000,
        ),
        generated_tfds.SplitSizes(
            name="small",
            description="2000 / 200 / 200 dates, and non-dates.",
            train_size=2000,
            dev_size=200,
            test_size=200,
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
