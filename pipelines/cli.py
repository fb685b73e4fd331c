"""modelservice: one verb per job.

modelservice train classifier [--profile default] [--dataset folder:PATH] ...
modelservice train seq2seq [--profile default] [--architecture transformer] ...
modelservice train detector [--profile default] [--dataset coco:DIR] ...
modelservice train transfer [--backbone mobilenet_v2 --weights imagenet] [--transfer-strategy partial] ...
modelservice tune classifier [--tuner random|hyperband|bayesian] [--trials 10] [--max-epochs 10] ...
modelservice evaluate [--run-dir runs/classifier]
modelservice export [--run-dir runs/seq2seq] [--artifacts artifacts] [--no-validate]
modelservice validate artifacts/classifier/3 [--baseline 2] [--thresholds gate.yaml] [--min-quality 0.97]
modelservice serve [--model-dir artifacts] [--models classifier,seq2seq:2] [--host 127.0.0.1] [--port 3000]
modelservice predict artifacts/classifier digit.png [more.png ...]
modelservice predict artifacts/seq2seq "March 4, 1999" "20.01.2023" [--beam-width 3]
modelservice predict artifacts/detector scene.png [more.png ...] [--score-threshold 0.5] [--iou-threshold 0.5]
"""

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines import validation
from pipelines.family import NAMES, SUMMARIES, RunFolder, add_validation_arguments, family
from pipelines.training.flags import SEARCH_DESCRIPTION, add_search_arguments, apply_config_file, threshold
from pipelines.validation.thresholds import add_gate_arguments


def _train(args: argparse.Namespace) -> int:
    from pipelines.training.distributed import WorkerLost, stopped

    chosen = family(args.family)
    try:
        chosen.train_and_evaluate(chosen.prepared(args), args.run_dir or Path("runs") / args.name)
    except WorkerLost as error:
        return stopped(error)
    return 0


