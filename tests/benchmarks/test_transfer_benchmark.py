"""The transfer benchmark: the same test split for every seed, its summary arithmetic, and a short run of its CLI.

The run reuses the glyph backbone the session's `trained_transfer` fixture pretrained (tests/conftest.py),
so it only trains a few epochs per arm for two seeds.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.transfer import error_ratio, main, summarize
from pipelines import transfer
from pipelines.training.loop import TrainingConfig


def test_the_split_seed_fixes_the_test_split_while_the_seed_draws_the_training_sample():
    def data(seed: int, split_seed: int | None) -> transfer.ImageDataset:
        return transfer.FAMILY.load_data(
            transfer.TransferConfig(split_seed=split_seed, training=TrainingConfig(seed=seed))
        )

    first, second = data(0, 0), data(1, 0)
    np.testing.assert_array_equal(first.test.images, second.test.images)
    np.testing.assert_array_equal(first.test.labels, second.test.labels)
    assert not np.array_equal(first.train.images, second.train.images)
    assert np.bincount(second.train.labels).tolist() == [10] * 10
    # Without a split seed the training seed also splits, as `python -m pipelines.transfer --seed N` always has.
    assert not np.array_equal(data(1, None).test.images, first.test.images)
    np.testing.assert_array_equal(data(1, None).test.images, data(1, 1).test.images)


def row(seed: int, transfer_accuracy: float, scratch_accuracy: float) -> dict:
    return {
        "seed": seed,
        "transfer_test_accuracy": transfer_accuracy,
        "scratch_test_accuracy": scratch_accuracy,
        "difference": transfer_accuracy - scratch_accuracy,
    }


def test_summary_of_seeds():
    summary = summarize([row(0, 0.96, 0.90), row(1, 0.98, 0.92), row(2, 0.97, 0.91)])
    assert summary["transfer"]["mean"] == pytest.approx(0.97) and summary["scratch"]["mean"] == pytest.approx(0.91)
    assert summary["transfer"]["std"] == pytest.approx(0.01)  # sample standard deviation (n - 1)
    assert summary["difference"]["mean"] == pytest.approx(0.06) and summary["difference"]["std"] == pytest.approx(0.0)
    assert (summary["wins"], summary["seeds"]) == (3, 3)
    assert summary["error_ratio"] == pytest.approx(0.09 / 0.03)
    assert summary["clear_win"]  # 0.06 > 2 × 0.01
    assert not summarize([row(0, 0.96, 0.90), row(1, 0.90, 0.92)])["clear_win"]  # scratch won a seed
    assert not summarize([row(0, 0.99, 0.97), row(1, 0.93, 0.92), row(2, 0.96, 0.94)])[
        "clear_win"
    ]  # ahead, within the noise
    assert error_ratio(0.9, 1.0) is None


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    usage = capsys.readouterr().out
    assert "python -m benchmarks.transfer" in usage
    for option in ("--seeds", "--split-seed", "--profile", "--runs", "--artifacts", "--out", "--fine-tune-epochs"):
        assert option in usage


def test_cli_refuses_flags_it_sets_itself(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--seed", "3", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "--seed: set by the benchmark" in capsys.readouterr().err


@pytest.mark.benchmark
@pytest.mark.slow
def test_two_short_seeds_write_results_and_plot(trained_transfer, tmp_path, capsys):
    config, _, _ = trained_transfer
    out, runs = tmp_path / "out", tmp_path / "runs"
    seeds = [0, 1]
    code = main([
        "--seeds", *map(str, seeds), "--runs", str(runs), "--artifacts", config.artifacts, "--out", str(out),
        "--epochs", "1", "--transfer-strategy", "freeze",  # two phases per seed, head and scratch
    ])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "seed 1 (2/2): transfer" in printed and "test error rate scratch / transfer" in printed
    assert not (runs / "glyphs").exists()  # the fixture's backbone was reused, not pretrained again

    results = json.loads((out / "transfer.json").read_text())
    rows, summary = results["seeds"], results["summary"]
    assert [entry["seed"] for entry in rows] == seeds
    for entry in rows:
        assert 0.0 <= entry["transfer_test_accuracy"] <= 1.0 and 0.0 <= entry["scratch_test_accuracy"] <= 1.0
        assert entry["difference"] == pytest.approx(entry["transfer_test_accuracy"] - entry["scratch_test_accuracy"])
        assert entry["train_images"] == 100
        assert (Path(entry["run_dir"]) / "evaluation" / "transfer_vs_scratch.png").is_file()
    assert rows[0]["train_sample"] != rows[1]["train_sample"]  # each seed its own 10 per class...
    assert results["test_split"]["split_seed"] == 0 and results["test_split"]["images"] == 270  # ...on one test split
    for arm in ("transfer", "scratch"):
        values = [entry[f"{arm}_test_accuracy"] for entry in rows]
        assert summary[arm]["mean"] == pytest.approx(np.mean(values))
        assert summary[arm]["std"] == pytest.approx(np.std(values, ddof=1))
    assert summary["wins"] == sum(entry["difference"] > 0 for entry in rows) and summary["seeds"] == 2
    assert results["config"]["transfer_strategy"] == "freeze" and results["config"]["training"]["epochs"] == 1
    assert not any((Path(entry["run_dir"]) / "fine_tune").exists() for entry in rows)
    assert results["total_seconds"] > 0
    with Image.open(out / "transfer.png") as image:
        assert image.format == "PNG" and image.width >= 800
