"""Character-level encoder-decoder models: a BiLSTM with Bahdanau attention, and a Transformer.

Both builders return an uncompiled Functional `keras.Model` trained with teacher forcing:

    inputs  source_ids  (N, Tx) int32, 0 = padding        the typed text, one id per character
            decoder_ids (N, Ty) int32, [START] y₁ … y_{T}    the target shifted right
    output  logits      (N, Ty, target_vocab_size)          predicts y₁ … y_T [END]

`step_decoder(model)` rebuilds the same layers as an encoder plus a one-step decoder, the interface
beam search (`models/decoding.py`) runs inside the exported graph.
"""

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from models.decoding import StepDecoder

MASK_VALUE = -1e9  # added to masked attention scores; finite so a fully masked row still gives no NaN


@keras.saving.register_keras_serializable(package="modelservice")
class BahdanauAttention(layers.Layer):
    """Additive attention: e(q, h) = vᵀ tanh(W₁ q + W₂ h), α = softmax(e) over unmasked steps, c = Σ α h."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.query_projection = layers.Dense(units, use_bias=False, name="W1")
        self.value_projection = layers.Dense(units, name="W2")
        self.score = layers.Dense(1, use_bias=False, name="v")
        # Padding is handled through the explicit `values_mask`; Keras masks stop here instead of warning.
        self.supports_masking = True

    def build(self, query_shape, values_shape, values_mask_shape=None):
        self.query_projection.build(query_shape)
        self.value_projection.build(values_shape)
        self.score.build((*values_shape[:-1], self.units))

    def call(self, query, values, values_mask):
        """query (N, Tq, Dq), values (N, Tx, Dv), values_mask (N, Tx) bool
        → context (N, Tq, Dv), weights (N, Tq, Tx)."""
        projected_query = ops.expand_dims(self.query_projection(query), 2)  # (N, Tq, 1, units)
        projected_values = ops.expand_dims(self.value_projection(values), 1)  # (N, 1, Tx, units)
        scores = ops.squeeze(self.score(ops.tanh(projected_query + projected_values)), -1)  # (N, Tq, Tx)
        scores = ops.where(ops.expand_dims(values_mask, 1), scores, MASK_VALUE)
        weights = ops.softmax(scores, axis=-1)
        return ops.matmul(weights, values), weights

    def compute_mask(self, *args, **kwargs):
        return None

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def _padding_mask(ids):
    return ops.not_equal(ids, 0)


def _seq2seq(encoder: keras.Model, decoder: keras.Model, name: str) -> keras.Model:
    """Join an encoder (source_ids → [encoded, *states]) and a decoder ([decoder_ids, encoded, mask, *states]
    → [logits, attention, *states]) into the teacher-forced training model."""
    source_ids = keras.Input(shape=(None,), dtype="int32", name="source_ids")
    decoder_ids = keras.Input(shape=(None,), dtype="int32", name="decoder_ids")
    encoded, *states = _encode(encoder, source_ids)
    logits = decoder([decoder_ids, encoded, _padding_mask(source_ids), *states])[0]
    return keras.Model([source_ids, decoder_ids], logits, name=name)


def _encode(encoder: keras.Model, source_ids, **kwargs) -> list:
    """[encoded, *states]; Keras returns a one-output model's output bare, not in a list."""
    outputs = encoder(source_ids, **kwargs)
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def build_lstm_attention(
    *,
    source_vocab_size: int,
    target_vocab_size: int,
    embedding_dim: int = 64,
    encoder_units: int = 128,
    attention_units: int = 128,
    dropout: float = 0.0,
    name: str = "lstm_attention",
) -> keras.Model:
    """Embedding → bidirectional LSTM encoder; LSTM decoder started from the encoder's final states;
    Bahdanau attention from each decoder output over all encoder outputs; [output; context] → tanh → logits.

    The decoder is a sub-model that runs any number of steps: the whole shifted target in training,
    one character at a time in beam search.

    Args:
        source_vocab_size, target_vocab_size: vocabulary sizes including padding and OOV ids.
        embedding_dim: size of the character embeddings (source and target).
        encoder_units: units of each LSTM direction; the decoder has twice as many, so the concatenated
            forward and backward final states initialise it directly.
        attention_units: width of the additive attention's hidden layer.
        dropout: rate of the Dropout before the output layer; 0 leaves it out.
        name: model name.
    """
    source_ids = keras.Input(shape=(None,), dtype="int32", name="source_ids")
    source = layers.Embedding(source_vocab_size, embedding_dim, mask_zero=True, name="source_embedding")(source_ids)
    bilstm = layers.Bidirectional(layers.LSTM(encoder_units, return_sequences=True, return_state=True), name="bilstm")
    encoded, forward_h, forward_c, backward_h, backward_c = bilstm(source)
    # Zero at padded positions (the LSTM would repeat its last output there); also ends the Keras mask here.
    encoded = ops.where(ops.expand_dims(_padding_mask(source_ids), -1), encoded, 0.0)
    state_h = layers.Concatenate(name="initial_h")([forward_h, backward_h])
    state_c = layers.Concatenate(name="initial_c")([forward_c, backward_c])
    encoder = keras.Model(source_ids, [encoded, state_h, state_c], name="encoder")

    units = 2 * encoder_units
    decoder_ids = keras.Input(shape=(None,), dtype="int32", name="decoder_ids")
    encoded_in = keras.Input(shape=(None, units), name="encoded")
    mask_in = keras.Input(shape=(None,), dtype="bool", name="source_mask")
    h_in, c_in = keras.Input(shape=(units,), name="h"), keras.Input(shape=(units,), name="c")
    target = layers.Embedding(target_vocab_size, embedding_dim, mask_zero=True, name="target_embedding")(decoder_ids)
    lstm = layers.LSTM(units, return_sequences=True, return_state=True, name="lstm")
    decoded, h_out, c_out = lstm(target, initial_state=[h_in, c_in])
    context, weights = BahdanauAttention(attention_units, name="attention")(decoded, encoded_in, mask_in)
    hidden = layers.Dense(units, activation="tanh", name="attention_output")(
        layers.Concatenate(name="output_with_context")([decoded, context])
    )
    if dropout > 0:
        hidden = layers.Dropout(dropout, name="dropout")(hidden)
    logits = layers.Dense(target_vocab_size, name="logits")(hidden)
    decoder = keras.Model(
        [decoder_ids, encoded_in, mask_in, h_in, c_in], [logits, weights, h_out, c_out], name="decoder"
    )
    return _seq2seq(encoder, decoder, name)


