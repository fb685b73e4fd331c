"""Training: schedules, callbacks, resume after interruption, the mirrored strategy, and the scripts' CLIs."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from pipelines import classifier
from pipelines.training.loop import (
    TrainingConfig,
    backed_up_epoch,
    callbacks,
    keep_history_before,
    learning_rate,
    read_history,
)

PROJECT = Path(__file__).resolve().parents[2]


def tiny_config(**training) -> classifier.ClassifierConfig:
    return classifier.ClassifierConfig(
        augment=False, training=TrainingConfig(**{"epochs": 4, "batch_size": 64, "patience": 0, **training})
    )


def test_exponential_schedule_decays_once_per_epoch():
    schedule = learning_rate(
        TrainingConfig(learning_rate=0.1, schedule="exponential", decay_rate=0.5), steps_per_epoch=10
    )
    assert float(schedule(0)) == pytest.approx(0.1)
    assert float(schedule(10)) == pytest.approx(0.05)
    assert float(schedule(20)) == pytest.approx(0.025)


def test_step_schedule_drops_every_step_epochs():
    schedule = learning_rate(
        TrainingConfig(learning_rate=0.1, schedule="step", decay_rate=0.1, step_epochs=2, epochs=6), steps_per_epoch=5
    )
    assert [round(float(schedule(step)), 6) for step in (0, 9, 10, 19, 20)] == [0.1, 0.1, 0.01, 0.01, 0.001]


def test_cosine_schedule_warms_up_for_an_epoch_then_falls_to_zero_at_the_last_step():
    schedule = learning_rate(TrainingConfig(learning_rate=0.1, schedule="cosine", epochs=5), steps_per_epoch=10)
    assert float(schedule(0)) == pytest.approx(0.01)
    assert float(schedule(5)) == pytest.approx(0.055)  # half-way through the warm-up
    assert float(schedule(10)) == pytest.approx(0.1)
    assert float(schedule(30)) == pytest.approx(0.05)  # half-way down the remaining four epochs
    assert float(schedule(50)) == pytest.approx(0.0, abs=1e-9)


def test_plateau_schedule_uses_a_callback_and_unknown_names_fail(tmp_path):
    config = TrainingConfig(schedule="plateau", patience=6)
    assert learning_rate(config, 10) == config.learning_rate
    chosen = {type(callback).__name__ for callback in callbacks(config, tmp_path)}
    assert {
        "PacedBackup",
        "ModelCheckpoint",
        "TensorBoard",
        "CSVLogger",
        "EarlyStopping",
        "ReduceLROnPlateau",
    } <= chosen
    assert any(isinstance(callback, keras.callbacks.BackupAndRestore) for callback in callbacks(config, tmp_path))
    with pytest.raises(ValueError, match="unknown schedule"):
        learning_rate(TrainingConfig(schedule="linear"), 10)


class Interrupt(keras.callbacks.Callback):
    def __init__(self, after_epoch: int = 1):
        super().__init__()
        self.after_epoch = after_epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.after_epoch:
            raise KeyboardInterrupt(f"simulated crash after epoch {epoch}")


class EpochsSeen(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs: list[int] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


def history_epochs(run_dir: Path) -> list[int]:
    with (run_dir / "history.csv").open() as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def test_interrupted_training_resumes_where_it_stopped(digits, tmp_path):
    config = tiny_config(backup_seconds=0)  # a backup after every epoch
    with pytest.raises(KeyboardInterrupt):
        classifier.FAMILY.train(config, digits, tmp_path, extra_callbacks=[Interrupt()])
    assert (tmp_path / "backup").is_dir()
    assert history_epochs(tmp_path) == [0, 1]

    resumed = EpochsSeen()
    classifier.FAMILY.train(config, digits, tmp_path, extra_callbacks=[resumed])
    # The second run starts at epoch 2: no epoch is trained twice and none is skipped.
    assert resumed.epochs == [2, 3]
    assert history_epochs(tmp_path) == [0, 1, 2, 3]
    assert not (tmp_path / "backup").exists()
    assert (tmp_path / "model.keras").is_file() and (tmp_path / "checkpoints" / "best.keras").is_file()
    assert any((tmp_path / "logs").rglob("*tfevents*"))
    assert len(read_history(tmp_path)["val_loss"]) == 4


def test_backups_are_paced_and_a_resumed_run_retrains_the_epochs_after_the_last_one(digits, tmp_path):
    config = tiny_config(backup_seconds=3600)  # only the first epoch's backup within the hour
    with pytest.raises(KeyboardInterrupt):
        classifier.FAMILY.train(config, digits, tmp_path, extra_callbacks=[Interrupt(after_epoch=2)])
    assert backed_up_epoch(tmp_path) == 1
    assert history_epochs(tmp_path) == [0, 1, 2]

    resumed = EpochsSeen()
    classifier.FAMILY.train(config, digits, tmp_path, extra_callbacks=[resumed])
    assert resumed.epochs == [1, 2, 3]
    assert history_epochs(tmp_path) == [0, 1, 2, 3]  # epochs 1 and 2 once each, as the resumed run trained them


def test_the_history_keeps_only_the_epochs_before_the_backup(tmp_path):
    (tmp_path / "history.csv").write_text("epoch,loss\n0,3.0\n1,2.0\n2,1.0\n")
    keep_history_before(tmp_path, 2)
    assert (tmp_path / "history.csv").read_text() == "epoch,loss\n0,3.0\n1,2.0\n"
    keep_history_before(tmp_path, 0)
    assert read_history(tmp_path) == {} and history_epochs(tmp_path) == []


MIRRORED = """
import json, sys
from pipelines.training.loop import split_cpu, make_strategy
split_cpu(2)
from pipelines import classifier
from pipelines.data.image_data import load_digits
from pipelines.training.loop import TrainingConfig
config = classifier.ClassifierConfig(
    augment=False, training=TrainingConfig(epochs=2, batch_size=64, patience=0, strategy="mirrored", cpu_devices=2)
)
model = classifier.FAMILY.train(config, load_digits(), __import__("pathlib").Path(sys.argv[1])).model
epochs = len(open(sys.argv[1] + "/history.csv").readlines()) - 1
print(json.dumps({"replicas": make_strategy("mirrored").num_replicas_in_sync, "epochs": epochs}))
"""


@pytest.mark.distributed  # make test-distributed
def test_mirrored_strategy_trains_on_two_logical_cpus(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED, str(tmp_path)], cwd=PROJECT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"replicas": 2, "epochs": 2}


def test_evaluation_writes_report_and_plots(trained_classifier, digits, tmp_path):
    model, report, _ = trained_classifier
    assert report["test_accuracy"] >= 0.9
    assert set(report["errors"]) == {"train", "dev", "test"}
    assert report["diagnosis"]["diagnosis"] in {
        "good fit",
        "high bias",
        "high variance",
        "high bias and high variance",
        "overfit to dev",
        "data mismatch",
    }
    fresh = classifier.evaluate_model(model, digits, tmp_path)
    assert fresh["test_accuracy"] == pytest.approx(report["test_accuracy"])
    for name in ("learning_curves.png", "confusion_matrix.png", "misclassified_dev.png"):
        assert (tmp_path / "evaluation" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "evaluation" / "report.json").read_text())
    assert np.array(saved["test"]["confusion_matrix"]).sum() == len(digits.test.labels)


def run_script(*args: str, cwd: Path = PROJECT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "args, expected",
    [
        (("pipelines.classifier", "--help"), "--dataset"),
        (("pipelines.cli", "--help"), "predict"),
        (("pipelines.cli", "train", "--help"), "seq2seq"),
        (("pipelines.cli", "train", "--help"), "detector"),
        (("pipelines.cli", "train", "detector", "--help"), "--score-threshold"),
        (("pipelines.cli", "train", "classifier", "--help"), "--strategy"),
        (("pipelines.cli", "train", "seq2seq", "--help"), "--beam-width"),
        (("pipelines.seq2seq", "--help"), "--architecture"),
        (("pipelines.cli", "evaluate", "--help"), "--run-dir"),
        (("pipelines.cli", "export", "--help"), "--artifacts"),
        (("pipelines.cli", "serve", "--help"), "MODELSERVICE_MAX_REQUEST_BYTES"),
        (("serving", "--help"), "--model-dir"),
        (("pipelines.cli", "predict", "--help"), "--beam-width"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, tuple) else value,
)
def test_every_script_has_help(args, expected, capsys):
    # In this process, whose TensorFlow is already imported: each `python -m` start would cost seconds.
    # test_scripts_run_as_modules starts real processes.
    from pipelines import cli
    from pipelines.family import family
    from serving import start

    module, *argv = args
    mains = {"pipelines.cli": cli.main, "serving": start.main}
    main = mains.get(module) or family(module.removeprefix("pipelines.")).main
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0 and expected in capsys.readouterr().out


@pytest.mark.e2e
@pytest.mark.parametrize(
    "args, expected",
    [(("pipelines.detector", "--help"), "--score-threshold"), (("pipelines.cli", "serve", "--help"), "--model-dir")],
)
def test_scripts_run_as_modules(args, expected):
    result = run_script(*args)
    assert result.returncode == 0 and expected in result.stdout


@pytest.mark.e2e
def test_cli_exports_a_trained_run_and_predicts_image_files(trained_classifier, digits, tmp_path, capsys):
    from PIL import Image

    from pipelines import cli

    run_dir = trained_classifier[2].parent.parent.parent / "run"
    assert cli.main(["export", "--run-dir", str(run_dir), "--artifacts", str(tmp_path), "--no-register"]) == 0
    assert (tmp_path / "classifier" / "1" / "saved_model.pb").is_file()
    for index in range(3):
        Image.fromarray(digits.test.images[index, :, :, 0]).save(tmp_path / f"digit{index}.png")
    capsys.readouterr()
    assert (
        cli.main(["predict", str(tmp_path / "classifier"), *(str(tmp_path / f"digit{i}.png") for i in range(3))]) == 0
    )
    answers = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    expected = trained_classifier[0].predict(digits.test.images[:3].astype("float32"), verbose=0).argmax(axis=1)
    assert [answer["label"] for answer in answers] == [str(label) for label in expected]


def test_predict_on_a_folder_without_an_exported_model_says_so(tmp_path, capsys):
    from pipelines import cli

    (tmp_path / "seq2seq").mkdir()
    assert cli.main(["predict", str(tmp_path / "seq2seq"), "hello"]) == 2
    error = capsys.readouterr().err
    assert f"no exported model at {tmp_path / 'seq2seq'}" in error and "artifacts/seq2seq/3" in error


def test_predict_on_a_savedmodel_without_our_metadata_says_what_is_missing(tmp_path, capsys):
    import tensorflow as tf

    from pipelines import cli

    version = tmp_path / "elsewhere" / "1"
    tf.saved_model.save(tf.Module(), str(version))
    assert cli.main(["predict", str(version.parent), "hello"]) == 2
    error = capsys.readouterr().err
    assert f"{version}: metadata.json is missing" in error and "modelservice export" in error


def test_pipeline_skips_training_when_an_artifact_exists(trained_classifier, capsys):
    from pipelines import classifier

    artifacts = trained_classifier[2].parent.parent
    assert classifier.FAMILY.main(["--skip-if-exported", "--no-register", "--artifacts", str(artifacts)]) == 0
    assert "skipping training" in capsys.readouterr().out
