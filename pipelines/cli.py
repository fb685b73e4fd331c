"""modelservice: one verb per job.

    modelservice train classifier [--profile default] [--dataset folder:PATH] ...
    modelservice evaluate [--run-dir runs/classifier]
    modelservice export [--run-dir runs/classifier] [--artifacts artifacts]
    modelservice serve [--host 127.0.0.1] [--port 3000] [--models classifier:3]
    modelservice predict artifacts/classifier digit.png [more.png ...]
"""

import argparse
import json
import os
import sys
from pathlib import Path

FAMILIES = ("classifier",)


def _train(args: argparse.Namespace) -> int:
    from pipelines import classifier
    from pipelines.training import split_cpu

    config = classifier.config_from_args(args)
    split_cpu(config.training.cpu_devices)
    classifier.train_and_evaluate(config, args.run_dir or Path("runs") / config.name)
    return 0


def _load_run(run_dir: Path):
    import keras

    from pipelines import classifier

    config = classifier.config_from_dict(json.loads((run_dir / "run.json").read_text())["config"])
    return config, classifier.load_data(config), keras.saving.load_model(run_dir / "model.keras")


def _evaluate(args: argparse.Namespace) -> int:
    from pipelines import classifier

    config, dataset, model = _load_run(args.run_dir)
    report = classifier.evaluate(model, dataset, args.run_dir, human_error=config.human_error)
    print(json.dumps({key: report[key] for key in ("test_accuracy", "dev_accuracy", "train_accuracy", "diagnosis")}, indent=2))
    print(f"plots in {args.run_dir / 'evaluation'}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from pipelines import classifier, export

    config, dataset, model = _load_run(args.run_dir)
    report_path = args.run_dir / "evaluation" / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else classifier.evaluate(model, dataset, args.run_dir)
    artifact = classifier.export_model(model, dataset, report, config, args.artifacts)
    print(f"exported {artifact}")
    if not args.no_register:
        print(f"registered as {export.register_in_bentoml(artifact)}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    env = {**os.environ, **({"MODELSERVICE_MODELS": args.models} if args.models else {})}
    command = [sys.executable, "-m", "bentoml", "serve", "serving.service:ModelService", "--host", args.host, "--port", str(args.port)]
    os.execvpe(command[0], command, env)


def _predict(args: argparse.Namespace) -> int:
    import tensorflow as tf

    from pipelines.export import latest_version

    artifact = latest_version(args.model) or args.model
    graph = tf.saved_model.load(str(artifact))
    images = tf.constant([path.read_bytes() for path in args.images])
    outputs = graph.signatures["classify_image_bytes"](image_bytes=images)
    for path, label, score in zip(args.images, outputs["labels"].numpy(), outputs["scores"].numpy()):
        print(json.dumps({"file": str(path), "label": label.decode(), "score": round(float(score), 4)}))
    return 0


def parser() -> argparse.ArgumentParser:
    from pipelines import classifier

    top = argparse.ArgumentParser(prog="modelservice", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = top.add_subparsers(dest="verb", required=True, metavar="VERB")

    train = verbs.add_parser("train", help="train a model and evaluate it (checkpoints, logs, plots in runs/<name>)")
    train.add_argument("family", choices=FAMILIES, help="model family")
    classifier.add_arguments(train)
    train.set_defaults(handler=_train)

    for verb, handler, text in (
        ("evaluate", _evaluate, "metrics, bias/variance diagnosis and PNG plots for a trained run"),
        ("export", _export, "write a trained run as the next artifact version and register it with BentoML"),
    ):
        sub = verbs.add_parser(verb, help=text, description=text)
        sub.add_argument("--run-dir", type=Path, default=Path("runs/classifier"), help="the training run (default: %(default)s)")
        if verb == "export":
            sub.add_argument("--artifacts", type=Path, default=Path("artifacts"), help="artifact root (default: %(default)s)")
            sub.add_argument("--no-register", action="store_true", help="skip the BentoML model store")
        sub.set_defaults(handler=handler)

    serve = verbs.add_parser("serve", help="serve the models in the BentoML store over HTTP")
    serve.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"), help="bind address (default: %(default)s)")
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", "3000")), help="port (default: %(default)s)")
    serve.add_argument("--models", help="comma-separated name[:version] list (default: every model, latest version)")
    serve.set_defaults(handler=_serve)

    predict = verbs.add_parser("predict", help="classify image files with an exported SavedModel (no server, no project code in the graph)")
    predict.add_argument("model", type=Path, help="artifact folder: artifacts/classifier (latest version) or artifacts/classifier/3")
    predict.add_argument("images", type=Path, nargs="+", help="PNG/JPEG files")
    predict.set_defaults(handler=_predict)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
