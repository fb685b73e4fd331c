"""Hyperparameter search with KerasTuner, for any model family, written once.

A family declares its search space beside its profiles (`SEARCH_SPACE`, pipelines/training/search_space.py);
`FamilyHyperModel` turns a trial's values into the family's config (applied onto the base config the profile
and flags chose), trains it with the family's own `train` (the shared training loop, its callbacks, its resume
after an interruption) in the trial's folder, and scores it with the family's `dev_score`: the dev split,
never the test split. `FamilyTuner` runs trials under a budget; KerasTuner's project folder keeps every
finished trial, so running the same command again resumes the search (a trial cut short runs again from its
first epoch), and a larger --trials continues it.

Distributed search is KerasTuner's chief/worker mode: the process whose KERASTUNER_TUNER_ID starts with
"chief" serves the oracle on KERASTUNER_ORACLE_IP:KERASTUNER_ORACLE_PORT and writes the report once the
workers (any other ID) have finished the trial budget between them.
"""

import argparse
import csv
import functools
import json
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import keras_tuner as kt

from pipelines.evaluation.plots import plot_trials
from pipelines.family import Config, Family, duration
from pipelines.training.flags import TUNERS
from pipelines.training.loop import BACKUP_DIR, read_history
from pipelines.training.search_space import SearchSpace, with_values

TRIALS_CSV = "trials.csv"
TRIALS_JSON = "trials.json"
PLOT_FILE = "tuning.png"
BEST_FILE = "best.json"
HYPERBAND_EPOCHS = "tuner/epochs"  # the epochs Hyperband gives a trial in its current round


@dataclass(frozen=True)
class Budget:
    trials: int
    max_epochs: int
    seconds: float | None = None  # no new trial starts once this much time has passed


@dataclass(frozen=True)
class SearchOptions:
    tuner: str
    budget: Budget
    project_dir: Path
    seed: int = 0


class FamilyHyperModel(kt.HyperModel):
    """A family as KerasTuner sees it: `build` chooses the trial's config, `fit` trains and scores it.

    `build` returns the config rather than a compiled model because the family's training loop builds its
    model itself (under the distribution strategy, or from a backup when a trial resumes)."""

    def __init__(self, family: Family, base_config: Config):
        super().__init__(name=family.name)
        self.family = family
        self.base_config = base_config
        self.space: SearchSpace = family.search_space

    @functools.cached_property
    def data(self) -> Any:
        # Loaded by the first trial only: a chief that serves the oracle never needs it.
        return self.family.load_data(self.base_config)

    def build(self, hp: kt.HyperParameters) -> Config:
        self.space.declare(hp)
        return with_values(self.base_config, self.space.fixed | active_values(hp, self.space))

    def fit(self, hp: kt.HyperParameters, config: Config, *, run_dir: Path) -> dict[str, float]:
        # KerasTuner hands out the id of a trial cut short again, with values drawn anew: a backup left in its
        # folder belongs to other hyperparameters, so every trial trains from its first epoch.
        shutil.rmtree(run_dir / BACKUP_DIR, ignore_errors=True)
        started = time.monotonic()
        trained = self.family.train(config, self.data, run_dir)
        return {
            self.space.objective: self.family.dev_score(trained, self.data),
            "epochs": len(read_history(run_dir).get("loss", [])),
            "seconds": time.monotonic() - started,
        }


def active_values(hp: kt.HyperParameters, space: SearchSpace) -> dict[str, Any]:
    """The trial's values of the space's hyperparameters, leaving out those whose condition does not hold."""
    return {name: hp.get(name) for name in space.names if hp.is_active(name)}


