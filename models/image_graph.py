"""In-graph image preprocessing shared by every exported image model.

These ops run inside the SavedModel, so a client can send raw pixels or encoded PNG/JPEG bytes and
serving never re-implements decoding, channel conversion or resizing.
"""

import tensorflow as tf


def to_channels(images: tf.Tensor, channels: int) -> tf.Tensor:
    """Convert a float batch (N, H, W, C) — gray, gray+alpha, RGB or RGBA — to 1 or 3 channels."""
    known = images.shape[-1]
    if known is not None:  # a static channel count: only the branch that applies can be traced
        gray = tf.image.rgb_to_grayscale(images[..., :3]) if known >= 3 else images[..., :1]
        converted = gray if channels == 1 else (images[..., :3] if known >= 3 else tf.repeat(gray, 3, axis=-1))
        return tf.ensure_shape(converted, [None, None, None, channels])
    has_color = tf.shape(images)[-1] >= 3
    gray = tf.cond(has_color, lambda: tf.image.rgb_to_grayscale(images[..., :3]), lambda: images[..., :1])
    if channels == 1:
        converted = gray
    else:
        converted = tf.cond(has_color, lambda: images[..., :3], lambda: tf.repeat(gray, 3, axis=-1))
    return tf.ensure_shape(converted, [None, None, None, channels])


def border_mean(images: tf.Tensor) -> tf.Tensor:
    """Mean value of each image's outermost pixels, (N, H, W, C) → (N,): the colour that pads like background.

    Areas an image does not cover (letterbox bars, what a zoom or shift uncovers) are filled with it, so they
    look like the image's own background rather than a black frame the model could learn from.
    """
    border = tf.concat([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1)
    return tf.reduce_mean(border, axis=[1, 2])


def fit_images(images: tf.Tensor, height: int, width: int, channels: int) -> tf.Tensor:
    """Cast to float32 (values stay 0–255), fix the channel count and resize to the model's input."""
    images = to_channels(tf.cast(images, tf.float32), channels)
    same_size = tf.logical_and(tf.shape(images)[1] == height, tf.shape(images)[2] == width)
    resized = tf.cond(
        same_size,
        lambda: images,
        lambda: tf.image.resize(images, (height, width), method="area", antialias=True),
    )
    return tf.ensure_shape(resized, [None, height, width, channels])


def decode_pixels(image_bytes: tf.Tensor, channels: int) -> tf.Tensor:
    """Decode one PNG/JPEG/GIF/BMP string to float (H, W, channels) at its own size, values 0–255."""
    image = tf.io.decode_image(image_bytes, channels=0, expand_animations=False)
    return to_channels(tf.cast(image, tf.float32)[tf.newaxis], channels)[0]


def decode_image(image_bytes: tf.Tensor, height: int, width: int, channels: int) -> tf.Tensor:
    """Decode one PNG/JPEG/GIF/BMP string to a float (height, width, channels) image."""
    image = tf.io.decode_image(image_bytes, channels=0, expand_animations=False)
    return fit_images(image[tf.newaxis], height, width, channels)[0]


def decode_images(image_bytes: tf.Tensor, height: int, width: int, channels: int) -> tf.Tensor:
    """Decode a batch of encoded images (N,) of any sizes to (N, height, width, channels) float32."""
    return tf.map_fn(
        lambda data: decode_image(data, height, width, channels),
        image_bytes,
        fn_output_signature=tf.TensorSpec([height, width, channels], tf.float32),
    )
