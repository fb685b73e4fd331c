"""Transfer learning: a pretrained convolutional backbone with a new classification head.

`build_transfer_classifier` returns a Functional `keras.Model`:

    image (N, H, W, C) float32, 0–255, C = 1 or 3
      → the backbone's channel count → resized to the backbone's input → the backbone's own `preprocess_input`
      → backbone (include_top=False), always called in inference mode
      → GlobalAveragePooling → Dropout(0.2) → Dense(K, softmax)

Everything a client would otherwise have to repeat (resizing, channel conversion, the backbone's
preprocessing) lives inside the model. The backbone's BatchNormalization layers stay in inference mode even
while it is fine-tuned, so they keep their pretrained statistics: with a small target set, updating them
would wreck the features the transfer is for.

Training is two-phase (`freeze_backbone`, then `unfreeze_from`), and `strategy_for` picks how much of the
backbone to train from the amount of labelled data: the fewer labelled images, the fewer weights can be trained
without overfitting them.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
from keras import layers

from models import image_graph


@dataclass(frozen=True)
class Backbone:
    constructor: Callable[..., keras.Model]
    preprocess: Callable
    default_size: int


BACKBONES: dict[str, Backbone] = {
    "mobilenet_v2": Backbone(keras.applications.MobileNetV2, keras.applications.mobilenet_v2.preprocess_input, 96),
    "efficientnet_b0": Backbone(
        keras.applications.EfficientNetB0, keras.applications.efficientnet.preprocess_input, 224
    ),
    "resnet50": Backbone(keras.applications.ResNet50, keras.applications.resnet50.preprocess_input, 224),
    "vgg16": Backbone(keras.applications.VGG16, keras.applications.vgg16.preprocess_input, 224),
}
DEFAULT_FINE_TUNE_AT = 100


class WeightsUnavailable(RuntimeError):
    """Pretrained weights could not be found in Keras's cache nor downloaded."""


@keras.saving.register_keras_serializable(package="modelservice")
class ToChannels(layers.Layer):
    """Images converted to the backbone's channel count by `image_graph.to_channels`: gray repeated to RGB, or RGB
    to luminance."""

    def __init__(self, channels: int, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels

    def call(self, images):
        return image_graph.to_channels(images, self.channels)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}


