"""Parse and check request payloads before they reach a model.

Everything a client can get wrong becomes an `InputError` (a 4xx with a message that says what was
wrong and what is expected) here, so a bad request never enters a batch shared with other requests.
"""

import base64
import contextlib
import io
import json
import math
import re
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import orjson
from PIL import Image, UnidentifiedImageError
from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive

from serving import settings

MAX_PAYLOAD_BYTES = settings.current().max_request_bytes
MAX_BATCH = settings.current().max_instances
MAX_IMAGE_SIDE = 4096
MAX_IMAGE_PIXELS = 4096 * 4096
MAX_DECODED_IMAGE_BYTES = settings.current().max_decoded_image_mb * 2**20
MAX_DECODED_REQUEST_BYTES = settings.current().max_decoded_request_mb * 2**20
IMAGE_FORMATS = {"PNG", "JPEG", "GIF", "BMP"}
PIXEL_INSTANCE = "an image as a nested list of pixel values 0–255, shaped H×W or H×W×C with C in 1, 3 or 4"

Number = TypeVar("Number", int, float)


class InputError(Exception):
    def __init__(self, message: str, *, expected: str = "", status: int = 400):
        super().__init__(message)
        self.message = message
        self.expected = expected
        self.status = status

    def body(self) -> dict[str, str]:
        return {"error": self.message, **({"expected": self.expected} if self.expected else {})}


async def read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_PAYLOAD_BYTES:
        raise _too_large(int(declared))
    # ASGI's receive directly: Starlette's `stream()` generator cost a tenth of a small request's CPU.
    return await receive_body(request.receive, MAX_PAYLOAD_BYTES, _too_large)


async def receive_body(receive: Receive, limit: int, too_large: Callable[[int], Exception]) -> bytes:
    """A request's whole body from ASGI's `receive`: `too_large(bytes so far)` is raised once it passes `limit`,
    ClientDisconnect if the client leaves first."""
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk, more = message.get("body", b""), message.get("more_body", False)
        size += len(chunk)
        if size > limit:
            raise too_large(size)
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(size: int) -> InputError:
    return InputError(
        f"payload of {size} bytes is over the limit",
        expected=f"a request body of at most {MAX_PAYLOAD_BYTES} bytes ({MAX_PAYLOAD_BYTES // 2**20} MiB)",
        status=413,
    )


def parse_json(body: bytes) -> Any:
    # orjson is ~10x faster. What it refuses (NaN, lone surrogates, nesting past 1024) the standard parser
    # reads or explains, and it turns integers past 64 bits into floats, so long digit runs go there too.
    if _LONG_DIGIT_RUN.search(body) is None:
        with contextlib.suppress(orjson.JSONDecodeError):
            return orjson.loads(body)
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"malformed JSON: {error}", expected='a JSON object such as {"instances": [...]}') from None
    except ValueError:  # an integer literal past Python's 4300-digit conversion limit
        raise InputError(
            "the JSON body has a number with too many digits", expected="numbers of at most 4300 digits"
        ) from None
    except RecursionError:  # json's parser recurses per nesting level; a small body can nest deeper than the stack
        raise InputError(
            "the JSON body is nested too deeply", expected="images as nested lists of depth 2 or 3"
        ) from None


_LONG_DIGIT_RUN = re.compile(rb"\d{19}")


def _reject_constant(name: str) -> float:
    raise InputError(f"non-finite value {name} in the JSON body", expected="finite numbers 0–255")


def field(document: Any, name: str, expected: str) -> Any:
    if not isinstance(document, dict):
        raise InputError(f"the JSON body is a {type(document).__name__}, not an object", expected=expected)
    if name not in document:
        raise InputError(f"missing field {name!r}", expected=expected)
    return document[name]


def check_batch(instances: Any, expected: str, *, name: str = "instances") -> list:
    if not isinstance(instances, list):
        raise InputError(f"{name!r} is a {type(instances).__name__}, not a list", expected=expected)
    if not instances:
        raise InputError(f"empty batch: {name!r} has no items", expected=expected)
    if len(instances) > MAX_BATCH:
        raise InputError(
            f"batch of {len(instances)} {name} is over the limit of {MAX_BATCH}", expected=expected, status=413
        )
    return instances


def text_batch(items: Any, *, max_length: int, name: str = "instances") -> np.ndarray:
    """A list of strings (or TF Serving's {"b64": ...} objects) → an object array of UTF-8 bytes."""
    expected = f"{name!r}: a list of 1–{MAX_BATCH} strings, each at most {max_length} characters"
    check_batch(items, expected, name=name)
    return np.array(
        [_text(item, f"{name}[{index}]", max_length, expected) for index, item in enumerate(items)], dtype=object
    )


