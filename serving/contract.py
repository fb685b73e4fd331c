"""The artifact: the contract between training and serving, defined once.

An artifact is one version folder, `<root>/<name>/<version>/`: a TensorFlow SavedModel whose signatures
hold all pre- and post-processing, and `metadata.json`, described here by `ArtifactMetadata`. Training
writes it through `write_metadata`; serving reads it through `read_metadata` and knows nothing else of
how the model was trained. Versions are increasing integers, the layout TF Serving reads.

A signature's role says which input a signature takes, with the same meaning for every task:

    default       the primary input with every option at its default (the SavedModel's serving_default)
    images        float32 pixels N×H×W×C, 0–255, and the task's options as scalar inputs
    images_uint8  uint8 pixels, otherwise as `images`
    image_bytes   encoded image strings (PNG, JPEG, GIF, BMP) and the task's options
    texts         strings and the task's options
    attention     as texts, answering what texts answers and the attention behind the best answer (seq2seq;
                  optional: versions exported before it lack it)

A version may also hold `blessing.json` (`Blessing`), the validation gate's verdict: serving serves a
version whose record says it is not blessed (or still pending) only when told to, and a version with no
record at all as before, with a warning.

Artifacts written before the roles had one meaning (schema 1: the seq2seq "texts" role was its default and
"texts_beam_width" took the beam width; the detector's default was "images_default") are migrated on read.
"""

import json
import os
import tempfile
from dataclasses import MISSING, asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

METADATA_FILE = "metadata.json"
BLESSING_FILE = "blessing.json"
KERAS_MODEL_FILE = "model.keras"
SCHEMA_VERSION = 2
LAYOUT = (
    f"<name>/<version>/ folders, each with saved_model.pb, variables/ and {METADATA_FILE} "
    "(the layout `make train` writes to artifacts/)"
)


class Task(StrEnum):
    CLASSIFIER = "classifier"
    SEQ2SEQ = "seq2seq"
    DETECTOR = "detector"


class Role(StrEnum):
    DEFAULT = "default"
    IMAGES = "images"
    IMAGES_UINT8 = "images_uint8"
    IMAGE_BYTES = "image_bytes"
    TEXTS = "texts"
    ATTENTION = "attention"


class ArtifactError(ValueError):
    """An artifact that cannot be read or served: the message names the folder and what is wrong."""


@dataclass(frozen=True)
class ImageInput:
    image_shape: tuple[int, int, int]  # the model's own input (H, W, C); other sizes are resized or letterboxed
    dtypes: tuple[str, ...] = ("uint8", "float32")
    value_range: tuple[int, int] = (0, 255)
    encoded_formats: tuple[str, ...] = ("png", "jpeg", "gif", "bmp")
    any_size: bool = False
    resize: str | None = None


@dataclass(frozen=True)
class TextSpec:
    max_length: int
    description: str = ""


@dataclass(frozen=True)
class Decoding:
    default_beam_width: int
    max_beam_width: int
    length_alpha: float
    output_constraint: str = "none"  # "iso-date": only real YYYY-MM-DD dates can come out
    # The least date_probability the graph answers as a date (is_date), calibrated on the dev split;
    # None: a version from before it said "not a date".
    date_threshold: float | None = None


@dataclass(frozen=True)
class Postprocessing:
    score_threshold: float
    iou_threshold: float
    max_detections: int
    anchors: tuple[tuple[float, float], ...]
    box_format: str = "[x1, y1, x2, y2] pixels of the original image"


TASK_SECTIONS: dict[Task, tuple[str, ...]] = {
    Task.CLASSIFIER: ("labels",),
    Task.SEQ2SEQ: ("output", "decoding"),
    Task.DETECTOR: ("labels", "postprocessing"),
}
# The roles each task's artifact must name; others (seq2seq's attention) are optional.
TASK_ROLES: dict[Task, tuple[Role, ...]] = {
    Task.CLASSIFIER: (Role.DEFAULT, Role.IMAGES, Role.IMAGE_BYTES),
    Task.SEQ2SEQ: (Role.DEFAULT, Role.TEXTS),
    Task.DETECTOR: (Role.DEFAULT, Role.IMAGES, Role.IMAGE_BYTES),
}


