"""Constrained decoding for the date normaliser: beam search may only write real ISO dates.

A small automaton in TensorFlow ops over the output vocabulary. At output position p it allows only the
characters that can still complete a valid `YYYY-MM-DD` in [min_year, max_year], given the characters
already chosen: a year digit only if some year in range starts with the prefix; `-` at positions 4 and 7;
a month 01–12; a day from 01 to the month's length (29 February in leap years only); then [END]. Every
prefix it allows can be completed, so a hypothesis is never left without a continuation, and whatever the
input, greedy or beam, the answer is a date that exists.
"""

import tensorflow as tf

DATE_LENGTH = 10  # YYYY-MM-DD
MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


class IsoDateConstraint(tf.Module):
    """`allowed(tokens, t)` → (rows, V) bool: the ids that may be generated at output position `t`.

    `vocabulary[i]` is the string of output id i (special tokens included); `tokens` (rows, L + 1) holds
    [START] then the ids generated at positions 0 … t − 1, as `models.decoding.beam_search` keeps them.
    """

    def __init__(self, vocabulary: list[str], *, end_id: int, min_year: int, max_year: int):
        super().__init__()
        missing = [char for char in "0123456789-" if char not in vocabulary]
        if missing:
            raise ValueError(f"the output vocabulary cannot write ISO dates: it lacks {''.join(missing)!r}")
        if not 1000 <= min_year <= max_year <= 9999:
            raise ValueError(f"years must be four digits, min_year <= max_year (got {min_year}, {max_year})")
        self.min_year, self.max_year = min_year, max_year
        self.end_id = end_id
        digits = [int(char) if len(char) == 1 and char.isdigit() else -1 for char in vocabulary]
        self.digit_of_id = tf.constant(digits, tf.int32)  # -1: not a digit
        self.dash_id = vocabulary.index("-")

    def allowed(self, tokens: tf.Tensor, t: tf.Tensor) -> tf.Tensor:
        chosen = tf.gather(self.digit_of_id, tokens[:, 1 : DATE_LENGTH + 1])  # (rows, 10), -1 where not a digit
        digit = chosen[:, :, tf.newaxis]  # for broadcasting against the candidates
        candidate = self.digit_of_id[tf.newaxis]  # (1, V)
        is_digit = candidate >= 0

        def value(first: int, count: int) -> tf.Tensor:
            """The number the digits at positions first … first + count − 1 spell (rows, 1)."""
            return tf.add_n([tf.maximum(digit[:, first + k], 0) * 10 ** (count - 1 - k) for k in range(count)])

        by_position = [
            self._year_digit(value(0, p) if p else tf.zeros_like(digit[:, 0]), p, candidate) for p in range(4)
        ]
        year = value(0, 4)
        month_tens = tf.maximum(digit[:, 5], 0)
        month = value(5, 2)
        days = self._days_in_month(year, tf.maximum(month, 1))
        day_tens = tf.maximum(digit[:, 8], 0)
        dash = tf.equal(tf.range(tf.shape(candidate)[1])[tf.newaxis], self.dash_id)
        by_position += [
            dash,
            is_digit & (candidate <= 1),
            is_digit & _between(month_tens * 10 + candidate, 1, 12),
            dash,
            is_digit & (candidate * 10 <= days),
            is_digit & _between(day_tens * 10 + candidate, 1, days),
            tf.equal(tf.range(tf.shape(candidate)[1])[tf.newaxis], self.end_id),
        ]
        rows = tf.shape(tokens)[0]
        masks = tf.stack([tf.broadcast_to(mask, [rows, tf.shape(candidate)[1]]) for mask in by_position])
        return masks[tf.minimum(t, DATE_LENGTH)]

    def _year_digit(self, prefix: tf.Tensor, position: int, candidate: tf.Tensor) -> tf.Tensor:
        """Digits that keep the year's prefix inside [min_year, max_year] (prefix: the value of the first
        `position` digits)."""
        remaining = 10 ** (3 - position)
        lowest = (prefix * 10 + candidate) * remaining
        highest = lowest + remaining - 1
        return (candidate >= 0) & (highest >= self.min_year) & (lowest <= self.max_year)

    @staticmethod
    def _days_in_month(year: tf.Tensor, month: tf.Tensor) -> tf.Tensor:
        leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
        days = tf.gather(tf.constant(MONTH_DAYS, tf.int32), tf.minimum(month, 12) - 1)
        return days + tf.cast(leap & (month == 2), tf.int32)


def _between(values: tf.Tensor, low: int | tf.Tensor, high: int | tf.Tensor) -> tf.Tensor:
    return (values >= low) & (values <= high)