def _tune(args: argparse.Namespace) -> int:
    from pipelines.training.tuning import Budget, SearchOptions, given_flags, search

    if args.strategy == "multi-worker":
        print(
            "modelservice tune: --strategy multi-worker trains one model across machines; to spread a search over "
            "machines, run KerasTuner's chief and workers (KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP and "
            "KERASTUNER_ORACLE_PORT), each trial on one machine",
            file=sys.stderr,
        )
        return 2
    chosen = family(args.family)
    options = SearchOptions(
        tuner=args.tuner,
        budget=Budget(trials=args.trials, max_epochs=args.max_epochs, seconds=args.time_budget),
        project_dir=args.project_dir or Path("runs") / f"tune-{args.name}",
        seed=args.seed,
    )
    search(chosen, chosen.prepared(args), options, given_flags(chosen, args))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    report = family(RunFolder(args.run_dir).family_name()).evaluate_run(args.run_dir)
    print(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"plots in {RunFolder(args.run_dir).evaluation}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from pipelines.export.artifact import DiskFullError
    from pipelines.family import export_failed, publish, validation_status

    chosen = family(RunFolder(args.run_dir).family_name())
    gate = chosen.gate_options(args)
    try:
        artifact = chosen.export_run(args.run_dir, args.artifacts, gate)
    except DiskFullError as error:
        return export_failed(error, args.run_dir)
    publish(artifact, register=not args.no_register)
    return validation_status(artifact) if gate else 0


def _validate(args: argparse.Namespace) -> int:
    from pipelines.validation.gate import GateError, GateOptions, exit_status, resolve_version, validate_and_print
    from pipelines.validation.thresholds import ThresholdsError
    from serving.contract import ArtifactError, read_metadata

    try:
        candidate = resolve_version(args.artifact)
        chosen = family(read_metadata(candidate).family)
        options = GateOptions.from_args(chosen.gate_defaults(), args)
        return exit_status(validate_and_print(candidate, options))
    except (GateError, ThresholdsError, ArtifactError) as error:
        print(f"modelservice validate: {error}", file=sys.stderr)
        return 2


def _serve(args: argparse.Namespace) -> int:
    from serving import start

    return start.serve(args)


def _predict(args: argparse.Namespace) -> int:
    import tensorflow as tf

    from serving.contract import ArtifactError, Task, latest_version, read_metadata

    artifact = latest_version(args.model) or args.model
    if not tf.saved_model.contains_saved_model(str(artifact)):
        print(
            f"modelservice predict: no exported model at {artifact}: give an artifact folder with numbered versions "
            "(artifacts/classifier) or one version (artifacts/seq2seq/3)",
            file=sys.stderr,
        )
        return 2
    try:  # before the (slower) graph load: a SavedModel exported elsewhere has no metadata to say its task
        metadata = read_metadata(artifact)
    except ArtifactError as error:
        print(
            f"modelservice predict: {artifact}: {error}; predict needs the metadata that `modelservice export` "
            "writes beside the SavedModel (it says which signature answers what)",
            file=sys.stderr,
        )
        return 2
    graph = tf.saved_model.load(str(artifact))
    predict = {Task.SEQ2SEQ: _predict_texts, Task.DETECTOR: _predict_detections}.get(metadata.task, _predict_labels)
    for line in predict(graph, metadata, args):
        print(json.dumps(line, ensure_ascii=False))
    return 0


def _predict_texts(graph: Any, metadata: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    import tensorflow as tf

    from serving.answers import seq2seq_predictions  # the server's answer format, so both print the same
    from serving.contract import Role

    beam_width = tf.constant(args.beam_width or metadata.decoding.default_beam_width)
    outputs = graph.signatures[metadata.signature(Role.TEXTS)](texts=tf.constant(args.inputs), beam_width=beam_width)
    predictions = seq2seq_predictions({key: value.numpy() for key, value in outputs.items()})
    return [
        {"input": text, **{key: value for key, value in prediction.items() if key != "beams"}}
        for text, prediction in zip(args.inputs, predictions)
    ]


def _predict_labels(graph: Any, metadata: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    from serving.contract import Role

    outputs = graph.signatures[metadata.signature(Role.IMAGE_BYTES)](image_bytes=_image_files(args.inputs))
    return [
        {"file": path, "label": label.decode(), "score": round(float(score), 4)}
        for path, label, score in zip(args.inputs, outputs["labels"].numpy(), outputs["scores"].numpy())
    ]


def _predict_detections(graph: Any, metadata: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    import tensorflow as tf

    from serving.answers import detector_predictions  # the server's answer format, so both print the same
    from serving.contract import Role

    defaults = metadata.postprocessing
    thresholds = {
        name: tf.constant(getattr(defaults, name) if value is None else value, tf.float32)
        for name, value in (("score_threshold", args.score_threshold), ("iou_threshold", args.iou_threshold))
    }
    # The signature letterboxes each encoded image at its own size, so files of different sizes share one call.
    signature = graph.signatures[metadata.signature(Role.IMAGE_BYTES)]
    outputs = signature(image_bytes=_image_files(args.inputs), **thresholds)
    predictions = detector_predictions({key: value.numpy() for key, value in outputs.items()})
    return [{"file": path, **prediction} for path, prediction in zip(args.inputs, predictions)]


def _image_files(paths: list[str]) -> Any:
    import tensorflow as tf

    return tf.constant([Path(path).read_bytes() for path in paths])


def parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The command line; a family's own flags are added only when `argv` trains that family."""
    from serving import start  # light: its TensorFlow imports wait until it serves

    top = argparse.ArgumentParser(
        prog="modelservice", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    verbs = top.add_subparsers(dest="verb", required=True, metavar="VERB")

    argv = sys.argv[1:] if argv is None else argv
    _add_family_verb(
        verbs, "train", "train a model and evaluate it (checkpoints, logs, plots in runs/<name>)", _train, argv
    )
    _add_family_verb(
        verbs, "tune", "search a family's hyperparameters with KerasTuner (trials in runs/tune-<name>)", _tune, argv
    )

    for verb, handler, text in (
        ("evaluate", _evaluate, "metrics, diagnosis and PNG plots for a trained run"),
        ("export", _export, "write a trained run as the next artifact version and register it with BentoML"),
    ):
        sub = verbs.add_parser(verb, help=text, description=text)
        sub.add_argument(
            "--run-dir", type=Path, default=Path("runs/classifier"), help="the training run (default: %(default)s)"
        )
        if verb == "export":
            sub.add_argument(
                "--artifacts", type=Path, default=Path("artifacts"), help="artifact root (default: %(default)s)"
            )
            sub.add_argument("--no-register", action="store_true", help="skip the BentoML model store")
            add_validation_arguments(sub)
        sub.set_defaults(handler=handler)

    validate = verbs.add_parser(
        "validate",
        help="run the validation gate on an exported version: bless it (served) or not (exit status 3)",
        description=validation.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    validate.add_argument(
        "artifact", type=Path, help="version folder (artifacts/classifier/3) or model folder (its latest version)"
    )
    add_gate_arguments(validate)
    validate.set_defaults(handler=_validate)

    serve = verbs.add_parser(
        "serve",
        help="check and serve the exported models over HTTP (python -m serving)",
        description=start.__doc__,
        epilog=start.Settings.describe(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    start.add_arguments(serve)
    serve.set_defaults(handler=_serve)

    predict = verbs.add_parser(
        "predict", help="run an exported SavedModel on local inputs (no server, no project code in the graph)"
    )
    predict.add_argument(
        "model", type=Path, help="artifact folder: artifacts/classifier (latest version) or artifacts/seq2seq/3"
    )
    predict.add_argument(
        "inputs",
        nargs="+",
        help="image files (PNG/JPEG/GIF/BMP) for a classifier or detector, texts for a seq2seq model",
    )
    predict.add_argument("--beam-width", type=int, help="seq2seq only (default: the model's)")
    predict.add_argument(
        "--score-threshold",
        type=threshold,
        help="detector only: keep detections scoring above this, 0–1 (default: the model's)",
    )
    predict.add_argument(
        "--iou-threshold", type=threshold, help="detector only: non-max suppression overlap, 0–1 (default: the model's)"
    )
    predict.set_defaults(handler=_predict)
    return top


def _add_family_verb(
    verbs: Any, verb: str, text: str, handler: Callable[[argparse.Namespace], int], argv: list[str]
) -> None:
    """`modelservice VERB FAMILY`; a family's own flags are added only when `argv` names that verb and family,
    as importing a family loads its training code."""
    families = verbs.add_parser(verb, help=text, description=text).add_subparsers(
        dest="family", required=True, metavar="FAMILY"
    )
    chosen = argv[1] if len(argv) > 1 and argv[0] == verb else None
    for name in NAMES:
        sub = families.add_parser(name, help=SUMMARIES[name], formatter_class=argparse.RawDescriptionHelpFormatter)
        if name == chosen:
            sub.description = family(name).description if verb == "train" else SEARCH_DESCRIPTION
            family(name).add_arguments(sub)
            if verb == "tune":
                add_search_arguments(sub)
            apply_config_file(sub, argv[2:])
        sub.set_defaults(handler=handler)


def main(argv: list[str] | None = None) -> int:
    args = parser(argv).parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
