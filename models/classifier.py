"""Image classifiers: the batch-normalised MLP and a small ResNet (optionally with an Inception module).

Every builder takes float32 images in 0..255 and returns an uncompiled `keras.Model` that outputs softmax
probabilities; input scaling lives inside the model so an exported model needs no separate preprocessing.
"""

from collections.abc import Callable

import keras
from keras import layers

HE_NORMAL = "he_normal"


def input_normalization(mean: float, variance: float) -> keras.layers.Layer:
    """Scales raw pixels with statistics computed on the training split."""
    # Statistics come from the training split (computed elsewhere, never from dev/test), so the layer is
    # built with them rather than adapted; keeping it in the model makes serving use the same scaling.
    return layers.Normalization(axis=None, mean=mean, variance=variance, name="input_normalization")


def _l2(l2: float) -> keras.regularizers.Regularizer | None:
    return keras.regularizers.L2(l2) if l2 > 0 else None


def build_mlp(
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    mean: float,
    variance: float,
    hidden_units: tuple[int, ...] = (512, 128),
    dropout: float = 0.0,
    l2: float = 0.0,
    name: str = "mlp",
) -> keras.Model:
    """Builds the Dense → BatchNormalization → ReLU multilayer perceptron.

    Args:
        input_shape: (height, width, channels) of one image.
        num_classes: number of softmax outputs.
        mean, variance: training-split pixel statistics for the normalization layer.
        hidden_units: width of each hidden Dense layer.
        dropout: rate of the Dropout after each ReLU; 0 leaves Dropout out.
        l2: L2 factor on every Dense kernel; 0 leaves regularization out.
        name: model name.
    """
    model_layers: list[keras.layers.Layer] = [
        keras.Input(shape=input_shape, name="image"),
        input_normalization(mean, variance),
        layers.Flatten(name="flatten"),
    ]
    for i, units in enumerate(hidden_units, start=1):
        model_layers += [
            # BatchNormalization's beta takes the role of the bias, so the Dense bias would be redundant.
            layers.Dense(
                units,
                use_bias=False,
                kernel_initializer=HE_NORMAL,
                kernel_regularizer=_l2(l2),
                name=f"dense_{i}",
            ),
            layers.BatchNormalization(name=f"bn_{i}"),
            layers.ReLU(name=f"relu_{i}"),
        ]
        if dropout > 0:
            model_layers.append(layers.Dropout(dropout, name=f"dropout_{i}"))
    model_layers.append(layers.Dense(num_classes, activation="softmax", kernel_regularizer=_l2(l2), name="predictions"))
    return keras.Sequential(model_layers, name=name)


def _conv_bn(x, filters: int, kernel_size: int, *, strides: int = 1, l2: float, name: str):
    # The bias is dropped because the BatchNormalization right after it has its own offset.
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer=HE_NORMAL,
        kernel_regularizer=_l2(l2),
        name=f"{name}_conv",
    )(x)
    return layers.BatchNormalization(name=f"{name}_bn")(x)


def _conv_bn_relu(x, filters: int, kernel_size: int, *, strides: int = 1, l2: float, name: str):
    x = _conv_bn(x, filters, kernel_size, strides=strides, l2=l2, name=name)
    return layers.ReLU(name=f"{name}_relu")(x)


def identity_block(x, filters: int, *, l2: float = 0.0, name: str):
    """Residual block whose shortcut is the input itself; `x` must already have `filters` channels."""
    shortcut = x
    x = _conv_bn_relu(x, filters, 3, l2=l2, name=f"{name}_1")
    x = _conv_bn(x, filters, 3, l2=l2, name=f"{name}_2")
    # The skip is added before the last ReLU so the block can fall back to the identity.
    x = layers.Add(name=f"{name}_add")([x, shortcut])
    return layers.ReLU(name=f"{name}_out")(x)


