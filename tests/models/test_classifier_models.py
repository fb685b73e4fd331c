import keras
import numpy as np
import pytest

from models.classifier import (
    MODEL_BUILDERS,
    build_classifier,
    build_mlp,
    build_resnet,
    input_normalization,
)

MEAN, VARIANCE = 100.0, 400.0
SHAPES = [(8, 8, 1), (32, 32, 3)]


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


def images(shape, n=4, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, size=(n, *shape)).astype("float32")


def layers_of_type(model, layer_type):
    return [layer for layer in model.layers if isinstance(layer, layer_type)]


@pytest.mark.parametrize("architecture", sorted(MODEL_BUILDERS))
@pytest.mark.parametrize("shape", SHAPES)
def test_outputs_are_softmax_rows(architecture, shape):
    model = build_classifier(architecture, input_shape=shape, num_classes=7, mean=MEAN, variance=VARIANCE)
    probabilities = keras.ops.convert_to_numpy(model(images(shape), training=False))
    assert probabilities.shape == (4, 7)
    assert np.all(probabilities >= 0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_input_normalization_uses_given_statistics():
    layer = input_normalization(MEAN, VARIANCE)
    out = keras.ops.convert_to_numpy(layer(np.stack([np.full((8, 8, 1), MEAN), np.full((8, 8, 1), MEAN + 20.0)])))
    np.testing.assert_allclose(out[0], 0.0, atol=1e-6)
    np.testing.assert_allclose(out[1], 1.0, atol=1e-5)


@pytest.mark.parametrize("builder", [build_mlp, build_resnet])
def test_model_normalizes_a_mean_image_to_zero(builder):
    model = builder(input_shape=(8, 8, 1), num_classes=3, mean=MEAN, variance=VARIANCE)
    normalization = model.get_layer("input_normalization")
    out = keras.ops.convert_to_numpy(normalization(np.full((1, 8, 8, 1), MEAN, dtype="float32")))
    np.testing.assert_allclose(out, 0.0, atol=1e-6)


def test_mlp_layer_sequence():
    model = build_mlp(input_shape=(8, 8, 1), num_classes=10, mean=MEAN, variance=VARIANCE)
    L = keras.layers
    expected = [L.Normalization, L.Flatten, L.Dense, L.BatchNormalization, L.ReLU,
                L.Dense, L.BatchNormalization, L.ReLU, L.Dense]  # fmt: skip
    assert [type(layer) for layer in model.layers] == expected
    dense_512, dense_128, output = layers_of_type(model, L.Dense)
    assert (dense_512.units, dense_512.use_bias) == (512, False)
    assert (dense_128.units, dense_128.use_bias) == (128, False)
    assert (output.units, output.use_bias) == (10, True)
    assert output.activation is keras.activations.softmax
    for dense in (dense_512, dense_128):
        assert isinstance(dense.kernel_initializer, keras.initializers.HeNormal)


def test_mlp_parameter_count():
    model = build_mlp(input_shape=(8, 8, 1), num_classes=10, mean=MEAN, variance=VARIANCE)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    # Dense kernels without biases, BN gamma/beta, softmax kernel + bias.
    assert trainable == 64 * 512 + 2 * 512 + 512 * 128 + 2 * 128 + 128 * 10 + 10
    # BN moving mean/variance are the only other weights besides the normalization statistics.
    bn_stats = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights if "moving" in w.path)
    assert bn_stats == 2 * 512 + 2 * 128


def test_mlp_dropout_and_l2():
    plain = build_mlp(input_shape=(8, 8, 1), num_classes=3, mean=MEAN, variance=VARIANCE)
    assert not layers_of_type(plain, keras.layers.Dropout)
    assert not plain.losses

    model = build_mlp(input_shape=(8, 8, 1), num_classes=3, mean=MEAN, variance=VARIANCE, dropout=0.3, l2=1e-4)
    dropouts = layers_of_type(model, keras.layers.Dropout)
    assert [d.rate for d in dropouts] == [0.3, 0.3]
    for dropout in dropouts:
        assert isinstance(model.layers[model.layers.index(dropout) - 1], keras.layers.ReLU)
    assert len(model.losses) == 3  # one per Dense kernel


