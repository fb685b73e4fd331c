"""Load exported models from the BentoML model store, knowing only the artifact contract."""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bentoml
import tensorflow as tf

MODELS_ENV = "MODELSERVICE_MODELS"


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


def load(tag: str) -> LoadedModel:
    stored = bentoml.models.get(tag)
    path = Path(stored.path)
    metadata = json.loads((path / "metadata.json").read_text())
    loaded = tf.saved_model.load(str(path))
    return LoadedModel(
        name=metadata["name"],
        version=str(metadata["version"]),
        task=metadata["task"],
        path=path,
        metadata=metadata,
        signatures=dict(loaded.signatures),
    )


def requested_tags(spec: str | None = None) -> list[str]:
    """Tags from `spec` ("classifier,seq2seq:3"), else from $MODELSERVICE_MODELS, else every model's latest version."""
    spec = spec if spec is not None else os.environ.get(MODELS_ENV, "")
    names = [part.strip() for part in spec.split(",") if part.strip()]
    if not names:
        names = sorted({model.tag.name for model in bentoml.models.list()})
    return [name if ":" in name else f"{name}:latest" for name in names]


def load_all(spec: str | None = None) -> dict[str, LoadedModel]:
    models = {}
    for tag in requested_tags(spec):
        model = load(tag)
        models[model.name] = model
    if not models:
        raise RuntimeError(
            "no models to serve: the BentoML model store is empty. Train one with `make run` or "
            "`python -m pipelines.classifier`, or register an artifact with `modelservice export`."
        )
    return models
