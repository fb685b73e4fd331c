"""The Seq2Seq builders, their masks, the in-graph tokenizer and beam search on hand-built models."""

import itertools
import math
import unicodedata

import numpy as np
import pytest
import tensorflow as tf

from models.decoding import LENGTH_ALPHA, NEG_INF, StepDecoder, beam_search
from models.seq2seq import MODEL_BUILDERS, BahdanauAttention, Seq2SeqStepDecoder, attention_weights, positional_encoding
from models.text_graph import (
    END_ID,
    OOV_ID,
    PAD_ID,
    START_ID,
    CharTokenizer,
    compatibility_mappings,
    compatibility_table,
    normalize_text,
)

SOURCE = tf.constant([[5, 6, 7, 8, 0], [3, 4, 0, 0, 0]], tf.int32)
DECODER = tf.constant([[START_ID, 5, 6, 7], [START_ID, 4, 5, 0]], tf.int32)


def build(architecture: str):
    import keras

    keras.utils.set_random_seed(0)
    return MODEL_BUILDERS[architecture](source_vocab_size=12, target_vocab_size=10)


@pytest.fixture(scope="module", params=sorted(MODEL_BUILDERS))
def model(request):
    return build(request.param)


def test_logits_shape(model):
    assert model([SOURCE, DECODER]).shape == (2, 4, 10)


def test_source_padding_changes_nothing(model):
    more_padding = tf.concat([SOURCE, tf.zeros([2, 6], tf.int32)], axis=1)
    np.testing.assert_allclose(model([more_padding, DECODER]).numpy(), model([SOURCE, DECODER]).numpy(), atol=1e-5)


def test_attention_ignores_padding_and_sums_to_one(model):
    weights = attention_weights(model, SOURCE, DECODER).numpy()
    assert weights.shape == (2, 4, 5)
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, atol=1e-5)
    assert np.all(weights[0, :, 4] < 1e-6) and np.all(weights[1, :, 2:] < 1e-6)


def test_decoder_is_causal(model):
    changed_future = tf.tensor_scatter_nd_update(DECODER, [[0, 3], [1, 2]], [9, 9])
    before, after = model([SOURCE, DECODER]).numpy(), model([SOURCE, changed_future]).numpy()
    np.testing.assert_allclose(after[0, :3], before[0, :3], atol=1e-5)
    np.testing.assert_allclose(after[1, :2], before[1, :2], atol=1e-5)
    assert not np.allclose(after[0, 3], before[0, 3])


def test_step_decoder_matches_teacher_forcing(model):
    """Feeding the decoder one character at a time gives the teacher-forced pass's logits."""
    decoder = Seq2SeqStepDecoder(model)
    context, state = decoder.start(SOURCE)
    expected = model([SOURCE, DECODER]).numpy()
    for t in range(DECODER.shape[1]):
        logits, state = decoder.step(DECODER, tf.constant(t), context, state)
        np.testing.assert_allclose(logits.numpy()[0], expected[0, t], atol=1e-4)


def test_bahdanau_attention_fully_masked_row_has_no_nan():
    attention = BahdanauAttention(4)
    context, weights = attention(tf.ones([1, 2, 3]), tf.ones([1, 5, 3]), tf.zeros([1, 5], tf.bool))
    assert np.isfinite(context.numpy()).all() and np.isfinite(weights.numpy()).all()


def test_positional_encoding_follows_the_formula():
    table = positional_encoding(50, 16)
    assert table.shape == (50, 16)
    assert table[0, 0] == 0.0 and table[0, 1] == 1.0
    assert table[7, 4] == pytest.approx(math.sin(7 / 10000 ** (4 / 16)), abs=1e-6)
    assert table[7, 5] == pytest.approx(math.cos(7 / 10000 ** (4 / 16)), abs=1e-6)


# --- tokenizer ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    return CharTokenizer.fit(
        ["March 4, 1999", "2023년 1월 20일"], ["1999-03-04", "2023-01-20"], max_input_length=12, max_output_length=10
    )