def test_resnet_has_skip_connections_and_projection_shortcuts():
    model = build_resnet(input_shape=(8, 8, 1), num_classes=3, mean=MEAN, variance=VARIANCE)
    assert len(layers_of_type(model, keras.layers.Add)) == 4  # 2 stages x 2 blocks
    assert not layers_of_type(model, keras.layers.Concatenate)
    shortcuts = [model.get_layer(f"stage{stage}_block0_shortcut_conv") for stage in (0, 1)]
    assert [(s.kernel_size, s.strides, s.filters) for s in shortcuts] == [((1, 1), (1, 1), 32), ((1, 1), (2, 2), 64)]
    assert model.get_layer("stage1_block1_out").output.shape == (None, 4, 4, 64)
    convs = layers_of_type(model, keras.layers.Conv2D)
    assert convs and all(isinstance(c.kernel_initializer, keras.initializers.HeNormal) for c in convs)


def test_resnet_inception_module():
    model = build_resnet(input_shape=(8, 8, 1), num_classes=3, mean=MEAN, variance=VARIANCE, inception=True)
    (concat,) = layers_of_type(model, keras.layers.Concatenate)
    assert concat.output.shape == (None, 4, 4, 64)
    kernel_sizes = {model.get_layer(f"inception_{b}_conv").kernel_size for b in ("1x1", "3x3", "5x5", "pool_proj")}
    assert kernel_sizes == {(1, 1), (3, 3), (5, 5)}
    assert layers_of_type(model, keras.layers.MaxPooling2D)


def test_resnet_dropout_and_l2():
    plain = build_resnet(input_shape=(8, 8, 1), num_classes=3, mean=MEAN, variance=VARIANCE)
    assert not layers_of_type(plain, keras.layers.Dropout)
    assert not plain.losses

    model = build_resnet(input_shape=(8, 8, 1), num_classes=3, mean=MEAN, variance=VARIANCE, dropout=0.5, l2=1e-4)
    (dropout,) = layers_of_type(model, keras.layers.Dropout)
    assert dropout.rate == 0.5
    kernels = len(layers_of_type(model, keras.layers.Conv2D)) + len(layers_of_type(model, keras.layers.Dense))
    assert len(model.losses) == kernels


@pytest.mark.parametrize("kwargs", [{"filters": ()}, {"blocks_per_stage": 0}])
def test_resnet_rejects_empty_configurations(kwargs):
    with pytest.raises(ValueError):
        build_resnet(input_shape=(8, 8, 1), num_classes=3, mean=MEAN, variance=VARIANCE, **kwargs)


def test_unknown_architecture_lists_choices():
    with pytest.raises(ValueError, match="mlp, resnet"):
        build_classifier("vgg", input_shape=(8, 8, 1), num_classes=3, mean=MEAN, variance=VARIANCE)


def test_builders_do_not_compile():
    assert not build_mlp(input_shape=(8, 8, 1), num_classes=3, mean=MEAN, variance=VARIANCE).compiled


@pytest.mark.parametrize(
    "architecture, kwargs",
    [("mlp", {"hidden_units": (32, 16)}), ("resnet", {"filters": (8, 16), "blocks_per_stage": 1, "inception": True})],
)
def test_a_few_steps_reduce_training_loss(architecture, kwargs):
    x = images((8, 8, 1), n=32, seed=1)
    y = np.random.default_rng(2).integers(0, 3, size=32)
    model = build_classifier(architecture, input_shape=(8, 8, 1), num_classes=3, mean=MEAN, variance=VARIANCE, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    # train_on_batch reports the training-mode loss, which BN's slowly moving statistics do not distort.
    losses = [model.train_on_batch(x, y, return_dict=True)["loss"] for _ in range(15)]
    assert losses[-1] < 0.8 * losses[0]
