"""The date constraint (models/date_constraint.py): beam search can only write real ISO dates."""

import datetime
import random
import re

import numpy as np
import pytest
import tensorflow as tf

from models.date_constraint import DATE_LENGTH, IsoDateConstraint
from models.text_graph import END, END_ID, OOV, PAD, START, START_ID

VOCABULARY = [PAD, OOV, START, END, *"0123456789-"]
IDS = {char: index for index, char in enumerate(VOCABULARY)}
CONSTRAINT = IsoDateConstraint(VOCABULARY, end_id=END_ID, min_year=1900, max_year=2099)


def allowed_after(*prefixes: str) -> list[str]:
    """What may follow each prefix (all of one length), as strings ("]" for [END])."""
    tokens = np.zeros((len(prefixes), DATE_LENGTH + 2), np.int32)
    tokens[:, 0] = START_ID
    for row, prefix in enumerate(prefixes):
        tokens[row, 1 : len(prefix) + 1] = [IDS[char] for char in prefix]
    mask = CONSTRAINT.allowed(tf.constant(tokens), tf.constant(len(prefixes[0]))).numpy()
    return ["".join("]" if VOCABULARY[i] == END else VOCABULARY[i] for i in np.flatnonzero(row)) for row in mask]


@pytest.mark.parametrize(
    ("prefix", "allowed"),
    [
        ("", "12"),
        ("1", "9"),
        ("2", "0"),
        ("20", "0123456789"),
        ("2099", "-"),
        ("2000-", "01"),
        ("2000-0", "123456789"),
        ("2000-1", "012"),
        ("2000-12", "-"),
        ("2001-02-", "012"),
        ("2001-02-2", "012345678"),  # 2001 is not a leap year
        ("2000-02-2", "0123456789"),  # 2000 is (divisible by 400)
        ("1900-02-2", "012345678"),  # 1900 is not (divisible by 100)
        ("2096-02-2", "0123456789"),
        ("2000-04-3", "0"),
        ("2000-05-3", "01"),
        ("2000-05-0", "123456789"),
        ("2000-05-31", "]"),
    ],
)
def test_each_position_allows_only_what_can_still_complete_a_real_date(prefix, allowed):
    assert allowed_after(prefix) == [allowed]


def test_the_automaton_accepts_exactly_the_real_dates_of_its_year_range():
    """Every path through it, breadth first: the complete strings are the 73,049 dates of 1900-2099."""
    prefixes = [""]
    for _ in range(DATE_LENGTH):
        prefixes = [prefix + char for prefix, allowed in zip(prefixes, allowed_after(*prefixes)) for char in allowed]
    assert set(allowed_after(*prefixes)) == {"]"}
    first, last = datetime.date(1900, 1, 1), datetime.date(2099, 12, 31)
    expected = {(first + datetime.timedelta(days)).isoformat() for days in range((last - first).days + 1)}
    assert len(prefixes) == len(expected) == 73049
    assert set(prefixes) == expected


def test_a_vocabulary_that_cannot_write_dates_is_refused():
    with pytest.raises(ValueError, match="cannot write ISO dates: it lacks '-'"):
        IsoDateConstraint([PAD, OOV, START, END, *"0123456789"], end_id=END_ID, min_year=1900, max_year=2099)
    with pytest.raises(ValueError, match="years must be four digits"):
        IsoDateConstraint(VOCABULARY, end_id=END_ID, min_year=2100, max_year=2000)


ISO = re.compile(r"\d{4}-\d{2}-\d{2}")


def is_real_date(text: str) -> bool:
    if not ISO.fullmatch(text):
        return False
    try:
        return 1900 <= datetime.date.fromisoformat(text).year <= 2099
    except ValueError:
        return False


def impossible_dates(year: int) -> list[str]:
    """Every day-of-month that does not exist in `year`, in four ways of writing it."""
    texts = []
    for month in range(1, 13):
        for day in range(28, 32):
            try:
                datetime.date(year, month, day)
            except ValueError:
                name = datetime.date(year, month, 1).strftime("%B")
                texts += [
                    f"{name} {day}, {year}",
                    f"{day}.{month:02d}.{year}",
                    f"{year}-{month:02d}-{day}",
                    f"{day} {name} {year}",
                ]
    return texts


def random_strings(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = "0123456789-/.:, abcdefghijklmnopqrstuvwxyzäéñ年月日년월일"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))) for _ in range(count)]


@pytest.mark.slow
def test_the_exported_date_normaliser_never_writes_an_invalid_date(trained_seq2seq):
    """4,000 random strings, every impossible date of a year and other adversarial inputs, through the
    SavedModel's own signature: every beam of every answer is a real date."""
    translate = tf.saved_model.load(str(trained_seq2seq[3])).signatures["translate"]
    adversarial = [*impossible_dates(2001), "February 30, 2001", "13/13/2013", "hello", "", "yesterday", "9999-99-99"]
    texts = [*random_strings(4_000, seed=0), *adversarial]
    answers = []
    for start in range(0, len(texts), 500):
        beams = translate(texts=tf.constant(texts[start : start + 500]), beam_width=tf.constant(3))["beam_texts"]
        answers += [text.decode() for text in beams.numpy().reshape(-1)]
    invalid = [answer for answer in answers if not is_real_date(answer)]
    assert len(answers) == 3 * len(texts) and invalid == []
    greedy = translate(texts=tf.constant(adversarial), beam_width=tf.constant(1))["texts"].numpy()
    assert all(is_real_date(text.decode()) for text in greedy)