@dataclass(frozen=True)
class ArtifactMetadata:
    """What `metadata.json` holds. `name`, `version`, `created_at` and `framework` are set when published."""

    task: Task
    input: ImageInput | TextSpec
    signatures: dict[Role, str]  # role -> signature name in the SavedModel
    outputs: tuple[str, ...]
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)  # the training config, as recorded in the run
    dataset: dict[str, Any] = field(default_factory=dict)  # name, sizes, class counts and fingerprint
    family: str = ""  # the family that trained it (a transfer-learned model is a classifier artifact)
    labels: tuple[str, ...] = ()
    output: TextSpec | None = None
    decoding: Decoding | None = None
    postprocessing: Postprocessing | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # a family's own fields (transfer: backbone, comparison)
    name: str = ""
    version: int = 0
    created_at: str = ""
    framework: dict[str, str] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def signature(self, role: Role) -> str:
        """The SavedModel signature that takes `role`'s input."""
        return self.signatures[role]

    def option_defaults(self) -> dict[str, float | int]:
        """The served default of each scalar signature input, by the input's name (a beam width, thresholds)."""
        defaults: dict[str, float | int] = {}
        if self.decoding is not None:
            defaults["beam_width"] = self.decoding.default_beam_width
        if self.postprocessing is not None:
            defaults["score_threshold"] = self.postprocessing.score_threshold
            defaults["iou_threshold"] = self.postprocessing.iou_threshold
        return defaults

    def role_of(self, signature_name: str) -> Role | None:
        return next((role for role, name in self.signatures.items() if name == signature_name), None)

    @property
    def image_input(self) -> ImageInput:
        if not isinstance(self.input, ImageInput):
            raise TypeError(f"a {self.task} artifact has no image input")
        return self.input

    def to_dict(self) -> dict[str, Any]:
        """The JSON document; a family's extra fields sit at the top level beside the contract's."""
        plain = {item.name: getattr(self, item.name) for item in fields(self) if item.name != "extra"}
        document = {key: _plain(value) for key, value in plain.items() if value is not None}
        return {**self.extra, **document}

    @classmethod
    def from_dict(cls, document: Any, *, where: str = "metadata") -> "ArtifactMetadata":
        """Parse and check a metadata document (migrating schema 1); raises ArtifactError saying what is wrong."""
        if not isinstance(document, dict):
            raise ArtifactError(f"{where} is a {type(document).__name__}, not a JSON object")
        document = _migrated(document)
        missing = [key for key in ("task", "name", "version", "signatures", "input") if key not in document]
        if missing:
            raise ArtifactError(f"{where} lacks {', '.join(missing)}")
        try:
            return _parse(document)
        except ArtifactError as error:  # says what is wrong, without the place
            raise ArtifactError(f"{where}: {error}") from None
        except (TypeError, ValueError, KeyError, AttributeError) as error:
            raise ArtifactError(f"{where} is invalid: {type(error).__name__}: {error}") from None

    def validate(self) -> None:
        """Check that the task's sections and roles are all present; raises ArtifactError."""
        missing = [section for section in TASK_SECTIONS[self.task] if not getattr(self, section)]
        missing += [f"signature role {role}" for role in TASK_ROLES[self.task] if role not in self.signatures]
        expected = TextSpec if self.task == Task.SEQ2SEQ else ImageInput
        if not isinstance(self.input, expected):
            missing.append(f"an input of the {expected.__name__} kind")
        if missing:
            raise ArtifactError(f"a {self.task} artifact lacks {', '.join(missing)}")

    def check_signatures(self, available: set[str]) -> None:
        """Every role names a signature the SavedModel has; raises ArtifactError."""
        absent = sorted(set(self.signatures.values()) - available)
        if absent:
            raise ArtifactError(
                f"{METADATA_FILE} names signatures {absent} that the SavedModel lacks (it has {sorted(available)})"
            )


def _plain(value: Any) -> Any:
    if isinstance(value, StrEnum):  # plain strings, for any serializer (JSON, YAML)
        return value.value
    if hasattr(value, "__dataclass_fields__"):
        return {key: _plain(item) for key, item in asdict(value).items() if item is not None}
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return value


