"""The validation gate (pipelines/validation): thresholds, blessing records, the checks on real exported
versions, and what serving does with the verdict."""

import argparse
import dataclasses
import json
import re
import time
from pathlib import Path

import httpx
import keras
import numpy as np
import pytest

from benchmarks.model_swaps import copy_as_version
from pipelines import classifier, cli
from pipelines.family import Trained
from pipelines.validation import NOT_BLESSED_EXIT
from pipelines.validation.gate import NO_BASELINE, GateError, GateOptions, validate
from pipelines.validation.report import table
from pipelines.validation.scoring import HeldOut, image_classes
from pipelines.validation.thresholds import (
    ChangeThreshold,
    Direction,
    MetricThreshold,
    Thresholds,
    ThresholdsError,
    add_gate_arguments,
)
from serving import store
from serving.contract import (
    BLESSING_FILE,
    METADATA_FILE,
    ArtifactError,
    Blessing,
    Check,
    Verdict,
    read_blessing,
    read_metadata,
    write_blessing,
)
from serving.model_config import parse_models_setting
from serving.model_manager import ModelManager, State
from serving.process import running_server

# --- thresholds ----------------------------------------------------------------------------------


def test_change_thresholds_follow_tfx_semantics_with_the_tolerance_as_a_positive_amount():
    assert ChangeThreshold(absolute=0.005).limit(0.98, Direction.HIGHER) == pytest.approx(0.975)
    assert ChangeThreshold(relative=0.5).limit(10.0, Direction.LOWER) == pytest.approx(15.0)
    assert ChangeThreshold(relative=1.0).limit(10.0, Direction.LOWER) == pytest.approx(20.0)
    # both given: both must hold, so the stricter limit applies
    assert ChangeThreshold(absolute=0.01, relative=0.001).limit(0.9, Direction.HIGHER) == pytest.approx(0.8991)
    assert ChangeThreshold(absolute=0.005).describe(Direction.HIGHER) == ">= baseline - 0.005"
    assert ChangeThreshold(relative=1.0).describe(Direction.LOWER) == "<= 2 x baseline"


def test_value_thresholds_say_by_how_much_a_value_misses():
    floor = MetricThreshold(lower=0.95)
    assert floor.value_problem(0.96) is None
    assert floor.value_problem(0.9) == "below the floor 0.95 by 0.05"
    assert MetricThreshold(upper=10, direction=Direction.LOWER).value_problem(12) == "above the ceiling 10 by 2"
    assert MetricThreshold(lower=0.5, upper=0.9).describe_value() == ">= 0.5 and <= 0.9"


DEFAULTS = Thresholds(quality=MetricThreshold(lower=0.95, change=ChangeThreshold(absolute=0.005)))


