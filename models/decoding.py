"""Beam search in TensorFlow ops, so decoding runs inside an exported SavedModel with no Python loop.

A hypothesis's score is its summed log-probability divided by length^α (length normalisation, α = 0.7):
without it, every extra character adds a negative term and short outputs would win. The search keeps
the B best-scoring hypotheses per input; B = 1 is greedy decoding. Finished hypotheses (those that
emitted [END]) stay in the beam with their score frozen, and the loop stops once all have finished or
`max_length` characters were generated.
"""

from collections.abc import Callable
from dataclasses import dataclass

import tensorflow as tf

LENGTH_ALPHA = 0.7
NEG_INF = -1e9  # finite, so sums and divisions of impossible hypotheses never produce NaN


class StepDecoder(tf.Module):
    """What beam search needs from a model.

    `start(source_ids)` → (context, state): context is fixed per input (encoder outputs, masks); state
    changes per step (an RNN's h and c) and is reordered with the beams. Both are tuples of tensors with
    the batch on axis 0. `step(tokens, t, context, state)` → (logits (N, V) for position t + 1, new state),
    where tokens (N, L + 1) holds [START] and the characters chosen so far at positions 0 … t.
    """

    def start(self, source_ids: tf.Tensor) -> tuple[tuple, tuple]:
        raise NotImplementedError

    def step(self, tokens: tf.Tensor, t: tf.Tensor, context: tuple, state: tuple) -> tuple[tf.Tensor, tuple]:
        raise NotImplementedError


@dataclass
class BeamResult:
    tokens: tf.Tensor  # (N, B, L) generated ids, best hypothesis first; [END] then padding (0) after it
    scores: tf.Tensor  # (N, B) length-normalised log-probabilities
    log_probabilities: tf.Tensor  # (N, B) summed log-probabilities
    lengths: tf.Tensor  # (N, B) generated tokens, counting [END]
    # (N, B) summed log-probabilities the model gave the chosen tokens before a constraint renormalised them
    # over what it allows: low where the model wanted to write something the constraint forbids.
    # Equal to log_probabilities without a constraint.
    unconstrained_log_probabilities: tf.Tensor


