"""Transfer-learning builder: preprocessing inside the model, freezing and unfreezing, BatchNorm in inference
mode, weights from a local file and the offline error."""

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from models.transfer import (
    BACKBONES,
    BackbonePreprocess,
    backbone_of,
    build_transfer_classifier,
    convolutional_part,
    freeze_backbone,
    load_backbone,
    strategy_for,
    unfreeze_from,
)

PROJECT = Path(__file__).resolve().parents[2]
SIZE = 32  # the smallest input keras.applications accepts: keeps these tests fast


def digits_model(**kwargs) -> keras.Model:
    keras.utils.set_random_seed(0)
    return build_transfer_classifier(num_classes=10, input_shape=(8, 8, 1), backbone_size=SIZE, weights=None, **kwargs)


def batch(count: int = 4, channels: int = 1) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (count, 8, 8, channels)).astype("float32")


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_each_backbone_gets_its_own_preprocessing_inside_the_model(name):
    model = digits_model(backbone=name)
    assert model.output_shape == (None, 10)
    assert [layer.name for layer in model.layers[1:4]] == ["channels", "resize", "preprocess"]
    pixels = np.random.default_rng(1).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    expected = BACKBONES[name].preprocess(pixels.copy())
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(BackbonePreprocess(name)(pixels)), expected, rtol=1e-6, atol=1e-4
    )


def test_gray_images_of_any_size_are_resized_to_the_backbone_input():
    model = digits_model()
    assert model.get_layer("resize").compute_output_shape((None, 8, 8, 3)) == (None, SIZE, SIZE, 3)
    assert model.predict(batch(), verbose=0).shape == (4, 10)
    any_size = build_transfer_classifier(num_classes=3, backbone_size=SIZE, weights=None)
    assert any_size.predict(np.zeros((1, 50, 70, 3), "float32"), verbose=0).shape == (1, 3)


def trainable_count(model: keras.Model) -> int:
    return len(model.trainable_weights)


def test_phase_one_trains_only_the_head_and_phase_two_the_later_layers():
    model = digits_model()
    backbone = backbone_of(model)
    freeze_backbone(model)
    assert trainable_count(model) == 2  # the new Dense kernel and bias
    unfreeze_from(model, 100)
    later = [layer for layer in backbone.layers[100:] if not isinstance(layer, keras.layers.BatchNormalization)]
    assert trainable_count(model) == 2 + sum(len(layer.weights) for layer in later) > 2
    assert not any(layer.trainable for layer in backbone.layers[:100])
    unfreeze_from(model, 0)
    convolutions = [
        layer for layer in backbone.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))
    ]
    assert trainable_count(model) == 2 + sum(len(layer.weights) for layer in convolutions)
    assert not any(layer.trainable for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization))


def batch_norm_statistics(model: keras.Model) -> list[np.ndarray]:
    return [
        keras.ops.convert_to_numpy(weight)
        for layer in backbone_of(model).layers
        if isinstance(layer, keras.layers.BatchNormalization)
        for weight in (layer.moving_mean, layer.moving_variance)
    ]


def test_batch_norm_keeps_its_statistics_while_the_backbone_is_fine_tuned():
    model = digits_model()
    unfreeze_from(model, 0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    statistics = batch_norm_statistics(model)
    weights = [keras.ops.convert_to_numpy(weight).copy() for weight in backbone_of(model).trainable_weights]
    model.fit(batch(8), np.arange(8) % 10, epochs=1, batch_size=8, verbose=0)
    for old, new in zip(statistics, batch_norm_statistics(model)):
        np.testing.assert_array_equal(old, new)
    # …while the backbone's convolutions did train.
    trained = [
        not np.array_equal(old, keras.ops.convert_to_numpy(new))
        for old, new in zip(weights, backbone_of(model).trainable_weights)
    ]
    assert len(trained) > 50 and sum(trained) > len(trained) // 2


def test_weights_load_from_a_local_file(tmp_path):
    keras.utils.set_random_seed(1)
    saved = load_backbone("mobilenet_v2", input_size=SIZE, weights=None)
    path = tmp_path / "backbone.weights.h5"
    saved.save_weights(path)
    keras.utils.set_random_seed(2)
    loaded = load_backbone("mobilenet_v2", input_size=SIZE, weights=path)
    for a, b in zip(saved.weights, loaded.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_a_missing_weights_file_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_backbone("mobilenet_v2", input_size=SIZE, weights=tmp_path / "nope.weights.h5")


@pytest.mark.e2e
def test_offline_without_cached_imagenet_weights_is_a_clear_error(tmp_path):
    # An empty Keras cache and a proxy that refuses connections: the same as a machine without internet.
    env = {
        **os.environ,
        "KERAS_HOME": str(tmp_path),
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "",
    }
    script = "from models.transfer import load_backbone\nload_backbone('mobilenet_v2', input_size=96)"
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0
    assert "WeightsUnavailable" in result.stderr
    for hint in ("not in Keras's cache", "--weights PATH", "--weights none"):
        assert hint in result.stderr


def test_the_convolutional_part_of_a_trained_classifier_is_a_backbone():
    from models.classifier import build_resnet

    keras.utils.set_random_seed(0)
    source = build_resnet(input_shape=(16, 16, 1), num_classes=12, mean=30.0, variance=900.0, filters=(8, 16))
    features = convolutional_part(source)
    assert features.output_shape == (None, 8, 8, 16)
    model = build_transfer_classifier(num_classes=10, input_shape=(8, 8, 1), backbone=features)
    assert model.get_layer("resize").compute_output_shape((None, 8, 8, 1)) == (None, 16, 16, 1)
    # The backbone is the source model's own layers: its weights are shared, not copied.
    assert backbone_of(model).get_layer("stem_conv") is source.get_layer("stem_conv")
    assert model.predict(batch(2), verbose=0).shape == (2, 10)
    rgb = build_transfer_classifier(num_classes=10, input_shape=(8, 8, 3), backbone=features)
    assert rgb.predict(batch(2, channels=3), verbose=0).shape == (2, 10)
    with pytest.raises(ValueError, match="no GlobalAveragePooling2D"):
        convolutional_part(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))


def test_a_ready_model_can_serve_as_the_backbone():
    keras.utils.set_random_seed(0)
    image = keras.Input((16, 16, 3))
    features = keras.layers.Conv2D(8, 3, name="own_conv")(keras.layers.Rescaling(1 / 255)(image))
    own = keras.Model(image, features, name="own_backbone")
    model = build_transfer_classifier(num_classes=4, input_shape=(8, 8, 1), backbone=own)
    assert backbone_of(model) is own
    assert "preprocess" not in [layer.name for layer in model.layers]
    assert model.predict(batch(2), verbose=0).shape == (2, 4)


@pytest.mark.parametrize(
    "per_class, expected", [(10, "freeze"), (99, "freeze"), (100, "partial"), (999, "partial"), (1000, "full")]
)
def test_strategy_follows_the_amount_of_data(per_class, expected):
    assert strategy_for(per_class) == expected
