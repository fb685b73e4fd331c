"""Write a trained model as a versioned, self-contained artifact: `<root>/<name>/<version>/`.

The folder is the contract between training and serving: a TensorFlow SavedModel (its signatures hold
all pre- and post-processing) plus `metadata.json`. Image classifiers also carry their Keras model
(`model.keras`), so a later transfer-learning run can take its convolutional part as a backbone;
serving never reads it. Versions are increasing integers, the layout TF
Serving expects, and a version appears only once complete: it is written to a hidden staging folder
and renamed into place, so a crash never leaves a half-written version behind.
"""

import datetime as dt
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import tensorflow as tf

METADATA_FILE = "metadata.json"
KERAS_MODEL_FILE = "model.keras"


def versions(model_root: Path) -> list[int]:
    """The complete versions under `model_root`, oldest first (staging folders are hidden)."""
    if not model_root.is_dir():
        return []
    return sorted(int(entry.name) for entry in model_root.iterdir() if entry.name.isdigit())


def latest_version(model_root: Path) -> Path | None:
    found = versions(model_root)
    return model_root / str(found[-1]) if found else None


def read_metadata(artifact_dir: Path) -> dict[str, Any]:
    return json.loads((Path(artifact_dir) / METADATA_FILE).read_text())


def export_artifact(
    module: tf.Module,
    *,
    signatures: dict[str, Any],
    root: Path,
    name: str,
    metadata: dict[str, Any],
    keras_model: Any = None,
) -> Path:
    """Save `module` with `signatures` and `metadata` (and `keras_model` as model.keras, when given) as the
    next version of `name`; return its folder."""
    model_root = Path(root) / name
    model_root.mkdir(parents=True, exist_ok=True)
    # Staging inside model_root keeps the final rename on one filesystem, which is what makes it atomic.
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=model_root))
    # mkdtemp makes the folder private (0700); a published version must be readable by the server's own
    # user (the container's is not root), like the files TensorFlow writes inside it.
    staging.chmod(0o755)
    try:
        tf.saved_model.save(module, str(staging), signatures=signatures)
        if keras_model is not None:
            keras_model.save(staging / KERAS_MODEL_FILE)
        return _publish(staging, model_root, name, metadata)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, model_root: Path, name: str, metadata: dict[str, Any]) -> Path:
    while True:
        version = (versions(model_root) or [0])[-1] + 1
        full_metadata = {
            **metadata,
            "name": name,
            "version": version,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "framework": {"tensorflow": tf.__version__},
        }
        (staging / METADATA_FILE).write_text(json.dumps(full_metadata, indent=2, sort_keys=True))
        target = model_root / str(version)
        try:
            os.rename(staging, target)
        except OSError:
            if target.exists():  # another export took this version number first: take the next one
                continue
            raise
        return target


def register_in_bentoml(artifact_dir: Path) -> str:
    """Copy an exported version into the BentoML model store as `<name>:<version>`; return the tag."""
    import bentoml

    metadata = read_metadata(artifact_dir)
    tag = f"{metadata['name']}:{metadata['version']}"
    try:
        bentoml.models.get(tag)
        return tag
    except bentoml.exceptions.NotFound:
        pass
    labels = {"task": metadata["task"], "version": str(metadata["version"])}
    with bentoml.models.create(tag, labels=labels, metadata=_flat_metadata(metadata)) as model:
        shutil.copytree(artifact_dir, model.path, dirs_exist_ok=True)
    return tag


def _flat_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    # BentoML keeps model metadata as YAML scalars; the full document travels inside the model folder.
    return {key: metadata[key] for key in ("task", "name", "version", "created_at") if key in metadata}