def projection_block(x, filters: int, stride: int, *, l2: float = 0.0, name: str):
    """Residual block whose shortcut is a strided 1x1 convolution, for a change of width or resolution."""
    shortcut = _conv_bn(x, filters, 1, strides=stride, l2=l2, name=f"{name}_shortcut")
    x = _conv_bn_relu(x, filters, 3, strides=stride, l2=l2, name=f"{name}_1")
    x = _conv_bn(x, filters, 3, l2=l2, name=f"{name}_2")
    x = layers.Add(name=f"{name}_add")([x, shortcut])
    return layers.ReLU(name=f"{name}_out")(x)


def inception_module(x, filters: int, *, l2: float = 0.0, name: str = "inception"):
    """Inception module: 1x1, 3x3, 5x5 and pooled branches of `filters` channels each, concatenated."""
    # 1x1 bottlenecks in front of the larger kernels keep their cost down.
    reduced = max(filters // 2, 1)
    branch_1x1 = _conv_bn_relu(x, filters, 1, l2=l2, name=f"{name}_1x1")
    branch_3x3 = _conv_bn_relu(x, reduced, 1, l2=l2, name=f"{name}_3x3_reduce")
    branch_3x3 = _conv_bn_relu(branch_3x3, filters, 3, l2=l2, name=f"{name}_3x3")
    branch_5x5 = _conv_bn_relu(x, reduced, 1, l2=l2, name=f"{name}_5x5_reduce")
    branch_5x5 = _conv_bn_relu(branch_5x5, filters, 5, l2=l2, name=f"{name}_5x5")
    branch_pool = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    # Pooling cannot change the channel count, so a 1x1 projection keeps the concatenation narrow.
    branch_pool = _conv_bn_relu(branch_pool, filters, 1, l2=l2, name=f"{name}_pool_proj")
    return layers.Concatenate(name=f"{name}_concat")([branch_1x1, branch_3x3, branch_5x5, branch_pool])


def build_resnet(
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    mean: float,
    variance: float,
    filters: tuple[int, ...] = (32, 64),
    blocks_per_stage: int = 2,
    inception: bool = False,
    dropout: float = 0.0,
    l2: float = 0.0,
    name: str = "resnet",
) -> keras.Model:
    """Builds a small residual network.

    Args:
        input_shape: (height, width, channels) of one image; inputs as small as 8x8 work.
        num_classes: number of softmax outputs.
        mean, variance: training-split pixel statistics for the normalization layer.
        filters: width of each stage; every stage after the first halves the resolution.
        blocks_per_stage: residual blocks per stage, the first of them a projection block.
        inception: append an Inception module after the last stage.
        dropout: rate of the Dropout before the classifier; 0 leaves Dropout out.
        l2: L2 factor on every kernel; 0 leaves regularization out.
        name: model name.
    """
    if not filters:
        raise ValueError("filters must name at least one stage")
    if blocks_per_stage < 1:
        raise ValueError(f"blocks_per_stage must be at least 1, got {blocks_per_stage}")

    inputs = keras.Input(shape=input_shape, name="image")
    x = input_normalization(mean, variance)(inputs)
    x = _conv_bn_relu(x, filters[0], 3, l2=l2, name="stem")
    for stage, stage_filters in enumerate(filters):
        # The stem already runs at full resolution, so only later stages downsample.
        stride = 1 if stage == 0 else 2
        x = projection_block(x, stage_filters, stride, l2=l2, name=f"stage{stage}_block0")
        for block in range(1, blocks_per_stage):
            x = identity_block(x, stage_filters, l2=l2, name=f"stage{stage}_block{block}")
    if inception:
        # Four branches of a quarter width each keep the last stage's channel count.
        x = inception_module(x, max(filters[-1] // 4, 1), l2=l2)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", kernel_regularizer=_l2(l2), name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


MODEL_BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "mlp": build_mlp,
    "resnet": build_resnet,
}


def build_classifier(architecture: str, **kwargs) -> keras.Model:
    """Builds the classifier registered as `architecture` with the builder's keyword arguments."""
    try:
        builder = MODEL_BUILDERS[architecture]
    except KeyError:
        choices = ", ".join(sorted(MODEL_BUILDERS))
        raise ValueError(f"unknown architecture {architecture!r}; choose one of: {choices}") from None
    return builder(**kwargs)
