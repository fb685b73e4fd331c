"""Which models and versions to serve: each model's version policy and labels, as TF Serving defines them.

Two ways to say it, read into the same `ModelSpec`s:

- MODELSERVICE_MODELS, one entry per model, separated by commas:
      classifier                 the latest version (TF Serving's default policy, `latest 1`)
      classifier:latest=2        the two highest versions
      classifier:all             every version
      seq2seq:3,4                exactly versions 3 and 4 (`specific`); a bare number continues the entry before it
- a model config file (MODELSERVICE_MODEL_CONFIG_FILE): TF Serving's own `--model_config_file` text protobuf,
  so a TF Serving deployment's file works unchanged, or the same message as JSON or YAML (`.json`, `.yaml`):

      model_config_list {
        config {
          name: "classifier"
          base_path: "/models/classifier"        # optional here: MODELSERVICE_MODEL_DIR/<name> or the store
          model_platform: "tensorflow"
          model_version_policy { latest { num_versions: 2 } }
          version_labels { key: "stable" value: 3 }
          version_labels { key: "canary" value: 4 }
        }
      }

The file's schema is TF Serving's `ModelServerConfig` (tensorflow-serving-api), parsed by protobuf itself.
"""

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from google.protobuf import json_format, text_format
from tensorflow_serving.config import model_server_config_pb2

LABEL_PATTERN = re.compile(r"[a-zA-Z0-9_]+")  # TF Serving's rule for version labels
MODEL_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
PLATFORMS = ("", "tensorflow")  # our artifacts are TensorFlow SavedModels


class ConfigError(ValueError):
    """A model configuration the server cannot use; the message says where and what is expected."""


@dataclass(frozen=True)
class VersionPolicy:
    """TF Serving's `model_version_policy`: which of a model's versions are served at the same time."""

    kind: Literal["latest", "all", "specific"] = "latest"
    count: int = 1  # for "latest": how many of the highest versions
    versions: tuple[int, ...] = ()  # for "specific"

    def select(self, available: Iterable[int]) -> list[int]:
        """The versions to serve out of `available`, oldest first."""
        found = sorted(set(available))
        if self.kind == "all":
            return found
        if self.kind == "specific":
            return [version for version in found if version in self.versions]
        return found[-self.count :]

    def __str__(self) -> str:
        if self.kind == "specific":
            return "specific " + ", ".join(map(str, self.versions))
        return "all" if self.kind == "all" else f"latest {self.count}"


@dataclass(frozen=True)
class ModelSpec:
    """One served model: its name, where its versions are, which are served, and its version labels."""

    name: str
    policy: VersionPolicy = VersionPolicy()
    base_path: Path | None = None  # None: the server's source (MODELSERVICE_MODEL_DIR/<name>, or the BentoML store)
    labels: Mapping[str, int] = field(default_factory=dict)


def parse_models_setting(text: str) -> list[ModelSpec]:
    """MODELSERVICE_MODELS ("classifier:latest=2,seq2seq:3,4") as specs; [] when it names none."""
    specs: list[ModelSpec] = []
    for part in (part.strip() for part in text.split(",")):
        if not part:
            continue
        if part.isdigit():
            if not specs or specs[-1].policy.kind != "specific":
                raise ConfigError(f"MODELSERVICE_MODELS: version {part} follows no model:version entry")
            previous = specs.pop()
            policy = VersionPolicy("specific", versions=(*previous.policy.versions, int(part)))
            specs.append(ModelSpec(previous.name, policy))
            continue
        name, _, choice = part.partition(":")
        specs.append(ModelSpec(_model_name(name.strip(), "MODELSERVICE_MODELS"), _policy_choice(choice.strip())))
    return _unique(specs, "MODELSERVICE_MODELS")


def _policy_choice(choice: str) -> VersionPolicy:
    if choice in ("", "latest"):
        return VersionPolicy()
    if choice == "all":
        return VersionPolicy("all")
    if choice.isdigit():
        return VersionPolicy("specific", versions=(int(choice),))
    keyword, _, count = choice.partition("=")
    if keyword == "latest" and count.isdigit() and int(count) >= 1:
        return VersionPolicy("latest", count=int(count))
    raise ConfigError(
        f"MODELSERVICE_MODELS: unknown version choice {choice!r}: expected a version number, "
        "'latest', 'latest=N' (N ≥ 1) or 'all'"
    )


