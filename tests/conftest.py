import os
import tempfile
from pathlib import Path

# BentoML reads its home folder when first imported, so the tests' private model store is set first.
os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="bentoml-tests-")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # oneDNN kernels: 25–40% faster training on this CPU
os.environ.setdefault("CI", "1")  # one line per epoch instead of progress bars in test logs

import pytest


@pytest.fixture(scope="session")
def digits():
    from pipelines.data.image_data import load_digits

    return load_digits(seed=0)


@pytest.fixture(scope="session")
def trained_classifier(tmp_path_factory, digits):
    """A small MLP trained on the digits and exported once per session: (model, report, artifact dir)."""
    from pipelines import classifier
    from pipelines.export.artifact import register_in_bentoml
    from pipelines.training.loop import TrainingConfig

    root = tmp_path_factory.mktemp("classifier")
    config = classifier.ClassifierConfig(
        augment=False, training=TrainingConfig(epochs=15, batch_size=32, learning_rate=2e-3, patience=0)
    )
    trained = classifier.FAMILY.train(config, digits, root / "run")
    report = classifier.FAMILY.evaluate(trained, digits, root / "run")
    artifact = classifier.FAMILY.export(trained, digits, report, root / "artifacts")
    register_in_bentoml(artifact)
    return trained.model, report, artifact


@pytest.fixture(scope="session")
def dates():
    from pipelines.data.date_data import make_dataset

    return make_dataset(8000, 300, 500, seed=0)


@pytest.fixture(scope="session")
def trained_seq2seq(tmp_path_factory, dates):
    """A small BiLSTM + attention date normaliser, trained and exported once per session:
    (model, tokenizer, report, artifact)."""
    from pipelines import seq2seq
    from pipelines.export.artifact import register_in_bentoml
    from pipelines.training.loop import TrainingConfig

    root = tmp_path_factory.mktemp("seq2seq")
    config = seq2seq.Seq2SeqConfig(
        train_size=8000,
        dev_size=300,
        test_size=500,
        training=TrainingConfig(epochs=3, batch_size=64, learning_rate=3e-3, patience=0),
    )
    trained = seq2seq.FAMILY.train(config, dates, root / "run")
    report = seq2seq.FAMILY.evaluate(trained, dates, root / "run")
    artifact = seq2seq.FAMILY.export(trained, dates, report, root / "artifacts")
    register_in_bentoml(artifact)
    return trained.model, trained.fitted, report, artifact


@pytest.fixture(scope="session")
def scenes():
    from pipelines.data.scene_data import make_digit_scenes

    return make_digit_scenes(DETECTOR_SCENES[0], DETECTOR_SCENES[1], DETECTOR_SCENES[2], seed=0)


DETECTOR_SCENES = (400, 100, 100)  # plumbing, not quality: the profiles and benchmarks/detection.py measure that


@pytest.fixture(scope="session")
def trained_detector(tmp_path_factory, scenes):
    """A small YOLO-style digit detector, trained and exported once per session: (model, anchors, report, artifact)."""
    from pipelines import detector
    from pipelines.export.artifact import register_in_bentoml
    from pipelines.training.loop import TrainingConfig

    root = tmp_path_factory.mktemp("detector")
    config = detector.DetectorConfig(
        train_size=DETECTOR_SCENES[0],
        dev_size=DETECTOR_SCENES[1],
        test_size=DETECTOR_SCENES[2],
        training=TrainingConfig(
            epochs=5, batch_size=32, learning_rate=2e-3, decay_rate=0.9, patience=0, clip_norm=10.0
        ),
    )
    trained = detector.FAMILY.train(config, scenes, root / "run")
    report = detector.FAMILY.evaluate(trained, scenes, root / "run")
    artifact = detector.FAMILY.export(trained, scenes, report, root / "artifacts")
    register_in_bentoml(artifact)
    return trained.model, trained.fitted, report, artifact


TRANSFER_EPOCHS = (12, 2)  # head, fine-tuning


@pytest.fixture(scope="session")
def trained_transfer(tmp_path_factory):
    """The transfer pipeline's own path, shortened: the glyph backbone pretrained for one epoch because
    none exists, then 10 digits per class, head + partial fine-tuning + the scratch baseline, exported
    and registered: (config, run dir, artifact dir)."""
    from pipelines import transfer
    from pipelines.training.loop import TrainingConfig

    root = tmp_path_factory.mktemp("transfer")
    training = TrainingConfig(epochs=TRANSFER_EPOCHS[0], batch_size=20, learning_rate=3e-3, decay_rate=0.97, patience=0)
    config = transfer.TransferConfig(
        source_epochs=1,
        fine_tune_epochs=TRANSFER_EPOCHS[1],
        transfer_strategy="partial",
        artifacts=str(root / "artifacts"),
        training=training,
    )
    artifact = transfer.FAMILY.run(config, run_dir=root / "run", artifacts=root / "artifacts", register=True)
    return config, root / "run", artifact


@pytest.fixture(scope="session")
def server(trained_classifier, trained_seq2seq, trained_detector, trained_transfer, tmp_path_factory):
    """The real BentoML server on a free loopback port, serving the classifier, the date normaliser, the
    detector and the transfer-learned classifier together."""
    from serving.process import running_server

    log = Path(tmp_path_factory.mktemp("server")) / "server.log"
    with running_server(env={"MODELSERVICE_MODELS": "classifier,seq2seq,detector,transfer"}, log_path=log) as url:
        yield url
