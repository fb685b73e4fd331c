"""Find and load the exported models to serve, knowing only the artifact contract.

Two sources: a folder of artifacts (`<name>/<version>/`, as `serving.contract` defines them and TF Serving
reads them; MODELSERVICE_MODEL_DIR, the container's /models), or the BentoML model store (the default
outside a container). MODELSERVICE_MODELS picks models and pins versions in either. Serving imports nothing
from the training side (`pipelines`, `models`): what it knows of an artifact is `serving.contract`.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bentoml
import tensorflow as tf

from serving.contract import LAYOUT, ArtifactError, ArtifactMetadata, Role, Task, TextSpec, read_metadata, versions


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


def requested(spec: str) -> list[tuple[str, str | None]]:
    """(name, version or None for the latest) for each entry of "classifier,seq2seq:3"."""
    entries = []
    for part in (part.strip() for part in spec.split(",")):
        if part:
            name, _, version = part.partition(":")
            entries.append((name, None if version in ("", "latest") else version))
    return entries


def folder_artifacts(model_dir: Path, spec: str = "") -> list[Path]:
    """The version folders to serve from an artifact root."""
    if not model_dir.is_dir():
        raise ModelLoadError(
            f"model folder {model_dir} does not exist: mount one (docker run -v $PWD/artifacts:{model_dir}) "
            "or bake artifacts/ into the image"
        )
    listed = {entry.name: [str(number) for number in versions(entry)] for entry in sorted(model_dir.iterdir())}
    found = {name: numbers for name, numbers in listed.items() if numbers}  # model name -> its complete versions
    entries = requested(spec) or [(name, None) for name in found]
    if not entries:
        raise ModelLoadError(f"no model found in {model_dir}: expected {LAYOUT}")
    paths = []
    for name, version in entries:
        if name not in found:
            raise ModelLoadError(f"no model named {name!r} in {model_dir}: found {list(found) or 'none'}")
        if version is not None and version not in found[name]:
            raise ModelLoadError(
                f"{model_dir / name} has no version {version}: found versions {', '.join(found[name])}"
            )
        paths.append(model_dir / name / (version or found[name][-1]))
    return paths


def store_artifacts(spec: str = "") -> list[Path]:
    """The folders of the BentoML store's models to serve (every model's latest version by default)."""
    tags = [f"{name}:{version or 'latest'}" for name, version in requested(spec)]
    tags = tags or [f"{name}:latest" for name in sorted({model.tag.name for model in bentoml.models.list()})]
    if not tags:
        raise ModelLoadError(
            "no models to serve: the BentoML model store is empty. Train one with `make run` or "
            "`python -m pipelines.classifier`, register an artifact with `modelservice export`, or serve a folder of "
            "artifacts with MODELSERVICE_MODEL_DIR."
        )
    paths = []
    for tag in tags:
        try:
            paths.append(Path(bentoml.models.get(tag).path))
        except bentoml.exceptions.NotFound as error:
            raise ModelLoadError(f"model {tag} is not in the BentoML store: {error}") from None
    return paths


def load(path: Path) -> LoadedModel:
    """One artifact version, checked: its metadata is complete and names signatures the SavedModel has."""
    try:
        metadata = read_metadata(path)
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


def load_all(model_dir: Path | None, spec: str = "") -> dict[str, LoadedModel]:
    """Every model to serve, by name: from `model_dir` when given, else from the BentoML store."""
    try:
        paths = folder_artifacts(model_dir, spec) if model_dir is not None else store_artifacts(spec)
        models = [load(path) for path in paths]
    except PermissionError as error:
        raise ModelLoadError(
            f"cannot read {error.filename}: permission denied to user id {os.getuid()}, which this server runs as; "
            "make the artifacts readable by every user (chmod -R a+rX artifacts)"
        ) from None
    return {model.name: model for model in models}


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "no message"