def normalized(*texts: str) -> list[str]:
    return [text.decode() for text in normalize_text(tf.constant(texts), compatibility_table()).numpy()]


def test_normalize_text_lowercases_unicode_and_collapses_spaces():
    assert normalized("  MÄRZ   4,\t1999 ") == ["märz 4, 1999"]


def test_normalize_text_folds_compatibility_forms_as_nfkc_does():
    texts = [
        "２０２２年４月４日",
        "Ｍａｒｃｈ　４，　１９９９",
        "２０２２／０４／０４（月）",
        "",
        "plain 1.2.2000",
        "①②.③.２０２０",
        "4ᵗʰ of March 1999",
        "ｶﾀｶﾅ 1999",
        "㋀ 1999",
    ]
    folded = normalized(*texts)
    assert folded[:6] == ["2022年4月4日", "march 4, 1999", "2022/04/04(月)", "", "plain 1.2.2000", "12.3.2020"]
    assert folded == [" ".join(unicodedata.normalize("NFKC", text).lower().split()) for text in texts]


def test_every_character_nfkc_replaces_alone_is_replaced_as_nfkc_does():
    keys, _ = compatibility_mappings()
    assert len(keys) > 4000 and "\uff10" in keys and "\u2460" in keys  # full-width 0, circled 1
    sample = keys[::7]  # every seventh of the ~4,900 keeps the test quick; the table is built from all
    found = normalize_text(tf.constant(sample), compatibility_table()).numpy()
    expected = [" ".join(unicodedata.normalize("NFKC", char).lower().split()) for char in sample]
    assert [text.decode() for text in found] == expected


def test_source_ids_pad_truncate_and_map_unknown_characters(tokenizer):
    ids = tokenizer.source_ids(tf.constant(["march", "ZZ", "", "march 4, 1999 and more"])).numpy()
    assert ids.shape == (4, 12)
    assert list(ids[1, :3]) == [OOV_ID, OOV_ID, PAD_ID]
    assert np.all(ids[2] == PAD_ID)
    assert np.all(ids[0, 5:] == PAD_ID) and np.all(ids[0, :5] > OOV_ID)


def test_source_ids_of_only_empty_strings_keep_a_time_axis(tokenizer):
    assert tokenizer.source_ids(tf.constant(["", ""])).shape == (2, 1)


def test_invalid_utf8_is_replaced_not_an_error(tokenizer):
    ids = tokenizer.source_ids(tf.constant([b"\xff\xfe 1999"])).numpy()
    assert ids.shape == (1, 7) and list(ids[0, :2]) == [OOV_ID, OOV_ID]


def test_target_ids_and_back(tokenizer):
    decoder_input, labels = tokenizer.target_ids(tf.constant(["1999-03-04"]))
    assert decoder_input.numpy()[0, 0] == START_ID and labels.numpy()[0, -1] == END_ID
    np.testing.assert_array_equal(decoder_input.numpy()[0, 1:], labels.numpy()[0, :-1])
    assert tokenizer.target_text(labels).numpy()[0].decode() == "1999-03-04"


def test_target_text_stops_at_end_and_drops_special_tokens(tokenizer):
    one = tokenizer.target_lookup(tf.constant(["1"])).numpy()[0]
    ids = tf.constant([[one, START_ID, one, OOV_ID, END_ID, one, one, PAD_ID]])
    assert tokenizer.target_text(ids).numpy()[0].decode() == "11"


def test_tokenizer_config_round_trip(tokenizer):
    again = CharTokenizer.from_config(tokenizer.get_config())
    texts = tf.constant(["2023년 1월 20일", "x"])
    np.testing.assert_array_equal(again.source_ids(texts).numpy(), tokenizer.source_ids(texts).numpy())


# --- beam search on hand-built models -------------------------------------------------------------

A, B = 4, 5  # two real tokens; 0 padding, 2 start, 3 end, 1 never produced


