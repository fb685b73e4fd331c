"""The training benchmark: its FLOP counts on layers whose cost is known by hand, its step timer, its CLI."""

import json

import keras
import numpy as np
import pytest

from benchmarks import training
from benchmarks.training import StepTimer, forward_flops_per_example, main, matmul_peak_flops, onednn_speedups


def test_dense_flops_are_two_per_weight_and_position():
    inputs = keras.Input((5, 3))  # a Dense on a sequence applies its kernel at each of 5 positions
    model = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.Dense(6)(inputs)))
    flops = forward_flops_per_example(model, np.zeros((2, 5, 3), np.float32))
    assert flops == 2 * 5 * (3 * 6 + 6 * 4)


def test_convolution_flops_count_every_output_position():
    inputs = keras.Input((8, 8, 2))
    same = keras.layers.Conv2D(4, 3, padding="same")(inputs)  # 8×8 outputs
    strided = keras.layers.Conv2D(6, 3, strides=2, padding="same")(same)  # 4×4 outputs
    flops = forward_flops_per_example(keras.Model(inputs, strided), np.zeros((3, 8, 8, 2), np.float32))
    assert flops == 2 * (8 * 8 * 3 * 3 * 2 * 4 + 4 * 4 * 3 * 3 * 4 * 6)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_flops_count_each_time_step(bidirectional):
    inputs = keras.Input((7, 3))
    lstm = keras.layers.LSTM(5)
    outputs = (keras.layers.Bidirectional(lstm) if bidirectional else lstm)(inputs)
    flops = forward_flops_per_example(keras.Model(inputs, outputs), np.ones((2, 7, 3), np.float32))
    per_step = 2 * (3 * 4 * 5 + 5 * 4 * 5)  # input and recurrent kernels of the four gates
    assert flops == (2 if bidirectional else 1) * 7 * per_step


def test_the_layers_are_restored_after_counting():
    calls = {kind: kind.call for kind in (keras.layers.Dense, keras.layers.Conv2D, keras.layers.LSTM)}
    forward_flops_per_example(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]), np.zeros((1, 3)))
    assert all(kind.call is call for kind, call in calls.items())


def test_the_matmul_peak_is_a_rate():
    assert 1e8 < matmul_peak_flops(256, repeats=2) < 1e14


def test_step_timer_times_each_epoch_between_its_first_and_last_step():
    timer = StepTimer()
    timer.on_epoch_begin(0)
    timer.ends[0] = [10.0, 10.5, 11.0, 11.5]
    assert timer.mean_step_seconds(0) == pytest.approx(0.5)


def test_onednn_speedups_pair_the_settings_of_each_family():
    rows = [
        {"family": "detector", "onednn": "on", "examples_per_s": 45.0},
        {"family": "detector", "onednn": "off", "examples_per_s": 30.0},
        {"family": "seq2seq", "onednn": "on", "examples_per_s": 900.0},
    ]
    assert onednn_speedups(rows) == {"detector": pytest.approx(1.5)}


def test_quick_configs_train_two_epochs_of_the_asked_steps():
    for name in training.FAMILIES:
        family, config = training.quick_config(name, steps=3)
        assert family.name == ("classifier" if name == "glyphs" else name)
        assert config.training.epochs == 2 and config.train_size == 3 * config.training.batch_size
    assert training.quick_config("glyphs", 3)[1].dataset == "glyphs"


def test_cli_help_and_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "matmul peak" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["--families", "classifier,web"])
    assert exit_info.value.code == 2 and "--families: unknown web" in capsys.readouterr().err


@pytest.mark.benchmark
@pytest.mark.slow  # one process that imports TensorFlow and trains the digits MLP for two short epochs
def test_cli_measures_a_family_in_a_process_of_its_own(tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        main(["--families", "classifier", "--onednn", "on", "--steps", "4", "--matmul-size", "512", "--out", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "classifier  on" in printed
    results = json.loads((out / "training.json").read_text())
    (row,) = results["rows"]
    assert row["family"] == "classifier" and row["onednn"] == "on" and row["steps_timed"] == 3
    assert row["examples_per_s"] == pytest.approx(row["batch_size"] / (row["step_ms"] / 1000))
    assert row["gflop_per_s"] == pytest.approx(row["train_gflop_per_example"] * row["examples_per_s"])
    assert 0 < row["fraction_of_peak"] < 1
    assert (out / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("overrides_call", [False, True])
def test_a_subclass_of_a_counted_layer_is_counted_once(overrides_call):
    class Scaled(keras.layers.Dense):
        if overrides_call:

            def call(self, inputs):
                return super().call(inputs) * 2.0

    inputs = keras.Input((3,))
    flops = forward_flops_per_example(keras.Model(inputs, Scaled(4)(inputs)), np.zeros((2, 3), np.float32))
    assert flops == 2 * 3 * 4


def test_the_benchmarks_parent_process_does_not_import_keras_or_tensorflow():
    """Read from the source (this process has TensorFlow loaded already): only functions import them."""
    import ast
    import inspect

    from benchmarks import serving

    for module in (training, serving):
        tree = ast.parse(inspect.getsource(module))
        top_level = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
        names = {alias.name.split(".")[0] for node in top_level for alias in node.names}
        names |= {node.module.split(".")[0] for node in top_level if isinstance(node, ast.ImportFrom) and node.module}
        assert not names & {"keras", "tensorflow"}, module.__name__