def _tuples(value: Any) -> Any:
    return tuple(_tuples(item) for item in value) if isinstance(value, list) else value


def _section(kind: type, values: dict[str, Any] | None, name: str) -> Any:
    if values is None:
        return None
    if not isinstance(values, dict):
        raise ArtifactError(f"{name} is a {type(values).__name__}, not an object")
    known = {item.name for item in fields(kind)}
    required = [item.name for item in fields(kind) if item.default is MISSING and item.default_factory is MISSING]
    missing = [key for key in required if key not in values]
    if missing:
        raise ArtifactError(f"{name} lacks {', '.join(missing)}")
    return kind(**{key: _tuples(value) for key, value in values.items() if key in known})


def _member(kind: type[StrEnum], value: Any, what: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        known = ", ".join(member.value for member in kind)
        raise ArtifactError(f"names an unknown {what} {value!r} (known: {known})") from None


def _signatures(roles: Any) -> dict[Role, str]:
    if not isinstance(roles, dict):
        raise ArtifactError(f"signatures is a {type(roles).__name__}, not an object of role: signature name")
    return {_member(Role, role, "signature role"): str(name) for role, name in roles.items()}


def _parse(document: dict[str, Any]) -> ArtifactMetadata:
    task = _member(Task, document["task"], "task")
    known = {item.name for item in fields(ArtifactMetadata)}
    input_kind = TextSpec if task == Task.SEQ2SEQ else ImageInput
    metadata = ArtifactMetadata(
        task=task,
        input=_section(input_kind, document["input"], "input"),
        signatures=_signatures(document["signatures"]),
        outputs=tuple(document.get("outputs", ())),
        metrics=document.get("metrics", {}),
        training=document.get("training", {}),
        dataset=document.get("dataset", {}),
        family=document.get("family", task.value),
        labels=tuple(document.get("labels", ())),
        output=_section(TextSpec, document.get("output"), "output"),
        decoding=_section(Decoding, document.get("decoding"), "decoding"),
        postprocessing=_section(Postprocessing, document.get("postprocessing"), "postprocessing"),
        extra={key: value for key, value in document.items() if key not in known},
        name=str(document["name"]),
        version=int(document["version"]),
        created_at=document.get("created_at", ""),
        framework=document.get("framework", {}),
        schema_version=int(document.get("schema_version", SCHEMA_VERSION)),
    )
    metadata.validate()
    return metadata


def _migrated(document: dict[str, Any]) -> dict[str, Any]:
    """A schema-1 document with schema-2 role names; a schema-2 document unchanged.

    Idempotent: a migrated document, written out again with its "schema_version": 1, reads the same.
    """
    schema = document.get("schema_version", 1)
    if not isinstance(schema, int) or schema >= SCHEMA_VERSION or not isinstance(document.get("signatures"), dict):
        return document
    roles = dict(document["signatures"])
    if "texts_beam_width" in roles:  # seq2seq: "texts" was the default signature, without a beam width
        roles = {Role.DEFAULT: roles["texts"], Role.TEXTS: roles["texts_beam_width"]}
    elif "images_default" in roles:  # detector
        roles[Role.DEFAULT] = roles.pop("images_default")
    else:  # classifier: every signature took its input alone
        roles.setdefault(Role.DEFAULT, "serving_default")
    return {**document, "signatures": roles, "schema_version": 1}


def versions(model_root: Path) -> list[int]:
    """The complete versions under `model_root`, oldest first (staging folders are hidden)."""
    if not model_root.is_dir():
        return []
    return sorted(int(entry.name) for entry in model_root.iterdir() if entry.name.isdigit())


def latest_version(model_root: Path) -> Path | None:
    found = versions(model_root)
    return model_root / str(found[-1]) if found else None


def read_metadata(artifact_dir: Path) -> ArtifactMetadata:
    """The checked metadata of one version folder; ArtifactError says what is missing or malformed."""
    path = Path(artifact_dir) / METADATA_FILE
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{METADATA_FILE} is missing") from None
    except ValueError as error:  # JSON and UTF-8 decoding errors
        raise ArtifactError(f"{METADATA_FILE} is not valid JSON ({error})") from None
    return ArtifactMetadata.from_dict(document, where=METADATA_FILE)


def write_metadata(artifact_dir: Path, metadata: ArtifactMetadata) -> Path:
    metadata.validate()
    path = Path(artifact_dir) / METADATA_FILE
    path.write_text(json.dumps(metadata.to_dict(), indent=2, sort_keys=True, ensure_ascii=False))
    return path


# --- the validation gate's record -----------------------------------------------------------------


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NOT_CHECKED = "not checked"  # reported for information (a class with too few examples to judge)


@dataclass(frozen=True)
class Check:
    """One row of the gate's table: what was measured, against what, and the verdict."""

    name: str  # "accuracy", "accuracy vs baseline", "recall[7]", "latency p99 ms", "size MB", "loads and answers"
    threshold: str  # readable: ">= 0.95", ">= baseline - 0.005", "<= 2 x baseline"
    verdict: Verdict
    value: float | None = None
    baseline: float | None = None
    detail: str = ""
    limit: float | None = None  # the number `threshold` compares the value with (a floor, a ceiling)


@dataclass(frozen=True)
class Blessing:
    """What `blessing.json` holds: the gate's verdict on one version, every check, and what it compared with."""

    blessed: bool
    pending: bool = False  # exported, the gate not yet run (or interrupted): not served until it has run
    checks: tuple[Check, ...] = ()
    metric: str = ""  # the optimizing metric
    baseline_version: int | None = None
    data_fingerprint: str = ""  # SHA-256 of the held-out split both models were evaluated on
    notes: tuple[str, ...] = ()
    thresholds: dict[str, Any] = field(default_factory=dict)
    validated_at: str = ""

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if check.verdict == Verdict.FAIL]

    def summary(self) -> str:
        """One line: "blessed", "pending validation" or "not blessed: <the failed checks>"."""
        if self.pending:
            return "pending validation (run `modelservice validate` on it)"
        if self.blessed:
            return "blessed"
        failures = "; ".join(_failure(check) for check in self.failed)
        return f"not blessed: {failures}" if failures else "not blessed"

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    @classmethod
    def from_dict(cls, document: Any) -> "Blessing":
        if not isinstance(document, dict) or not isinstance(document.get("blessed"), bool):
            raise ArtifactError(f'{BLESSING_FILE} is not an object with a boolean "blessed"')
        try:
            checks = tuple(
                Check(**{**check, "verdict": Verdict(check["verdict"])}) for check in document.get("checks", ())
            )
            known = {item.name for item in fields(cls)} - {"checks", "notes"}
            return cls(
                checks=checks,
                notes=tuple(document.get("notes", ())),
                **{key: value for key, value in document.items() if key in known},
            )
        except (TypeError, ValueError, KeyError) as error:
            raise ArtifactError(f"{BLESSING_FILE} is invalid: {type(error).__name__}: {error}") from None


def _failure(check: Check) -> str:
    if check.value is None:  # nothing was measured: the detail says why
        return f"{check.name}: {check.detail}"
    return f"{check.name} {check.value:.4g} (needs {check.threshold})"


def read_blessing(artifact_dir: Path) -> Blessing | None:
    """The version's gate record, None if it has none; ArtifactError if it cannot be read."""
    path = Path(artifact_dir) / BLESSING_FILE
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as error:
        raise ArtifactError(f"{BLESSING_FILE} is not valid JSON ({error})") from None
    return Blessing.from_dict(document)


def write_blessing(artifact_dir: Path, blessing: Blessing) -> Path:
    """Replace the version's record in one rename, so a server polling it reads the old record or the new one."""
    path = Path(artifact_dir) / BLESSING_FILE
    handle, staging = tempfile.mkstemp(prefix=f".{BLESSING_FILE}.", dir=artifact_dir)
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(blessing.to_dict(), file, indent=2, ensure_ascii=False)
        os.chmod(staging, 0o644)  # mkstemp's 0600 would hide it from a server running as another user
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.unlink(staging)
    return path
