"""Shared training loop: distribution strategy, learning-rate schedules, callbacks and resumable fit.

Every model family trains through `fit`, so checkpoints, TensorBoard logs, the CSV history, early
stopping and resume-after-interruption behave the same everywhere.
"""

import csv
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from pipelines.training import distributed

SCHEDULES = ("constant", "exponential", "step", "plateau", "cosine")
STRATEGIES = ("default", "mirrored", "multi-worker")


@dataclass
class TrainingConfig:
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3
    schedule: str = "exponential"
    decay_rate: float = 0.9  # per epoch, for "exponential"; factor per `step_epochs` for "step"
    step_epochs: int = 10
    patience: int = 8  # early stopping on the dev loss; 0 disables it
    seed: int = 0
    strategy: str = "default"
    cpu_devices: int = 1  # split the CPU into this many logical devices (lets `mirrored` run without GPUs)
    clip_norm: float | None = None  # clip each gradient to this global norm (tames the first steps of a detector)
    # The resume backup is written at the end of an epoch once this long has passed since the last one (0: every
    # epoch); an interrupted run loses at most this much training. Saving costs ~0.2 s, more than a tiny epoch.
    backup_seconds: float = 30.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def split_cpu(devices: int) -> None:
    """Expose the CPU as `devices` logical devices; must run before TensorFlow initialises devices."""
    if devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)


def make_strategy(name: str) -> tf.distribute.Strategy:
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy(devices=[device.name for device in devices])
    if name == "multi-worker":
        return distributed.multi_worker_strategy()
    raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


