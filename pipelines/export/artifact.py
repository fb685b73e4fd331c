"""Write a trained model as the next version of its artifact, `<root>/<name>/<version>/`, atomically.

The folder's contents are defined in `serving.contract`: a SavedModel whose signatures hold all pre- and
post-processing, and `metadata.json`. Image classifiers also carry their Keras model (`model.keras`), so a
later transfer-learning run can take its convolutional part as a backbone; serving never reads it. A
version appears only once complete: it is written to a hidden staging folder and renamed into place, so a
crash never leaves a half-written version behind. A process killed outright (SIGKILL, the OOM killer) cannot
remove its staging folder; the folder's name holds the host and process id, and the next export on that host
removes the folders whose process is gone. A full disk is reported as such (`DiskFullError`), with the space
left, and leaves nothing behind either.
"""

import dataclasses
import datetime as dt
import errno
import os
import shutil
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tensorflow as tf

from pipelines.export.warmup import Example, warmup_requests
from serving.contract import (
    KERAS_MODEL_FILE,
    ArtifactMetadata,
    Blessing,
    read_metadata,
    versions,
    write_blessing,
    write_metadata,
)
from serving.warmup import write_warmup

STAGING_PREFIX = ".staging-"
OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
    """The disk (or quota) under the artifacts folder filled up during an export; nothing was published."""


def export_artifact(
    module: tf.Module,
    *,
    root: Path,
    metadata: ArtifactMetadata,
    keras_model: Any = None,
    warmup_examples: Sequence[Example] = (),
    blessing: Blessing | None = None,
) -> Path:
    """Save `module` with its `signatures()` and `metadata` (and `keras_model` as model.keras, when given) as the
    next version of `metadata.name`, with warm-up requests built from `warmup_examples` and `blessing` as its
    first gate record (a pending one keeps servers off it until the gate has run); return its folder."""
    model_root = Path(root) / metadata.name
    model_root.mkdir(parents=True, exist_ok=True)
    remove_abandoned_staging(model_root)
    # Staging inside model_root keeps the final rename on one filesystem, which is what makes it atomic.
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{socket.gethostname()}-{os.getpid()}-", dir=model_root))
    # mkdtemp makes the folder private (0700); a published version must be readable by the server's own
    # user (the container's is not root), like the files TensorFlow writes inside it.
    staging.chmod(0o755)
    try:
        tf.saved_model.save(module, str(staging), signatures=module.signatures())
        if keras_model is not None:
            keras_model.save(staging / KERAS_MODEL_FILE)
        if warmup_examples:
            signatures = {name: _concrete(function) for name, function in module.signatures().items()}
            requests = warmup_requests(signatures, warmup_examples, metadata.option_defaults())
            write_warmup(staging, metadata.name, requests)
        if blessing is not None:
            write_blessing(staging, blessing)
        return _publish(staging, model_root, metadata)
    except (OSError, tf.errors.ResourceExhaustedError) as error:
        if not _out_of_space(error):
            raise
        shutil.rmtree(staging, ignore_errors=True)
        free = shutil.disk_usage(model_root).free
        raise DiskFullError(
            errno.ENOSPC,
            f"no space left on the disk of {model_root} while exporting {metadata.name} ({_size(free)} free "
            "after clean-up); nothing was published and the partial files were removed",
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _size(count: int) -> str:
    return f"{count / 2**20:.1f} MiB" if count >= 2**20 else f"{count // 1024} KiB"


def _out_of_space(error: Exception) -> bool:
    """Whether `error` is a full disk or quota: Python's own, or TensorFlow's (it says so only in its message)."""
    if isinstance(error, OSError):
        return error.errno in OUT_OF_SPACE
    return any(os.strerror(code) in error.message for code in OUT_OF_SPACE)


def remove_abandoned_staging(model_root: Path) -> list[Path]:
    """Remove the staging folders that exports on this host left when they were killed (their process is gone);
    return them. Folders of running exports, and of other hosts sharing the folder, stay."""
    removed = []
    for folder in model_root.glob(f"{STAGING_PREFIX}*"):
        owner = _staging_owner(folder.name)
        if owner is not None and owner[0] == socket.gethostname() and not _alive(owner[1]):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _staging_owner(name: str) -> tuple[str, int] | None:
    """(host, pid) from `.staging-<host>-<pid>-<random>`; None for another name."""
    parts = name.removeprefix(STAGING_PREFIX).rsplit("-", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _concrete(function: Any) -> Any:
    return function.get_concrete_function() if hasattr(function, "get_concrete_function") else function


def _publish(staging: Path, model_root: Path, metadata: ArtifactMetadata) -> Path:
    while True:
        version = (versions(model_root) or [0])[-1] + 1
        created_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        framework = {"tensorflow": tf.__version__}
        write_metadata(
            staging, dataclasses.replace(metadata, version=version, created_at=created_at, framework=framework)
        )
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
    tag = f"{metadata.name}:{metadata.version}"
    try:
        bentoml.models.get(tag)
        return tag
    except bentoml.exceptions.NotFound:
        pass
    labels = {"task": str(metadata.task), "version": str(metadata.version)}
    # BentoML keeps model metadata as YAML scalars; the full document travels inside the model folder.
    summary = {"task": str(metadata.task), "name": metadata.name, "version": metadata.version}
    with bentoml.models.create(tag, labels=labels, metadata=summary | {"created_at": metadata.created_at}) as model:
        shutil.copytree(artifact_dir, model.path, dirs_exist_ok=True)
    return tag
