"""Every served model's versions, kept in step with their source: found, loaded, served and unloaded.

A poll (at start, then every MODELSERVICE_POLL_SECONDS in a background thread) lists each model's versions,
asks the model's version policy (`serving.model_config`) which to serve, and then:

- loads each newly selected version and runs its warm-up requests (serving/warmup.py):
  START → LOADING → AVAILABLE. A version that fails to load goes to END
  with the reason and never takes traffic; it is tried again at the next polls, up to `max_load_retries` more
  times (TF Serving's --max_num_load_retries, default 5), and again whenever its folder changes.
- serves only the versions the validation gate blessed (`blessing.json`, pipelines/validation), unless told
  to serve unblessed ones too; a version with no record at all serves as before, with a warning. A selected
  version that is not blessed (or still pending) is listed in START with its blessing, and the policy picks
  among the others: blessing a newer version is what rolls it out, and un-blessing the serving one rolls back.
- unloads each version the policy no longer selects (AVAILABLE → UNLOADING → END), but only once every version
  it selects is AVAILABLE: a model is never left with fewer versions to answer than before, and a candidate
  that fails leaves the versions it would have replaced serving (TF Serving's availability-preserving
  default, which keeps one). A version whose folder is gone is unloaded at once. An unloading version takes
  no new requests and is released once those in flight have finished.

Requests read `served`, an immutable snapshot of the AVAILABLE versions and the labels; a poll replaces it
in one assignment, so a request sees either the old set or the new one, never a half-changed one.
"""

import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from serving import metrics, store, tuning
from serving.contract import METADATA_FILE
from serving.inputs import InputError
from serving.model_config import ModelSpec
from serving.runtime import ModelRuntime

logger = logging.getLogger("modelservice")

MAX_LOAD_RETRIES = 5  # TF Serving's --max_num_load_retries default
UNLOAD_WAIT_SECONDS = 60.0  # the longest an unloading version waits for its in-flight requests


class State(StrEnum):
    """TF Serving's ModelVersionStatus states."""

    START = "START"
    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    UNLOADING = "UNLOADING"
    END = "END"


@dataclass
class VersionStatus:
    version: int
    path: Path
    state: State = State.START
    error: str = ""  # why it failed to load; "" for a version that loaded (and maybe was unloaded since)
    attempts: int = 0  # failed loads since its folder last changed
    stamp: float | None = None  # its folder's modification time at the last attempt
    blessing: str = ""  # the validation gate's verdict in words ("blessed", "not blessed: ...", "pending ...")
    files: dict[str, tuple[int, int]] = field(default_factory=dict)  # the model files' (size, mtime) when loaded
    warning: str = ""  # what changed on disk under a version that keeps serving from memory

    def to_tfserving(self) -> dict:
        """The version as TF Serving's GetModelStatus answers it."""
        return {
            "version": str(self.version),
            "state": str(self.state),
            "status": {"error_code": "UNKNOWN" if self.error else "OK", "error_message": self.error},
        }


@dataclass(frozen=True)
class Served:
    """What requests may use now: each model's AVAILABLE versions, and its labels."""

    runtimes: Mapping[str, Mapping[int, ModelRuntime]] = field(default_factory=dict)
    labels: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    def runtime(self, name: str, *, version: int | None = None, label: str | None = None) -> ModelRuntime:
        """The version a request asks for (by number or label), else the model's highest AVAILABLE version."""
        versions = self.runtimes.get(name)
        if not versions:
            raise InputError(
                f"no model named {name!r} is served", expected=f"one of {sorted(self.runtimes)}", status=404
            )
        if label is not None:
            version = self.labels.get(name, {}).get(label)
            if version is None:
                known = sorted(self.labels.get(name, {}))
                raise InputError(
                    f"model {name!r} has no label {label!r}", expected=f"one of {known or 'no labels yet'}", status=404
                )
            if version not in versions:
                raise InputError(
                    f"label {label!r} of {name!r} points to version {version}, which is not available",
                    expected=f"an available version: {sorted(versions)}",
                    status=404,
                )
        if version is None:
            return versions[max(versions)]
        if version not in versions:
            raise InputError(
                f"version {version} of {name!r} is not available", expected=f"one of {sorted(versions)}", status=404
            )
        return versions[version]

    @functools.cached_property
    def tasks(self) -> dict[str, str]:
        """Each model's task (its highest AVAILABLE version's), worked out once per snapshot, not per request."""
        return {name: self.runtime(name).model.task for name in self.runtimes}

    def labels_of(self, name: str, version: int) -> list[str]:
        return sorted(label for label, target in self.labels.get(name, {}).items() if target == version)


