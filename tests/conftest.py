import atexit
import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

# BentoML reads its home folder when first imported, so the tests' private model store is set first.
os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="bentoml-tests-")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # oneDNN kernels: 25–40% faster training on this CPU
os.environ.setdefault("CI", "1")  # one line per epoch instead of progress bars in test logs
if workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")):
    # Each worker's TensorFlow (and the servers and scripts it starts) gets its share of the cores: more
    # threads than cores only spin and wait for each other.
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))

import pytest

atexit.register(shutil.rmtree, os.environ["BENTOML_HOME"], ignore_errors=True)  # ~20 MB a run otherwise


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """A folder that `build` fills once per test session, shared by every pytest-xdist worker: the first
    worker to ask builds it under a file lock, the others wait for it and read it. (Without xdist the
    session's own base folder holds it.)"""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the folder all workers' base folders share
    folder, done = base / f"shared-{name}", base / f"shared-{name}.done"
    with _locked(base / f"shared-{name}.lock"):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # a build that failed in another worker
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


# The session's trained fixtures and roughly what each costs to build on one thread (seconds, measured alone on
# this project's 2-core AVX2 machine), for sharing them out between the workers.
SHARED_BUILD_SECONDS = {
    "trained_detector": 117,
    "trained_transfer": 109,
    "trained_seq2seq": 99,
    "trained_classifier": 22,
}


def shares_of_builds(names: list[str], workers: int) -> list[list[str]]:
    """`names` shared out between `workers`, the costliest first, each to the least loaded worker so far; the
    heaviest share first."""
    shares: list[list[str]] = [[] for _ in range(workers)]
    loads = [0] * workers
    for name in sorted(names, key=SHARED_BUILD_SECONDS.__getitem__, reverse=True):
        lightest = loads.index(min(loads))
        shares[lightest].append(name)
        loads[lightest] += SHARED_BUILD_SECONDS[name]
    return [share for _, share in sorted(zip(loads, shares), key=lambda pair: -pair[0])]


@pytest.fixture(scope="session", autouse=True)
def shared_builds_in_parallel(request: pytest.FixtureRequest) -> None:
    """Under pytest-xdist each worker first builds its share of the trained fixtures that the session's tests
    need. Built on first use instead, every worker's first tests ask for the same model, and all but one wait
    for it, their cores idle.

    xdist sends the largest group, the shared server's, first, and its worker cannot start the server before
    the server's models are built. So with two workers those are shared out first: the server's worker builds
    the heavier share of them, the other worker the rest and then the other models."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers < 2:
        return
    needed = [name for name in SHARED_BUILD_SECONDS if any(name in item.fixturenames for item in request.session.items)]
    if workers == 2 and any(_in_server_group(item) for item in request.session.items):
        first_test = getattr(request, "_pyfuncitem", None)  # the test that this worker runs first
        rank = 0 if first_test is not None and _in_server_group(first_test) else 1
        shares = shares_of_builds([name for name in needed if name in SERVER_BUILDS], workers)
        shares[1] += [name for name in needed if name not in SERVER_BUILDS]
    else:
        rank = int(os.environ["PYTEST_XDIST_WORKER"].removeprefix("gw"))
        shares = shares_of_builds(needed, workers)
    for name in shares[rank]:
        request.getfixturevalue(name)


SERVER_GROUP = "server"  # the xdist group of the shared server's tests


def _in_server_group(item: pytest.Item) -> bool:
    return any(marker.args == (SERVER_GROUP,) for marker in item.iter_markers("xdist_group"))


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (make test: --dist loadgroup), every test of the shared server runs on
    one worker, which starts the server once."""
    for item in items:
        if "server" in getattr(item, "fixturenames", ()) and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(SERVER_GROUP))


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """A group that xdist failed to mark would be split between the workers, each starting its own servers:
    nothing fails, the suite only runs a minute longer (pytest 9.2 with xdist 3.8: pytest-xdist#1386)."""
    if not session.config.getoption("loadgroup", False):
        return
    marked = [item.nodeid for item in session.items if item.get_closest_marker("xdist_group")]
    ungrouped = [nodeid for nodeid in marked if "@" not in nodeid]
    if ungrouped:
        raise pytest.UsageError(
            f"pytest-xdist did not group {len(ungrouped)} tests marked xdist_group (first: {ungrouped[0]}); "
            "pytest 9.2 with pytest-xdist 3.8 loses the groups (pytest-xdist#1386): install pytest<9.2"
        )


