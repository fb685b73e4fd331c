"""The Seq2Seq exported graph: strings in; beam-searched strings, scores, every beam, and whether the input
is a date at all out."""

from typing import Any

import keras
import tensorflow as tf

from models.date_constraint import IsoDateConstraint
from models.decoding import LENGTH_ALPHA, beam_search
from models.seq2seq import Seq2SeqStepDecoder
from models.text_graph import END_ID, OOV_ID, PAD_ID, START_ID, CharTokenizer

MAX_BEAM_WIDTH = 8
DEFAULT_DATE_THRESHOLD = 0.5  # before calibration on a dev split


class Seq2SeqGraph(tf.Module):
    """The exported graph: a batch of strings in; decoded strings and their scores out."""

    OUTPUTS = ("texts", "scores", "log_probabilities", "beam_texts", "beam_scores", "is_date", "date_probability")

    def __init__(
        self,
        model: keras.Model,
        tokenizer: CharTokenizer,
        *,
        default_beam_width: int = 3,
        alpha: float = LENGTH_ALPHA,
        constraint: IsoDateConstraint | None = None,
        date_threshold: float = DEFAULT_DATE_THRESHOLD,
    ):
        """`constraint`: what the beam search may write (`models.date_constraint`); None: any string.
        `date_threshold`: the least `date_probability` answered as a date (`pipelines.seq2seq.served_graph` sets
        it, calibrated on the dev split, before export)."""
        super().__init__()
        self.tokenizer = tokenizer
        self.decoder = Seq2SeqStepDecoder(model)
        self.default_beam_width = default_beam_width
        self.alpha = alpha
        self.constraint = constraint
        # A variable, not a constant: calibration sets it after the functions were traced, and the
        # SavedModel keeps its value.
        self.date_threshold = tf.Variable(date_threshold, trainable=False, dtype=tf.float32, name="date_threshold")

    def _translate(self, texts: tf.Tensor, beam_width: tf.Tensor) -> dict[str, tf.Tensor]:
        message = f"beam_width must be an integer from 1 to {MAX_BEAM_WIDTH}"
        checks = [
            tf.debugging.assert_greater_equal(beam_width, 1, message=message),
            tf.debugging.assert_less_equal(beam_width, MAX_BEAM_WIDTH, message=message),
        ]
        # Every op that uses the beam width waits for the checks, so a bad width fails with this message
        # rather than with whichever shape error an empty beam would hit first.
        with tf.control_dependencies(checks):
            beam_width = tf.identity(beam_width)
        result = beam_search(
            self.decoder,
            self.tokenizer.source_ids(texts),
            beam_width=beam_width,
            max_length=self.tokenizer.max_output_length + 1,  # + [END]
            start_id=START_ID,
            end_id=END_ID,
            pad_id=PAD_ID,
            banned_ids=(OOV_ID, START_ID),
            alpha=self.alpha,
            constraint=self.constraint.allowed if self.constraint is not None else None,
        )
        beam_texts = self.tokenizer.target_text(result.tokens)
        # The probability the model gives to the input being some date: the mass of the dates it found (the
        # beams), as it gave it before the constraint renormalised. Trained to answer nothing (the empty
        # string) for what is not a date, it leaves any date little mass there; asked for a date that does
        # not exist, it wanted a day the constraint forbids. Summing over the beams keeps an input that
        # reads as two dates (28/1/24) from looking like no date. Empty beams (possible without a
        # constraint) are the model saying "not a date" and count nothing.
        answered = tf.strings.length(beam_texts) > 0
        mass = tf.where(answered, tf.exp(result.unconstrained_log_probabilities), 0.0)
        date_probability = tf.minimum(tf.reduce_sum(mass, axis=1), 1.0)
        return {
            "texts": beam_texts[:, 0],
            "scores": result.scores[:, 0],
            "log_probabilities": result.log_probabilities[:, 0],
            "beam_texts": beam_texts,
            "beam_scores": result.scores,
            "is_date": date_probability >= self.date_threshold,
            "date_probability": date_probability,
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="texts")])
    def translate_default(self, texts: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._translate(texts, tf.constant(self.default_beam_width))

    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.string, name="texts"), tf.TensorSpec([], tf.int32, name="beam_width")]
    )
    def translate(self, texts: tf.Tensor, beam_width: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._translate(texts, beam_width)

    def signatures(self) -> dict[str, Any]:
        return {"serving_default": self.translate_default, "translate": self.translate}
