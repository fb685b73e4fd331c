"""A family's hyperparameter search space, declared beside its profiles.

Declarations are plain data (no KerasTuner import), so a family module stays light to load; the tuner turns
them into KerasTuner hyperparameters (`declare`) when a search runs (pipelines/training/tuning.py). Each name
is a field of the family's config or of its `TrainingConfig`, so a trial's values apply onto a profile's config.
"""

from dataclasses import dataclass, field, fields, replace
from typing import Any


@dataclass(frozen=True)
class Dimension:
    """One hyperparameter; `when`: active only while another one takes one of these values (e.g. the MLP's
    width only when the architecture is "mlp")."""

    name: str
    when: tuple[str, tuple[Any, ...]] | None = field(default=None, kw_only=True)

    def declare(self, hp: Any) -> None:
        """Register it with `hp`, a keras_tuner.HyperParameters."""
        if self.when is None:
            self.register(hp)
            return
        parent, values = self.when
        with hp.conditional_scope(parent, list(values)):
            self.register(hp)

    def register(self, hp: Any) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class LogUniform(Dimension):
    """Uniform in the logarithm: 1e-4..1e-3 is sampled as often as 1e-3..1e-2 (learning rates, L2 factors)."""

    low: float = 1e-4
    high: float = 1e-2

    def register(self, hp: Any) -> None:
        hp.Float(self.name, self.low, self.high, sampling="log")


@dataclass(frozen=True)
class Uniform(Dimension):
    low: float = 0.0
    high: float = 1.0
    step: float | None = None

    def register(self, hp: Any) -> None:
        hp.Float(self.name, self.low, self.high, step=self.step)


@dataclass(frozen=True)
class Choice(Dimension):
    values: tuple[Any, ...] = ()

    def register(self, hp: Any) -> None:
        hp.Choice(self.name, list(self.values))


@dataclass(frozen=True)
class SearchSpace:
    """What a family searches over and what it is judged by.

    objective: the name of the dev-split metric `Family.dev_score` returns (higher is better); the test split
        is never looked at while searching.
    dimensions: the hyperparameters searched.
    fixed: config values every trial takes (e.g. no from-scratch baseline while searching).
    """

    objective: str
    dimensions: tuple[Dimension, ...]
    fixed: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys(dimension.name for dimension in self.dimensions))

    def declare(self, hp: Any) -> None:
        for dimension in self.dimensions:
            dimension.declare(hp)


def with_values(config: Any, values: dict[str, Any]) -> Any:
    """`config` with `values` applied: each name is a field of the config or of its `training` config."""
    top = {spec.name for spec in fields(config)} - {"training"}
    training = {spec.name for spec in fields(config.training)}
    unknown = set(values) - top - training
    if unknown:
        raise ValueError(f"{type(config).__name__} has no field {', '.join(sorted(unknown))}")
    return replace(
        config,
        **{name: value for name, value in values.items() if name in top},
        training=replace(config.training, **{name: value for name, value in values.items() if name in training}),
    )