@pytest.fixture(scope="session")
def digits():
    from pipelines.data.image_data import load_digits

    return load_digits(seed=0)


def trained_once(tmp_path_factory: pytest.TempPathFactory, family, config, data) -> tuple:
    """`family` trained on `data` with `config`, evaluated and exported once per session (`built_once`),
    as every worker reads it back: (Trained, report, artifact version folder)."""
    from pipelines.family import RunFolder
    from serving.contract import latest_version

    def build(root: Path) -> None:
        trained = family.train(config, data, root / "run")
        report = family.evaluate(trained, data, root / "run")
        family.export(trained, data, report, root / "artifacts")

    root = built_once(tmp_path_factory, family.name, build)
    run = root / "run"
    return family.load_trained(run), RunFolder(run).saved_report(), latest_version(root / "artifacts" / config.name)


@pytest.fixture(scope="session")
def trained_classifier(tmp_path_factory, digits):
    """A small MLP trained on the digits and exported once per session: (model, report, artifact dir)."""
    from pipelines import classifier
    from pipelines.export.artifact import register_in_bentoml
    from pipelines.training.loop import TrainingConfig

    config = classifier.ClassifierConfig(
        augment=False, training=TrainingConfig(epochs=15, batch_size=32, learning_rate=2e-3, patience=0)
    )
    trained, report, artifact = trained_once(tmp_path_factory, classifier.FAMILY, config, digits)
    register_in_bentoml(artifact)
    return trained.model, report, artifact


@pytest.fixture(scope="session")
def dates():
    from pipelines.data.date_data import make_dataset

    return make_dataset(*DATE_SPLITS, seed=0)


# Three epochs of 6,000 dates (and 15% non-dates) at 5e-3: exact match 0.99 on the test dates here, "is a date"
# precision 0.98 and recall 1.0 (the floors tested: 0.95, 0.9 and 0.95).
DATE_SPLITS = (6000, 300, 300)


@pytest.fixture(scope="session")
def trained_seq2seq(tmp_path_factory, dates):
    """A small BiLSTM + attention date normaliser, trained and exported once per session:
    (model, tokenizer, report, artifact)."""
    from pipelines import seq2seq
    from pipelines.export.artifact import register_in_bentoml
    from pipelines.training.loop import TrainingConfig

    config = seq2seq.Seq2SeqConfig(
        train_size=DATE_SPLITS[0],
        dev_size=DATE_SPLITS[1],
        test_size=DATE_SPLITS[2],
        training=TrainingConfig(epochs=3, batch_size=64, learning_rate=5e-3, patience=0),
    )
    trained, report, artifact = trained_once(tmp_path_factory, seq2seq.FAMILY, config, dates)
    register_in_bentoml(artifact)
    return trained.model, trained.fitted, report, artifact


@pytest.fixture(scope="session")
def date_answers(trained_seq2seq) -> Callable[..., list[str | None]]:
    """`date_answers(*texts, beam_width=None)`: what the exported date normaliser answers (beam_width None:
    its default), computed in this process: the date, or None where it says "not a date". Tests of the
    plumbing (routes, CLI, image) compare with it: a model trained for three epochs gets most dates right,
    but which ones can change with the last bit of a float from one run to the next. (Its quality is tested
    on the whole test split, with a margin.)"""
    import tensorflow as tf

    from serving.contract import read_metadata

    artifact = trained_seq2seq[3]
    translate = tf.saved_model.load(str(artifact)).signatures["translate"]
    default_beam_width = read_metadata(artifact).decoding.default_beam_width

    def answers(*texts: str, beam_width: int | None = None) -> list[str | None]:
        outputs = translate(texts=tf.constant(texts), beam_width=tf.constant(beam_width or default_beam_width))
        return [
            text.decode() if is_date else None
            for text, is_date in zip(outputs["texts"].numpy(), outputs["is_date"].numpy())
        ]

    return answers


