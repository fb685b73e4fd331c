"""The family protocol: one set of methods and signatures, config (de)serialisation, the run folder, lazy loading."""

import dataclasses
import inspect
import json
import subprocess
import sys

import pytest

from pipelines import family as family_module
from pipelines.family import NAMES, REPORT_FILE, SUMMARIES, Family, RunFolder, family
from pipelines.training.loop import BACKUP_DIR, TrainingConfig

PROTOCOL = (
    "add_arguments",
    "config_from_args",
    "load_data",
    "fit_preprocessing",
    "build_model",
    "fit",
    "train",
    "load_trained",
    "evaluate",
    "headline",
    "describe",
    "served_graph",
    "artifact_metadata",
    "export",
    "held_out",
    "gate_defaults",
    "export_and_validate",
    "train_and_evaluate",
    "run",
    "evaluate_run",
    "export_run",
    "main",
)


def parameters(method) -> list[tuple[str, inspect._ParameterKind]]:
    return [(name, spec.kind) for name, spec in inspect.signature(method).parameters.items()]


@pytest.mark.parametrize("name", NAMES)
def test_every_family_implements_the_protocol_with_the_same_signatures(name):
    chosen = family(name)
    assert isinstance(chosen, Family) and chosen.name == name
    for method in PROTOCOL:
        assert parameters(getattr(chosen, method)) == parameters(getattr(Family, method).__get__(chosen)), method
    assert not getattr(type(chosen), "__abstractmethods__", None)


def test_an_unknown_family_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown family 'segmenter'; choose one of classifier, seq2seq"):
        family("segmenter")


@pytest.mark.parametrize("name", NAMES)
def test_the_summary_is_the_first_line_of_the_family_script(name):
    assert family(name).description.splitlines()[0] == SUMMARIES[name]


@pytest.mark.parametrize("name", NAMES)
def test_configs_survive_run_json(name):
    config_type = family(name).config_type
    config = config_type(name="mine", training=TrainingConfig(epochs=3, clip_norm=2.0))
    if "image_size" in {spec.name for spec in dataclasses.fields(config_type)} and name != "detector":
        config = dataclasses.replace(config, image_size=(12, 14))
    rebuilt = config_type.from_dict(json.loads(json.dumps(config.to_dict())))
    assert rebuilt == config
    assert isinstance(rebuilt.training, TrainingConfig)


def test_a_side_file_is_fitted_on_a_new_run_and_reloaded_when_resuming(tmp_path):
    run = RunFolder(tmp_path)
    fits = []

    def fit():
        fits.append(len(fits))
        return {"vocabulary": f"fit {len(fits)}"}

    first = run.side_file("tokenizer.json", fit, dump=lambda value: value, load=lambda value: value)
    assert first == {"vocabulary": "fit 1"} and json.loads((tmp_path / "tokenizer.json").read_text()) == first
    (tmp_path / BACKUP_DIR).mkdir()  # an interrupted run: its checkpoint was trained with the first fit
    assert run.side_file("tokenizer.json", fit, dump=lambda value: value, load=lambda value: value) == first
    (tmp_path / BACKUP_DIR).rmdir()  # a finished run re-run from scratch fits afresh
    assert run.side_file("tokenizer.json", fit, dump=lambda value: value, load=lambda value: value) == {
        "vocabulary": "fit 2"
    }
    assert len(fits) == 2


def test_the_run_record_names_the_family(tmp_path):
    config = family("seq2seq").config_type()
    RunFolder(tmp_path).record("seq2seq", config, {"sizes": {"train": 1}}, note="kept")
    recorded = RunFolder(tmp_path).recorded()
    assert RunFolder(tmp_path).family_name() == "seq2seq" and recorded["note"] == "kept"
    assert family("seq2seq").config_type.from_dict(recorded["config"]) == config
    (tmp_path / "run.json").write_text(json.dumps({"config": {}}))
    assert RunFolder(tmp_path).family_name() == "classifier"  # runs from before families were recorded


def loaded_modules(*argv: str) -> set[str]:
    code = (
        "import sys, contextlib, io\n"
        "from pipelines import cli\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        f"    cli.main({list(argv)!r})\n"
        "print('\\n'.join(sys.modules))\n"
    )
    finished = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return set(finished.stdout.split())


@pytest.mark.e2e  # a process of its own
def test_the_cli_imports_a_family_only_when_a_command_needs_it():
    help_modules = loaded_modules("--help")
    assert not {f"pipelines.{name}" for name in NAMES} & help_modules
    assert "tensorflow" not in help_modules and "keras" not in help_modules
    assert not {f"pipelines.{name}" for name in NAMES} & loaded_modules("serve", "--help")
    training_help = loaded_modules("train", "seq2seq", "--help")
    assert "pipelines.seq2seq" in training_help
    assert not {"pipelines.classifier", "pipelines.detector", "pipelines.transfer"} & training_help


def test_family_scripts_share_one_main():
    for name in NAMES:
        assert type(family(name)).main is family_module.Family.main


def test_durations_read_as_minutes_and_seconds():
    assert family_module.duration(42.04) == "42.0 s"
    assert family_module.duration(425.4) == "7 min 05 s"
    assert family_module.duration(59.96) == "1 min 00 s"


def test_a_report_from_an_older_release_is_not_read_back(tmp_path, capsys):
    run = RunFolder(tmp_path)
    run.save_report({"test_accuracy": 0.99})
    assert run.saved_report() == {"test_accuracy": 0.99}
    (run.evaluation / REPORT_FILE).write_text(json.dumps({"test_accuracy": 0.99}))  # as written before versions
    assert run.saved_report() is None
    assert "written by an older release: evaluating the run again" in capsys.readouterr().out
