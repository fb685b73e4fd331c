"""The validation gate's steps: measure a candidate and its baseline, check them, write the blessing.

What it checks and why: the package's docstring (pipelines/validation/__init__.py, `modelservice validate --help`).
"""

import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.validation import NOT_BLESSED_EXIT
from pipelines.validation.report import plot_blessing, table
from pipelines.validation.scoring import TASK_METRICS, HeldOut, Scores, default_call, latency_p99_ms, score
from pipelines.validation.thresholds import Direction, MetricThreshold, Thresholds
from serving.contract import (
    METADATA_FILE,
    ArtifactError,
    ArtifactMetadata,
    Blessing,
    Check,
    ImageInput,
    Verdict,
    read_metadata,
    versions,
    write_blessing,
)

NO_BASELINE = "none"
PLOT_FILE = "blessing.png"
LOAD_CHECK_SECONDS = 600


class GateError(ValueError):
    """The gate cannot run at all (no such version, no metadata): the message says what to pass instead."""


@dataclass(frozen=True)
class GateOptions:
    """What the family scripts pass on to the gate: the thresholds, which version to compare with, and whether to
    load the candidate in a fresh process first (TFX's InfraValidator)."""

    thresholds: Thresholds
    baseline: str | None = None  # a version number or folder, NO_BASELINE, or None for the default
    load_check: bool = True

    @classmethod
    def from_args(cls, defaults: Thresholds, args: Any) -> "GateOptions":
        """The options `add_gate_arguments` parsed, over the family's default thresholds."""
        return cls(defaults.from_args(args), args.baseline, load_check=not args.no_load_check)


@dataclass
class Measured:
    """One version as the gate saw it: loaded (or why not), scored, timed and weighed."""

    path: Path
    metadata: ArtifactMetadata | None
    model: Any = None  # serving.store.LoadedModel
    problem: str = ""
    scores: Scores | None = None
    latency_call: Callable[[], Any] | None = None  # one request at batch 1 to its default signature
    latency_ms: float | None = None
    size_mb: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"version {self.metadata.version}" if self.metadata else str(self.path)