@pytest.fixture(scope="session")
def scenes():
    from pipelines.data.scene_data import make_digit_scenes

    return make_digit_scenes(DETECTOR_SCENES[0], DETECTOR_SCENES[1], DETECTOR_SCENES[2], seed=0)


DETECTOR_SCENES = (400, 100, 100)  # plumbing, not quality: the profiles and benchmarks/detection.py measure that
DETECTOR_EPOCHS = 8


@pytest.fixture(scope="session")
def trained_detector(tmp_path_factory, scenes):
    """A small YOLO-style digit detector, trained and exported once per session: (model, anchors, report, artifact)."""
    from pipelines import detector
    from pipelines.export.artifact import register_in_bentoml
    from pipelines.training.loop import TrainingConfig

    config = detector.DetectorConfig(
        train_size=DETECTOR_SCENES[0],
        dev_size=DETECTOR_SCENES[1],
        test_size=DETECTOR_SCENES[2],
        base_filters=8,  # the profiles' 16 train 2.6 times slower per step; 8 learns enough for the tests
        batch_norm_momentum=0.9,  # 104 steps: at Keras's 0.99 the inference statistics are still a third initial
        training=TrainingConfig(
            epochs=DETECTOR_EPOCHS, batch_size=32, learning_rate=2e-3, decay_rate=0.9, patience=0, clip_norm=10.0
        ),
    )
    trained, report, artifact = trained_once(tmp_path_factory, detector.FAMILY, config, scenes)
    register_in_bentoml(artifact)
    return trained.model, trained.fitted, report, artifact


TRANSFER_EPOCHS = (6, 2)  # head, fine-tuning: the plumbing, not the quality
SOURCE_SIZE = 3000  # glyphs the backbone pretrains on: a backbone, not a good one (the quick profile uses 30,000)


@pytest.fixture(scope="session")
def trained_transfer(tmp_path_factory):
    """The transfer pipeline's own path, shortened: the glyph backbone pretrained for one epoch on 3,000
    glyphs because none exists, then 10 digits per class, head + partial fine-tuning + the scratch baseline, exported
    and registered: (config, run dir, artifact dir)."""
    from pipelines import transfer
    from pipelines.export.artifact import register_in_bentoml
    from pipelines.training.loop import TrainingConfig
    from serving.contract import latest_version

    training = TrainingConfig(epochs=TRANSFER_EPOCHS[0], batch_size=20, learning_rate=3e-3, decay_rate=0.97, patience=0)
    config = transfer.TransferConfig(
        source_epochs=1,
        source_size=SOURCE_SIZE,
        fine_tune_epochs=TRANSFER_EPOCHS[1],
        transfer_strategy="partial",
        training=training,
    )

    def build(root: Path) -> None:
        transfer.FAMILY.run(config, run_dir=root / "run", artifacts=root / "artifacts", register=False)

    root = built_once(tmp_path_factory, "transfer", build)
    config = replace(config, artifacts=str(root / "artifacts"))
    artifact = latest_version(root / "artifacts" / config.name)
    for registered in (latest_version(root / "artifacts" / "glyphs"), artifact):  # a real run registers both
        register_in_bentoml(registered)
    return config, root / "run", artifact


@pytest.fixture(scope="session")
def grpc_port() -> int:
    """The session server's gRPC port (TF Serving's API, tests/serving/test_grpc.py)."""
    from serving.process import free_port

    return free_port()


# The models the shared server serves. The transfer-learned classifier is a classifier to serving; the browser
# tests (make test-e2e), which show its panel, start a server of their own with it.
SERVER_BUILDS = ("trained_classifier", "trained_seq2seq", "trained_detector")


@pytest.fixture(scope="session")
def server(trained_classifier, trained_seq2seq, trained_detector, grpc_port, tmp_path_factory):
    """The real BentoML server on a free loopback port, serving the classifier, the date normaliser and the
    detector together, over HTTP and gRPC."""
    from serving.process import running_server

    log = Path(tmp_path_factory.mktemp("server")) / "server.log"
    env = {"MODELSERVICE_MODELS": "classifier,seq2seq,detector", "MODELSERVICE_GRPC_PORT": str(grpc_port)}
    with running_server(env=env, log_path=log) as url:
        yield url