def _text(item: Any, where: str, max_length: int, expected: str) -> bytes:
    if isinstance(item, dict) and "b64" in item:
        data = b64_bytes(item, where)
        length = len(data.decode("utf-8", "replace"))
    elif isinstance(item, str):
        data, length = item.encode("utf-8", "surrogatepass"), len(item)
    elif isinstance(item, bytes):  # a gRPC string tensor's element
        data, length = item, len(item.decode("utf-8", "replace"))
    else:
        raise InputError(f"{where} is a {_json_type(item)}, not a string", expected=expected)
    if length > max_length:
        raise InputError(
            f"{where} has {length} characters, over the limit of {max_length}", expected=expected, status=413
        )
    return data


def integer_option(value: Any, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """A JSON integer (not a bool, not 2.5, not "3"), optionally within [low, high].

    3.0 is one: JSON has one kind of number, JSON Schema's "integer" takes it, and clients that write every
    number as a float (json.dumps of a NumPy value) send it.
    """
    expected = _option_expected(name, "an integer", low, high)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{name!r} is {_brief(value)}, not an integer", expected=expected)
    return _within(value, name, low, high, expected)


def number_option(value: Any, name: str, *, low: float, high: float) -> float:
    """A finite JSON number (integer or not; not a bool, not "0.5") within [low, high]."""
    expected = _option_expected(name, "a number", low, high)
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        # json reads 1e400 as inf; it is not a number anyone meant to send.
        raise InputError(f"{name!r} is {_brief(value)}, not a finite number", expected=expected)
    # Compared before float(): an integer too large for a float fails here instead of overflowing.
    return float(_within(value, name, low, high, expected))


def form_number(text: str, name: str, *, low: float, high: float) -> float:
    """A multipart form field holding a number as text ("0.5"), checked as `number_option` checks a JSON number."""
    expected = _option_expected(name, "a number", low, high)
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"form field {name!r} is {_brief(text)}, not a number", expected=expected) from None
    return number_option(value, name, low=low, high=high)


def boolean_option(value: Any, name: str) -> bool:
    """A JSON boolean: not 1, not "true", which a client meaning something else may have sent."""
    if not isinstance(value, bool):
        raise InputError(f"{name!r} is {_brief(value)}, not a boolean", expected=f"{name!r}: true or false")
    return value


