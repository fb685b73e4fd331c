"""Hyperparameter search (pipelines/training/tuning.py): search spaces applied onto configs, --config files, the
dev-split objective, the report's files, resume, reproducing the best trial, and the chief/worker mode."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import keras_tuner as kt
import numpy as np
import pytest

from pipelines import classifier
from pipelines.cli import main
from pipelines.data.image_data import ImageDataset, Split
from pipelines.family import NAMES, Trained, family
from pipelines.training.flags import apply_config_file
from pipelines.training.search_space import with_values
from serving.process import free_port

PROJECT = Path(__file__).resolve().parents[2]
SEARCH_SCRIPT = Path(__file__).with_name("search_script.py")
COLUMNS = ["trial", "status", "learning_rate", "dropout", "batch_size", "architecture", "width"]
COLUMNS += ["dev_accuracy", "epochs", "seconds"]
TINY = ["--train-size", "120", "--max-epochs", "1"]


def test_search_values_apply_onto_the_config_and_its_training_config():
    config = with_values(
        classifier.ClassifierConfig(), {"learning_rate": 3e-3, "batch_size": 16, "architecture": "resnet", "width": 8}
    )
    assert (config.architecture, config.width) == ("resnet", 8)
    assert (config.training.learning_rate, config.training.batch_size) == (3e-3, 16)
    with pytest.raises(ValueError, match="ClassifierConfig has no field beam_width"):
        with_values(classifier.ClassifierConfig(), {"beam_width": 3})


def test_config_file_overrides_the_profile_and_flags_override_the_file(tmp_path):
    path = tmp_path / "best.json"
    path.write_text(json.dumps({"learning_rate": 5e-3, "epochs": 3, "width": 64, "decay_rate": 0.5, "seed": 7}))
    argv = ["--config", str(path), "--epochs", "9"]
    parser = classifier.FAMILY.argument_parser()
    apply_config_file(parser, argv)
    config = classifier.FAMILY.config_from_args(parser.parse_args(argv))
    assert config.training.learning_rate == 5e-3  # the file's, not the quick profile's 2e-3
    assert config.training.epochs == 9  # the flag's, not the file's
    assert (config.width, config.training.decay_rate, config.training.seed) == (64, 0.5, 7)
    assert config.training.batch_size == classifier.PROFILES["quick"]["batch_size"]  # not in the file

    path.write_text(json.dumps({"learning_rat": 1e-3}))
    with pytest.raises(SystemExit, match="no such flag: learning_rat"):
        apply_config_file(classifier.FAMILY.argument_parser(), argv)


def test_the_objective_is_scored_on_the_dev_split_not_the_test_split():
    """A model that always answers class 0, on a dataset whose test split is all 0s: the score is the dev share
    of 0s, not the test split's 1.0."""
    images = np.zeros((6, 8, 8, 1), "uint8")
    dev = Split(images, np.array([0, 1, 1, 2, 0, 1]))
    data = ImageDataset("toy", ["0", "1", "2"], train=dev, dev=dev, test=Split(images, np.zeros(6, int)))
    always_zero = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    always_zero.set_weights([np.zeros((64, 3)), np.array([1.0, 0.0, 0.0])])
    assert classifier.SEARCH_SPACE.objective == "dev_accuracy"
    assert classifier.FAMILY.dev_score(Trained(None, always_zero, None), data) == pytest.approx(2 / 6)


def read_table(folder: Path) -> list[dict[str, str]]:
    with (folder / "trials.csv").open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.e2e
