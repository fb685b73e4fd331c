"""The Seq2Seq exported graph: strings in; beam-searched strings, scores and every beam out."""

from typing import Any

import keras
import tensorflow as tf

from models.date_constraint import IsoDateConstraint
from models.decoding import LENGTH_ALPHA, beam_search
from models.seq2seq import Seq2SeqStepDecoder
from models.text_graph import END_ID, OOV_ID, PAD_ID, START_ID, CharTokenizer

MAX_BEAM_WIDTH = 8


class Seq2SeqGraph(tf.Module):
    """The exported graph: a batch of strings in; decoded strings and their scores out."""

    OUTPUTS = ("texts", "scores", "log_probabilities", "beam_texts", "beam_scores")

    def __init__(
        self,
        model: keras.Model,
        tokenizer: CharTokenizer,
        *,
        default_beam_width: int = 3,
        alpha: float = LENGTH_ALPHA,
        constraint: IsoDateConstraint | None = None,
    ):
        """`constraint`: what the beam search may write (`models.date_constraint`); None: any string."""
        super().__init__()
        self.tokenizer = tokenizer
        self.decoder = Seq2SeqStepDecoder(model)
        self.default_beam_width = default_beam_width
        self.alpha = alpha
        self.constraint = constraint

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
        return {
            "texts": beam_texts[:, 0],
            "scores": result.scores[:, 0],
            "log_probabilities": result.log_probabilities[:, 0],
            "beam_texts": beam_texts,
            "beam_scores": result.scores,
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
