"""Find and load the exported models to serve, knowing only the artifact contract.

Two sources: a folder of artifacts (`<name>/<version>/`, as `pipelines.export.artifact` writes them and TF
Serving reads them; MODELSERVICE_MODEL_DIR, the container's /models), or the BentoML model store
(the default outside a container). MODELSERVICE_MODELS picks models and pins versions in either.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bentoml
import tensorflow as tf

from pipelines.export import artifact as export
from pipelines.export.artifact import METADATA_FILE, versions

LAYOUT = f"<name>/<version>/ folders, each with saved_model.pb, variables/ and {METADATA_FILE} (the layout `make train` writes to artifacts/)"
METADATA_KEYS = ("name", "version", "task", "signatures")


class ModelLoadError(RuntimeError):
    """No model to serve, or a model that cannot be served: the message says which and why."""


@dataclass
class LoadedModel:
    name: str
    version: str
    task: str
    path: Path
    metadata: dict[str, Any]
    signatures: dict[str, Any] = field(repr=False)

    def signature(self, role: str) -> Any:
        """The concrete function that metadata.json names for an input role such as "images"."""
        return self.signatures[self.metadata["signatures"][role]]


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
            f"model folder {model_dir} does not exist: mount one (docker run -v $PWD/artifacts:{model_dir}) or bake artifacts/ into the image"
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
    metadata = read_metadata(path)
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as error:  # TensorFlow raises many kinds for a damaged SavedModel
        raise ModelLoadError(
            f"corrupt model at {path}: the SavedModel does not load ({type(error).__name__}: {_first_line(error)})"
        ) from None
    signatures = dict(loaded.signatures)
    missing = sorted(set(metadata["signatures"].values()) - set(signatures))
    if missing:
        raise ModelLoadError(
            f"corrupt model at {path}: {METADATA_FILE} names signatures {missing} that the SavedModel lacks (it has {sorted(signatures)})"
        )
    return LoadedModel(
        name=metadata["name"],
        version=str(metadata["version"]),
        task=metadata["task"],
        path=path,
        metadata=metadata,
        signatures=signatures,
    )


def read_metadata(path: Path) -> dict[str, Any]:
    try:
        metadata = export.read_metadata(path)
    except FileNotFoundError:
        raise ModelLoadError(f"corrupt model at {path}: {METADATA_FILE} is missing") from None
    except ValueError as error:  # JSON and UTF-8 decoding errors
        raise ModelLoadError(f"corrupt model at {path}: {METADATA_FILE} is not valid JSON ({error})") from None
    missing = (
        [key for key in METADATA_KEYS if key not in metadata] if isinstance(metadata, dict) else list(METADATA_KEYS)
    )
    if missing:
        raise ModelLoadError(f"corrupt model at {path}: {METADATA_FILE} lacks {', '.join(missing)}")
    return metadata


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