def positional_encoding(length: int, depth: int) -> np.ndarray:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d)); shape (length, depth)."""
    positions = np.arange(length)[:, np.newaxis]
    rates = 1.0 / np.power(10000.0, (2 * (np.arange(depth) // 2)) / depth)
    angles = positions * rates[np.newaxis, :]
    return np.where(np.arange(depth) % 2 == 0, np.sin(angles), np.cos(angles)).astype("float32")


@keras.saving.register_keras_serializable(package="modelservice")
class PositionalEmbedding(layers.Layer):
    """Token embedding scaled by √d plus the fixed sinusoidal position signal."""

    def __init__(self, vocab_size: int, depth: int, max_length: int, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.depth, self.max_length = vocab_size, depth, max_length
        self.embedding = layers.Embedding(vocab_size, depth, name="embedding")
        self.positions = positional_encoding(max_length, depth)

    def build(self, ids_shape):
        self.embedding.build(ids_shape)

    def call(self, ids):
        positions = ops.slice(self.positions, [0, 0], [ops.shape(ids)[1], self.depth])
        return self.embedding(ids) * ops.sqrt(float(self.depth)) + positions[np.newaxis]

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "depth": self.depth,
            "max_length": self.max_length,
        }


def _feed_forward(x, depth: int, hidden: int, dropout: float, name: str):
    y = layers.Dense(hidden, activation="relu", name=f"{name}_hidden")(x)
    y = layers.Dense(depth, name=f"{name}_out")(y)
    if dropout > 0:
        y = layers.Dropout(dropout, name=f"{name}_dropout")(y)
    return layers.LayerNormalization(name=f"{name}_norm")(layers.Add(name=f"{name}_add")([x, y]))


def _attention_block(query, value, mask, *, heads: int, depth: int, dropout: float, name: str, causal: bool = False):
    attention = layers.MultiHeadAttention(heads, depth // heads, dropout=dropout, name=name)
    attended, scores = attention(
        query, value, attention_mask=mask, use_causal_mask=causal, return_attention_scores=True
    )
    return layers.LayerNormalization(name=f"{name}_norm")(layers.Add(name=f"{name}_add")([query, attended])), scores


def build_transformer(
    *,
    source_vocab_size: int,
    target_vocab_size: int,
    depth: int = 128,
    heads: int = 4,
    feed_forward_units: int = 256,
    encoder_layers: int = 2,
    decoder_layers: int = 2,
    max_source_length: int = 64,
    max_target_length: int = 32,
    dropout: float = 0.1,
    name: str = "transformer",
) -> keras.Model:
    """Encoder-decoder Transformer: self-attention with a padding mask in the encoder, causal
    self-attention and padding-masked cross-attention in the decoder, sinusoidal positions.

    Args:
        source_vocab_size, target_vocab_size: vocabulary sizes including padding and OOV ids.
        depth: model width (d_model); divisible by `heads`.
        heads: attention heads per multi-head attention layer.
        feed_forward_units: hidden width of each position-wise feed-forward block.
        encoder_layers, decoder_layers: number of blocks.
        max_source_length, max_target_length: longest sequences the position tables cover.
        dropout: rate inside attention and after feed-forward blocks.
        name: model name.
    """
    source_ids = keras.Input(shape=(None,), dtype="int32", name="source_ids")
    # (N, 1, Tx): broadcast over every query position, so keys at padded source positions get no weight.
    source_mask = ops.expand_dims(_padding_mask(source_ids), 1)
    x = PositionalEmbedding(source_vocab_size, depth, max_source_length, name="source_embedding")(source_ids)
    for i in range(encoder_layers):
        x, _ = _attention_block(
            x, x, source_mask, heads=heads, depth=depth, dropout=dropout, name=f"encoder_{i}_self_attention"
        )
        x = _feed_forward(x, depth, feed_forward_units, dropout, name=f"encoder_{i}_feed_forward")
    encoder = keras.Model(source_ids, [x], name="encoder")

    decoder_ids = keras.Input(shape=(None,), dtype="int32", name="decoder_ids")
    memory = keras.Input(shape=(None, depth), name="encoded")
    mask_in = keras.Input(shape=(None,), dtype="bool", name="source_mask")
    cross_mask = ops.expand_dims(mask_in, 1)
    y = PositionalEmbedding(target_vocab_size, depth, max_target_length, name="target_embedding")(decoder_ids)
    for i in range(decoder_layers):
        y, _ = _attention_block(
            y, y, None, heads=heads, depth=depth, dropout=dropout, name=f"decoder_{i}_self_attention", causal=True
        )
        y, scores = _attention_block(
            y, memory, cross_mask, heads=heads, depth=depth, dropout=dropout, name=f"decoder_{i}_cross_attention"
        )
        y = _feed_forward(y, depth, feed_forward_units, dropout, name=f"decoder_{i}_feed_forward")
    logits = layers.Dense(target_vocab_size, name="logits")(y)
    # The last block's cross-attention, averaged over heads, is the map the heat-map plots show.
    decoder = keras.Model([decoder_ids, memory, mask_in], [logits, ops.mean(scores, axis=1)], name="decoder")
    return _seq2seq(encoder, decoder, name)


MODEL_BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "lstm": build_lstm_attention,
    "transformer": build_transformer,
}


def attention_weights(model: keras.Model, source_ids: tf.Tensor, decoder_ids: tf.Tensor) -> tf.Tensor:
    """Attention weights (N, Ty, Tx) of the teacher-forced pass: which source characters each output step read."""
    return _teacher_forced_attention(model.get_layer("encoder"), model.get_layer("decoder"), source_ids, decoder_ids)


def _teacher_forced_attention(
    encoder: keras.Model, decoder: keras.Model, source_ids: tf.Tensor, decoder_ids: tf.Tensor
) -> tf.Tensor:
    # Both decoders return the attention as their second output: Bahdanau's, or the last cross-attention's.
    encoded, *states = _encode(encoder, source_ids, training=False)
    return decoder([decoder_ids, encoded, _padding_mask(source_ids), *states], training=False)[1]


class Seq2SeqStepDecoder(StepDecoder):
    """A trained model's encoder, and its decoder advanced one character per call."""

    def __init__(self, model: keras.Model):
        super().__init__()
        self.encoder = model.get_layer("encoder")
        self.decoder = model.get_layer("decoder")
        # The LSTM carries (h, c) from step to step; the Transformer has no state and re-reads the prefix.
        self.recurrent = len(self.decoder.inputs) > 3

    def start(self, source_ids: tf.Tensor) -> tuple[tuple, tuple]:
        encoded, *states = _encode(self.encoder, source_ids, training=False)
        return (encoded, _padding_mask(source_ids)), tuple(states)

    def step(self, tokens: tf.Tensor, t: tf.Tensor, context: tuple, state: tuple) -> tuple[tf.Tensor, tuple]:
        if self.recurrent:
            logits, _, *state = self.decoder([tokens[:, t : t + 1], *context, *state], training=False)
            return logits[:, 0], tuple(state)
        # The whole fixed-size buffer, not a growing prefix: one traced shape, and the causal mask keeps
        # position t blind to the padding after it.
        logits, _ = self.decoder([tokens, *context], training=False)
        return tf.gather(logits, t, axis=1), ()

    def attention(self, source_ids: tf.Tensor, decoder_ids: tf.Tensor) -> tf.Tensor:
        """`attention_weights` of the teacher-forced pass over `decoder_ids` ([START] and a decoded hypothesis):
        (N, Ty, Tx), what the decoder read as it wrote each character."""
        return _teacher_forced_attention(self.encoder, self.decoder, source_ids, decoder_ids)
