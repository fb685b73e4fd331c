"""Training across workers (pipelines/training/distributed.py): TF_CONFIG, who writes what, and two worker
processes on 127.0.0.1 that train the classifier as one worker does and survive a worker killed mid-training.

The process tests are marked `distributed` (`make test-distributed`, run by .ci/run after `make test`): each
trains the classifier two or three times over, past make test's ten-minute budget."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import pytest

from pipelines.training import distributed
from pipelines.training.distributed import WORKER_LOST_EXIT
from serving.process import free_port

PROJECT = Path(__file__).resolve().parents[2]
# The quick profile's MLP, long enough to learn the digits well (test accuracy ~0.97): a comparison between two
# barely trained models would compare their noise.
TRAINING = ["--profile", "quick", "--epochs", "8", "--no-augment", "--no-register", "--no-validate", "--seed", "3"]
SAME_ACCURACY = 0.02  # two workers and one, same global batch and seed: 11 of the 540 test digits


def cluster(index: int, ports: list[int], kind: str = "worker") -> str:
    return json.dumps(
        {"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]}, "task": {"type": kind, "index": index}}
    )


def with_chief(kind: str) -> str:
    return json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": kind, "index": 0}})


@pytest.mark.parametrize(
    "tf_config, chief, name",
    [
        (cluster(0, [1, 2]), True, "worker-0"),
        (cluster(1, [1, 2]), False, "worker-1"),
        (
            json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "chief", "index": 0}}),
            True,
            "chief-0",
        ),
        (
            json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "worker", "index": 0}}),
            False,
            "worker-0",
        ),
    ],
)
def test_tf_config_names_the_chief(monkeypatch, tf_config, chief, name):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    task = distributed.cluster_task()
    assert (task.is_chief, task.name, task.workers) == (chief, name, 2)
    assert distributed.is_chief() is chief


def test_without_tf_config_the_process_is_the_chief_and_cannot_train_across_workers(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distributed.cluster_task() is None and distributed.is_chief()
    assert distributed.worker_run_dir(Path("runs/classifier")) == Path("runs/classifier")
    with pytest.raises(ValueError, match="--strategy multi-worker needs TF_CONFIG"):
        distributed.multi_worker_strategy()


def test_a_broken_tf_config_says_what_is_expected(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1"]}}')
    with pytest.raises(ValueError, match=r"TF_CONFIG is not valid: 'task'\. Expected JSON such as"):
        distributed.cluster_task()


def test_a_worker_writes_below_the_run_and_reads_the_chiefs_backup(monkeypatch):
    from pipelines.training.loop import backup_dir

    monkeypatch.setenv("TF_CONFIG", cluster(1, [1, 2]))
    run = Path("runs/transfer")
    own = distributed.worker_run_dir(run)
    assert own == run / "workers" / "worker-1"
    assert distributed.worker_run_dir(own) == own  # asked again (a family's train inside another's): the same
    assert backup_dir(own / "head") == run / "head" / "backup"
    monkeypatch.setenv("TF_CONFIG", cluster(0, [1, 2]))
    assert distributed.worker_run_dir(run) == run and backup_dir(run / "head") == run / "head" / "backup"


def test_batch_normalization_is_synchronized_in_nested_models():
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.BatchNormalization()])
    outer = keras.Sequential([keras.Input((4,)), inner, keras.layers.BatchNormalization()])
    distributed.synchronize_batch_norm(outer)
    norms = [layer for layer in [*outer.layers, *inner.layers] if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 2 and all(layer.synchronized for layer in norms)


# --- two worker processes -------------------------------------------------------------------------------------


def train(tmp_path: Path, *flags: str, tf_config: str | None = None, log: str = "train") -> subprocess.Popen:
    env = {**os.environ, "CI": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = tf_config
    command = [sys.executable, "-m", "pipelines.classifier", *TRAINING, *flags]
    command += ["--run-dir", str(tmp_path / "run"), "--artifacts", str(tmp_path / "artifacts")]
    tmp_path.mkdir(parents=True, exist_ok=True)
    output = (tmp_path / f"{log}.log").open("w")
    return subprocess.Popen(command, cwd=PROJECT, env=env, stdout=output, stderr=subprocess.STDOUT, text=True)


def two_workers(tmp_path: Path, log: str = "") -> list[subprocess.Popen]:
    ports = [free_port(), free_port()]
    flags = ("--strategy", "multi-worker")
    return [train(tmp_path, *flags, tf_config=cluster(index, ports), log=f"{log}worker-{index}") for index in (0, 1)]


def succeeded(process: subprocess.Popen, log: Path, timeout: float = 300) -> str:
    process.wait(timeout=timeout)
    output = log.read_text()
    assert process.returncode == 0, output[-3000:]
    return output


def accuracy_of(run: Path) -> float:
    return json.loads((run / "evaluation" / "report.json").read_text())["test_accuracy"]


def epochs(history: Path) -> list[int]:
    with history.open() as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


@pytest.mark.distributed
def test_two_workers_train_the_classifier_as_one_worker_does(tmp_path):
    """Same global batch (32) and seed: each worker reads half of every batch, BatchNormalization sees the whole
    batch, and the test accuracy matches one worker's. Only the chief evaluates and exports."""
    alone = tmp_path / "alone"
    succeeded(train(alone), alone / "train.log")
    together = tmp_path / "together"
    chief, worker = two_workers(together)
    succeeded(worker, together / "worker-1.log")
    chief_output = succeeded(chief, together / "worker-0.log")

    assert (
        "worker-1: training finished; the chief evaluates, exports and registers"
        in (together / "worker-1.log").read_text()
    )
    assert "40/40" in chief_output  # steps per epoch: 1,257 images in global batches of 32, as one worker
    assert abs(accuracy_of(together / "run") - accuracy_of(alone / "run")) <= SAME_ACCURACY
    assert accuracy_of(alone / "run") > 0.95
    assert sorted(path.name for path in (together / "artifacts" / "classifier").iterdir()) == ["1"]
    assert epochs(together / "run" / "history.csv") == list(range(8))
    assert not (together / "run" / "workers" / "worker-1").exists()  # the worker's own folder was temporary
    assert not (together / "run" / "backup").exists()  # removed by the chief when training finished