def validate(candidate: Path, options: GateOptions, *, data: Any = None) -> Blessing:
    """Run every check on `candidate` (a version folder), write its blessing record and plot, return the record.

    `data` is the family's dataset when the caller has it loaded already (the family scripts, after export).
    """
    from pipelines.family import family

    candidate = Path(candidate)
    metadata = _metadata(candidate)
    baseline_path = find_baseline(candidate, metadata, options.baseline)
    loading = start_load_check(candidate) if options.load_check else None  # it loads while this process scores
    try:
        chosen = family(metadata.family)
        if data is None:
            data = chosen.load_data(chosen.config_type.from_dict(metadata.training))
        held_out = chosen.held_out(data)
        current = _measure(candidate, metadata, held_out)
        baseline = (
            None
            if baseline_path is None
            else _measure(baseline_path, _metadata_or_none(baseline_path), held_out, like=metadata)
        )
        infra = finish_load_check(loading) if loading else skipped_load_check()
    except BaseException:
        if loading:
            loading.kill()  # the gate did not finish: neither does its check
        raise
    thresholds = options.thresholds
    _time_default_calls(current, baseline, thresholds.latency_calls)  # on cores the check no longer uses
    checks = [infra, *_quality_checks(current, baseline, thresholds), *_cost_checks(current, baseline, thresholds)]
    blessing = Blessing(
        blessed=all(check.verdict != Verdict.FAIL for check in checks),
        checks=tuple(checks),
        metric=TASK_METRICS[metadata.task][0],
        baseline_version=baseline.metadata.version if baseline and baseline.metadata else None,
        data_fingerprint=held_out.fingerprint(),
        notes=tuple(_notes(metadata, held_out, baseline, options)),
        thresholds=thresholds.to_dict(),
        validated_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    record(candidate, metadata, blessing)
    return blessing


def _notes(
    metadata: ArtifactMetadata, held_out: HeldOut, baseline: "Measured | None", options: GateOptions
) -> list[str]:
    """What the table says below the checks: the data both were scored on, and what was compared with."""
    fingerprint = held_out.fingerprint()
    notes = [f"held-out split: {len(held_out)} examples, fingerprint {fingerprint[:12]}"]
    recorded = metadata.dataset.get("held_out", {}).get("fingerprint")
    if recorded is None:
        notes.append("the candidate's metadata records no held-out fingerprint (exported before the gate)")
    elif recorded != fingerprint:
        notes.append(f"the data changed since export: the candidate was exported with held-out {recorded[:12]}")
    if baseline is not None:
        return [*notes, f"baseline: {baseline.label}", *baseline.notes]
    why = "--baseline none" if options.baseline == NO_BASELINE else "no blessed version of this model yet"
    return [*notes, f"no baseline: value thresholds only ({why})"]


def _metadata(path: Path) -> ArtifactMetadata:
    try:
        return read_metadata(path)
    except ArtifactError as error:
        raise GateError(f"{path} is not an exported version: {error}") from None


def _metadata_or_none(path: Path) -> ArtifactMetadata | None:
    try:
        return read_metadata(path)
    except ArtifactError:
        return None


def resolve_version(path: Path) -> Path:
    """A version folder as given, or the latest version of a model folder (artifacts/classifier)."""
    path = Path(path)
    if not path.is_dir():
        raise GateError(f"{path} does not exist: pass a version folder such as artifacts/classifier/3")
    found = versions(path)
    if (path / METADATA_FILE).exists() or not found:
        return path
    return path / str(found[-1])


def find_baseline(candidate: Path, metadata: ArtifactMetadata, asked: str | None) -> Path | None:
    """The version to compare with: the one asked for, else the newest other version a server would serve."""
    if asked == NO_BASELINE:
        return None
    root = candidate.parent
    numbers = [number for number in versions(root) if number != metadata.version]
    if asked is not None:
        if not asked.isdigit():
            path = Path(asked)
            if not path.is_dir():
                raise GateError(f"baseline {asked!r} is neither a version number, a version folder nor 'none'")
            return path
        if int(asked) not in numbers:
            raise GateError(
                f"{root} has no other version {asked} to compare with: found {', '.join(map(str, numbers)) or 'none'}"
            )
        return root / asked
    from serving import store

    servable = [number for number in numbers if store.blessing(root / str(number))[0]]  # as serving decides
    return root / str(servable[-1]) if servable else None


def _measure(
    path: Path, metadata: ArtifactMetadata | None, held_out: HeldOut, *, like: ArtifactMetadata | None = None
) -> Measured:
    """Load `path` (in this process) and score it on `held_out`; a baseline is first checked comparable `like`
    the candidate's metadata."""
    from serving import store

    measured = Measured(path, metadata, size_mb=_size_mb(path))
    if like is not None and metadata is not None:
        if (previous := metadata.dataset.get("held_out", {}).get("fingerprint")) != held_out.fingerprint():
            seen = f"held-out {previous[:12]}" if previous else "no recorded held-out split"
            measured.notes.append(f"the baseline was exported with {seen}: it is scored again on the candidate's")
        measured.problem = incomparable(metadata, like) or ""
    if measured.problem:
        return measured
    try:
        measured.model = store.load(path)
        measured.scores = score(measured.model, held_out)
    except Exception as error:  # a damaged SavedModel fails in many ways; the check says which
        measured.problem = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        measured.model = None
    if measured.model is not None:
        measured.latency_call = default_call(measured.model, held_out.inputs[0])
    return measured


def incomparable(baseline: ArtifactMetadata, candidate: ArtifactMetadata) -> str | None:
    """Why the baseline cannot be scored on the candidate's data, or None."""
    if baseline.task != candidate.task:
        return f"the baseline is a {baseline.task} model, the candidate a {candidate.task} one"
    if isinstance(candidate.input, ImageInput) and baseline.image_input.image_shape != candidate.input.image_shape:
        return (
            f"the baseline takes {baseline.image_input.image_shape} images, the candidate {candidate.input.image_shape}"
        )
    if set(baseline.labels) != set(candidate.labels):
        return f"the baseline's classes {list(baseline.labels)} differ from the candidate's {list(candidate.labels)}"
    return None


def _size_mb(path: Path) -> float:
    sizes = [
        file.stat().st_size
        for file in path.rglob("*")
        if file.is_file() and not file.name.startswith(("blessing.", ".blessing"))  # the gate's own files
    ]
    return sum(sizes) / 2**20


def _time_default_calls(current: Measured, baseline: Measured | None, count: int) -> None:
    measured = [item for item in (current, baseline) if item is not None and item.model is not None]
    figures = latency_p99_ms({id(item): item.latency_call for item in measured}, count)
    for item in measured:
        item.latency_ms = figures[id(item)]


def start_load_check(path: Path) -> subprocess.Popen:
    """Start loading `path` with serving's loader in a fresh process, then its warm-up requests (TFX's
    InfraValidator); `finish_load_check` reads the outcome."""
    return subprocess.Popen(
        [sys.executable, "-m", "serving.load_check", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


LOAD_CHECK = "loads and answers"
LOAD_CHECK_THRESHOLD = "loads in a new server process and answers its warm-up requests"


def skipped_load_check() -> Check:
    return Check(LOAD_CHECK, LOAD_CHECK_THRESHOLD, Verdict.NOT_CHECKED, detail="not run: --no-load-check")


def finish_load_check(process: subprocess.Popen) -> Check:
    name, threshold = LOAD_CHECK, LOAD_CHECK_THRESHOLD
    try:
        stdout, stderr = process.communicate(timeout=LOAD_CHECK_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return Check(name, threshold, Verdict.FAIL, detail=f"no answer within {LOAD_CHECK_SECONDS} s")
    try:
        result = json.loads(stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        stderr = stderr.strip().splitlines()
        return Check(name, threshold, Verdict.FAIL, detail=f"the check process died: {stderr[-1] if stderr else ''}")
    if not result.get("loaded"):
        return Check(name, threshold, Verdict.FAIL, detail=result.get("error", "unknown error"))
    return Check(
        name,
        threshold,
        Verdict.PASS,
        detail=f"{result['warmup_requests']} warm-up requests answered, loaded in {result['seconds']:.1f} s",
    )


def _quality_checks(current: Measured, baseline: Measured | None, thresholds: Thresholds) -> list[Check]:
    task = current.metadata.task
    metric, per_group = TASK_METRICS[task]
    if current.scores is None:
        problem = f"not scored: {current.problem}"
        return [Check(metric, thresholds.quality.describe_value(), Verdict.FAIL, detail=problem)]
    base_scores = baseline.scores if baseline is not None else None
    checks = _metric_checks(metric, current.scores.metric, base_scores and base_scores.metric, thresholds.quality)
    if baseline is not None and base_scores is None:
        checks.append(
            Check(
                f"{metric} vs baseline",
                "a baseline scored on the same data",
                Verdict.FAIL,
                detail=f"cannot compare with {baseline.label}: {baseline.problem}; "
                "--baseline none blesses on value thresholds alone",
            )
        )
    for group, (value, size) in current.scores.groups.items():
        name = f"{per_group}[{group}]"
        base = base_scores.groups.get(group, (None, 0))[0] if base_scores else None
        if size < thresholds.min_group_size:
            checks.append(
                Check(
                    name,
                    f"judged from {thresholds.min_group_size} examples",
                    Verdict.NOT_CHECKED,
                    value,
                    base,
                    f"{size} examples",
                )
            )
        else:
            checks += _metric_checks(name, value, base, thresholds.groups, detail=f"{size} examples")
    return checks


def _cost_checks(current: Measured, baseline: Measured | None, thresholds: Thresholds) -> list[Check]:
    checks = []
    if current.latency_ms is not None:
        base = baseline.latency_ms if baseline is not None else None
        checks += _metric_checks("latency p99 ms", current.latency_ms, base, thresholds.latency_p99_ms)
    base_size = baseline.size_mb if baseline is not None and baseline.metadata else None
    return checks + _metric_checks("size MB", current.size_mb, base_size, thresholds.size_mb)


def _metric_checks(
    name: str, value: float, baseline: float | None, threshold: MetricThreshold, *, detail: str = ""
) -> list[Check]:
    """The value-threshold row, and the change-threshold row when there is a baseline value and a tolerance."""
    checks = []
    if threshold.has_value_bounds:
        problem = threshold.value_problem(value)
        checks.append(
            Check(
                name,
                threshold.describe_value(),
                Verdict.FAIL if problem else Verdict.PASS,
                value,
                baseline,
                "; ".join(part for part in (problem, detail) if part),
                threshold.lower if threshold.lower is not None else threshold.upper,
            )
        )
    if baseline is not None and threshold.change is not None:
        limit = threshold.change.limit(baseline, threshold.direction)
        worse = value < limit if threshold.direction == Direction.HIGHER else value > limit
        excess = f", worse than allowed ({limit:.4g})" if worse else ""
        checks.append(
            Check(
                f"{name} vs baseline",
                threshold.change.describe(threshold.direction),
                Verdict.FAIL if worse else Verdict.PASS,
                value,
                baseline,
                f"{value - baseline:+.4g} against the baseline{excess}",
                limit,
            )
        )
    return checks


def record(candidate: Path, metadata: ArtifactMetadata, blessing: Blessing) -> None:
    """Write the record and plot into the version folder, and into its BentoML store copy if it is registered."""
    for folder in (candidate, *_registered_copies(candidate, metadata)):
        write_blessing(folder, blessing)
        staging = Path(tempfile.mkstemp(prefix=".blessing-", suffix=".png", dir=folder)[1])
        plot_blessing(blessing, staging, title=f"{metadata.name} version {metadata.version}")
        os.chmod(staging, 0o644)
        os.replace(staging, folder / PLOT_FILE)


def _registered_copies(candidate: Path, metadata: ArtifactMetadata) -> list[Path]:
    """The store copy of this very export (same creation time), where serving from the store reads it."""
    import bentoml

    try:
        model = bentoml.models.get(f"{metadata.name}:{metadata.version}")
    except bentoml.exceptions.NotFound:
        return []
    copy = Path(model.path)
    same = copy.resolve() != candidate.resolve() and _metadata_or_none(copy) == metadata
    return [copy] if same else []


def exit_status(blessing: Blessing) -> int:
    return 0 if blessing.blessed else NOT_BLESSED_EXIT


def validate_and_print(candidate: Path, options: GateOptions, *, data: Any = None) -> Blessing:
    """`validate`, then the table on standard output."""
    print(f"validating {candidate}", flush=True)
    blessing = validate(candidate, options, data=data)
    print(table(blessing), flush=True)
    return blessing
