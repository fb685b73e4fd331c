"""The transfer-learning pipeline: few-shot data, strategy, the two phases, the scratch baseline, resume, export.

Most tests read the session's `trained_transfer` run (tests/conftest.py): the glyph backbone pretrained
for one epoch because none existed, then head training, partial fine-tuning and the from-scratch
baseline on 10 digits per class.
"""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from models.transfer import backbone_of, default_fine_tune_at
from pipelines import classifier, cli, transfer
from pipelines.data.glyph_data import GLYPH_NAMES
from serving import contract
from tests.conftest import TRANSFER_EPOCHS
from tests.export.test_artifact import BARE_LOAD

pytestmark = pytest.mark.slow


# --- Data and strategy ------------------------------------------------------------------------------


def test_few_shot_keeps_n_training_images_per_class_and_every_dev_and_test_image(digits):
    few = transfer.few_shot(digits, 10, seed=0)
    assert np.bincount(few.train.labels).tolist() == [10] * 10
    assert few.dev is digits.dev and few.test is digits.test
    assert few.name == "digits-10-per-class"
    # Chosen from the training split, and the same images for the same seed.
    train_rows = {image.tobytes() for image in digits.train.images}
    assert all(image.tobytes() in train_rows for image in few.train.images)
    np.testing.assert_array_equal(transfer.few_shot(digits, 10, seed=0).train.images, few.train.images)
    assert not np.array_equal(transfer.few_shot(digits, 10, seed=1).train.images, few.train.images)
    assert transfer.few_shot(digits, None, seed=0) is digits


def test_few_shot_refuses_more_than_a_class_has(digits):
    with pytest.raises(ValueError, match="fewer than --examples-per-class 500"):
        transfer.few_shot(digits, 500, seed=0)


@pytest.mark.parametrize(
    ("per_class", "flag", "expected"), [(10, "auto", "freeze"), (150, "auto", "partial"), (10, "full", "full")]
)
def test_strategy_is_chosen_by_images_per_class_unless_given(digits, per_class, flag, expected):
    dataset = (
        transfer.few_shot(digits, per_class, seed=0) if per_class <= 100 else digits
    )  # the digits have ~125 per class
    config = transfer.TransferConfig(transfer_strategy=flag)
    assert transfer.chosen_strategy(config, dataset) == expected


def test_the_fine_tuning_rate_defaults_to_a_hundredth_of_phase_one():
    config = transfer.TransferConfig()
    assert config.fine_tune_rate == pytest.approx(config.training.learning_rate / 100)
    assert transfer.TransferConfig(fine_tune_learning_rate=1e-4).fine_tune_rate == 1e-4


def test_command_line_defaults_run_the_demo_and_flags_override():
    parser = cli.parser(["train", "transfer"])
    demo = transfer.FAMILY.config_from_args(parser.parse_args(["train", "transfer"]))
    assert (demo.dataset, demo.examples_per_class, demo.backbone, demo.transfer_strategy, demo.augment) == (
        "digits",
        10,
        "glyphs",
        "full",
        False,
    )
    assert demo.training.learning_rate == 3e-3 and demo.fine_tune_rate == pytest.approx(3e-4)
    own = transfer.FAMILY.config_from_args(
        parser.parse_args(
            [
                "train",
                "transfer",
                "--dataset",
                "folder:x",
                "--backbone",
                "mobilenet_v2",
                "--weights",
                "none",
                "--transfer-strategy",
                "partial",
                "--fine-tune-at",
                "40",
                "--augment",
                "--source-size",
                "500",
            ]
        )
    )
    assert (own.examples_per_class, own.weights, own.transfer_strategy, own.fine_tune_at, own.augment) == (
        None,
        None,
        "partial",
        40,
        True,
    )
    assert demo.source_size == 8000 and own.source_size == 500
    default = transfer.FAMILY.config_from_args(parser.parse_args(["train", "transfer", "--profile", "default"]))
    assert default.source_size is None and default.source_epochs == 15
    assert transfer.source_config(own).train_size == 500
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "transfer", "--source-size", "0"])


# --- Resume bookkeeping ------------------------------------------------------------------------------


