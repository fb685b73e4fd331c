"""The decoding benchmark: its Python-loop baseline decodes exactly like the exported graph, and its CLI."""

import functools
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from benchmarks import common
from benchmarks.decoding import graph_decoder, main, measure, plot, python_loop_decode, report_text
from models.seq2seq import build_lstm_attention, build_transformer
from models.text_graph import CharTokenizer
from pipelines.seq2seq import Seq2SeqGraph

PAIRS = [
    ("March 4, 1999", "1999-03-04"),
    ("2023년 1월 20일 금요일", "2023-01-20"),
    ("20.01.2023", "2023-01-20"),
    ("the 7th of June 1985", "1985-06-07"),
]
# Empty, Korean, unseen characters, and one longer than max_input_length (the tokenizer truncates it).
TEXTS = [
    "March 4, 1999",
    "",
    "2023년 1월 20일 금요일",
    "20.01.2023",
    "Ψ 12 déc. 2099",
    "Wednesday, the 22nd of September 1999",
]
MAX_INPUT_LENGTH, MAX_OUTPUT_LENGTH = 24, 10


@pytest.fixture(scope="module")
def tokenizer() -> CharTokenizer:
    return CharTokenizer.fit(
        [text for text, _ in PAIRS],
        [target for _, target in PAIRS],
        max_input_length=MAX_INPUT_LENGTH,
        max_output_length=MAX_OUTPUT_LENGTH,
    )


def build(architecture: str, tokenizer: CharTokenizer) -> keras.Model:
    keras.utils.set_random_seed(0)
    sizes = {"source_vocab_size": tokenizer.source_vocab_size, "target_vocab_size": tokenizer.target_vocab_size}
    if architecture == "lstm":
        return build_lstm_attention(**sizes, embedding_dim=16, encoder_units=16, attention_units=16)
    return build_transformer(
        **sizes, depth=32, heads=2, feed_forward_units=64, encoder_layers=1, decoder_layers=1,
        max_source_length=MAX_INPUT_LENGTH, max_target_length=MAX_OUTPUT_LENGTH + 2, dropout=0.0,
    )  # fmt: skip


@pytest.fixture(scope="module", params=["lstm", "transformer"])
def model_and_graph(request, tokenizer) -> tuple[keras.Model, Seq2SeqGraph]:
    model = build(request.param, tokenizer)
    return model, Seq2SeqGraph(model, tokenizer)


@pytest.mark.parametrize("beam_width", [1, 2, 3])
def test_python_loop_decodes_like_the_exported_graph(model_and_graph, tokenizer, beam_width):
    model, graph = model_and_graph
    expected = graph.translate(tf.constant(TEXTS), tf.constant(beam_width))
    texts, scores = python_loop_decode(model, tokenizer, TEXTS, beam_width=beam_width)
    assert texts == [text.decode() for text in expected["texts"].numpy()]
    np.testing.assert_allclose(scores, expected["scores"].numpy(), atol=1e-4)


def test_untrained_outputs_are_not_trivial(model_and_graph, tokenizer):
    """Guards the test above: with random weights the outputs still vary, and some end with [END] before
    the length limit, so frozen finished hypotheses are part of what is compared."""
    texts, _ = python_loop_decode(model_and_graph[0], tokenizer, TEXTS, beam_width=3)
    assert all(texts) and len(set(texts)) > 1
    assert any(len(text) <= MAX_OUTPUT_LENGTH for text in texts)


@pytest.mark.benchmark  # measures: make test-benchmarks
def test_measure_report_and_plot(model_and_graph, tokenizer, tmp_path, monkeypatch):
    monkeypatch.setattr(common, "MIN_TIMED_SECONDS", 0.0)  # one pass is enough to check the bookkeeping
    model, graph = model_and_graph
    decoders = {
        "graph": graph_decoder(graph.translate),
        "python_loop": functools.partial(python_loop_decode, model, tokenizer),
    }
    rows = [measure(decoders, TEXTS, batch_size=batch_size, beam_width=2, repeats=1) for batch_size in (1, 4)]
    assert [row["agreement"] for row in rows] == [1.0, 1.0]
    assert all(row["max_score_difference"] < 1e-4 and row["ratio"] > 0 for row in rows)
    json.dumps(rows)
    text = report_text(rows)
    assert "goal: graph >= 10x" in text and "outputs identical on both sides: yes" in text
    plot(rows, tmp_path / "decoding.png")
    assert (tmp_path / "decoding.png").stat().st_size > 0


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    usage = capsys.readouterr().out
    assert "python -m benchmarks.decoding" in usage
    for option in (
        "--run-dir",
        "--artifact",
        "--batch-sizes",
        "--beam-widths",
        "--strings",
        "--repeats",
        "--train-if-missing",
    ):
        assert option in usage


def test_cli_without_a_model_says_how_to_train_one(tmp_path, capsys):
    assert (
        main(
            [
                "--run-dir",
                str(tmp_path / "run"),
                "--artifact",
                str(tmp_path / "artifacts"),
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 2
    )
    assert "make train" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