class TableDecoder(StepDecoder):
    """A "model" whose next-token probabilities depend only on (which table, last token)."""

    def __init__(self, tables: np.ndarray):
        super().__init__()
        self.log_tables = tf.constant(np.log(np.maximum(tables, 1e-30)), tf.float32)  # (tables, vocab, vocab)

    def start(self, source_ids):
        return (source_ids[:, 0],), ()

    def step(self, tokens, t, context, state):
        (table,) = context
        return tf.gather_nd(self.log_tables, tf.stack([table, tokens[:, t]], axis=1)), ()


def table(rows: dict[int, dict[int, float]]) -> np.ndarray:
    probabilities = np.zeros((6, 6))
    for previous, following in rows.items():
        for token, p in following.items():
            probabilities[previous, token] = p
    return probabilities


# Greedy takes A (0.6) and then keeps taking A; the best sequence is B [END] with probability 0.36.
GREEDY_TRAP = table({START_ID: {A: 0.6, B: 0.4}, A: {A: 0.4, B: 0.3, END_ID: 0.3}, B: {END_ID: 0.9, A: 0.05, B: 0.05}})


def search(tables: np.ndarray, which: list[int], beam_width, max_length: int = 4, alpha: float = LENGTH_ALPHA):
    source = tf.constant([[index] for index in which], tf.int32)
    return beam_search(
        TableDecoder(tables),
        source,
        beam_width=beam_width,
        max_length=max_length,
        start_id=START_ID,
        end_id=END_ID,
        banned_ids=(OOV_ID, START_ID),
        alpha=alpha,
    )


def test_greedy_falls_into_the_trap_and_beam_search_does_not():
    greedy = search(GREEDY_TRAP[np.newaxis], [0], beam_width=1)
    assert greedy.tokens.numpy()[0, 0].tolist() == [A, A, A, A]
    beam = search(GREEDY_TRAP[np.newaxis], [0], beam_width=2)
    assert beam.tokens.numpy()[0, 0].tolist() == [B, END_ID, PAD_ID, PAD_ID]
    assert beam.lengths.numpy()[0, 0] == 2
    assert beam.log_probabilities.numpy()[0, 0] == pytest.approx(math.log(0.36), abs=1e-5)
    assert beam.scores.numpy()[0, 0] == pytest.approx(math.log(0.36) / 2**LENGTH_ALPHA, abs=1e-5)
    assert beam.scores.numpy()[0, 0] >= beam.scores.numpy()[0, 1]


def test_length_normalisation_prefers_a_longer_confident_sequence():
    # "A [END]": p = 0.45, score log(0.45) / 2^0.7 = -0.49; "B A [END]": p = 0.44, score log(0.44) / 3^0.7 = -0.38.
    tables = table({START_ID: {A: 0.45, B: 0.55}, A: {END_ID: 1.0}, B: {A: 0.8, END_ID: 0.2}})[np.newaxis]
    normalised = search(tables, [0], beam_width=2)
    assert normalised.tokens.numpy()[0, 0].tolist()[:3] == [B, A, END_ID]
    assert normalised.scores.numpy()[0, 0] == pytest.approx(math.log(0.44) / 3**LENGTH_ALPHA, abs=1e-5)
    raw = search(tables, [0], beam_width=2, alpha=0.0)
    assert raw.tokens.numpy()[0, 0].tolist()[:2] == [A, END_ID]


def brute_force_best(probabilities: np.ndarray, max_length: int) -> tuple[list[int], float]:
    """Every sequence over {A, B, END} up to max_length, scored sum(log p) / length^α."""
    best, best_score = None, -math.inf
    for length in range(1, max_length + 1):
        for tokens in itertools.product([A, B, END_ID], repeat=length):
            if END_ID in tokens[:-1]:
                continue
            previous, total = START_ID, 0.0
            for token in tokens:
                total += math.log(max(probabilities[previous, token], 1e-30))
                previous = token
            if tokens[-1] != END_ID and length < max_length:
                continue  # unfinished hypotheses only count when the length limit cut them off
            score = total / length**LENGTH_ALPHA
            if score > best_score:
                best, best_score = list(tokens), score
    return best, best_score