@pytest.mark.distributed
def test_a_worker_killed_after_an_epoch_and_started_again_resumes_the_job(tmp_path):
    """The worker is killed once its first epoch is over; the chief stops on the lost worker; both started
    again resume from the chief's last backup, and the job ends with one exported version and every epoch once."""
    chief, worker = two_workers(tmp_path)
    worker_history = tmp_path / "run" / "workers" / "worker-1" / "history.csv"
    deadline = time.monotonic() + 240
    while not (worker_history.exists() and epochs(worker_history)):
        assert worker.poll() is None and time.monotonic() < deadline, (tmp_path / "worker-1.log").read_text()[-3000:]
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert chief.wait(timeout=120) == WORKER_LOST_EXIT  # it notices: the connection or the heartbeats stop
    backup = json.loads((tmp_path / "run" / "backup" / "training_metadata.json").read_text())
    assert backup["epoch"] >= 1
    said = (tmp_path / "worker-0.log").read_text()
    assert "training stopped: a worker was lost mid-training (" in said
    assert f"they resume from the last finished epoch ({backup['epoch']} done)" in said

    chief, worker = two_workers(tmp_path, log="again-")
    succeeded(worker, tmp_path / "again-worker-1.log")
    output = succeeded(chief, tmp_path / "again-worker-0.log")
    assert f"Epoch {backup['epoch'] + 1}/8" in output and "Epoch 1/8" not in output  # resumed, not restarted
    assert epochs(tmp_path / "run" / "history.csv") == list(range(8))  # each epoch once
    assert sorted(path.name for path in (tmp_path / "artifacts" / "classifier").iterdir()) == ["1"]
    assert accuracy_of(tmp_path / "run") > 0.95


def test_a_search_is_not_spread_with_the_multi_worker_strategy(capsys, monkeypatch):
    from pipelines.cli import main

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert main(["tune", "classifier", "--strategy", "multi-worker"]) == 2
    assert "run KerasTuner's chief and workers (KERASTUNER_TUNER_ID" in capsys.readouterr().err
