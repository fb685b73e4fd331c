"""The server's configuration, read from MODELSERVICE_* environment variables (the container's interface).

Every value is checked when the server starts, so a typo stops it with a message instead of a default
silently taking its place.
"""

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from serving.memory import ALLOCATORS

PREFIX = "MODELSERVICE_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
GRPC_SERVERS = ("grpcio", "zttp")


class SettingsError(ValueError):
    """An environment variable with a value the server cannot use."""


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def duration(unit: str) -> Callable[[str], float]:
    """A parser of a finite duration in `unit`, 0 or more."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"must be a number of {unit}") from None
        if not value >= 0 or value == float("inf"):
            raise ValueError(f"must be a number of {unit}, 0 or more")
        return value

    return parse


seconds = duration("seconds")
milliseconds = duration("milliseconds")


def port_number(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise ValueError("must be from 1 to 65535")
    return value


def port_or_off(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("must be from 1 to 65535, or 0 for off")
    return value


def flag(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be 1/true/yes/on or 0/false/no/off")


def one_of(choices: tuple[str, ...], case: Callable[[str], str] = str.lower) -> Callable[[str], str]:
    """A parser of one of `choices`, in any case: `case` writes a value as the choices are written."""

    def parse(text: str) -> str:
        if case(text) not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return case(text)

    return parse


def setting(default: Any, parse: Callable[[str], Any], meaning: str, *, secret: bool = False) -> Any:
    return field(default=default, repr=not secret, metadata={"parse": parse, "meaning": meaning})


@dataclass(frozen=True)
class Settings:
    """One field per variable: MODELSERVICE_<FIELD NAME IN CAPITALS>."""

    model_dir: Path | None = setting(
        None, Path, "folder of artifacts (<name>/<version>/) to serve; unset: the BentoML model store"
    )
    models: str = setting(
        "", str, 'which models and versions, "classifier:latest=2,seq2seq:3,4"; unset: every model, latest version'
    )
    model_config_file: Path | None = setting(
        None, Path, "TF Serving's model config file (text protobuf, or .json/.yaml): models, policies, labels"
    )
    require_models: bool = setting(
        True, flag, "refuse to start without a version to serve, or with one that fails; 0: start and wait for them"
    )
    poll_seconds: float = setting(2.0, seconds, "how often to look for new and removed versions; 0: only at start")
    max_load_retries: int = setting(5, non_negative_int, "more tries for a version that fails to load")
    serve_unblessed: bool = setting(
        False, flag, "serve versions the validation gate did not bless (or has not run on) like blessed ones"
    )
    host: str = setting("127.0.0.1", str, "bind address")
    port: int = setting(3000, port_number, "HTTP port")
    grpc_port: int = setting(8500, port_or_off, "TF Serving's gRPC API (PredictionService, ModelService); 0: off")
    grpc_server: str = setting(
        "grpcio",
        one_of(GRPC_SERVERS),
        "what answers gRPC: grpcio's server, or zttp (uvicorn's HTTP/2, an alpha library; far less CPU a call)",
    )
    grpc_max_message_mb: int = setting(
        64, positive, "largest gRPC message in or out (MiB; gRPC's own default is 4); larger is RESOURCE_EXHAUSTED"
    )
    workers: int = setting(1, positive, "server processes; each loads every model and batches only its own requests")
    batching: bool = setting(True, flag, "share model calls between concurrent requests (0: one call per request)")
    max_batch: int = setting(256, positive, "most items in one shared model call")
    max_request_bytes: int = setting(8 * 2**20, positive, "largest request body; a larger one is answered 413")
    max_instances: int = setting(64, positive, "most images or texts in one request; more are answered 413")
    max_decoded_image_mb: int = setting(
        64, positive, "largest image once decoded (width × height × channels bytes, MiB); larger is answered 413"
    )
    max_decoded_request_mb: int = setting(
        256, positive, "most decoded image bytes in one request (MiB, read from headers first); more is answered 413"
    )
    timeout: int = setting(60, positive, "seconds before a request is answered 504")
    max_concurrency: int = setting(512, positive, "most inference requests in flight per route; more are answered 503")
    min_concurrency: int = setting(
        64, positive, "inference requests in flight per route that are never refused, whatever their latency"
    )
    latency_target_ms: float = setting(
        30.0, milliseconds, "past capacity, refuse (503) what would push a route's p99 latency over this; 0: off"
    )
    drain_seconds: float = setting(
        5.0, seconds, "on SIGTERM, keep answering (Connection: close; /readyz 503) until idle, at most this long"
    )
    admin_token: str = setting(
        "",
        str,
        "turns the admin API (/admin: reload, labels) on; requests need Authorization: Bearer <token>",
        secret=True,
    )
    allocator: str = setting(
        "jemalloc",
        one_of(ALLOCATORS),
        "jemalloc (when installed: memory returns after spikes) or system (the C library's)",
    )
    log_level: str = setting("INFO", one_of(LOG_LEVELS, str.upper), " | ".join(LOG_LEVELS))
    access_log: bool = setting(False, flag, "one log line per request (costs more than a model call under load)")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        environ = os.environ if environ is None else environ
        values = {}
        for spec in fields(cls):
            name = PREFIX + spec.name.upper()
            if environ.get(name, "").strip():
                values[spec.name] = _parse(name, environ[name].strip(), spec.metadata["parse"])
        return cls(**values)

    @classmethod
    def describe(cls) -> str:
        """Every variable with its default and meaning, for --help."""
        width = max(len(PREFIX + spec.name) for spec in fields(cls))
        rows = [
            f"  {PREFIX + spec.name.upper():<{width}} {_format(spec.default) or '(unset)':<10} "
            + spec.metadata["meaning"]
            for spec in fields(cls)
        ]
        return "environment (default, meaning):\n" + "\n".join(rows)

    def env(self) -> dict[str, str]:
        """These settings as environment variables, for a server process started from them."""
        return {PREFIX + spec.name.upper(): _format(getattr(self, spec.name)) for spec in fields(self)}


@functools.cache
def current() -> Settings:
    """This process's settings (the environment is read once)."""
    return Settings.from_env()


def _parse(name: str, text: str, parse: Callable[[str], Any]) -> Any:
    try:
        return parse(text)
    except ValueError as error:
        reason = "must be a whole number" if "invalid literal" in str(error) else str(error)
        raise SettingsError(f"{name}={text!r}: {reason}") from None


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)