class FamilyTuner(kt.Tuner):
    """Runs each trial in its own folder of the project (`trial_<id>/`, a family run folder: run.json,
    model.keras, history.csv, …) for at most the budget's epochs, and stops starting trials when the time
    budget is spent."""

    def __init__(self, hypermodel: FamilyHyperModel, oracle: kt.Oracle, options: SearchOptions):
        super().__init__(
            oracle, hypermodel, directory=str(options.project_dir.parent), project_name=options.project_dir.name
        )
        self.budget = options.budget
        self.started = time.monotonic()
        self.ran: list[str] = []

    def run_trial(self, trial: kt.engine.trial.Trial, *args: Any, **kwargs: Any) -> dict[str, float]:
        hp = trial.hyperparameters
        config = self.hypermodel.build(hp)
        epochs = hp.values.get(HYPERBAND_EPOCHS, self.budget.max_epochs)
        config = replace(config, training=replace(config.training, epochs=epochs))
        results = self.hypermodel.fit(hp, config, run_dir=Path(self.get_trial_dir(trial.trial_id)))
        objective = self.hypermodel.space.objective
        print(
            f"trial {trial.trial_id} ({self.tuner_id}): {objective} {results[objective]:.4f} "
            f"after {results['epochs']} epochs in {results['seconds']:.1f} s"
        )
        return results

    def pre_create_trial(self) -> None:
        if self.budget.seconds is not None and time.monotonic() - self.started > self.budget.seconds:
            print(f"time budget of {duration(self.budget.seconds)} spent: no new trial starts")
            self.oracle.max_trials = len(self.oracle.trials)  # the oracle answers the next request with "stop"

    def on_trial_end(self, trial: kt.engine.trial.Trial) -> None:
        super().on_trial_end(trial)
        self.ran.append(trial.trial_id)
        if trial.status != kt.engine.trial.TrialStatus.COMPLETED:
            print(f"trial {trial.trial_id} ({self.tuner_id}): {trial.status}\n{trial.message}")


def make_oracle(tuner: str, objective: str, budget: Budget, seed: int) -> kt.Oracle:
    goal = kt.Objective(objective, direction="max")
    if tuner == "random":
        return kt.oracles.RandomSearchOracle(objective=goal, max_trials=budget.trials, seed=seed)
    if tuner == "bayesian":
        return kt.oracles.BayesianOptimizationOracle(objective=goal, max_trials=budget.trials, seed=seed)
    if tuner == "hyperband":
        oracle = kt.oracles.HyperbandOracle(objective=goal, max_epochs=budget.max_epochs, seed=seed)
        # Hyperband sizes its brackets from max_epochs alone; --trials still caps how many trials run.
        oracle.max_trials = budget.trials
        return oracle
    raise ValueError(f"unknown tuner {tuner!r}; choose one of {', '.join(TUNERS)}")


def is_chief() -> bool:
    return "KERASTUNER_ORACLE_IP" in os.environ and "chief" in os.environ.get("KERASTUNER_TUNER_ID", "")


def is_worker() -> bool:
    return "KERASTUNER_ORACLE_IP" in os.environ and not is_chief()


RUN_LOCATIONS = ("config", "name", "run_dir", "artifacts")  # where a run goes, not what it trains


def given_flags(family: Family, args: argparse.Namespace) -> dict[str, Any]:
    """The family flags `args` sets away from their defaults (a --config file's included), the profile and the
    seed: with a trial's values, what trains that trial's config again."""
    defaults = vars(family.argument_parser().parse_args([]))
    chosen = {
        name: getattr(args, name)
        for name, default in defaults.items()
        if name not in RUN_LOCATIONS and getattr(args, name) != default
    }
    return {"profile": args.profile, "seed": args.seed} | chosen


def search(family: Family, config: Config, options: SearchOptions, given_flags: dict[str, Any]) -> Path | None:
    """Run (or resume) the search; the chief or a lone process then writes the report and returns best.json's
    path. `given_flags`: the family flags the search was started with, which best.json keeps beside the
    best trial's values so that `--config best.json` trains the same thing."""
    if family.search_space is None:
        raise ValueError(f"{family.name} declares no search space")
    if options.budget.seconds is not None and is_worker():
        raise ValueError("--time-budget is for a single process or the chief: a worker's oracle is the chief's")
    oracle = make_oracle(options.tuner, family.search_space.objective, options.budget, options.seed)
    tuner = FamilyTuner(FamilyHyperModel(family, config), oracle, options)
    if is_chief():
        address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
        print(f"chief: serving the oracle on {address} until the workers finish {options.budget.trials} trials")
    tuner.search()
    if is_worker():
        print(f"worker {tuner.tuner_id} ran trials: {', '.join(tuner.ran) or 'none'}")
        return None
    return write_report(family, tuner.oracle, options, given_flags)


