"""Start the model server: load every model once to check it, say what is served, then hand over to BentoML.

    python -m serving                                # everything from MODELSERVICE_* variables
    python -m serving --model-dir artifacts --models classifier,seq2seq:2 --port 3000
    modelservice serve ...                           # the same

Options override the environment (every MODELSERVICE_* variable is listed below). The
container image runs this. It exits with status 2 and says why on stderr when it cannot start: no model
found, a corrupt model, an invalid setting. BentoML itself would only restart a worker that fails to load,
over and over, so the models are checked here first.
"""

import argparse
import os
import sys
from dataclasses import fields
from pathlib import Path

from serving.settings import PREFIX, Settings, SettingsError

EXIT_CANNOT_START = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-dir",
        type=Path,
        help="serve this folder of artifacts (<name>/<version>/) instead of the BentoML store [MODELSERVICE_MODEL_DIR]",
    )
    parser.add_argument(
        "--models",
        help='which models, "classifier,seq2seq:2" (default: every model, latest version) [MODELSERVICE_MODELS]',
    )
    parser.add_argument("--host", help="bind address (default: 127.0.0.1) [MODELSERVICE_HOST]")
    parser.add_argument("--port", type=int, help="port (default: 3000) [MODELSERVICE_PORT]")
    parser.add_argument(
        "--workers", type=int, help="server processes, each holding every model (default: 1) [MODELSERVICE_WORKERS]"
    )


def settings_from(args: argparse.Namespace) -> Settings:
    """The environment's settings with the command line's options on top, checked alike."""
    given = {
        f"{PREFIX}{spec.name.upper()}": str(getattr(args, spec.name))
        for spec in fields(Settings)
        if getattr(args, spec.name, None) is not None
    }
    return Settings.from_env({**os.environ, **given})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving",
        description=__doc__,
        epilog=Settings.describe(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return serve(parser.parse_args(argv))


def serve(args: argparse.Namespace) -> int:
    """Check the models the settings name, then replace this process with the BentoML server.

    Returns only on failure, with the exit status.
    """
    try:
        configured = settings_from(args)
    except SettingsError as error:
        return cannot_start(error)
    from serving import store  # imports TensorFlow: after the arguments, so that --help stays instant

    try:
        models = store.load_all(configured.model_dir, configured.models)
    except store.ModelLoadError as error:
        return cannot_start(error)
    source = configured.model_dir or "the BentoML store"
    print(
        f"modelservice: serving {len(models)} model(s) from {source} on http://{configured.host}:{configured.port}",
        flush=True,
    )
    tags = {name: f"{model.name}:{model.version}" for name, model in models.items()}
    width = max(map(len, tags.values()))
    for name, model in models.items():
        print(f"  {tags[name]:<{width}}  {model.task:<10}  {model.path}", flush=True)
    command = [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        "serving.service:ModelService",
        "--host",
        configured.host,
        "--port",
        str(configured.port),
    ]
    os.execvpe(command[0], command, {**os.environ, **configured.env()})


def cannot_start(error: Exception) -> int:
    print(f"modelservice: cannot start: {error}", file=sys.stderr, flush=True)
    return EXIT_CANNOT_START