class ModelManager:
    """The models `specs` names (every model in `source` at its latest version when empty), kept loaded."""

    def __init__(
        self,
        specs: list[ModelSpec],
        source: store.Source,
        *,
        max_load_retries: int = MAX_LOAD_RETRIES,
        serve_unblessed: bool = False,
        make_runtime: Callable[[store.LoadedModel], ModelRuntime] = ModelRuntime,
    ):
        self.specs = specs
        self.source = source
        self.max_load_retries = max_load_retries
        self.serve_unblessed = serve_unblessed
        self.make_runtime = make_runtime
        self.served = Served()
        self.problems: dict[str, str] = {}  # model name -> why its versions could not be listed
        self._statuses: dict[str, dict[int, VersionStatus]] = {}
        self._runtimes: dict[str, dict[int, ModelRuntime]] = {}
        self._labels: dict[str, dict[str, int]] = {spec.name: dict(spec.labels) for spec in specs}
        self._polling = threading.Lock()  # one poll at a time
        self._guard = threading.Lock()  # the status tables, read by requests while a poll changes them
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    # --- reading ------------------------------------------------------------------------------

    def statuses(self, name: str) -> list[VersionStatus]:
        """Every version of `name` this server has known, newest first."""
        with self._guard:
            found = self._statuses.get(name)
            if found is None:
                problem = self.problems.get(name)
                raise InputError(
                    problem or f"no model named {name!r} is served",
                    expected=f"one of {sorted(self._statuses)}",
                    status=404,
                )
            return [dataclasses.replace(status) for status in sorted(found.values(), key=lambda s: -s.version)]

    def version_statuses(
        self, name: str, *, version: int | None = None, label: str | None = None
    ) -> list[VersionStatus]:
        """TF Serving's GetModelStatus: every version of `name` this server knows, or the one asked for (by number
        or by a label, which must point to an AVAILABLE version)."""
        statuses = self.statuses(name)
        if label is not None:
            version = int(self.served.runtime(name, label=label).model.version)
        if version is None:
            return statuses
        if chosen := [status for status in statuses if status.version == version]:
            return chosen
        raise InputError(
            f"version {version} of {name!r} is not known to this server",
            expected=f"one of {[status.version for status in statuses]}",
            status=404,
        )

    def model_names(self) -> list[str]:
        with self._guard:
            return sorted(self._statuses)

    def failures(self) -> list[str]:
        """Why each version that should serve does not (END with an error), and each model that lists no version."""
        with self._guard:
            failed = [
                status.error for versions in self._statuses.values() for status in versions.values() if status.error
            ]
        return [*self.problems.values(), *failed]

    def start_problem(self) -> str | None:
        """Why a server that requires models should not start after the first poll, if it should not."""
        failures = self.failures()
        if failures:
            return failures[0]
        return None if self.served.runtimes else self.source.empty()

    # --- changes at run time (the admin API) ---------------------------------------------------

    def set_label(self, name: str, label: str, version: int) -> None:
        """Point `label` of `name` at `version`, which must be AVAILABLE (TF Serving's rule)."""
        with self._polling:
            available = sorted(self._runtimes.get(name, {}))
            if version not in available:
                raise InputError(
                    f"version {version} of {name!r} is not available, so no label can point to it",
                    expected=f"an available version: {available}",
                    status=409,
                )
            self._labels.setdefault(name, {})[label] = version
            self._publish()
        logger.info("label %s of %s now points to version %s", label, name, version)

    def remove_label(self, name: str, label: str) -> None:
        with self._polling:
            if label not in self._labels.get(name, {}):
                raise InputError(
                    f"model {name!r} has no label {label!r}",
                    expected=f"one of {sorted(self._labels.get(name, {}))}",
                    status=404,
                )
            del self._labels[name][label]
            self._publish()
        logger.info("label %s of %s removed", label, name)

    def reconfigure(self, specs: list[ModelSpec]) -> None:
        """Serve `specs` from now on (their labels replace the current ones), and poll at once."""
        with self._polling:
            self.specs = specs
            self._labels = {spec.name: dict(spec.labels) for spec in specs}
            self.problems.clear()
            self._publish()
        self.poll()
        logger.info("configuration reloaded: %s", ", ".join(f"{s.name} ({s.policy})" for s in specs) or "every model")

    # --- polling ------------------------------------------------------------------------------

    def poll(self) -> None:
        """Bring what is served in step with the source, once."""
        with self._polling:
            specs = {spec.name: spec for spec in self._current_specs()}
            for name in [name for name in self._runtimes if name not in specs]:
                for version in list(self._runtimes[name]):
                    self._unload(name, version)
            for spec in specs.values():
                self._poll_model(spec)

    def start_polling(self, seconds: float) -> None:
        """Poll every `seconds` in a background thread until `stop`."""

        def keep_polling() -> None:
            while not self._stopped.wait(seconds):
                try:
                    self.poll()
                except Exception:  # a poll must never end the thread: the next one may succeed
                    logger.exception("model poll failed")

        self._thread = threading.Thread(target=keep_polling, name="model-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()

    def _current_specs(self) -> list[ModelSpec]:
        if self.specs:
            return self.specs
        try:
            return [ModelSpec(name) for name in self.source.names()]
        except store.ModelLoadError as error:
            self.problems["*"] = str(error)
            return [ModelSpec(name) for name in self._runtimes]  # keep serving what is loaded

    def _poll_model(self, spec: ModelSpec) -> None:
        try:
            found = self.source.versions(spec)
        except store.ModelLoadError as error:
            self._note_problem(spec.name, str(error))
            return
        with self._guard:
            self._statuses.setdefault(spec.name, {})
        blessings = {version: store.blessing(path) for version, path in found.items()}
        eligible = {version: path for version, path in found.items() if blessings[version][0] or self.serve_unblessed}
        self._note_blessings(spec, found, eligible, blessings)
        absent = [version for version in spec.policy.versions if version not in found]
        if not found:
            self._note_problem(spec.name, self.source.missing(spec.name))
        elif absent:
            self._note_problem(
                spec.name,
                f"{self.source.where(spec)} has no version {', '.join(map(str, absent))}: "
                f"found versions {', '.join(map(str, sorted(found)))}",
            )
        elif not eligible:
            unblessed = "; ".join(f"version {version}: {text}" for version, (_, text) in sorted(blessings.items()))
            self._note_problem(spec.name, f"no version of {spec.name!r} may serve ({unblessed})")
        else:
            self.problems.pop(spec.name, None)
        selected = spec.policy.select(eligible)
        for version in selected:
            if self._should_load(spec.name, version, found[version]):
                self._load(spec.name, version, found[version], blessings[version][1])
        serving = self._runtimes.get(spec.name, {})
        replaced = bool(selected) and all(version in serving for version in selected)
        for version in list(serving):
            if version not in selected and (replaced or version not in eligible):
                self._unload(spec.name, version)
        self._check_files(spec.name)

    def _check_files(self, name: str) -> None:
        """Say when the files of a version that is serving change or go on disk: it keeps answering from the copy
        in memory, but a restart or another server would load (or fail to load) what is there now."""
        for version in self._runtimes.get(name, {}):
            status = self._statuses[name][version]
            now = _model_files(status.path)
            changed = sorted(
                file for file in status.files.keys() | now.keys() if status.files.get(file) != now.get(file)
            )
            warning = (
                f"its files changed on disk after it loaded ({', '.join(changed[:3])}"
                f"{', …' if len(changed) > 3 else ''}): still serving the copy in memory; export a new version to "
                "replace it"
                if changed
                else ""
            )
            if warning and warning != status.warning:
                logger.warning("version %s of %s: %s", version, name, warning)
            with self._guard:
                status.warning = warning

    def _note_blessings(
        self,
        spec: ModelSpec,
        found: dict[int, Path],
        eligible: dict[int, Path],
        blessings: dict[int, tuple[bool, str]],
    ) -> None:
        """Keep each known version's blessing up to date, and list the versions the policy would pick but the
        gate holds back (in START), so that the version list says why they do not serve."""
        held_back = set(spec.policy.select(found)) - set(eligible)
        with self._guard:
            statuses = self._statuses[spec.name]
            for version, (_, text) in blessings.items():
                status = statuses.get(version)
                if status is None and version in held_back:
                    statuses[version] = VersionStatus(version, found[version], blessing=text)
                    metrics.set_state(spec.name, version, State.START)
                    logger.warning("version %s of %s is not served: %s", version, spec.name, text)
                elif status is not None and status.blessing != text:
                    if status.blessing:
                        logger.info("version %s of %s: %s", version, spec.name, text)
                    status.blessing = text
                    if text == store.NO_BLESSING:
                        logger.warning("version %s of %s has %s", version, spec.name, text)

    def _note_problem(self, name: str, problem: str) -> None:
        if self.problems.get(name) != problem:
            logger.warning("%s", problem)
        self.problems[name] = problem

    def _should_load(self, name: str, version: int, path: Path) -> bool:
        status = self._statuses[name].get(version)
        if status is None or status.state == State.START:  # new, or held back by the gate until now
            return True
        if status.state != State.END:
            return False  # loading or loaded already
        if not status.error:
            return True  # unloaded before, selected again (a policy change, a rollback)
        return _stamp(path) != status.stamp or status.attempts <= self.max_load_retries

    def _load(self, name: str, version: int, path: Path, blessing: str) -> None:
        previous = self._statuses[name].get(version)
        stamp = _stamp(path)
        attempts = previous.attempts if previous is not None and previous.stamp == stamp else 0
        status = VersionStatus(version, path, State.LOADING, attempts=attempts, stamp=stamp, blessing=blessing)
        if previous is None and blessing == store.NO_BLESSING:
            logger.warning("version %s of %s has %s", version, name, blessing)
        with self._guard:
            self._statuses[name][version] = status
        metrics.set_state(name, version, State.LOADING)
        logger.info("loading %s:%s from %s", name, version, path)
        try:
            runtime, _, warm_up_ms = load_version(path, name, version, self.make_runtime)
        except Exception as error:  # whatever a version does wrong, the versions already serving keep serving
            reason = str(error) if isinstance(error, store.ModelLoadError) else f"{type(error).__name__}: {error}"
            with self._guard:
                status.error, status.attempts = reason, attempts + 1
            self._enter(name, status, State.END)
            metrics.LOADS.labels(str(path), "fail").inc()
            logger.error("version %s of %s failed to load (attempt %d): %s", version, name, attempts + 1, reason)
            return
        self._runtimes.setdefault(name, {})[version] = runtime
        status.files = _model_files(path)
        self._enter(name, status, State.AVAILABLE)
        metrics.LOADS.labels(str(path), "success").inc()
        self._publish()
        logger.info(
            "serving %s:%s (%s) from %s, warmed up in %.0f ms", name, version, runtime.model.task, path, warm_up_ms
        )

    def _unload(self, name: str, version: int) -> None:
        status = self._statuses[name][version]
        self._enter(name, status, State.UNLOADING)
        runtime = self._runtimes[name].pop(version)
        if not self._runtimes[name]:
            del self._runtimes[name]
        self._publish()  # no new request reaches it from here on
        deadline = time.monotonic() + UNLOAD_WAIT_SECONDS
        while runtime.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)
        runtime.close()
        del runtime
        tuning.release_memory()
        self._enter(name, status, State.END)
        metrics.UNLOADS.labels(name, str(version)).inc()
        logger.info("unloaded %s:%s", name, version)

    def _enter(self, name: str, status: VersionStatus, state: State) -> None:
        with self._guard:
            status.state = state
        metrics.set_state(name, status.version, state)

    def _publish(self) -> None:
        self.served = Served(
            {name: dict(versions) for name, versions in self._runtimes.items()},
            {name: dict(labels) for name, labels in self._labels.items()},
        )


