"""The Seq2Seq family end to end: training quality, evaluation outputs, the exported artifact and its CLI."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pipelines import seq2seq
from pipelines.data.date_data import HELD_OUT_STYLES, NON_DATE_SHARE, make_dataset
from serving.contract import Decoding, read_metadata
from tests.conftest import DATE_SPLITS

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[2]
ISSUE_EXAMPLES = ("Saturday, March 4th 1999", "2023년 1월 20일 금요일", "20.01.2023", "March 4, 1999")


def test_a_short_training_run_already_normalises_most_test_dates(trained_seq2seq, dates):
    _, _, report, _ = trained_seq2seq
    assert report["test_dates"]["exact_match"] >= 0.95
    assert report["test_dates"]["character_error_rate"] <= 0.02
    assert report["test_dates"]["bleu"] >= 95.0
    assert report["test"]["exact_match"] >= 0.93  # dates and non-dates, as a client is answered
    assert set(report["test_by_locale"]) >= {"en_US", "ko_KR", "ja_JP", "de_DE", "fr_FR", "es_ES", "hand", "none"}
    assert sum(group["count"] for group in report["test_by_locale"].values()) == len(dates.test)
    assert report["test_by_locale"]["none"]["count"] == round(DATE_SPLITS[2] * NON_DATE_SHARE)
    # Styles no split holds, on the test dates: scored apart, per style.
    unseen = report["unseen_styles"]
    assert set(unseen["by_style"]) == {f"{locale} {style}" for locale, style in HELD_OUT_STYLES}
    assert sum(group["count"] for group in unseen["by_style"].values()) == DATE_SPLITS[2]
    assert 0 <= unseen["exact_match"] <= 1


def test_a_short_training_run_already_tells_dates_from_non_dates(trained_seq2seq):
    _, _, report, artifact = trained_seq2seq
    test = report["is_date"]["test"]
    assert test["precision"] >= 0.9 and test["recall"] >= 0.95
    assert (test["positives"], test["negatives"]) == (DATE_SPLITS[2], round(DATE_SPLITS[2] * NON_DATE_SHARE))
    # The threshold was calibrated on dev: no other threshold decides more dev examples right.
    dev = report["is_date"]["dev"]
    assert dev["threshold"] == test["threshold"] == read_metadata(artifact).decoding.date_threshold
    assert dev["false_positives"] + dev["false_negatives"] <= 0.05 * (dev["positives"] + dev["negatives"])


def test_is_date_is_the_calibrated_threshold_on_the_models_own_probability(trained_seq2seq):
    graph = tf.saved_model.load(str(trained_seq2seq[3]))
    threshold = read_metadata(trained_seq2seq[3]).decoding.date_threshold
    texts = [*ISSUE_EXAMPLES, "hello", "", "yesterday", "February 30, 2001", "13/13/2013", "42", "Jun 2001"]
    outputs = graph.signatures["translate"](texts=tf.constant(texts), beam_width=tf.constant(3))
    probability = outputs["date_probability"].numpy()
    assert np.all((probability >= 0) & (probability <= 1))
    np.testing.assert_array_equal(outputs["is_date"].numpy(), probability >= threshold)
    # The constrained answer is a date even where the model says there is none: the best guess.
    assert all(len(text) == 10 for text in outputs["texts"].numpy())


def test_the_keras_graph_answers_the_issue_examples_as_the_export_does(trained_seq2seq, date_answers):
    # Not whether they are right: which of them a three-epoch model gets right can change from run to run
    # (the profiles get every one right; the quality test above scores the whole test split).
    model, tokenizer, _, artifact = trained_seq2seq
    graph = seq2seq.served_graph(model, tokenizer, seq2seq.Seq2SeqConfig())
    graph.date_threshold.assign(read_metadata(artifact).decoding.date_threshold)
    outputs = graph.translate_default(tf.constant(ISSUE_EXAMPLES))
    texts, is_date = outputs["texts"].numpy(), outputs["is_date"].numpy()
    answers = [text.decode() if date else None for text, date in zip(texts, is_date)]
    assert answers == date_answers(*ISSUE_EXAMPLES)


def test_evaluation_writes_report_and_plots(trained_seq2seq):
    artifact = trained_seq2seq[3]
    evaluation = artifact.parent.parent.parent / "run" / "evaluation"
    saved = json.loads((evaluation / "report.json").read_text())
    assert saved["test"] == pytest.approx(trained_seq2seq[2]["test"])
    for name in ("attention.png", "learning_curves.png", "is_date.png"):
        with Image.open(evaluation / name) as image:
            assert image.format == "PNG" and min(image.size) >= 300


def test_beam_search_scores_are_sorted_and_the_best_is_returned(trained_seq2seq):
    model, tokenizer, _, _ = trained_seq2seq
    graph = seq2seq.served_graph(model, tokenizer, seq2seq.Seq2SeqConfig())
    outputs = graph.translate(tf.constant(["4 Mar 1999", "", "not a date at all"]), tf.constant(4))
    beam_scores = outputs["beam_scores"].numpy()
    assert beam_scores.shape == (3, 4)
    assert np.all(np.diff(beam_scores, axis=1) <= 1e-6)
    np.testing.assert_array_equal(outputs["texts"].numpy(), outputs["beam_texts"].numpy()[:, 0])
    assert np.all(outputs["scores"].numpy() < 0)


def test_metadata_describes_the_contract(trained_seq2seq):
    metadata = read_metadata(trained_seq2seq[3])
    assert metadata.task == "seq2seq" and metadata.name == "seq2seq"
    assert metadata.signatures == {
        "default": "serving_default",
        "texts": "translate",
        "attention": "translate_attention",
    }
    assert metadata.decoding == Decoding(
        default_beam_width=3,
        max_beam_width=seq2seq.MAX_BEAM_WIDTH,
        length_alpha=0.7,
        output_constraint="iso-date",
        date_threshold=trained_seq2seq[2]["is_date"]["test"]["threshold"],
    )
    assert 0 < metadata.decoding.date_threshold < 1
    assert metadata.input.max_length == 64
    assert metadata.metrics["test_exact_match"] == trained_seq2seq[2]["test"]["exact_match"]


def test_the_exported_attention_signature_adds_to_translates_outputs_and_changes_none(trained_seq2seq):
    signatures = tf.saved_model.load(str(trained_seq2seq[3])).signatures
    for name in ("serving_default", "translate"):
        assert set(signatures[name].structured_outputs) == set(seq2seq.Seq2SeqGraph.OUTPUTS)
    attention = signatures["translate_attention"]
    assert set(attention.structured_outputs) == set(seq2seq.Seq2SeqGraph.ATTENTION_OUTPUTS)
    assert attention.structured_input_signature == signatures["translate"].structured_input_signature


BARE_LOAD = (
    """