def choice_option(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """One of a few fixed strings, such as a response format."""
    if not (isinstance(value, str) and value in choices):
        raise InputError(
            f"{name!r} is {_brief(value)}, not a known value",
            expected=f"{name!r}: one of {', '.join(map(repr, choices))}",
        )
    return value


def _option_expected(name: str, kind: str, low: float | None, high: float | None) -> str:
    return f"{name!r}: {kind}" + (
        f" from {_shown(low)} to {_shown(high)}" if low is not None and high is not None else ""
    )


def _shown(number: float) -> str:
    return str(number) if isinstance(number, int) else f"{number:g}"


def _within(value: Number, name: str, low: float | None, high: float | None, expected: str) -> Number:
    if (low is not None and value < low) or (high is not None and value > high):
        raise InputError(f"{name!r} is {_brief(value)}, out of range", expected=expected)
    return value


def _brief(value: Any, limit: int = 40) -> str:
    """A client's value as JSON, shortened: messages quote it, and it can be a 4000-digit number."""
    text = json.dumps(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def _json_type(value: Any) -> str:
    names = {
        dict: "object",
        list: "list",
        str: "string",
        bool: "boolean",
        int: "number",
        float: "number",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


def pixel_batch(instances: Any, *, dtype: str = "float32", booleans_possible: bool = True) -> np.ndarray:
    """Instances of nested pixel lists → one (N, H, W, C) array, every value a finite number in 0–255.

    `booleans_possible=False` (the JSON body has no true/false token: `may_hold_booleans`) lets a batch
    that NumPy reads as numbers skip the walk over every value that tells JSON booleans from numbers.
    """
    expected = f"'instances': a list of 1–{MAX_BATCH} images, each {PIXEL_INSTANCE}"
    check_batch(instances, expected)
    batch = None if booleans_possible else _numeric_batch(instances)
    if batch is None:  # checked image by image, so that an error names the instance at fault
        images = [_pixel_array(instance, index) for index, instance in enumerate(instances)]
        shapes = {image.shape for image in images}
        if len(shapes) > 1:
            raise InputError(
                f"instances have different shapes {sorted(shapes)}",
                expected=(
                    "every image in one request to have the same shape "
                    "(send differently sized images in separate requests)"
                ),
            )
        batch = np.stack(images)
    if dtype == "uint8":
        if not np.array_equal(batch, np.round(batch)):
            raise InputError("non-integer pixel values for a uint8 signature", expected="integers 0–255")
        return batch.astype(np.uint8)
    return batch


def pixel_tensor(batch: np.ndarray, name: str) -> np.ndarray:
    """A gRPC client's N×H×W×C pixel tensor, checked as JSON pixels are: its size, channels, and values.

    The messages are only written for a tensor that fails: a small call's checks are on every call's path."""
    count, height, width, channels = batch.shape
    if count > MAX_BATCH:
        raise InputError(
            f"batch of {count} images is over the limit of {MAX_BATCH}", expected=_tensor_expected(name), status=413
        )
    if count == 0:
        raise InputError(f"empty batch: {name!r} has no images", expected=_tensor_expected(name))
    if channels not in (1, 3, 4):
        raise InputError(
            f"{name!r} has {channels} channels (shape {list(batch.shape)})", expected=_tensor_expected(name)
        )
    _check_size(height, width, f"{name!r} (shape {list(batch.shape)})")
    if batch.dtype == np.uint8:
        return batch
    low, high = batch.min(), batch.max()
    if not (low >= 0 and high <= 255):  # NaN fails both comparisons
        if batch.dtype.kind == "f" and not np.isfinite(batch).all():
            raise InputError(f"{name!r} contains NaN or infinite values", expected="finite numbers 0–255")
        raise InputError(
            f"{name!r} has values outside 0–255 (min {low:g}, max {high:g})", expected=_tensor_expected(name)
        )
    return batch


def _tensor_expected(name: str) -> str:
    return f"{name!r}: a batch of 1–{MAX_BATCH} images, N×H×W×C with C in 1, 3 or 4, values 0–255"


def may_hold_booleans(body: bytes) -> bool:
    """False when a JSON body cannot contain a boolean: it has neither a `true` nor a `false` token."""
    return b"true" in body or b"false" in body


def _numeric_batch(instances: list) -> np.ndarray | None:
    """The whole batch in one conversion when it is a valid, boolean-free batch of images; else None."""
    try:
        batch = np.asarray(instances)
    except (ValueError, TypeError, OverflowError):
        return None
    if batch.dtype.kind not in "iuf" or batch.ndim not in (3, 4):
        return None
    if batch.ndim == 3:
        batch = batch[..., np.newaxis]
    _, height, width, channels = batch.shape
    if channels not in (1, 3, 4) or not (0 < height <= MAX_IMAGE_SIDE and 0 < width <= MAX_IMAGE_SIDE):
        return None
    if height * width > MAX_IMAGE_PIXELS or (batch.dtype.kind == "f" and not np.isfinite(batch).all()):
        return None
    if batch.min() < 0 or batch.max() > 255:
        return None
    return batch.astype(np.float32)


def _pixel_array(instance: Any, index: int) -> np.ndarray:
    where = f"instance {index}"
    try:
        array = np.asarray(instance, dtype=np.float32)
    except (ValueError, TypeError):
        raise InputError(
            f"{where} is not a rectangular array of numbers (ragged rows or non-numeric values)",
            expected=PIXEL_INSTANCE,
        ) from None
    except OverflowError:  # an integer too large for a float, such as 1 followed by 400 zeros
        raise InputError(
            f"{where} has values outside 0–255 (a number too large for a float)", expected="pixel values 0–255"
        ) from None
    if array.dtype == object or _has_non_numbers(instance):
        raise InputError(f"{where} contains non-numeric values", expected=PIXEL_INSTANCE)
    if array.ndim == 2:
        array = array[..., np.newaxis]
    if array.ndim != 3:
        raise InputError(f"{where} has rank {array.ndim} (shape {list(array.shape)})", expected=PIXEL_INSTANCE)
    height, width, channels = array.shape
    if channels not in (1, 3, 4):
        raise InputError(f"{where} has {channels} channels (shape {list(array.shape)})", expected=PIXEL_INSTANCE)
    _check_size(height, width, where)
    if not np.all(np.isfinite(array)):
        raise InputError(f"{where} contains NaN or infinite values", expected="finite numbers 0–255")
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 255:
        raise InputError(f"{where} has values outside 0–255 (min {low:g}, max {high:g})", expected="pixel values 0–255")
    return array


def _has_non_numbers(instance: Any) -> bool:
    # numpy silently turns True into 1.0 and "7" into 7.0; a pixel must be a JSON number.
    stack = [instance]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, bool) or not isinstance(item, (int, float)):
            return True
    return False


def _check_size(height: int, width: int, where: str) -> None:
    if height < 1 or width < 1:
        raise InputError(f"{where} is empty ({height}×{width})", expected="an image at least 1×1")
    if max(height, width) > MAX_IMAGE_SIDE or height * width > MAX_IMAGE_PIXELS:
        raise InputError(
            f"{where} is {width}×{height} pixels, over the limit",
            expected=f"images at most {MAX_IMAGE_SIDE} pixels on a side",
            status=413,
        )


class DecodeBudget:
    """The decoded bytes a request's images may take, spent image by image from their headers, before any
    pixel is decoded: a few small files that decode to gigabytes stop here."""

    def __init__(self, limit: int | None = None):
        self.limit = MAX_DECODED_REQUEST_BYTES if limit is None else limit
        self.spent = 0

    def spend(self, size: int, where: str) -> None:
        if self.spent + size > self.limit:
            raise InputError(
                f"{where} would bring the request's decoded images to {_mib(self.spent + size)}, over the limit",
                expected=f"at most {_mib(self.limit)} of decoded images in one request (width × height × channels)",
                status=413,
            )
        self.spent += size


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def _decoded_channels(image: Image.Image) -> int:
    # TensorFlow decodes a palette image to RGB or RGBA: count the larger.
    return 4 if image.mode in ("P", "PA") else len(image.getbands())


def encoded_image(data: bytes, where: str = "the uploaded image", budget: DecodeBudget | None = None) -> bytes:
    """Check that `data` is a complete, single-frame PNG/JPEG/GIF/BMP whose decoded size fits the per-image limit
    and `budget` (the request's; a budget of its own when None); return it unchanged."""
    expected = f"a PNG, JPEG, GIF or BMP file at most {MAX_IMAGE_SIDE} pixels on a side"
    if not data:
        raise InputError(f"{where} is empty", expected=expected)
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in IMAGE_FORMATS:
                raise InputError(f"{where} is a {image.format} image", expected=expected, status=415)
            # Everything below reads headers only, so a decompression bomb stops here. Counting frames skips
            # over their data without decoding it.
            _check_size(image.height, image.width, where)
            if (frames := getattr(image, "n_frames", 1)) > 1:
                raise InputError(
                    f"{where} is animated ({frames} frames); the model takes one picture, and decoding every "
                    "frame of a GIF costs them all",
                    expected="a single-frame image: save one frame as PNG, JPEG, BMP or GIF",
                    status=415,
                )
            decoded = image.width * image.height * _decoded_channels(image)
            if decoded > MAX_DECODED_IMAGE_BYTES:
                raise InputError(
                    f"{where} decodes to {_mib(decoded)} ({image.width}×{image.height}×{_decoded_channels(image)})"
                    ", over the limit",
                    expected=f"images of at most {_mib(MAX_DECODED_IMAGE_BYTES)} decoded (width × height × channels)",
                    status=413,
                )
            (budget or DecodeBudget()).spend(decoded, where)
            # A damaged file stops here, not in the graph, where it would fail its whole batch (whose requests
            # are then retried one by one). A PNG's chunks carry checksums: checking them catches truncation
            # and damage without decoding the pixels, which the graph decodes again. Other formats have none,
            # so decoding them is the check.
            if image.format == "PNG":
                image.verify()
            else:
                image.load()
    except InputError:
        raise
    except Image.DecompressionBombError as error:  # Pillow refuses huge headers itself, before our size check runs
        raise InputError(f"{where} is over the limit: {error}", expected=expected, status=413) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as error:
        raise InputError(f"{where} could not be decoded: {error}", expected=expected) from None
    return data


def b64_bytes(value: Any, where: str) -> bytes:
    """TF Serving's convention for binary strings: {"b64": "<base64>"}."""
    if not (isinstance(value, dict) and isinstance(value.get("b64"), str)):
        raise InputError(f'{where} is not a {{"b64": ...}} object', expected='binary values as {"b64": "<base64>"}')
    try:
        return base64.b64decode(value["b64"], validate=True)
    except ValueError:
        raise InputError(f"{where} is not valid base64", expected="standard base64") from None


def b64_image(value: Any, where: str, budget: DecodeBudget | None = None) -> bytes:
    return encoded_image(b64_bytes(value, where), where, budget)
