"""Training across machines: `tf.distribute.MultiWorkerMirroredStrategy`, configured by `TF_CONFIG`.

Every worker runs the same command with its own `TF_CONFIG` (the cluster's addresses and its own place in it):

    TF_CONFIG='{"cluster": {"worker": ["host0:12345", "host1:12345"]}, "task": {"type": "worker", "index": 0}}'

Each step's global batch (`--batch-size`) is split across the workers, each reading its own elements of the same
seeded pipeline (`AutoShardPolicy.DATA`: in-memory generated data has no files to split), and the gradients are
summed across them. The chief (worker 0, or a task of type "chief") writes what must exist once: the run folder's
checkpoints, logs, history and resume backup, then alone evaluates, exports and registers. The other workers
write into `<run_dir>/workers/<type>-<index>/`, a temporary folder removed when their training ends.

Resuming: the chief's backup (`<run_dir>/backup`, every epoch) is what every worker restores from, so the run
folder must be shared storage between machines, as TensorFlow's multi-worker guide requires; on one machine it is.
"""

import functools
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

WORKERS_DIR = "workers"
TF_CONFIG_EXAMPLE = '{"cluster": {"worker": ["host0:12345", "host1:12345"]}, "task": {"type": "worker", "index": 0}}'
WORKER_LOST_EXIT = 5  # a worker stopped answering: start them all again and they resume


class WorkerLost(RuntimeError):
    """Another worker stopped mid-training (killed, preempted, its machine gone); the collective steps cannot go on."""


def stopped(error: WorkerLost) -> int:
    """Say why training stopped and what to do; the exit status for it."""
    print(f"training stopped: {error}", file=sys.stderr)
    return WORKER_LOST_EXIT


@dataclass(frozen=True)
class ClusterTask:
    """This process's place in `TF_CONFIG`'s cluster."""

    type: str
    index: int
    workers: int  # how many processes train (chief and workers)
    has_chief: bool  # a task of type "chief" exists; else worker 0 is the chief

    @property
    def is_chief(self) -> bool:
        return self.type == "chief" or (self.type == "worker" and self.index == 0 and not self.has_chief)

    @property
    def name(self) -> str:
        return f"{self.type}-{self.index}"


def cluster_task() -> ClusterTask | None:
    """The task `TF_CONFIG` names, or None when it is unset (a single process)."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        config = json.loads(raw)
        cluster, task = config["cluster"], config["task"]
        kind, index = str(task["type"]), int(task["index"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"TF_CONFIG is not valid: {error}. Expected JSON such as {TF_CONFIG_EXAMPLE}") from None
    workers = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
    return ClusterTask(kind, index, workers, has_chief="chief" in cluster)


def is_chief() -> bool:
    """True for the process that writes, evaluates and exports: the chief, or the only process."""
    task = cluster_task()
    return task is None or task.is_chief


def worker_run_dir(run_dir: Path) -> Path:
    """Where this process writes its run: `run_dir` for the chief, a folder of its own below it for the others."""
    task = cluster_task()
    if task is None or task.is_chief or run_dir.parts[-2:] == (WORKERS_DIR, task.name):
        return run_dir
    return run_dir / WORKERS_DIR / task.name


def finish_worker(run_dir: Path) -> None:
    """A worker other than the chief, done training: its folder was only for the run (as TensorFlow's guide has
    non-chief workers write to temporary folders), so it goes."""
    task = cluster_task()
    assert task is not None and not task.is_chief
    shutil.rmtree(worker_run_dir(run_dir), ignore_errors=True)
    print(f"{task.name}: training finished; the chief evaluates, exports and registers")


def shared_path(path: Path) -> Path:
    """`path` below a worker's own folder (`worker_run_dir`), as the chief writes it."""
    task = cluster_task()
    if task is None or task.is_chief:
        return path
    parts = path.parts
    for start in range(len(parts) - 1):
        if parts[start : start + 2] == (WORKERS_DIR, task.name):
            return Path(*parts[:start], *parts[start + 2 :])
    return path


@functools.cache
def multi_worker_strategy():
    """The process's one MultiWorkerMirroredStrategy; created before any other TensorFlow operation runs."""
    import tensorflow as tf

    if cluster_task() is None:
        raise ValueError(
            f"--strategy multi-worker needs TF_CONFIG: the cluster's addresses and this worker's task, e.g. "
            f"{TF_CONFIG_EXAMPLE}"
        )
    _let_keras_fit_across_workers()
    return tf.distribute.MultiWorkerMirroredStrategy()


def sharded(dataset):
    """`dataset` split across workers element by element: each worker reads the same seeded pipeline and keeps its
    share of every global batch (the FILE policy would need one file per worker; generated data has none)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def synchronize_batch_norm(model) -> None:
    """BatchNormalization's statistics over the global batch, not over each worker's share of it: the model trains
    as it does on one worker with the same batch size."""
    import keras

    def layers(parent):
        for layer in getattr(parent, "layers", ()):
            yield layer
            yield from layers(layer)

    for layer in layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True


def wait_for(ready: Callable[[], bool], what: str, *, seconds: float = 3600, every: float = 2.0) -> None:
    """Block a non-chief worker until the chief has written `what`."""
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {seconds:.0f} s for the chief to write {what}")
        time.sleep(every)


def _let_keras_fit_across_workers() -> None:
    """Two fixes that Keras 3's TensorFlow trainer needs under MultiWorkerMirroredStrategy (keras-team/keras#20585):
    its first symbolic build averages a data batch across workers (integer labels cannot be averaged; only the
    shapes matter), and it averages each metric with `axis=0`, which a scalar does not have."""
    from keras import tree
    from keras.src.backend.tensorflow import trainer

    if getattr(trainer, "_multi_worker_fixed", False):
        return
    reduce_per_replica = trainer.reduce_per_replica

    def reduce_across_workers(values, strategy, reduction):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):
            return tree.map_structure(lambda value: strategy.reduce("MEAN", value, axis=None), values)
        return reduce_per_replica(values, strategy, reduction)

    def symbolic_build_from_local_batch(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:
            return
        if iterator is not None:
            for _, _, batches in iterator:
                batch = next(batches)
                data_batch = tree.map_structure(
                    lambda value: self.distribute_strategy.experimental_local_results(value)[0], batch
                )
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    trainer.reduce_per_replica = reduce_across_workers
    trainer.TensorFlowTrainer._maybe_symbolic_build = symbolic_build_from_local_batch
    trainer._multi_worker_fixed = True