import json, sys
import tensorflow as tf
graph = tf.saved_model.load(sys.argv[1])
texts = tf.constant(json.loads(sys.argv[2]))
answers = {"default": graph.signatures["serving_default"](texts=texts)}
for width in (1, 3):
    answers[str(width)] = graph.signatures["translate"](texts=texts, beam_width=tf.constant(width))
"""
    'print(json.dumps({name: {"texts": [t.decode() for t in out["texts"].numpy()], '
    '"scores": out["scores"].numpy().tolist(), "is_date": out["is_date"].numpy().tolist(), '
    '"date_probability": out["date_probability"].numpy().tolist()} for name, out in answers.items()}))\n'
    "print(json.dumps(sorted(name for name in sys.modules "
    'if name.split(".")[0] in ("pipelines", "models", "serving", "keras"))))\n'
)


@pytest.mark.e2e
def test_bare_tensorflow_load_gives_the_same_answers_without_project_code(trained_seq2seq):
    model, tokenizer, _, artifact = trained_seq2seq
    texts = [*ISSUE_EXAMPLES, "", "😀 ??", "x" * 200]
    result = subprocess.run(
        [sys.executable, "-c", BARE_LOAD, str(artifact), json.dumps(texts)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    answers_line, modules_line = result.stdout.strip().splitlines()[-2:]
    answers = json.loads(answers_line)
    assert [module for module in json.loads(modules_line) if not module.startswith("keras")] == []
    graph = seq2seq.served_graph(model, tokenizer, seq2seq.Seq2SeqConfig())
    graph.date_threshold.assign(read_metadata(artifact).decoding.date_threshold)
    for name, width in (("default", 3), ("1", 1), ("3", 3)):
        expected = graph.translate(tf.constant(texts), tf.constant(width))
        assert answers[name]["texts"] == [text.decode() for text in expected["texts"].numpy()]
        np.testing.assert_allclose(answers[name]["scores"], expected["scores"].numpy(), atol=1e-4)
        np.testing.assert_allclose(answers[name]["date_probability"], expected["date_probability"], atol=1e-4)
        assert answers[name]["is_date"] == expected["is_date"].numpy().tolist()


def test_the_graph_refuses_a_beam_width_out_of_range(trained_seq2seq):
    graph = tf.saved_model.load(str(trained_seq2seq[3]))
    for width in (0, seq2seq.MAX_BEAM_WIDTH + 1):
        with pytest.raises(tf.errors.InvalidArgumentError, match="beam_width must be an integer from 1 to"):
            graph.signatures["translate"](texts=tf.constant(["1.1.2000"]), beam_width=tf.constant(width))


def test_a_date_threshold_given_replaces_the_calibrated_one(trained_seq2seq, dates):
    model, tokenizer, _, _ = trained_seq2seq
    parser = argparse.ArgumentParser()
    seq2seq.FAMILY.add_arguments(parser)
    config = seq2seq.FAMILY.config_from_args(parser.parse_args(["--date-threshold", "0.25"]))
    assert config.date_threshold == 0.25
    graph = seq2seq.served_graph(model, tokenizer, config, calibration=dates.dev)
    assert graph.date_threshold.numpy() == pytest.approx(0.25)
    with pytest.raises(SystemExit) as exit_info:
        seq2seq.FAMILY.main(["--date-threshold", "1.5"])
    assert exit_info.value.code == 2


def test_cli_predicts_texts(trained_seq2seq, date_answers, capsys):
    from pipelines import cli

    artifact = trained_seq2seq[3]
    assert cli.main(["predict", str(artifact.parent), "20.01.2023", "March 4, 1999", "--beam-width", "2"]) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [answer["text"] for answer in answers] == date_answers("20.01.2023", "March 4, 1999", beam_width=2)
    assert all(answer["score"] < 0 and 0 <= answer["date_probability"] <= 1 for answer in answers)


def test_cli_says_not_a_date_with_the_best_guess(trained_seq2seq, date_answers, capsys):
    from pipelines import cli

    texts = ["hello", "20.01.2023"]
    assert cli.main(["predict", str(trained_seq2seq[3]), *texts]) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [answer["input"] for answer in answers] == texts
    assert [answer["text"] for answer in answers] == date_answers(*texts)
    for answer in answers:
        if answer["text"] is None:
            assert answer["reason"] == "not a date" and len(answer["guess"]) == 10
        else:
            assert "reason" not in answer and "guess" not in answer


@pytest.mark.e2e
def test_cli_exports_a_seq2seq_run_and_the_script_skips_an_exported_model(trained_seq2seq, tmp_path, capsys):
    from pipelines import cli

    run_dir = trained_seq2seq[3].parent.parent.parent / "run"
    # Without the validation gate, which tests/validation/test_gate.py runs through the same command.
    command = ["export", "--run-dir", str(run_dir), "--artifacts", str(tmp_path), "--no-register", "--no-validate"]
    assert cli.main(command) == 0
    assert read_metadata(tmp_path / "seq2seq" / "1").task == "seq2seq"
    assert seq2seq.FAMILY.main(["--skip-if-exported", "--no-register", "--artifacts", str(tmp_path)]) == 0
    assert "skipping training" in capsys.readouterr().out


def test_tfds_dataset_feeds_the_same_pairs_as_the_generator(tmp_path):
    config = seq2seq.Seq2SeqConfig(dataset="tfds:small", data_dir=str(tmp_path))
    loaded = seq2seq.FAMILY.load_data(config)
    generated = make_dataset(2000, 200, 200, seed=0)
    assert loaded.test == generated.test and loaded.dev == generated.dev and loaded.train[:50] == generated.train[:50]


def test_unknown_dataset_and_missing_data_dir_are_explained():
    with pytest.raises(ValueError, match="needs --data-dir"):
        seq2seq.FAMILY.load_data(seq2seq.Seq2SeqConfig(dataset="tfds"))
    with pytest.raises(ValueError, match="unknown dataset 'web'"):
        seq2seq.FAMILY.load_data(seq2seq.Seq2SeqConfig(dataset="web"))


@pytest.mark.e2e
def test_an_interrupted_run_resumes_with_its_own_vocabulary(tmp_path):
    """(A finished run fitting its vocabulary afresh is RunFolder.side_file's rule, tested in test_family.)"""
    from pipelines.training.loop import TrainingConfig
    from tests.training.test_loop import Interrupt, history_epochs

    config = seq2seq.Seq2SeqConfig(
        units=8, embedding_dim=8, training=TrainingConfig(epochs=2, batch_size=64, patience=0)
    )
    first, second = make_dataset(300, 50, 50, seed=1), make_dataset(300, 50, 50, seed=2)
    assert seq2seq.FAMILY.fit_preprocessing(config, first).get_config() != (
        seq2seq.FAMILY.fit_preprocessing(config, second).get_config()
    )
    with pytest.raises(KeyboardInterrupt):
        seq2seq.FAMILY.train(config, first, tmp_path, extra_callbacks=[Interrupt(after_epoch=0)])
    vocabulary = json.loads((tmp_path / seq2seq.FAMILY.side_file).read_text())
    resumed = seq2seq.FAMILY.train(config, second, tmp_path).fitted
    assert resumed.get_config() == vocabulary
    assert history_epochs(tmp_path) == [0, 1]
