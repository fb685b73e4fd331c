"""What the validation gate requires of a candidate, in TFX's terms: value thresholds and change thresholds.

A `MetricThreshold` bounds one metric: `lower` / `upper` are value thresholds (TFX's GenericValueThreshold),
`change` how much worse than the baseline the candidate may be (TFX's GenericChangeThreshold, with the
tolerance written as a positive amount: `absolute` in the metric's unit, `relative` as a fraction of the
baseline's value; when both are given, both must hold). `direction` says which way is better.

The defaults come from the family (`Family.gate_defaults`); a thresholds file (JSON or YAML, the same keys as
`Thresholds`) replaces what it names, and command-line flags replace both:

    quality: {lower: 0.95, change: {absolute: 0.005}}   # the optimizing metric
    groups: {lower: 0.85}                               # each class (or style) with min_group_size examples
    min_group_size: 20
    latency_p99_ms: {upper: 1000, change: {relative: 1.0}}
    size_mb: {upper: 500}
    latency_calls: 100
"""

import argparse
import dataclasses
import json
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, Self

import yaml


class ThresholdsError(ValueError):
    """A thresholds file or flag the gate cannot use: the message says which key and what is expected."""


class Direction(StrEnum):
    HIGHER = "higher"  # higher is better (accuracy, mAP)
    LOWER = "lower"  # lower is better (latency, size)


@dataclass(frozen=True)
class ChangeThreshold:
    absolute: float | None = None
    relative: float | None = None

    def limit(self, baseline: float, direction: Direction) -> float:
        """The worst value the candidate may have, given the baseline's."""
        sign = -1 if direction == Direction.HIGHER else 1
        limits = []
        if self.absolute is not None:
            limits.append(baseline + sign * self.absolute)
        if self.relative is not None:
            limits.append(baseline * (1 + sign * self.relative))
        pick = max if direction == Direction.HIGHER else min  # both must hold: the stricter one
        return pick(limits) if limits else baseline

    def describe(self, direction: Direction) -> str:
        sign = "-" if direction == Direction.HIGHER else "+"
        parts = []
        if self.absolute is not None:
            parts.append(f"baseline {sign} {self.absolute:g}")
        if self.relative is not None:
            parts.append(f"{1 - self.relative if sign == '-' else 1 + self.relative:g} x baseline")
        comparison = ">=" if direction == Direction.HIGHER else "<="
        return " and ".join(f"{comparison} {part}" for part in parts)


@dataclass(frozen=True)
class MetricThreshold:
    lower: float | None = None
    upper: float | None = None
    change: ChangeThreshold | None = None
    direction: Direction = Direction.HIGHER

    def value_problem(self, value: float) -> str | None:
        """Why `value` fails the value thresholds, or None."""
        if self.lower is not None and value < self.lower:
            return f"below the floor {self.lower:g} by {self.lower - value:.4g}"
        if self.upper is not None and value > self.upper:
            return f"above the ceiling {self.upper:g} by {value - self.upper:.4g}"
        return None

    def describe_value(self) -> str:
        bounds = [(">=", self.lower), ("<=", self.upper)]
        return " and ".join(f"{sign} {bound:g}" for sign, bound in bounds if bound is not None)

    @property
    def has_value_bounds(self) -> bool:
        return self.lower is not None or self.upper is not None


@dataclass(frozen=True)
class Thresholds:
    quality: MetricThreshold
    groups: MetricThreshold = field(default_factory=MetricThreshold)
    min_group_size: int = 20
    latency_p99_ms: MetricThreshold = field(
        default_factory=lambda: MetricThreshold(
            upper=1000.0, change=ChangeThreshold(relative=1.0), direction=Direction.LOWER
        )
    )
    size_mb: MetricThreshold = field(default_factory=lambda: MetricThreshold(upper=500.0, direction=Direction.LOWER))
    latency_calls: int = 100

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def merged(self, document: dict[str, Any], *, where: str) -> Self:
        """These thresholds with what `document` names replaced; ThresholdsError names a key it cannot use."""
        if not isinstance(document, dict):
            raise ThresholdsError(f"{where} holds a {type(document).__name__}, not a mapping of threshold names")
        known = {item.name for item in fields(self)}
        unknown = sorted(set(document) - known)
        if unknown:
            raise ThresholdsError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        changes: dict[str, Any] = {}
        for key, value in document.items():
            current = getattr(self, key)
            if isinstance(current, MetricThreshold):
                changes[key] = _metric(current, value, f"{where}: {key}")
            else:
                changes[key] = _count(value, f"{where}: {key}")
        return dataclasses.replace(self, **changes)

    def from_file(self, path: Path) -> Self:
        try:
            text = Path(path).read_text()
        except OSError as error:
            raise ThresholdsError(f"cannot read thresholds file {path}: {error.strerror}") from None
        try:
            document = json.loads(text) if Path(path).suffix == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as error:
            raise ThresholdsError(f"thresholds file {path} does not parse: {error}") from None
        return self.merged(document or {}, where=str(path))

    def from_args(self, args: argparse.Namespace) -> Self:
        """The thresholds file and flags of `add_gate_arguments`, over these defaults."""
        thresholds = self.from_file(args.thresholds) if args.thresholds else self
        flags: dict[str, Any] = {}
        quality: dict[str, Any] = {}
        if args.min_quality is not None:
            quality["lower"] = args.min_quality
        change = {
            key: value
            for key, value in (("absolute", args.tolerance), ("relative", args.relative_tolerance))
            if value is not None
        }
        if change:
            quality["change"] = change
        if quality:
            flags["quality"] = quality
        if args.min_group is not None:
            flags["groups"] = {"lower": args.min_group}
        latency: dict[str, Any] = {}
        if args.max_latency_ms is not None:
            latency["upper"] = args.max_latency_ms
        if args.max_latency_ratio is not None:
            latency["change"] = {"relative": args.max_latency_ratio - 1}
        if latency:
            flags["latency_p99_ms"] = latency
        if args.max_size_mb is not None:
            flags["size_mb"] = {"upper": args.max_size_mb}
        for key in ("min_group_size", "latency_calls"):
            if getattr(args, key) is not None:
                flags[key] = getattr(args, key)
        return thresholds.merged(flags, where="the command line")


