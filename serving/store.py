"""Find and load the exported models to serve, knowing only the artifact contract.

Two sources: a folder of artifacts (`<name>/<version>/`, as `serving.contract` defines them and TF Serving
reads them; MODELSERVICE_MODEL_DIR, the container's /models), or the BentoML model store (the default
outside a container); `serving.model_config` and `serving.model_manager` choose which versions serve. Serving
imports nothing from the training side (`pipelines`, `models`): what it knows of an artifact is `serving.contract`.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bentoml
import tensorflow as tf

from serving.contract import (
    LAYOUT,
    ArtifactError,
    ArtifactMetadata,
    Role,
    Task,
    TextSpec,
    read_blessing,
    read_metadata,
    versions,
)
from serving.model_config import ModelSpec
from serving.warmup import WARMUP_FILE, WarmupRequest, read_warmup


class ModelLoadError(RuntimeError):
    """No model to serve, or a model that cannot be served: the message says which and why."""


@dataclass
class LoadedModel:
    name: str
    version: str  # as text, the way URLs and TF Serving's answers carry it
    task: Task
    path: Path
    metadata: ArtifactMetadata
    signatures: dict[str, Any] = field(repr=False)

    def signature(self, role: Role) -> Any:
        """The concrete function that metadata.json names for an input role such as `Role.IMAGES`."""
        return self.signatures[self.metadata.signature(role)]

    def takes(self, signature_name: str, role: Role) -> bool:
        """Whether `signature_name` is the signature metadata.json names for `role`."""
        return self.metadata.signatures.get(role) == signature_name

    @property
    def text_input(self) -> TextSpec:
        """A text model's input: its strings' longest length."""
        if not isinstance(self.metadata.input, TextSpec):
            raise TypeError(f"the {self.task} model {self.name!r} takes no text input")
        return self.metadata.input


class FolderSource:
    """A folder of artifacts: `<root>/<name>/<version>/` (MODELSERVICE_MODEL_DIR, the container's /models)."""

    def __init__(self, root: Path):
        self.root = root

    def __str__(self) -> str:
        return str(self.root)

    def check(self) -> None:
        if not self.root.is_dir():
            raise ModelLoadError(
                f"model folder {self.root} does not exist: mount one (docker run -v $PWD/artifacts:{self.root}) "
                "or bake artifacts/ into the image"
            )

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        try:
            return [entry.name for entry in sorted(self.root.iterdir()) if versions(entry)]
        except PermissionError as error:
            raise unreadable(error) from None

    def versions(self, spec: ModelSpec) -> dict[int, Path]:
        root = spec.base_path or self.root / spec.name
        try:
            return {number: root / str(number) for number in versions(root)}
        except PermissionError as error:
            raise unreadable(error) from None

    def where(self, spec: ModelSpec) -> str:
        return str(spec.base_path or self.root / spec.name)

    def missing(self, name: str) -> str:
        return f"no model named {name!r} in {self.root}: found {self.names() or 'none'}"

    def empty(self) -> str:
        return f"no model found in {self.root}: expected {LAYOUT}"


class StoreSource:
    """The BentoML model store, where `make run` and `modelservice export` register each version as <name>:<version>."""

    def __str__(self) -> str:
        return "the BentoML store"

    def check(self) -> None:
        pass

    def names(self) -> list[str]:
        return sorted({model.tag.name for model in bentoml.models.list()})

    def versions(self, spec: ModelSpec) -> dict[int, Path]:
        if spec.base_path is not None:
            return FolderSource(spec.base_path.parent).versions(spec)
        try:
            found = bentoml.models.list(spec.name)
        except bentoml.exceptions.NotFound:
            return {}
        return {int(model.tag.version): Path(model.path) for model in found if str(model.tag.version).isdigit()}

    def where(self, spec: ModelSpec) -> str:
        return str(spec.base_path) if spec.base_path else f"model {spec.name!r} in the BentoML store"

    def missing(self, name: str) -> str:
        return f"model {name!r} is not in the BentoML store: found {self.names() or 'none'}"

    def empty(self) -> str:
        return (
            "no models to serve: the BentoML model store is empty. Train one with `make run` or "
            "`python -m pipelines.classifier`, register an artifact with `modelservice export`, or serve a folder of "
            "artifacts with MODELSERVICE_MODEL_DIR."
        )


Source = FolderSource | StoreSource


def source_for(model_dir: Path | None) -> Source:
    return FolderSource(model_dir) if model_dir is not None else StoreSource()


def load(path: Path) -> LoadedModel:
    """One artifact version, checked: its metadata is complete and names signatures the SavedModel has."""
    try:
        metadata = read_metadata(path)
    except PermissionError as error:
        raise unreadable(error) from None
    except ArtifactError as error:
        raise ModelLoadError(f"corrupt model at {path}: {error}") from None
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as error:  # TensorFlow raises many kinds for a damaged SavedModel
        raise ModelLoadError(
            f"corrupt model at {path}: the SavedModel does not load ({type(error).__name__}: {_first_line(error)})"
        ) from None
    signatures = dict(loaded.signatures)
    try:
        metadata.check_signatures(set(signatures))
    except ArtifactError as error:
        raise ModelLoadError(f"corrupt model at {path}: {error}") from None
    return LoadedModel(
        name=metadata.name,
        version=str(metadata.version),
        task=metadata.task,
        path=path,
        metadata=metadata,
        signatures=signatures,
    )


NO_BLESSING = "no blessing record (exported before the validation gate, or by another tool): served as before"


def blessing(path: Path) -> tuple[bool, str]:
    """Whether the validation gate lets the version serve, and its blessing in words, for the version list."""
    try:
        record = read_blessing(path)
    except PermissionError as error:
        return False, str(unreadable(error))
    except ArtifactError as error:
        return False, f"not served: {error}"
    if record is None:
        return True, NO_BLESSING
    return record.blessed and not record.pending, record.summary()


def warmup_requests(path: Path) -> list[WarmupRequest]:
    """The version's warm-up requests, checked readable (a damaged file fails the load, as in TF Serving)."""
    try:
        return read_warmup(path)
    except PermissionError as error:
        raise unreadable(error) from None
    except (tf.errors.OpError, ValueError) as error:
        raise ModelLoadError(f"corrupt model at {path}: {WARMUP_FILE} does not read ({_first_line(error)})") from None


def unreadable(error: PermissionError) -> ModelLoadError:
    return ModelLoadError(
        f"cannot read {error.filename}: permission denied to user id {os.getuid()}, which this server runs as; "
        "make the artifacts readable by every user (chmod -R a+rX artifacts)"
    )


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "no message"