def learning_rate(
    config: TrainingConfig, steps_per_epoch: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The optimizer's learning rate: a per-step schedule, or a float that callbacks adjust."""
    if config.schedule == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(
            config.learning_rate, decay_steps=steps_per_epoch, decay_rate=config.decay_rate
        )
    if config.schedule == "step":
        # PiecewiseConstantDecay switches *after* a boundary step, so the last step of an epoch is the boundary.
        boundaries = [
            steps_per_epoch * epoch - 1 for epoch in range(config.step_epochs, config.epochs, config.step_epochs)
        ]
        values = [config.learning_rate * config.decay_rate**i for i in range(len(boundaries) + 1)]
        return (
            keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
            if boundaries
            else config.learning_rate
        )
    if config.schedule == "cosine":
        # A linear warm-up from a tenth of the rate over the first epoch (the first steps' gradients are the
        # largest and least informed), then half a cosine down to zero at the last step.
        return keras.optimizers.schedules.CosineDecay(
            config.learning_rate / 10,
            decay_steps=max(1, steps_per_epoch * (config.epochs - 1)),
            warmup_target=config.learning_rate,
            warmup_steps=steps_per_epoch,
        )
    if config.schedule in ("constant", "plateau"):
        return config.learning_rate
    raise ValueError(f"unknown schedule {config.schedule!r}; choose one of {', '.join(SCHEDULES)}")


BACKUP_DIR = "backup"


def backup_dir(run_dir: Path) -> Path:
    """The resume backup of `run_dir`: on a non-chief worker, the chief's, which every worker restores from."""
    return distributed.shared_path(run_dir) / BACKUP_DIR


def is_resuming(run_dir: Path) -> bool:
    """True when `run_dir` holds the backup of an interrupted run, which `fit` will continue."""
    return backup_dir(run_dir).exists()


class PacedBackup(keras.callbacks.BackupAndRestore):
    """Keras's BackupAndRestore (model, optimizer and epoch; a re-run with the same run_dir resumes from it),
    written after the first epoch (so that a run cut short is known as one) and then at the end of an epoch
    only once `seconds` have passed since the last backup. With `writes` off (a non-chief worker) it only
    restores: the chief's backup is the one every worker resumes from."""

    def __init__(self, backup_dir: Path, seconds: float, *, writes: bool = True):
        super().__init__(str(backup_dir), delete_checkpoint=writes)
        self.seconds = seconds
        self.writes = writes
        self._last_backup = -float("inf")

    def on_epoch_end(self, epoch, logs=None):
        self._current_epoch = epoch + 1  # what the parent's backup records as the epoch to resume at
        if self.writes and time.monotonic() - self._last_backup >= self.seconds:
            self._save_model()
            self._last_backup = time.monotonic()


def backed_up_epoch(run_dir: Path) -> int:
    """The epoch an interrupted run resumes at: the one after its last backup (0 if none was written)."""
    metadata = backup_dir(run_dir) / "training_metadata.json"
    return json.loads(metadata.read_text())["epoch"] if metadata.exists() else 0


def keep_history_before(run_dir: Path, epoch: int) -> None:
    """Drops the CSV history's rows from `epoch` on: a resumed run trains those epochs again."""
    path = run_dir / "history.csv"
    if not path.exists():
        return
    with path.open() as handle:
        lines = handle.readlines()
    kept = [lines[0], *(line for line in lines[1:] if int(line.split(",", 1)[0]) < epoch)] if lines else []
    path.write_text("".join(kept))


def callbacks(config: TrainingConfig, run_dir: Path) -> list[keras.callbacks.Callback]:
    run_dir.mkdir(parents=True, exist_ok=True)
    # Across workers, every epoch: a restarted worker and the others must resume from the same one.
    every = 0 if config.strategy == "multi-worker" else config.backup_seconds
    chosen: list[keras.callbacks.Callback] = [
        PacedBackup(backup_dir(run_dir), every, writes=distributed.is_chief()),
        keras.callbacks.ModelCheckpoint(
            str(run_dir / "checkpoints" / "best.keras"), monitor="val_loss", save_best_only=True
        ),
        keras.callbacks.TensorBoard(str(run_dir / "logs")),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
    ]
    if config.patience > 0:
        chosen.append(
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience, restore_best_weights=True)
        )
    if config.schedule == "plateau":
        chosen.append(
            keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=max(1, config.patience // 3))
        )
    return chosen


def fit(
    build_model: Callable[[], keras.Model],
    train: tf.data.Dataset,
    dev: tf.data.Dataset,
    *,
    config: TrainingConfig,
    run_dir: Path,
    loss: str | keras.losses.Loss,
    metrics: list[Any] = (),
    weighted_metrics: list[Any] = (),
    extra_callbacks: list[keras.callbacks.Callback] = (),
) -> keras.Model:
    """Build, compile and train under the configured strategy; resumes if `run_dir` holds a backup. Across
    workers, each reads its share of every batch, and the model returned is this worker's own copy, outside the
    strategy: evaluating, exporting or building on it needs no other worker."""
    keras.utils.set_random_seed(config.seed)
    across_workers = config.strategy == "multi-worker"
    if across_workers:
        train, dev = distributed.sharded(train), distributed.sharded(dev)
    steps_per_epoch = int(train.cardinality())
    if is_resuming(run_dir):
        keep_history_before(run_dir, backed_up_epoch(run_dir))
    elif (run_dir / "history.csv").exists():
        os.remove(run_dir / "history.csv")  # a finished earlier run: start the history afresh
    with make_strategy(config.strategy).scope():
        model = build_model()
        if across_workers:
            distributed.synchronize_batch_norm(model)
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate(config, steps_per_epoch), global_clipnorm=config.clip_norm),
            loss=loss,
            metrics=list(metrics),
            weighted_metrics=list(weighted_metrics),  # these see the dataset's sample weights (e.g. 0 on padding)
        )
    try:
        model.fit(
            train,
            validation_data=dev,
            epochs=config.epochs,
            shuffle=False,  # the tf.data pipelines shuffle themselves, with their own seed
            callbacks=[*callbacks(config, run_dir), *extra_callbacks],
            verbose=1 if os.environ.get("CI") is None else 2,
        )
    except tf.errors.UnavailableError as error:
        if not across_workers:
            raise
        cause = str(error).split("Collective ops is aborted by: ")[-1].splitlines()[0]
        raise distributed.WorkerLost(
            f"a worker was lost mid-training ({cause}). Start every worker again with the same command and run "
            f"folder: they resume from the last finished epoch ({backed_up_epoch(run_dir)} done)"
        ) from None
    return detached(model, run_dir) if across_workers else model


def detached(model: keras.Model, run_dir: Path) -> keras.Model:
    """A copy of `model` outside its distribution strategy (whose predict would wait for every worker)."""
    path = run_dir / "trained.keras"
    model.save(path)
    try:
        return keras.saving.load_model(path)
    finally:
        path.unlink()


def read_history(run_dir: Path) -> dict[str, list[float]]:
    """The CSV history as columns; it spans every resumed segment of the run."""
    path = run_dir / "history.csv"
    if not path.exists():
        return {}
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(row[key]) for row in rows] for key in (rows[0] if rows else {}) if key != "epoch"}