@pytest.mark.slow
def test_search_writes_the_table_plot_and_best_config_and_resumes_with_only_the_new_trials(tmp_path, capsys):
    project = tmp_path / "tune"
    assert main(["tune", "classifier", "--trials", "2", *TINY, "--project-dir", str(project)]) == 0
    header = next(line for line in capsys.readouterr().out.splitlines() if line.split()[:2] == ["trial", "status"])
    assert header.split() == COLUMNS

    rows = read_table(project)
    assert list(rows[0]) == COLUMNS
    assert [row["trial"] for row in rows] == ["0", "1"]
    assert {row["status"] for row in rows} == {"COMPLETED"}
    assert all(row["epochs"] == "1" and 0 <= float(row["dev_accuracy"]) <= 1 for row in rows)
    table = json.loads((project / "trials.json").read_text())
    assert [list(row) for row in table] == [COLUMNS, COLUMNS]
    assert [row["dev_accuracy"] for row in table] == pytest.approx([float(row["dev_accuracy"]) for row in rows])
    assert (project / "tuning.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    best_row = max(rows, key=lambda row: float(row["dev_accuracy"]))
    best = json.loads((project / "best.json").read_text())
    assert best["epochs"] == 1 and best["train_size"] == 120 and best["seed"] == 0 and best["profile"] == "quick"
    assert best["learning_rate"] == pytest.approx(float(best_row["learning_rate"]))
    assert best["architecture"] == best_row["architecture"]
    assert ("width" in best) == (best_row["architecture"] == "mlp")  # only where it applies

    first_models = {path: path.stat().st_mtime_ns for path in project.glob("trial_*/model.keras")}
    assert main(["tune", "classifier", "--trials", "3", *TINY, "--project-dir", str(project)]) == 0
    printed = capsys.readouterr().out
    assert "trial 2 (tuner0)" in printed
    assert "trial 0 (tuner0)" not in printed and "trial 1 (tuner0)" not in printed
    assert [row["trial"] for row in read_table(project)] == ["0", "1", "2"]
    assert {path: path.stat().st_mtime_ns for path in first_models} == first_models


def run_script(*argv: str, env: dict[str, str] | None = None, **popen) -> subprocess.Popen:
    environment = {**os.environ, "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", **(env or {})}
    return subprocess.Popen(
        [sys.executable, str(SEARCH_SCRIPT), *argv],
        cwd=PROJECT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def finished(process: subprocess.Popen, timeout: float = 240) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-3000:]
    return output


@pytest.mark.distributed  # make test-distributed: three processes, then a fourth
def test_a_chief_and_two_workers_share_the_trial_budget_and_the_best_config_reproduces_its_dev_metric(tmp_path):
    """Distributed mode runs no trial twice; the best trial's best.json, retrained alone with the trial's seed (3),
    scores the dev accuracy the trial scored."""
    project = tmp_path / "tune"
    argv = ["tune", "classifier", "--trials", "4", *TINY, "--seed", "3", "--project-dir", str(project)]
    oracle = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(free_port())}
    processes = {
        tuner_id: run_script(*argv, env={**oracle, "KERASTUNER_TUNER_ID": tuner_id})
        for tuner_id in ("chief", "tuner0", "tuner1")
    }
    outputs = {tuner_id: finished(process) for tuner_id, process in processes.items()}

    ran = {tuner_id: _ran(outputs[tuner_id], tuner_id) for tuner_id in ("tuner0", "tuner1")}
    every_run = ran["tuner0"] + ran["tuner1"]
    assert sorted(every_run) == ["0", "1", "2", "3"]  # the budget, each trial once
    assert "trial 0 (" not in outputs["chief"]  # the chief only serves the oracle
    rows = read_table(project)
    assert [row["trial"] for row in rows] == ["0", "1", "2", "3"]
    assert {row["status"] for row in rows} == {"COMPLETED"}

    best_row = max(rows, key=lambda row: float(row["dev_accuracy"]))
    retrained = tmp_path / "retrained"
    finished(run_script("train", "classifier", "--config", str(project / "best.json"), "--run-dir", str(retrained)))
    report = json.loads((retrained / "evaluation" / "report.json").read_text())
    assert json.loads((retrained / "run.json").read_text())["config"]["training"]["seed"] == 3
    assert report["dev_accuracy"] == pytest.approx(float(best_row["dev_accuracy"]), abs=1e-9)


def _ran(output: str, tuner_id: str) -> list[str]:
    """The trials a worker says it ran, checked against its line for each trial."""
    (summary,) = re.findall(rf"^worker {tuner_id} ran trials: (.*)$", output, re.MULTILINE)
    ran = summary.split(", ")
    assert ran == re.findall(rf"^trial (\S+) \({tuner_id}\): dev_accuracy", output, re.MULTILINE)
    return ran


@pytest.mark.parametrize("name", NAMES)
def test_every_familys_search_space_applies_onto_its_config_and_its_values_are_flags(name, tmp_path):
    """A trial's values (each hyperparameter at its first value) become the family's config, and the same
    values in a --config file are accepted by the family's script and give that config."""
    chosen = family(name)
    hp = kt.HyperParameters()
    chosen.search_space.declare(hp)
    values = {dimension.name: hp.get(dimension.name) for dimension in chosen.search_space.dimensions}
    path = tmp_path / "best.json"
    path.write_text(json.dumps(values))
    parser = chosen.argument_parser()
    apply_config_file(parser, ["--config", str(path)])
    from_file = chosen.config_from_args(parser.parse_args(["--config", str(path)]))
    base = chosen.config_from_args(chosen.argument_parser().parse_args([]))
    assert from_file == with_values(base, values)
    assert from_file != base
