"""The Seq2Seq graph's attention signature, on small untrained models of both architectures: the same answers as
`translate`, and the attention the model's own teacher-forced pass gives for the best beam.

Untrained weights make the answers arbitrary, never the shapes or the identities checked here; the date constraint
makes every answer ten characters long, whatever the weights.
"""

import unicodedata

import numpy as np
import pytest
import tensorflow as tf

from models.date_constraint import IsoDateConstraint
from models.seq2seq import MODEL_BUILDERS, attention_weights
from models.text_graph import END_ID, CharTokenizer
from pipelines.export.seq2seq_graph import Seq2SeqGraph

MAX_INPUT_LENGTH = 12
MAX_OUTPUT_LENGTH = 10
# Of several lengths (padding), one past MAX_INPUT_LENGTH (truncation), one with full-width forms and spaces.
TEXTS = ["20.01.2023", "March 4th, 1999 (Saturday)", "２０２２年４月４日", "  4  MAR 99 "]
SMALL = {
    "lstm": {"embedding_dim": 8, "encoder_units": 8, "attention_units": 8},
    "transformer": {
        "depth": 16,
        "heads": 2,
        "feed_forward_units": 16,
        "encoder_layers": 1,
        "decoder_layers": 1,
        "max_source_length": MAX_INPUT_LENGTH,
        "max_target_length": MAX_OUTPUT_LENGTH + 2,  # [START], the answer, [END]
    },
}


@pytest.fixture(scope="module")
def tokenizer() -> CharTokenizer:
    return CharTokenizer.fit(
        TEXTS,
        ["2023-01-20", "1999-03-04", "2022-04-04", "1999-03-04", "1956-07-28"],  # every digit, and "-"
        max_input_length=MAX_INPUT_LENGTH,
        max_output_length=MAX_OUTPUT_LENGTH,
    )


@pytest.fixture(scope="module", params=sorted(SMALL))
def model(request, tokenizer):
    import keras

    keras.utils.set_random_seed(0)
    return MODEL_BUILDERS[request.param](
        source_vocab_size=tokenizer.source_vocab_size,
        target_vocab_size=tokenizer.target_vocab_size,
        **SMALL[request.param],
    )


@pytest.fixture(scope="module")
def graph(model, tokenizer) -> Seq2SeqGraph:
    constraint = IsoDateConstraint(tokenizer.target_vocabulary, end_id=END_ID, min_year=1900, max_year=2099)
    return Seq2SeqGraph(model, tokenizer, constraint=constraint)


@pytest.fixture(scope="module")
def outputs(graph) -> dict[str, np.ndarray]:
    found = graph.translate_attention(tf.constant(TEXTS), tf.constant(3))
    return {key: value.numpy() for key, value in found.items()}


def normalised_characters(text: str) -> list[str]:
    """What the graph reads of `text`, computed apart from it: NFKC, lower case, spaces collapsed, truncated."""
    return list(" ".join(unicodedata.normalize("NFKC", text).lower().split()))[:MAX_INPUT_LENGTH]


def test_the_attention_signature_answers_what_translate_answers(graph, outputs):
    assert set(outputs) == set(Seq2SeqGraph.ATTENTION_OUTPUTS)
    translated = graph.translate(tf.constant(TEXTS), tf.constant(3))
    assert set(translated) == set(Seq2SeqGraph.OUTPUTS)
    for key, value in translated.items():
        if value.dtype in (tf.string, tf.bool):
            np.testing.assert_array_equal(outputs[key], value.numpy(), err_msg=key)
        else:
            np.testing.assert_allclose(outputs[key], value.numpy(), atol=1e-6, err_msg=key)


def test_source_characters_are_the_normalised_input_padded_with_empty_strings(outputs):
    width = max(len(normalised_characters(text)) for text in TEXTS)
    assert width == MAX_INPUT_LENGTH
    expected = [normalised_characters(text) + [""] * (width - len(normalised_characters(text))) for text in TEXTS]
    assert [[char.decode() for char in row] for row in outputs["source_characters"]] == expected


def test_attention_covers_every_answer_position_and_reads_only_the_source(outputs):
    source_lengths = [len(normalised_characters(text)) for text in TEXTS]
    attention = outputs["attention"]
    assert attention.dtype == np.float32
    assert attention.shape == (len(TEXTS), MAX_OUTPUT_LENGTH + 1, MAX_INPUT_LENGTH)  # the answer and its [END]
    for row, length in enumerate(source_lengths):
        np.testing.assert_allclose(attention[row, :, :length].sum(axis=-1), 1.0, atol=1e-5)
        assert np.all(attention[row, :, length:] < 1e-6)


def test_attention_is_the_teacher_forced_pass_over_the_best_answer(model, tokenizer, outputs):
    assert all(len(text) == MAX_OUTPUT_LENGTH for text in outputs["texts"])  # the date constraint's ten characters
    decoder_ids, _ = tokenizer.target_ids(tf.constant(outputs["texts"]))  # [START] and the answer's characters
    source_ids = tokenizer.source_ids(tf.constant(TEXTS))
    expected = attention_weights(model, source_ids, decoder_ids)
    np.testing.assert_allclose(outputs["attention"], expected.numpy(), atol=1e-5)