def test_only_phases_finished_before_an_interrupted_one_are_reused(tmp_path):
    for phase in ("head", "fine_tune"):
        (tmp_path / phase).mkdir()
        (tmp_path / phase / "model.keras").write_bytes(b"")
    assert transfer.reusable_phases(tmp_path) == set()  # nothing interrupted: a re-run trains afresh
    (tmp_path / "fine_tune" / "backup").mkdir()
    assert transfer.reusable_phases(tmp_path) == {"head"}
    (tmp_path / "fine_tune" / "backup").rmdir()
    (tmp_path / "scratch").mkdir()
    (tmp_path / "scratch" / "backup").mkdir()
    assert transfer.reusable_phases(tmp_path) == {"head", "fine_tune"}


def test_phase_histories_are_joined_in_order(tmp_path):
    for phase, rows in (("head", [(0, 0.5, 2.0), (1, 0.6, 1.5)]), ("fine_tune", [(0, 0.7, 1.0)])):
        (tmp_path / phase).mkdir()
        with (tmp_path / phase / "history.csv").open("w", newline="") as handle:
            csv.writer(handle).writerows([("epoch", "accuracy", "loss"), *rows])
    transfer.write_history(tmp_path, ["head", "fine_tune"])
    with (tmp_path / "history.csv").open() as handle:
        joined = list(csv.DictReader(handle))
    assert [row["epoch"] for row in joined] == ["0", "1", "2"]
    assert [float(row["accuracy"]) for row in joined] == [0.5, 0.6, 0.7]


# --- The trained run ----------------------------------------------------------------------------------


def test_the_missing_glyph_backbone_was_pretrained_and_exported_first(trained_transfer):
    config, run_dir, _ = trained_transfer
    source = contract.latest_version(Path(config.artifacts) / "glyphs")
    metadata = contract.read_metadata(source)
    assert metadata.task == "classifier" and list(metadata.labels) == GLYPH_NAMES
    assert (source / contract.KERAS_MODEL_FILE).is_file()
    assert (run_dir.parent / "glyphs" / "history.csv").is_file()
    assert metadata.dataset["sizes"]["train"] == config.source_size  # only as many glyphs as asked for


def test_each_phase_ran_for_its_epochs_and_the_scratch_baseline_for_both(trained_transfer):
    _, run_dir, _ = trained_transfer
    head, fine = TRANSFER_EPOCHS
    assert len(transfer.read_history(run_dir / "head")["loss"]) == head
    assert len(transfer.read_history(run_dir / "fine_tune")["loss"]) == fine
    assert len(transfer.read_history(run_dir)["val_accuracy"]) == head + fine
    assert len(transfer.read_history(run_dir / "scratch")["loss"]) == head + fine
    assert json.loads((run_dir / "run.json").read_text())["strategy"] == "partial"


def test_fine_tuning_changed_only_the_later_backbone_layers_and_no_batch_norm_statistics(trained_transfer):
    _, run_dir, _ = trained_transfer
    head = backbone_of(keras.saving.load_model(run_dir / "head" / "model.keras"))
    final = backbone_of(keras.saving.load_model(run_dir / "model.keras"))
    start = default_fine_tune_at(final)
    changed = [
        index
        for index, (before, after) in enumerate(zip(head.layers, final.layers))
        if any(
            not np.array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
            for a, b in zip(before.weights, after.weights)
        )
    ]
    assert changed and min(changed) >= start
    assert not any(isinstance(final.layers[index], keras.layers.BatchNormalization) for index in changed)


def test_the_scratch_baseline_started_from_random_weights_and_trained_every_layer(digits):
    backbone = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="conv")], name="features")
    backbone.trainable = False  # as phase 1 leaves a shared backbone
    scratch = transfer.build_transfer_model(transfer.TransferConfig(), digits, backbone, pretrained=False)
    copy = backbone_of(scratch)
    assert copy is not backbone and copy.layers[0].trainable
    assert not np.array_equal(
        keras.ops.convert_to_numpy(copy.layers[0].kernel), keras.ops.convert_to_numpy(backbone.layers[0].kernel)
    )
    assert len(scratch.trainable_weights) == 4  # conv kernel + bias, new Dense kernel + bias


def test_report_compares_with_the_scratch_baseline_and_plots_both(trained_transfer, digits):
    _, run_dir, _ = trained_transfer
    report = json.loads((run_dir / "evaluation" / "report.json").read_text())
    comparison = report["comparison"]
    assert (
        comparison["strategy"] == "partial"
        and comparison["train_images"] == 100
        and comparison["test_images"] == len(digits.test.labels)
    )
    assert comparison["transfer_test_accuracy"] == report["test_accuracy"]
    # Both figures are what the saved models score on the test split (not their quality: they barely trained).
    for arm, model_file in (("transfer", "model.keras"), ("scratch", "scratch/model.keras")):
        model = keras.saving.load_model(run_dir / model_file)
        accuracy = np.mean(classifier.predict_ids(model, digits.test) == digits.test.labels)
        assert comparison[f"{arm}_test_accuracy"] == pytest.approx(accuracy)
    with Image.open(run_dir / "evaluation" / "transfer_vs_scratch.png") as image:
        assert image.format == "PNG" and image.width > 600