def beam_search(
    decoder: StepDecoder,
    source_ids: tf.Tensor,
    *,
    beam_width: tf.Tensor | int,
    max_length: int,
    start_id: int,
    end_id: int,
    pad_id: int = 0,
    banned_ids: tuple[int, ...] = (),
    alpha: float = LENGTH_ALPHA,
    constraint: Callable[[tf.Tensor, tf.Tensor], tf.Tensor] | None = None,
) -> BeamResult:
    """Decode a batch of sources; works in eager mode and inside `tf.function` (beam_width may be a tensor).

    `banned_ids` are never generated (padding, the start token, out-of-vocabulary): training never
    asked the model to predict them, so their probabilities mean nothing. `constraint(tokens, t)`, when
    given, returns the (rows, V) ids each hypothesis may generate at step t (`models.date_constraint`); the
    others get no probability, so the softmax spreads over what is allowed.
    """
    beams = tf.convert_to_tensor(beam_width, tf.int32)
    batch = tf.shape(source_ids)[0]
    context, state = decoder.start(source_ids)
    context = _repeat(context, beams)
    state = _repeat(state, beams)

    rows = batch * beams
    tokens = tf.concat([tf.fill([rows, 1], start_id), tf.fill([rows, max_length], pad_id)], axis=1)
    # Only beam 0 is alive at first, so the first step does not fill the beam with copies of one hypothesis.
    sums = tf.tile(tf.where(tf.range(beams) == 0, 0.0, NEG_INF)[tf.newaxis], [batch, 1])
    free_sums = tf.zeros([batch, beams])
    finished = tf.zeros([batch, beams], tf.bool)
    lengths = tf.zeros([batch, beams], tf.int32)

    def keep_going(t, tokens, sums, free_sums, finished, lengths, state):
        return tf.logical_and(t < max_length, tf.logical_not(tf.reduce_all(finished)))

    def advance(t, tokens, sums, free_sums, finished, lengths, state):
        before = (tokens, sums, free_sums, finished, lengths, state)
        logits, state = decoder.step(tokens, t, context, state)
        vocab = tf.shape(logits)[-1]
        # A finished hypothesis has one continuation, padding, which costs nothing and adds no length.
        padding_only = tf.where(tf.range(vocab) == pad_id, 0.0, NEG_INF)

        def log_probabilities(allowed: tf.Tensor) -> tf.Tensor:
            log_probs = tf.reshape(tf.nn.log_softmax(tf.where(allowed, logits, NEG_INF)), [batch, beams, vocab])
            return tf.where(finished[..., tf.newaxis], padding_only, log_probs)

        allowed = tf.reduce_all(
            tf.range(vocab)[:, tf.newaxis] != tf.constant([pad_id, *banned_ids])[tf.newaxis], axis=1
        )
        free_log_probs = log_probabilities(allowed)
        log_probs = free_log_probs if constraint is None else log_probabilities(allowed & constraint(tokens, t))
        candidate_sums = sums[..., tf.newaxis] + log_probs
        candidate_lengths = lengths + tf.cast(tf.logical_not(finished), tf.int32)
        candidate_scores = tf.reshape(
            candidate_sums / _length_penalty(candidate_lengths, alpha)[..., tf.newaxis], [batch, -1]
        )
        candidate_sums = tf.reshape(candidate_sums, [batch, -1])

        _, chosen = tf.math.top_k(candidate_scores, k=beams)
        parent, token = chosen // vocab, chosen % vocab
        sums = tf.gather(candidate_sums, chosen, batch_dims=1)
        free_sums = tf.gather(
            tf.reshape(free_sums[..., tf.newaxis] + free_log_probs, [batch, -1]), chosen, batch_dims=1
        )
        lengths = tf.gather(candidate_lengths, parent, batch_dims=1)
        finished = tf.logical_or(tf.gather(finished, parent, batch_dims=1), token == end_id)

        parent_rows = tf.reshape(parent + tf.range(batch)[:, tf.newaxis] * beams, [-1])
        tokens = tf.gather(tokens, parent_rows)
        # Column t + 1 is still padding (0) in every row, so adding writes the chosen token there.
        tokens += tf.one_hot(t + 1, max_length + 1, dtype=tf.int32)[tf.newaxis] * (tf.reshape(token, [-1, 1]) - pad_id)
        state = tuple(tf.gather(part, parent_rows) for part in state)
        return (t + 1, *_same_shapes((tokens, sums, free_sums, finished, lengths, state), before))

    _, tokens, sums, free_sums, finished, lengths, _ = tf.while_loop(
        keep_going,
        advance,
        (tf.constant(0), tokens, sums, free_sums, finished, lengths, state),
        maximum_iterations=max_length,
    )
    # top_k ranked the beams when they were chosen, so beam 0 is the best hypothesis.
    return BeamResult(
        tokens=tf.reshape(tokens[:, 1:], [batch, beams, max_length]),
        scores=sums / _length_penalty(lengths, alpha),
        log_probabilities=sums,
        lengths=lengths,
        unconstrained_log_probabilities=free_sums,
    )


def _length_penalty(lengths: tf.Tensor, alpha: float) -> tf.Tensor:
    return tf.pow(tf.cast(tf.maximum(lengths, 1), tf.float32), alpha)


def _same_shapes(tensors, like):
    # Gathers lose static sizes that did not change; tf.while_loop requires loop variables to keep them.
    for tensor, reference in zip(tf.nest.flatten(tensors), tf.nest.flatten(like)):
        tensor.set_shape(reference.shape)
    return tensors


def _repeat(tensors: tuple, times: tf.Tensor) -> tuple:
    """Each input's tensors repeated `times` times on axis 0: the rows of one input's beams are adjacent."""
    return tuple(tf.repeat(tensor, times, axis=0) for tensor in tensors)
