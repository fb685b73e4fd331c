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
from typing import TYPE_CHECKING

from serving import memory
from serving.process import port_taken
from serving.settings import GRPC_SERVERS, PREFIX, Settings, SettingsError

if TYPE_CHECKING:
    from serving.model_manager import ModelManager

EXIT_CANNOT_START = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-dir",
        type=Path,
        help="serve this folder of artifacts (<name>/<version>/) instead of the BentoML store [MODELSERVICE_MODEL_DIR]",
    )
    parser.add_argument(
        "--models",
        help='which models and versions, "classifier:latest=2,seq2seq:3,4" (default: every model, latest version) '
        "[MODELSERVICE_MODELS]",
    )
    parser.add_argument(
        "--model-config-file",
        type=Path,
        help="TF Serving's model config file (text protobuf, or .json/.yaml) [MODELSERVICE_MODEL_CONFIG_FILE]",
    )
    parser.add_argument(
        "--poll-seconds",
        type=float,
        help="look for new versions this often; 0: only at start [MODELSERVICE_POLL_SECONDS]",
    )
    parser.add_argument("--host", help="bind address (default: 127.0.0.1) [MODELSERVICE_HOST]")
    parser.add_argument("--port", type=int, help="port (default: 3000) [MODELSERVICE_PORT]")
    parser.add_argument(
        "--grpc-port", type=int, help="TF Serving's gRPC API (default: 8500; 0: off) [MODELSERVICE_GRPC_PORT]"
    )
    parser.add_argument(
        "--grpc-server",
        choices=GRPC_SERVERS,
        help="what answers gRPC: grpcio's server (default), or zttp: uvicorn's HTTP/2, far less CPU a call, "
        "for many small calls (an alpha HTTP/2 library) [MODELSERVICE_GRPC_SERVER]",
    )
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
    if problem := taken_port(configured):
        return cannot_start(problem)
    from serving import model_config, store  # imports TensorFlow: after the arguments, so that --help stays instant
    from serving.model_manager import ModelManager

    try:
        specs = model_config.configured_specs(configured.models, configured.model_config_file)
        source = store.source_for(configured.model_dir)
        if configured.require_models:
            source.check()
        manager = ModelManager(specs, source, max_load_retries=0, serve_unblessed=configured.serve_unblessed)
        manager.poll()
    except (model_config.ConfigError, store.ModelLoadError) as error:
        return cannot_start(error)
    if configured.require_models and (problem := manager.start_problem()):
        return cannot_start(problem)
    report(manager, configured)
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
    environment = {**os.environ, **configured.env()}
    os.execvpe(command[0], command, environment | memory.allocator_env(configured.allocator, environment))


def taken_port(configured: Settings) -> str | None:
    """Which of the server's ports another process listens on. BentoML would fail on a taken HTTP port with a
    traceback, and restart a worker whose gRPC port is taken over and over."""
    ports = [("port", "MODELSERVICE_PORT", configured.port)]
    if configured.grpc_port:
        ports.append(("gRPC port", "MODELSERVICE_GRPC_PORT", configured.grpc_port))
    for what, variable, port in ports:
        if holder := port_taken(configured.host, port):
            return f"the {what} {configured.host}:{port} is in use ({holder}): set {variable} to a free port"
    return None


def report(manager: "ModelManager", configured: Settings) -> None:
    """What the server will serve, as this check found it."""
    available = manager.served.runtimes
    print(
        f"modelservice: serving {len(available)} model(s) from {manager.source} on "
        f"http://{configured.host}:{configured.port}",
        flush=True,
    )
    rows = [
        (f"{name}:{version}", runtime) for name, versions in available.items() for version, runtime in versions.items()
    ]
    width = max((len(tag) for tag, _ in rows), default=0)
    for tag, runtime in rows:
        print(f"  {tag:<{width}}  {runtime.model.task:<10}  {runtime.model.path}", flush=True)
    for failure in manager.failures():
        print(f"  not served: {failure}", flush=True)
    from serving.model_manager import State

    for name in manager.model_names():
        for status in manager.statuses(name):
            if status.state == State.START:  # held back by the validation gate
                print(f"  not served: {name}:{status.version}: {status.blessing}", flush=True)
    if configured.poll_seconds:
        print(f"  new and removed versions are picked up every {configured.poll_seconds:g} s", flush=True)


def cannot_start(error: Exception | str) -> int:
    print(f"modelservice: cannot start: {error}", file=sys.stderr, flush=True)
    return EXIT_CANNOT_START
