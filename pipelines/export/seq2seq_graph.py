"""The Seq2Seq exported graph: strings in; beam-searched strings, scores, every beam, and whether the input
is a date at all out; on request (the `translate_attention` signature) also the attention of the best beam."""

from typing import Any

import keras
import tensorflow as tf

from models.date_constraint import IsoDateConstraint
from models.decoding import LENGTH_ALPHA, BeamResult, beam_search
from models.seq2seq import Seq2SeqStepDecoder
from models.text_graph import END_ID, OOV_ID, PAD_ID, START_ID, CharTokenizer

MAX_BEAM_WIDTH = 8
DEFAULT_DATE_THRESHOLD = 0.5  # before calibration on a dev split
TEXTS_AND_BEAM_WIDTH = [tf.TensorSpec([None], tf.string, name="texts"), tf.TensorSpec([], tf.int32, name="beam_width")]


class Seq2SeqGraph(tf.Module):
    """The exported graph: a batch of strings in; decoded strings and their scores out."""

    OUTPUTS = ("texts", "scores", "log_probabilities", "beam_texts", "beam_scores", "is_date", "date_probability")
    # translate_attention's: attention (N, L, Tx), row t what the best beam's character t (then [END], then
    # padding) read of each source character; source_characters (N, Tx), those characters, "" past the text.
    ATTENTION_OUTPUTS = (*OUTPUTS, "attention", "source_characters")

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

    def _search(self, source_ids: tf.Tensor, beam_width: tf.Tensor) -> BeamResult:
        message = f"beam_width must be an integer from 1 to {MAX_BEAM_WIDTH}"
        checks = [
            tf.debugging.assert_greater_equal(beam_width, 1, message=message),
            tf.debugging.assert_less_equal(beam_width, MAX_BEAM_WIDTH, message=message),
        ]
        # Every op that uses the beam width waits for the checks, so a bad width fails with this message
        # rather than with whichever shape error an empty beam would hit first.
        with tf.control_dependencies(checks):
            beam_width = tf.identity(beam_width)
        return beam_search(
            self.decoder,
            source_ids,
            beam_width=beam_width,
            max_length=self.tokenizer.max_output_length + 1,  # + [END]
            start_id=START_ID,
            end_id=END_ID,
            pad_id=PAD_ID,
            banned_ids=(OOV_ID, START_ID),
            alpha=self.alpha,
            constraint=self.constraint.allowed if self.constraint is not None else None,
        )

    def _answers(self, result: BeamResult) -> dict[str, tf.Tensor]:
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

    def _translate(self, texts: tf.Tensor, beam_width: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._answers(self._search(self.tokenizer.source_ids(texts), beam_width))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="texts")])
    def translate_default(self, texts: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._translate(texts, tf.constant(self.default_beam_width))

    @tf.function(input_signature=TEXTS_AND_BEAM_WIDTH)
    def translate(self, texts: tf.Tensor, beam_width: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._translate(texts, beam_width)

    @tf.function(input_signature=TEXTS_AND_BEAM_WIDTH)
    def translate_attention(self, texts: tf.Tensor, beam_width: tf.Tensor) -> dict[str, tf.Tensor]:
        """`translate`'s outputs and the best beam's attention (`ATTENTION_OUTPUTS`), for the page's heat-map: a
        signature of its own, so that `translate` does not pay for the extra decoder pass."""
        source_ids = self.tokenizer.source_ids(texts)
        result = self._search(source_ids, beam_width)
        best = result.tokens[:, 0]  # (N, L): the best beam's characters, [END], padding
        # Teacher-forced over [START] and the best beam's own characters, the decoder reads what it read while
        # the search wrote them: row t is what it attended to as it wrote character t.
        decoder_ids = tf.concat([tf.fill([tf.shape(best)[0], 1], START_ID), best[:, :-1]], axis=1)
        return self._answers(result) | {
            "attention": self.decoder.attention(source_ids, decoder_ids),
            "source_characters": self.tokenizer.source_characters(texts),
        }

    def signatures(self) -> dict[str, Any]:
        return {
            "serving_default": self.translate_default,
            "translate": self.translate,
            "translate_attention": self.translate_attention,
        }