def test_a_wide_beam_finds_the_exhaustive_optimum_for_each_input_of_a_batch():
    rng = np.random.default_rng(0)
    tables = np.zeros((5, 6, 6))
    for index in range(5):
        for previous in (START_ID, A, B):
            tables[index, previous, [A, B, END_ID]] = rng.dirichlet([1.0, 1.0, 1.0])
    result = search(tables, [0, 1, 2, 3, 4], beam_width=27, max_length=3)
    for index in range(5):
        expected_tokens, expected_score = brute_force_best(tables[index], 3)
        tokens = result.tokens.numpy()[index, 0].tolist()
        assert tokens[: len(expected_tokens)] == expected_tokens
        assert result.scores.numpy()[index, 0] == pytest.approx(expected_score, abs=1e-4)


def test_graph_mode_with_a_tensor_beam_width_matches_eager():
    tables = GREEDY_TRAP[np.newaxis]
    decoder = TableDecoder(tables)

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.int32), tf.TensorSpec([], tf.int32)])
    def decode(source, beams):
        result = beam_search(
            decoder,
            source,
            beam_width=beams,
            max_length=4,
            start_id=START_ID,
            end_id=END_ID,
            banned_ids=(OOV_ID, START_ID),
        )
        return result.tokens, result.scores

    for width in (1, 2, 3):
        tokens, scores = decode(tf.constant([[0], [0]]), tf.constant(width))
        eager = search(tables, [0, 0], beam_width=width)
        np.testing.assert_array_equal(tokens.numpy(), eager.tokens.numpy())
        np.testing.assert_allclose(scores.numpy(), eager.scores.numpy(), atol=1e-6)


def test_a_constraint_renormalises_the_score_but_the_unconstrained_probability_keeps_what_it_forbade():
    # The model wants END at once (0.7); the constraint forbids END at the first step, so the answer is
    # A [END] with constrained probability (0.2 / 0.3) × 1 and the model's own probability 0.2 × 1.
    tables = table({START_ID: {END_ID: 0.7, A: 0.2, B: 0.1}, A: {END_ID: 1.0}, B: {END_ID: 1.0}})[np.newaxis]

    def no_end_first(tokens, t):
        first = tf.not_equal(tf.range(6), END_ID)[tf.newaxis]
        return tf.broadcast_to(tf.logical_or(first, t > 0), [tf.shape(tokens)[0], 6])

    result = beam_search(
        TableDecoder(tables),
        tf.constant([[0]]),
        beam_width=2,
        max_length=3,
        start_id=START_ID,
        end_id=END_ID,
        banned_ids=(OOV_ID, START_ID),
        constraint=no_end_first,
    )
    assert result.tokens.numpy()[0, 0].tolist()[:2] == [A, END_ID]
    assert result.log_probabilities.numpy()[0, 0] == pytest.approx(math.log(0.2 / 0.3), abs=1e-5)
    assert result.unconstrained_log_probabilities.numpy()[0, 0] == pytest.approx(math.log(0.2), abs=1e-5)
    assert result.unconstrained_log_probabilities.numpy()[0, 1] == pytest.approx(math.log(0.1), abs=1e-5)
    free = search(tables, [0], beam_width=2, max_length=3)
    np.testing.assert_allclose(free.unconstrained_log_probabilities.numpy(), free.log_probabilities.numpy())


def test_banned_tokens_are_never_generated():
    # The table prefers the start token and padding after START; beam search must pick among the rest.
    tables = table({START_ID: {START_ID: 0.5, PAD_ID: 0.3, A: 0.15, END_ID: 0.05}, A: {END_ID: 1.0}})
    result = search(tables[np.newaxis], [0], beam_width=2, max_length=3)
    assert result.tokens.numpy()[0, 0].tolist()[:2] == [A, END_ID]
    assert NEG_INF < result.scores.numpy()[0, 0] < 0


def test_saved_and_reloaded_model_gives_the_same_logits_without_warnings(model, tmp_path):
    import warnings

    import keras

    model.save(tmp_path / "model.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. Keras's "layer has unbuilt state" when a custom layer lacks build()
        reloaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(reloaded([SOURCE, DECODER]).numpy(), model([SOURCE, DECODER]).numpy(), atol=1e-6)