def read_config_file(path: Path) -> list[ModelSpec]:
    """A model config file: TF Serving's text protobuf, or the same ModelServerConfig as JSON or YAML."""
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"model config file {path}: cannot be read ({error.strerror or error})") from None
    where = f"model config file {path}"
    message = model_server_config_pb2.ModelServerConfig()
    try:
        if path.suffix == ".json":
            json_format.ParseDict(json.loads(text), message)
        elif path.suffix in (".yaml", ".yml"):
            json_format.ParseDict(yaml.safe_load(text) or {}, message)
        else:
            text_format.Parse(text, message)
    except (text_format.ParseError, json_format.ParseError, ValueError, yaml.YAMLError) as error:
        raise ConfigError(f"{where}: {_one_line(error)}; expected TF Serving's ModelServerConfig") from None
    return specs_from_message(message, where, path.parent)


def parse_config_document(document: object, where: str, base_dir: Path) -> list[ModelSpec]:
    """A ModelServerConfig as decoded JSON (an admin reload's body); relative base paths start at `base_dir`."""
    message = model_server_config_pb2.ModelServerConfig()
    try:
        json_format.ParseDict(document, message)
    except (json_format.ParseError, AttributeError, TypeError) as error:
        raise ConfigError(f"{where}: {_one_line(error)}; expected TF Serving's ModelServerConfig as JSON") from None
    return specs_from_message(message, where, base_dir)


def specs_from_message(
    message: model_server_config_pb2.ModelServerConfig, where: str, base_dir: Path
) -> list[ModelSpec]:
    if message.WhichOneof("config") != "model_config_list":
        raise ConfigError(f"{where}: no model_config_list (custom_model_config is not supported)")
    specs = [_spec_from_proto(config, where, base_dir) for config in message.model_config_list.config]
    if not specs:
        raise ConfigError(f"{where}: model_config_list names no model")
    return _unique(specs, where)


def _spec_from_proto(config, where: str, base_dir: Path) -> ModelSpec:
    name = _model_name(config.name, where)
    where = f"{where}, model {name!r}"
    if config.model_platform not in PLATFORMS:
        raise ConfigError(f"{where}: model_platform {config.model_platform!r} is not served: expected 'tensorflow'")
    base_path = Path(config.base_path) if config.base_path else None
    if base_path is not None and not base_path.is_absolute():
        base_path = base_dir / base_path  # relative to the file, so a config and its models travel together
    for label in config.version_labels:
        check_label(label, where)
    return ModelSpec(
        name, _policy_from_proto(config.model_version_policy, where), base_path, dict(config.version_labels)
    )


def _policy_from_proto(policy, where: str) -> VersionPolicy:
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return VersionPolicy("all")
    if choice == "specific":
        if not policy.specific.versions:
            raise ConfigError(f"{where}: model_version_policy specific lists no version")
        return VersionPolicy("specific", versions=tuple(sorted(set(policy.specific.versions))))
    count = policy.latest.num_versions if choice == "latest" else 1
    if count < 1:
        raise ConfigError(f"{where}: model_version_policy latest num_versions is {count}: expected 1 or more")
    return VersionPolicy("latest", count=count)


def check_label(label: str, where: str) -> str:
    if not LABEL_PATTERN.fullmatch(label):
        raise ConfigError(f"{where}: label {label!r} is not a valid label: expected letters, digits and _")
    return label


def _model_name(name: str, where: str) -> str:
    if not MODEL_NAME_PATTERN.fullmatch(name):
        raise ConfigError(f"{where}: model name {name!r} is not valid: expected letters, digits, '_', '.' or '-'")
    return name


def _unique(specs: list[ModelSpec], where: str) -> list[ModelSpec]:
    names = [spec.name for spec in specs]
    if repeated := sorted({name for name in names if names.count(name) > 1}):
        raise ConfigError(f"{where}: model {repeated[0]!r} is configured twice")
    return specs


def _one_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def configured_specs(models: str, config_file: Path | None) -> list[ModelSpec]:
    """The specs MODELSERVICE_MODELS or MODELSERVICE_MODEL_CONFIG_FILE give; [] (every model) when neither."""
    if models.strip() and config_file is not None:
        raise ConfigError(
            "both MODELSERVICE_MODELS and MODELSERVICE_MODEL_CONFIG_FILE are set: set one (the file can say everything)"
        )
    return read_config_file(config_file) if config_file is not None else parse_models_setting(models)