def parse_gate_flags(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_gate_arguments(parser)
    return parser.parse_args(argv)


def test_a_thresholds_file_replaces_the_defaults_and_flags_replace_the_file(tmp_path):
    path = tmp_path / "gate.yaml"
    path.write_text(
        "quality: {lower: 0.9, change: {relative: 0.01}}\n"
        "groups: {lower: 0.5}\nsize_mb: {upper: 20}\nlatency_calls: 7\n"
    )
    from_file = DEFAULTS.from_file(path)
    assert from_file.quality == MetricThreshold(lower=0.9, change=ChangeThreshold(relative=0.01))
    assert from_file.groups.lower == 0.5 and from_file.size_mb.upper == 20 and from_file.latency_calls == 7
    assert from_file.latency_p99_ms == DEFAULTS.latency_p99_ms  # what the file does not name stays

    flags = parse_gate_flags("--thresholds", str(path), "--min-quality", "0.97", "--tolerance", "0.02")
    merged = DEFAULTS.from_args(flags)
    assert merged.quality == MetricThreshold(lower=0.97, change=ChangeThreshold(absolute=0.02))
    assert merged.groups.lower == 0.5  # from the file
    ratio = DEFAULTS.from_args(parse_gate_flags("--max-latency-ratio", "1.5", "--max-size-mb", "3"))
    assert ratio.latency_p99_ms.change == ChangeThreshold(relative=0.5) and ratio.size_mb.upper == 3

    json_file = tmp_path / "gate.json"
    json_file.write_text(json.dumps({"quality": {"lower": 0.5}}))
    assert DEFAULTS.from_file(json_file).quality.lower == 0.5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("quality: {floor: 0.9}", "quality: unknown key(s) floor; known: change, direction, lower, upper"),
        ("qualty: {lower: 0.9}", "unknown key(s) qualty"),
        ("quality: {lower: high}", "quality.lower is 'high'; expected a number"),
        ("quality: {change: {absolute: -0.1}}", "a tolerance is how much worse the candidate may be, 0 or more"),
        ("quality: {direction: up}", "quality.direction is 'up'; expected higher or lower"),
        ("latency_calls: 0", "latency_calls is 0; expected a whole number, 1 or more"),
        ("[1, 2]", "holds a list, not a mapping"),
        ("quality: [", "does not parse"),
    ],
)
def test_a_thresholds_file_the_gate_cannot_use_is_refused_with_the_key_and_what_is_expected(tmp_path, text, message):
    path = tmp_path / "gate.yaml"
    path.write_text(text)
    with pytest.raises(ThresholdsError, match=re.escape(message)):
        DEFAULTS.from_file(path)


def test_a_missing_thresholds_file_is_named():
    with pytest.raises(ThresholdsError, match=re.escape("cannot read thresholds file /nowhere/gate.yaml")):
        DEFAULTS.from_file(Path("/nowhere/gate.yaml"))


# --- the blessing record -------------------------------------------------------------------------


def test_a_blessing_record_round_trips_and_is_replaced_in_one_rename(tmp_path):
    assert read_blessing(tmp_path) is None
    record = Blessing(
        blessed=False,
        checks=(Check("accuracy", ">= 0.95", Verdict.FAIL, 0.9, 0.97, "below the floor 0.95 by 0.05"),),
        metric="accuracy",
        baseline_version=2,
        data_fingerprint="ab" * 32,
        notes=("baseline: version 2",),
        thresholds=DEFAULTS.to_dict(),
    )
    write_blessing(tmp_path, record)
    assert read_blessing(tmp_path) == record
    assert record.summary() == "not blessed: accuracy 0.9 (needs >= 0.95)"
    assert (tmp_path / BLESSING_FILE).stat().st_mode & 0o777 == 0o644
    write_blessing(tmp_path, Blessing(blessed=True))
    assert read_blessing(tmp_path).summary() == "blessed"
    assert sorted(path.name for path in tmp_path.iterdir()) == [BLESSING_FILE]  # no staging file left
    assert Blessing(blessed=False, pending=True).summary().startswith("pending validation")


@pytest.mark.parametrize("text", ["{", '{"blessed": "yes"}', '{"blessed": true, "checks": [{"name": "x"}]}'])
def test_a_damaged_blessing_record_is_an_artifact_error(tmp_path, text):
    (tmp_path / BLESSING_FILE).write_text(text)
    with pytest.raises(ArtifactError, match=BLESSING_FILE):
        read_blessing(tmp_path)


# --- the gate on real exported versions ------------------------------------------------------------


@pytest.fixture
def artifact(trained_classifier) -> Path:
    return trained_classifier[2]


@pytest.fixture
def accuracy(trained_classifier) -> float:
    return trained_classifier[1]["test_accuracy"]


def loose(accuracy: float, *, load_check: bool = False, **changes) -> GateOptions:
    """Floors under what the test classifier reaches, so that only the check a test is about can fail. The load
    check in a fresh process (a TensorFlow import: ~8 s of CPU here) runs where a test is about it. Latency keeps
    its ceiling but gets no change threshold, and 20 calls: a copy of a version compared with that version
    failed once, and timing while the other xdist worker trains is the only check that can tell two copies
    apart."""
    thresholds = Thresholds(
        quality=MetricThreshold(lower=accuracy - 0.1, change=ChangeThreshold(absolute=0.005)),
        groups=MetricThreshold(lower=0.0),
        latency_p99_ms=dataclasses.replace(DEFAULTS.latency_p99_ms, change=None),
        latency_calls=20,
    )
    return GateOptions(thresholds, load_check=load_check, **changes)