@pytest.mark.e2e
def test_the_artifact_is_a_classifier_that_bare_tensorflow_runs(trained_transfer, digits, tmp_path):
    _, _run_dir, artifact = trained_transfer
    metadata = contract.read_metadata(artifact)
    assert (metadata.task, metadata.family, metadata.name) == ("classifier", "transfer", "transfer")
    assert list(metadata.labels) == digits.class_names and metadata.extra["comparison"]["strategy"] == "partial"
    model = keras.saving.load_model(artifact / contract.KERAS_MODEL_FILE)
    images = digits.test.images[:20]
    np.save(tmp_path / "images.npy", images)
    result = subprocess.run(
        [sys.executable, "-c", BARE_LOAD, str(artifact), str(tmp_path / "images.npy")],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["leaked"] == []  # the graph needs none of this project's code, custom layers included
    expected = model.predict(images.astype("float32"), verbose=0)
    np.testing.assert_allclose(answer["probabilities"], expected, atol=1e-5)


@pytest.mark.e2e
def test_evaluate_and_export_verbs_read_the_run(trained_transfer, tmp_path):
    _, shared_run, artifact = trained_transfer
    run_dir = shutil.copytree(shared_run, tmp_path / "run")  # evaluating rewrites the run's report and plots
    figures = transfer.FAMILY.evaluate_run(run_dir)
    saved = json.loads((run_dir / "evaluation" / "report.json").read_text())
    assert figures["test_accuracy"] == pytest.approx(saved["test_accuracy"])
    exported = transfer.FAMILY.export_run(run_dir, tmp_path)
    assert contract.read_metadata(exported).extra["comparison"] == contract.read_metadata(artifact).extra["comparison"]


def test_a_classifier_artifact_or_keras_file_is_a_backbone(trained_transfer, tmp_path):
    config, _, _ = trained_transfer
    source = contract.latest_version(Path(config.artifacts) / "glyphs")
    from_root = transfer.load_keras_classifier(source.parent)
    from_file = transfer.load_keras_classifier(source / contract.KERAS_MODEL_FILE)
    assert from_root.count_params() == from_file.count_params()
    with pytest.raises(FileNotFoundError, match=r"holds no model\.keras"):
        transfer.load_keras_classifier(tmp_path)


# --- Served over HTTP ----------------------------------------------------------------------------------


@pytest.mark.e2e  # a server of its own: the shared one serves the three other families
def test_the_transfer_model_is_served_by_classify_and_the_tf_serving_route(trained_transfer, digits, tmp_path):
    import httpx

    from serving.process import running_server
    from tests.serving.test_serving import png_bytes

    _, _, artifact = trained_transfer
    version = contract.read_metadata(artifact).version
    images = digits.test.images[:4]
    model = keras.saving.load_model(artifact / contract.KERAS_MODEL_FILE)
    expected = [
        digits.class_names[index] for index in model.predict(images.astype("float32"), verbose=0).argmax(axis=1)
    ]

    env = {"MODELSERVICE_MODELS": "transfer", "MODELSERVICE_GRPC_PORT": "0"}
    with running_server(env=env, log_path=tmp_path / "server.log") as server:
        upload = httpx.post(
            server + "/classify",
            params={"model": "transfer"},
            files={"image": ("digit.png", png_bytes(images[0]), "image/png")},
            timeout=30,
        )
        assert upload.status_code == 200, upload.text
        assert upload.json()["model"] == {"name": "transfer", "version": str(version)}
        assert upload.json()["predictions"][0]["label"] == expected[0]

        predict = httpx.post(server + "/v1/models/transfer:predict", json={"instances": images.tolist()}, timeout=30)
        assert predict.status_code == 200, predict.text
        assert [row["labels"] for row in predict.json()["predictions"]] == expected

        texts = {"texts": ["1 May 2020"]}
        wrong = httpx.post(server + "/translate", params={"model": "transfer"}, json=texts, timeout=30)
        assert wrong.status_code == 400 and "classifier" in wrong.json()["error"]
