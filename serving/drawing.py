"""Detections drawn onto the image they were found in: what POST /detect answers for format=png."""

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# One colour per class id (cycled), bright enough to read on dark and light backgrounds alike.
PALETTE = (
    (255, 64, 64),
    (64, 224, 64),
    (64, 160, 255),
    (255, 200, 0),
    (255, 64, 255),
    (0, 224, 224),
    (255, 128, 0),
    (160, 96, 255),
)
CAPTION_COLOR = (0, 0, 0)


def as_rgb(image: bytes | np.ndarray) -> Image.Image:
    """An uploaded file or a (H, W, C) array of 0–255 pixels as an RGB image.

    Alpha is dropped without compositing, as the model's graph drops it, so the drawing shows what the
    model saw.
    """
    if isinstance(image, bytes):
        with Image.open(io.BytesIO(image)) as opened:
            return opened.convert("RGB")
    pixels = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels[..., :3]).convert("RGB")


def draw_detections(image: Image.Image, detections: Sequence[Mapping[str, Any]]) -> Image.Image:
    """A copy of `image` with each detection's box and a "label score" caption; worst first, so the best is on top."""
    drawn = image.copy()
    canvas = ImageDraw.Draw(drawn)
    line = max(1, round(min(drawn.size) / 200))
    font = ImageFont.load_default(size=max(10, round(min(drawn.size) / 30)))
    for detection in reversed(detections):
        color = PALETTE[detection.get("class_id", 0) % len(PALETTE)]
        x1, y1, x2, y2 = detection["box"]
        # Boxes are pixel edges; Pillow's rectangle includes its last row and column. A box can be
        # thinner than a pixel, and Pillow refuses a rectangle whose end lies before its start.
        canvas.rectangle((x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)), outline=color, width=line)
        _caption(canvas, f"{detection['label']} {detection['score']:.2f}", (x1, y1), color, font)
    return drawn


def _caption(
    canvas: ImageDraw.ImageDraw,
    text: str,
    corner: tuple[float, float],
    color: tuple[int, int, int],
    font: ImageFont.ImageFont,
) -> None:
    """`text` on a filled label just above the box's top-left corner, or just inside it at the image's top edge."""
    left, top, right, bottom = canvas.textbbox((0, 0), text, font=font)
    width, height = right - left + 2, bottom - top + 2
    x, y = corner[0], corner[1] - height if corner[1] >= height else corner[1]
    canvas.rectangle((x, y, x + width, y + height), fill=color)
    canvas.text((x + 1 - left, y + 1 - top), text, fill=CAPTION_COLOR, font=font)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