@dataclass(frozen=True)
class Row:
    """One trial in the table."""

    trial: str
    status: str
    values: dict[str, Any]
    score: float | None
    epochs: int | None
    seconds: float | None
    max_epochs: int

    def as_dict(self, objective: str) -> dict[str, Any]:
        return {
            "trial": self.trial,
            "status": self.status,
            **self.values,
            objective: self.score,
            "epochs": self.epochs,
            "seconds": None if self.seconds is None else round(self.seconds, 2),
        }


def trial_rows(oracle: kt.Oracle, space: SearchSpace, max_epochs: int) -> list[Row]:
    rows = []
    for trial_id in sorted(oracle.trials):
        trial = oracle.trials[trial_id]
        metrics = trial.metrics
        done = metrics.exists(space.objective)
        rows.append(
            Row(
                trial=trial_id,
                status=str(trial.status),
                values={name: trial.hyperparameters.values.get(name) for name in space.names},
                score=metrics.get_last_value(space.objective) if done else None,
                epochs=int(metrics.get_last_value("epochs")) if done else None,
                seconds=metrics.get_last_value("seconds") if done else None,
                max_epochs=trial.hyperparameters.values.get(HYPERBAND_EPOCHS, max_epochs),
            )
        )
    return rows


def best_row(rows: list[Row]) -> Row | None:
    scored = [row for row in rows if row.score is not None]
    return max(scored, key=lambda row: row.score) if scored else None


def write_report(family: Family, oracle: kt.Oracle, options: SearchOptions, given_flags: dict[str, Any]) -> Path | None:
    """The table (terminal, CSV, JSON), the plot and best.json in the project folder."""
    space = family.search_space
    rows = trial_rows(oracle, space, options.budget.max_epochs)
    table = [row.as_dict(space.objective) for row in rows]
    folder = options.project_dir
    write_csv(table, folder / TRIALS_CSV)
    (folder / TRIALS_JSON).write_text(json.dumps(table, indent=2))
    print(format_table(table))
    best = best_row(rows)
    if best is None:
        print(f"no trial finished; see {folder}")
        return None
    plot_trials(
        [row.values for row in rows if row.score is not None],
        [row.score for row in rows if row.score is not None],
        dimensions=space.dimensions,
        objective=space.objective,
        path=folder / PLOT_FILE,
    )
    path = folder / BEST_FILE
    path.write_text(json.dumps(best_config(best, given_flags, space), indent=2))
    print(
        f"best: trial {best.trial}, {space.objective} {best.score:.4f}; table, plot and {BEST_FILE} in {folder}\n"
        f"train it: modelservice train {family.name} --config {path}"
    )
    return path


def best_config(best: Row, given_flags: dict[str, Any], space: SearchSpace) -> dict[str, Any]:
    """The flags that train the best trial again: those the search started with, its epochs, its values
    (a conditional hyperparameter that did not apply is left to the profile)."""
    chosen = {name: value for name, value in best.values.items() if value is not None}
    return given_flags | {"epochs": best.max_epochs} | chosen


def write_csv(table: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]) if table else ["trial"])
        writer.writeheader()
        writer.writerows(table)


def format_table(table: list[dict[str, Any]]) -> str:
    """The trials as aligned text columns."""
    if not table:
        return "no trials yet"
    columns = list(table[0])
    cells = [[_cell(row[column]) for column in columns] for row in table]
    widths = [max(len(column), *(len(row[i]) for row in cells)) for i, column in enumerate(columns)]
    lines = [columns, *cells]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if value < 0.01 else f"{value:.4f}".rstrip("0").rstrip(".")
    return str(value)