@keras.saving.register_keras_serializable(package="modelservice")
class BackbonePreprocess(layers.Layer):
    """The backbone's own `keras.applications.<family>.preprocess_input`, as a layer so it is saved with the model."""

    def __init__(self, backbone: str, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone

    def call(self, images):
        return BACKBONES[self.backbone].preprocess(images)

    def get_config(self):
        return {**super().get_config(), "backbone": self.backbone}


def load_backbone(name: str, *, input_size: int | None = None, weights: str | Path | None = "imagenet") -> keras.Model:
    """`keras.applications.<name>(include_top=False)` with `weights` "imagenet" (Keras's cache in ~/.keras/models,
    or a download), a local weights file, or None (random)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    spec = BACKBONES[name]
    size = input_size or spec.default_size
    build = lambda chosen: spec.constructor(input_shape=(size, size, 3), include_top=False, weights=chosen)  # noqa: E731
    if weights is None:
        return build(None)
    if str(weights) != "imagenet":
        if not Path(weights).is_file():
            raise FileNotFoundError(f"weights file {weights} does not exist")
        return build(str(weights))
    try:
        return build("imagenet")
    except Exception as error:  # Keras raises a bare Exception ("URL fetch failure ...") when it cannot download
        if "fetch failure" not in str(error) and not isinstance(error, OSError):
            raise
        raise WeightsUnavailable(
            f"the ImageNet weights of {name} ({size}×{size}, no top) are not in Keras's cache "
            f"(~/.keras/models, or $KERAS_HOME/models) and could not be downloaded: {error}. "
            "On a machine with internet, run the same command once (Keras caches the file), then copy "
            "~/.keras/models to this machine; or pass --weights PATH to a weights file "
            "(e.g. one saved with backbone.save_weights('x.weights.h5')), "
            "or --weights none to start from random weights."
        ) from None


def build_transfer_classifier(
    *,
    num_classes: int,
    input_shape: tuple[int | None, int | None, int] = (None, None, 3),
    backbone: str | keras.Model = "mobilenet_v2",
    backbone_size: int | None = None,
    weights: str | Path | None = "imagenet",
    preprocess: str | None = None,
    dropout: float = 0.2,
    name: str = "transfer_classifier",
) -> keras.Model:
    """Builds the classifier around a pretrained backbone.

    Args:
        num_classes: K, the target classes.
        input_shape: the images the model takes, values 0–255; any size, 1 or 3 channels.
        backbone: a `BACKBONES` name, or a ready `keras.Model` mapping fixed-size images to feature maps
            (for example `convolutional_part` of one of this project's trained models).
        backbone_size: the side the images are resized to (default: the backbone's own input size).
        weights: for a named backbone: "imagenet", a weights file path, or None.
        preprocess: a `BACKBONES` name whose `preprocess_input` to apply (default: the named backbone's;
            none for a ready model, which is expected to scale its own input).
        dropout: the rate before the new Dense layer.
        name: model name.
    """
    if isinstance(backbone, str):
        preprocess = preprocess or backbone
        features = load_backbone(backbone, input_size=backbone_size, weights=weights)
    else:
        features = backbone
    size = features.input_shape[1:3]
    if None in size:
        raise ValueError(f"the backbone needs a fixed input size, got {features.input_shape}")
    image = keras.Input(shape=input_shape, name="image")
    x = ToChannels(features.input_shape[-1], name="channels")(image)
    x = layers.Resizing(*size, name="resize")(x)
    if preprocess:
        x = BackbonePreprocess(preprocess, name="preprocess")(x)
    x = features(x, training=False)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="classes")(x)
    return keras.Model(image, outputs, name=name)


def convolutional_part(model: keras.Model) -> keras.Model:
    """A trained classifier up to the feature maps its GlobalAveragePooling2D reads: a backbone to transfer."""
    pooling = next((layer for layer in model.layers if isinstance(layer, layers.GlobalAveragePooling2D)), None)
    if pooling is None:
        raise ValueError(f"{model.name} has no GlobalAveragePooling2D layer, so no convolutional part to take")
    return keras.Model(model.inputs, pooling.input, name=f"{model.name}_features")


def backbone_of(model: keras.Model) -> keras.Model:
    """The nested backbone model inside a `build_transfer_classifier` model."""
    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


def freeze_backbone(model: keras.Model) -> None:
    """Phase 1: only the new head trains."""
    backbone_of(model).trainable = False


def default_fine_tune_at(backbone: keras.Model) -> int:
    """Layer 100 for MobileNetV2 (154 layers), as in TensorFlow's transfer-learning tutorial; the second half of a
    backbone with fewer layers. Either way the later layers, whose features are the most specific to the source
    task, adapt, while the early, generic ones (edges, textures) stay as pretrained."""
    count = len(backbone.layers)
    return DEFAULT_FINE_TUNE_AT if count > DEFAULT_FINE_TUNE_AT else count // 2


def unfreeze_from(model: keras.Model, fine_tune_at: int = DEFAULT_FINE_TUNE_AT) -> None:
    """Phase 2: the backbone's layers from index `fine_tune_at` on train too (0 = all of them), except
    BatchNormalization layers, which stay frozen and so in inference mode.

    Recompile afterwards: Keras fixes the trainable weights when a model is compiled.
    """
    backbone = backbone_of(model)
    if not 0 <= fine_tune_at < len(backbone.layers):
        raise ValueError(
            f"fine_tune_at must be in 0..{len(backbone.layers) - 1}: {backbone.name} has {len(backbone.layers)} "
            f"layers, got {fine_tune_at}"
        )
    backbone.trainable = True
    for index, layer in enumerate(backbone.layers):
        # Keras 3 passes fit's training=True down to nested models whatever they were called with; a
        # BatchNormalization layer that is not trainable runs in inference mode regardless.
        layer.trainable = index >= fine_tune_at and not isinstance(layer, keras.layers.BatchNormalization)


STRATEGIES = ("freeze", "partial", "full")


def strategy_for(examples_per_class: float, *, small: float = 100, large: float = 1000) -> str:
    """How much of the backbone to train: little data → freeze all of it (training its millions of weights on a
    few images would overfit them); some → fine-tune its later layers; a lot → retrain all."""
    if examples_per_class < small:
        return "freeze"
    return "partial" if examples_per_class < large else "full"
