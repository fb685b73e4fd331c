"""`modelservice` in a fresh process for tests/training/test_tuning.py: TensorFlow's ops deterministic, the
classifier's search space narrowed to the MLP, as ResNet trials cost several times as much on two cores, and
KerasTuner's chief asking every second, not every 20, whether the workers' last trials have finished."""

import sys
import time
import types
from dataclasses import replace

import tensorflow as tf
from keras_tuner.src.distribute import oracle_chief

from pipelines import classifier
from pipelines.cli import main
from pipelines.training.search_space import Choice

MLP_ONLY = replace(
    classifier.SEARCH_SPACE,
    dimensions=tuple(
        Choice("architecture", values=("mlp",)) if dimension.name == "architecture" else dimension
        for dimension in classifier.SEARCH_SPACE.dimensions
    ),
)


def sleep_at_most_a_second(seconds: float) -> None:
    time.sleep(min(seconds, 1.0))


if __name__ == "__main__":
    tf.config.experimental.enable_op_determinism()
    # The chief's server loop waits 20 s between its checks once the workers asked it to stop.
    oracle_chief.time = types.SimpleNamespace(sleep=sleep_at_most_a_second)
    classifier.FAMILY.search_space = MLP_ONLY
    sys.exit(main(sys.argv[1:]))
