import os
import tempfile
from pathlib import Path

# BentoML reads its home folder when first imported, so the tests' private model store is set first.
os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="bentoml-tests-")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CI", "1")  # one line per epoch instead of progress bars in test logs

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def digits():
    from pipelines.image_data import load_digits

    return load_digits(seed=0)


@pytest.fixture(scope="session")
def trained_classifier(tmp_path_factory, digits):
    """A small MLP trained on the digits and exported once per session: (model, report, artifact dir)."""
    from pipelines import classifier
    from pipelines.export import register_in_bentoml
    from pipelines.training import TrainingConfig

    root = tmp_path_factory.mktemp("classifier")
    config = classifier.ClassifierConfig(augment=False, training=TrainingConfig(epochs=15, batch_size=32, learning_rate=2e-3, patience=0))
    model = classifier.train(config, digits, root / "run")
    report = classifier.evaluate(model, digits, root / "run")
    artifact = classifier.export_model(model, digits, report, config, root / "artifacts")
    register_in_bentoml(artifact)
    return model, report, artifact


@pytest.fixture(scope="session")
def server(trained_classifier, tmp_path_factory):
    """The real BentoML server on a free loopback port, serving the trained classifier."""
    from serving.process import running_server

    log = Path(tmp_path_factory.mktemp("server")) / "server.log"
    with running_server(env={"MODELSERVICE_MODELS": "classifier"}, log_path=log) as url:
        yield url