def _metric(current: MetricThreshold, value: Any, where: str) -> MetricThreshold:
    if not isinstance(value, dict):
        raise ThresholdsError(f"{where} is a {type(value).__name__}; expected a mapping such as {{lower: 0.9}}")
    allowed = {"lower", "upper", "change", "direction"}
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ThresholdsError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}")
    changes: dict[str, Any] = {}
    for bound in ("lower", "upper"):
        if bound in value:
            changes[bound] = None if value[bound] is None else _number(value[bound], f"{where}.{bound}")
    if "direction" in value:
        try:
            changes["direction"] = Direction(value["direction"])
        except ValueError:
            raise ThresholdsError(f"{where}.direction is {value['direction']!r}; expected higher or lower") from None
    if "change" in value:
        changes["change"] = _change(value["change"], f"{where}.change")
    return dataclasses.replace(current, **changes)


def _change(value: Any, where: str) -> ChangeThreshold | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not value or set(value) - {"absolute", "relative"}:
        raise ThresholdsError(f"{where} must be a mapping with absolute and/or relative, such as {{absolute: 0.005}}")
    amounts = {key: _number(amount, f"{where}.{key}") for key, amount in value.items()}
    if any(amount < 0 for amount in amounts.values()):
        raise ThresholdsError(f"{where}: a tolerance is how much worse the candidate may be, 0 or more")
    return ChangeThreshold(**amounts)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ThresholdsError(f"{where} is {value!r}; expected a number")
    return float(value)


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ThresholdsError(f"{where} is {value!r}; expected a whole number, 1 or more")
    return value


def add_gate_arguments(parser: argparse.ArgumentParser) -> None:
    """The gate's options, for `modelservice validate` and for the family scripts that run it after export."""
    gate = parser.add_argument_group(
        "validation gate (thresholds: the family's defaults, then --thresholds, then these flags)"
    )
    gate.add_argument("--thresholds", type=Path, help="JSON or YAML file of thresholds (see the README)")
    gate.add_argument(
        "--baseline",
        help="version number (or folder) to compare with, or 'none' for value thresholds only "
        "(default: the latest blessed version of the same model)",
    )
    gate.add_argument("--min-quality", type=float, help="floor of the optimizing metric (accuracy, exact match, mAP)")
    gate.add_argument("--tolerance", type=float, help="how much lower than the baseline's it may be (absolute)")
    gate.add_argument("--relative-tolerance", type=float, help="the same as a fraction of the baseline's value")
    gate.add_argument("--min-group", type=float, help="floor for each class (seq2seq: each style)")
    gate.add_argument("--min-group-size", type=int, help="classes or styles with fewer test examples are not judged")
    gate.add_argument("--max-latency-ms", type=float, help="ceiling of the p99 latency of one request at batch 1")
    gate.add_argument("--max-latency-ratio", type=float, help="ceiling of that p99 as a multiple of the baseline's")
    gate.add_argument("--max-size-mb", type=float, help="ceiling of the artifact's size on disk")
    gate.add_argument("--latency-calls", type=int, help="calls the p99 latency is measured over (default 100)")
    gate.add_argument(
        "--no-load-check",
        action="store_true",
        help="skip loading the version in a fresh server process (its row says 'not checked'): for a version "
        "checked before, validated again against other thresholds or another baseline",
    )