def failed(blessing: Blessing) -> dict[str, Check]:
    return {check.name: check for check in blessing.failed}


def test_the_first_version_is_blessed_on_value_thresholds_alone(tmp_path, artifact, accuracy, digits):
    candidate = copy_as_version(artifact, tmp_path, 1)
    blessing = validate(candidate, loose(accuracy, load_check=True))
    assert blessing.blessed and read_blessing(candidate) == blessing
    checks = {check.name: check for check in blessing.checks}
    # scored through the SavedModel on the split rebuilt from the recorded config: what training measured
    assert checks["accuracy"].value == pytest.approx(accuracy, abs=1e-9)
    assert "accuracy vs baseline" not in checks and blessing.baseline_version is None
    assert "no baseline: value thresholds only (no blessed version of this model yet)" in blessing.notes
    assert checks["loads and answers"].verdict == Verdict.PASS
    assert checks["loads and answers"].detail.startswith("6 warm-up requests answered")
    assert {f"recall[{digit}]" for digit in range(10)} <= set(checks)
    assert checks["latency p99 ms"].value > 0 and checks["size MB"].value > 0.1
    assert blessing.data_fingerprint == image_classes(digits).fingerprint()
    assert (candidate / "blessing.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "verdict: blessed" in table(blessing)


def perturbed_export(artifact: Path, root: Path, digits, report: dict) -> Path:
    """The test classifier with its last layer's weights replaced by seeded noise, exported as the next version
    and pending validation, as a family script leaves it."""
    model = keras.saving.load_model(artifact / "model.keras")  # a copy: the session's model stays as it is
    config = classifier.ClassifierConfig.from_dict(read_metadata(artifact).training)
    rng = np.random.default_rng(0)
    last = model.layers[-1]
    last.set_weights([rng.normal(0, 1, weight.shape).astype("float32") for weight in last.get_weights()])
    return classifier.FAMILY.export(Trained(config, model, None), digits, report, root, pending=True)


def test_a_worse_candidate_is_not_blessed_not_served_and_the_table_says_which_check_failed_by_how_much(
    tmp_path, artifact, accuracy, digits, trained_classifier
):
    copy_as_version(artifact, tmp_path, 1)
    candidate = perturbed_export(artifact, tmp_path, digits, trained_classifier[1])
    assert read_blessing(candidate).pending
    manager = ModelManager(parse_models_setting(""), store.FolderSource(tmp_path))
    manager.poll()
    assert sorted(manager.served.runtimes["classifier"]) == [1]  # pending: not served before the gate ran

    blessing = validate(candidate, loose(accuracy))
    assert not blessing.blessed and blessing.baseline_version == 1
    change = failed(blessing)["accuracy vs baseline"]
    assert change.baseline == pytest.approx(accuracy, abs=1e-9)
    assert change.value < accuracy - 0.005
    assert (
        change.detail
        == f"{change.value - accuracy:+.4g} against the baseline, worse than allowed ({accuracy - 0.005:.4g})"
    )
    verdict = table(blessing).splitlines()[-1]
    assert verdict.startswith("verdict: not blessed: ") and "; accuracy vs baseline " in verdict

    manager.poll()
    assert sorted(manager.served.runtimes["classifier"]) == [1]
    held_back = next(status for status in manager.statuses("classifier") if status.version == 2)
    assert held_back.state == State.START and held_back.blessing == blessing.summary()


def test_a_baseline_is_scored_again_on_the_candidates_data_never_by_its_stored_numbers(tmp_path, artifact, accuracy):
    baseline = copy_as_version(artifact, tmp_path, 1)
    document = json.loads((baseline / METADATA_FILE).read_text())
    document["metrics"]["test_accuracy"] = 0.0  # what its own (other) data said
    document["dataset"]["held_out"]["fingerprint"] = "0" * 64
    (baseline / METADATA_FILE).write_text(json.dumps(document))
    candidate = copy_as_version(artifact, tmp_path, 2)

    blessing = validate(candidate, loose(accuracy))
    assert blessing.blessed and blessing.baseline_version == 1
    change = next(check for check in blessing.checks if check.name == "accuracy vs baseline")
    assert change.baseline == pytest.approx(accuracy, abs=1e-9)  # re-evaluated, not the stored 0.0
    skipped = next(check for check in blessing.checks if check.name == "loads and answers")
    assert (skipped.verdict, skipped.detail) == (Verdict.NOT_CHECKED, "not run: --no-load-check")
    assert (
        "the baseline was exported with held-out 000000000000: it is scored again on the candidate's" in blessing.notes
    )


def test_a_baseline_that_cannot_be_compared_fails_the_change_check_and_says_why(tmp_path, artifact, accuracy):
    baseline = copy_as_version(artifact, tmp_path, 1)
    document = json.loads((baseline / METADATA_FILE).read_text())
    document["labels"] = [f"class {index}" for index in range(10)]
    (baseline / METADATA_FILE).write_text(json.dumps(document))
    candidate = copy_as_version(artifact, tmp_path, 2)

    blessing = validate(candidate, loose(accuracy))
    check = failed(blessing)["accuracy vs baseline"]
    assert check.detail.startswith("cannot compare with version 1: the baseline's classes ['class 0'")
    assert check.detail.endswith("--baseline none blesses on value thresholds alone")
    alone = validate(candidate, loose(accuracy, baseline=NO_BASELINE))
    assert alone.blessed and "no baseline: value thresholds only (--baseline none)" in alone.notes


def test_a_candidate_whose_savedmodel_cannot_be_loaded_is_not_blessed(tmp_path, artifact, accuracy):
    candidate = copy_as_version(artifact, tmp_path, 1)
    (candidate / "saved_model.pb").write_bytes(b"not a SavedModel")
    blessing = validate(candidate, loose(accuracy, load_check=True))
    assert not blessing.blessed
    problems = failed(blessing)
    assert "the SavedModel does not load" in problems["loads and answers"].detail
    assert problems["accuracy"].detail.startswith("not scored: ModelLoadError: corrupt model at")


def test_thresholds_from_a_file_and_from_flags_are_honoured_by_modelservice_validate(
    tmp_path, artifact, accuracy, capsys
):
    candidate = copy_as_version(artifact, tmp_path, 1)
    strict = tmp_path / "gate.yaml"
    strict.write_text(f"quality: {{lower: {accuracy + 0.001}}}\ngroups: {{lower: 0}}\n")
    validate_without_load_check = ["validate", "--no-load-check"]
    strict_flags = ["--thresholds", str(strict)]
    assert cli.main([*validate_without_load_check, str(tmp_path / "classifier"), *strict_flags]) == NOT_BLESSED_EXIT
    printed = capsys.readouterr().out
    assert f">= {accuracy + 0.001:g}" in printed and f"below the floor {accuracy + 0.001:g} by 0.001" in printed
    assert not read_blessing(candidate).blessed

    flags = ["--thresholds", str(strict), "--min-quality", str(accuracy - 0.01), "--max-size-mb", "1000"]
    assert cli.main([*validate_without_load_check, str(candidate), *flags]) == 0
    assert read_blessing(candidate).blessed
    assert read_blessing(candidate).thresholds["size_mb"]["upper"] == 1000


def test_modelservice_validate_refuses_what_it_cannot_validate(tmp_path, artifact, capsys):
    assert cli.main(["validate", str(tmp_path / "nothing")]) == 2
    assert "does not exist: pass a version folder" in capsys.readouterr().err
    candidate = copy_as_version(artifact, tmp_path, 1)
    assert cli.main(["validate", str(candidate), "--baseline", "7"]) == 2
    assert "has no other version 7 to compare with: found none" in capsys.readouterr().err
    bad = tmp_path / "gate.yaml"
    bad.write_text("quality: {lower: x}")
    assert cli.main(["validate", str(candidate), "--thresholds", str(bad)]) == 2
    assert "quality.lower is 'x'; expected a number" in capsys.readouterr().err
    with pytest.raises(GateError, match="is not an exported version"):
        validate(tmp_path, loose(0.9))


@pytest.mark.parametrize(
    ("fixture", "metric", "reported"),
    [
        ("trained_seq2seq", "exact_match", lambda report: report["test"]["exact_match"]),
        ("trained_detector", "map_50", lambda report: report["test"]["map_50"]),
        ("trained_transfer", "accuracy", lambda report: report["test_accuracy"]),
    ],
)
def test_every_family_is_scored_through_its_savedmodel_as_its_training_run_measured_it(
    request, tmp_path, fixture, metric, reported
):
    from pipelines.family import RunFolder

    built = request.getfixturevalue(fixture)
    artifact = built[-1]
    report = built[-2] if fixture != "trained_transfer" else RunFolder(built[1]).saved_report()
    metadata = read_metadata(artifact)
    candidate = copy_as_version(artifact, tmp_path, 1, name=metadata.name)
    thresholds = Thresholds(quality=MetricThreshold(lower=0.0), groups=MetricThreshold(lower=0.0))
    blessing = validate(candidate, GateOptions(thresholds, load_check=False))
    assert blessing.blessed and blessing.metric == metric
    checks = {check.name: check for check in blessing.checks}
    assert checks[metric].value == pytest.approx(reported(report), abs=2e-3)
    assert not any("changed since export" in note for note in blessing.notes)  # the recorded split came back
    if fixture == "trained_seq2seq":
        assert any(name.startswith("exact_match[") for name in checks)  # one per style


# --- serving and the verdict ---------------------------------------------------------------------


def bless(path: Path, blessed: bool) -> None:
    write_blessing(path, Blessing(blessed=blessed))


def test_serving_follows_the_blessings_roll_out_roll_back_and_versions_without_a_record(tmp_path, artifact):
    root = tmp_path / "models"
    old = copy_as_version(artifact, root, 1)  # no record: exported before the gate
    new = copy_as_version(artifact, root, 2)
    write_blessing(new, Blessing(blessed=False, pending=True))
    manager = ModelManager(parse_models_setting(""), store.FolderSource(root))
    manager.poll()
    assert sorted(manager.served.runtimes["classifier"]) == [1]
    statuses = {status.version: status for status in manager.statuses("classifier")}
    assert statuses[1].blessing == store.NO_BLESSING
    assert statuses[2].state == State.START and statuses[2].blessing.startswith("pending validation")
    assert manager.failures() == []  # held back is not a failure: the server starts

    bless(new, True)  # blessing is what rolls it out
    manager.poll()
    assert sorted(manager.served.runtimes["classifier"]) == [2]
    bless(new, False)  # and un-blessing rolls back
    manager.poll()
    assert sorted(manager.served.runtimes["classifier"]) == [1]

    bless(old, False)
    manager.poll()
    assert manager.served.runtimes == {}
    assert manager.start_problem() == (
        "no version of 'classifier' may serve (version 1: not blessed; version 2: not blessed)"
    )
    everything = ModelManager(parse_models_setting(""), store.FolderSource(root), serve_unblessed=True)
    everything.poll()
    assert sorted(everything.served.runtimes["classifier"]) == [2]


def test_a_damaged_record_keeps_a_version_off_traffic_and_says_why(tmp_path, artifact):
    root = tmp_path / "models"
    copy_as_version(artifact, root, 1)
    (copy_as_version(artifact, root, 2) / BLESSING_FILE).write_text("{")
    manager = ModelManager(parse_models_setting(""), store.FolderSource(root))
    manager.poll()
    assert sorted(manager.served.runtimes["classifier"]) == [1]
    damaged = next(status for status in manager.statuses("classifier") if status.version == 2)
    assert damaged.blessing.startswith("not served: blessing.json is not valid JSON")


def wait_for(condition, *, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def classified_by(url: str, images: dict) -> str:
    return httpx.post(f"{url}/classify", json=images, timeout=30).json()["model"]["version"]


@pytest.mark.e2e
@pytest.mark.slow
def test_a_running_server_picks_up_a_version_once_the_gate_blesses_it(tmp_path, artifact, accuracy, digits):
    root = tmp_path / "models"
    copy_as_version(artifact, root, 1)
    candidate = copy_as_version(artifact, root, 2)
    write_blessing(candidate, Blessing(blessed=False, pending=True))
    images = {"instances": digits.test.images[:2, :, :, 0].tolist()}
    env = {"MODELSERVICE_MODEL_DIR": str(root), "MODELSERVICE_POLL_SECONDS": "0.5"}
    with running_server(env=env, log_path=tmp_path / "server.log") as url:
        assert classified_by(url, images) == "1"
        listed = httpx.get(f"{url}/v1/models", timeout=30).json()["models"][0]["versions"]
        assert {entry["version"]: entry["state"] for entry in listed} == {"2": "START", "1": "AVAILABLE"}
        assert listed[0]["blessing"].startswith("pending validation") and listed[1]["blessing"] == store.NO_BLESSING

        blessing = validate(candidate, loose(accuracy))
        assert blessing.blessed, failed(blessing)
        wait_for(lambda: classified_by(url, images) == "2", what="version 2 to serve")
        listed = httpx.get(f"{url}/v1/models", timeout=30).json()["models"][0]["versions"]
        assert listed[0] == {"version": "2", "state": "AVAILABLE", "labels": [], "blessing": "blessed"}
    assert "version 1 of classifier has no blessing record" in (tmp_path / "server.log").read_text()


@pytest.mark.e2e
def test_the_family_scripts_export_pending_then_validate_and_exit_non_zero_when_not_blessed(tmp_path, monkeypatch):
    """The classifier script on two epochs, blessed with loose floors; `modelservice export` of the same run
    with a floor no model reaches leaves the new version unblessed and exits 3; --no-validate leaves no record."""
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    run, artifacts = tmp_path / "run", tmp_path / "artifacts"
    common = ["--artifacts", str(artifacts), "--no-register", "--min-group", "0"]
    trained = ["--profile", "quick", "--epochs", "2", "--run-dir", str(run), *common, "--min-quality", "0.3"]
    assert classifier.FAMILY.main(trained) == 0
    assert read_blessing(artifacts / "classifier" / "1").blessed
    unreachable = ["--min-quality", "1.01", "--no-load-check"]
    assert cli.main(["export", "--run-dir", str(run), *common, *unreachable]) == NOT_BLESSED_EXIT
    second = read_blessing(artifacts / "classifier" / "2")
    assert not second.blessed and second.baseline_version == 1
    assert cli.main(["export", "--run-dir", str(run), *common, "--no-validate"]) == 0
    assert read_blessing(artifacts / "classifier" / "3") is None


def test_held_out_fingerprints_tell_splits_apart(digits):
    split = image_classes(digits)
    assert split.fingerprint() == image_classes(digits).fingerprint()
    fewer = HeldOut(split.inputs[:-1], split.targets[:-1], split.class_names)
    renamed = HeldOut(split.inputs, split.targets, tuple(f"d{name}" for name in split.class_names))
    assert len({split.fingerprint(), fewer.fingerprint(), renamed.fingerprint()}) == 3
    texts = HeldOut(("a", "b"), ("x", "y"), groups=("s", "t"))
    assert texts.fingerprint() != HeldOut(("a", "b"), ("x", "z"), groups=("s", "t")).fingerprint()