def load_version(
    path: Path, name: str, version: int, make_runtime: Callable[[store.LoadedModel], ModelRuntime] = ModelRuntime
) -> tuple[ModelRuntime, int, float]:
    """One version loaded as the server serves it, after its warm-up requests ran: (runtime, requests run,
    warm-up ms)."""
    model = store.load(path)
    runtime = make_runtime(dataclasses.replace(model, name=name, version=str(version)))
    requests = store.warmup_requests(path)
    started = time.perf_counter()
    runtime.warm_up(requests)
    return runtime, len(requests), (time.perf_counter() - started) * 1000


def _model_files(path: Path) -> dict[str, tuple[int, int]]:
    """(size, modification time) of each file a load reads: the SavedModel and the metadata (not the gate's
    blessing record, which the gate rewrites to roll out and back)."""
    files = [path / "saved_model.pb", path / METADATA_FILE, *sorted((path / "variables").glob("*"))]
    found = {}
    for file in files:
        try:
            info = file.stat()
        except OSError:
            continue
        found[str(file.relative_to(path))] = (info.st_size, info.st_mtime_ns)
    return found


def _stamp(path: Path) -> float | None:
    """When the version's folder or its metadata last changed: a new export into it is worth another try."""
    try:
        return max(path.stat().st_mtime, (path / METADATA_FILE).stat().st_mtime)
    except OSError:
        return None
