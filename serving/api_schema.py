"""The OpenAPI document's request bodies, responses and examples (served at /openapi.json, shown at /docs).

The routes read their raw bodies themselves (orjson, and error messages that say exactly what was wrong:
`serving/inputs.py`), so FastAPI sees no body parameter to describe. The decorators declare the bodies and the
responses instead, with the schemas here. What depends on the served models (an image's shape, the characters
per text, the beam width) is a component filled in when the document is asked for (`components`), so the
document describes the models served then. The limits are `serving/inputs.py`'s, so that a request the
schema allows is one the handler accepts, and one it forbids is refused with a 4xx.
"""

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from serving import inputs

JSON = "application/json"
MULTIPART = "multipart/form-data"
Schema = dict[str, Any]


class ErrorBody(BaseModel):
    """Every error answer: what was wrong, and what would have been accepted (`inputs.InputError.body`)."""

    error: str = Field(description="what was wrong with the request, or what went wrong in the server")
    expected: str = Field("", description="what would have been accepted; absent from 500 and 504 answers")


ERROR_DESCRIPTIONS = {
    400: "The request is malformed or a value is out of range; `expected` says what is accepted.",
    401: "The admin API needs `Authorization: Bearer <token>`.",
    403: "A wrong admin token, or the admin API is off (no MODELSERVICE_ADMIN_TOKEN).",
    404: "No such model, version or label is served.",
    409: "The label cannot point at that version now.",
    413: "Over a limit: body size, images or texts per request, image size, characters per text.",
    415: "An unsupported content type, image format, or an animated image.",
    500: "An unexpected error in the server (a bug): `error` names its kind.",
    503: "Over capacity: too many requests in flight. Retry after `Retry-After` seconds.",
    504: "The request took longer than the server's timeout (MODELSERVICE_TIMEOUT).",
}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """FastAPI `responses=` for these error statuses and 500, each with the one error body."""
    return {
        status: {"model": ErrorBody, "description": ERROR_DESCRIPTIONS[status]}
        | ({"headers": RETRY_AFTER} if status == 503 else {})
        for status in sorted({*statuses, 500})
    }


# What a route that looks a model up can answer, and an inference route in front of the web framework: the
# fast path (`serving/fast_path.py`) answers 503 past the requests in flight and 504 past the timeout.
LOOKUP_ERRORS = (400, 404)
INFERENCE_ERRORS = (*LOOKUP_ERRORS, 413, 503, 504)


def ref(component: str) -> Schema:
    return {"$ref": f"#/components/schemas/{component}"}


def json_body(component: str, *, example: str) -> dict[str, Any]:
    """`openapi_extra=` declaring a required JSON body of `component`, with the named component example."""
    return {"requestBody": {"required": True, "content": {JSON: _media(component, example)}}}


def json_or_upload_body(component: str, upload: str, *, example: str, description: str) -> dict[str, Any]:
    """The same, or a multipart form of schema `upload`."""
    content = {JSON: _media(component, example), MULTIPART: {"schema": ref(upload)}}
    return {"requestBody": {"required": True, "description": description, "content": content}}


def _media(component: str, example: str) -> dict[str, Any]:
    # The example is a component too: it depends on the served model (an image of the shape it takes).
    return {"schema": ref(component), "examples": {example: {"$ref": f"#/components/examples/{example}"}}}


@dataclass(frozen=True)
class ServedLimits:
    """What the default model of each task takes, for the schemas (None: no model of that task is served)."""

    classifier_shape: tuple[int, int, int] | None = None
    detector_shape: tuple[int, int, int] | None = None
    max_text_length: int | None = None
    max_beam_width: int | None = None


# Without a served model of a task the route answers 404 whatever the body; the schema keeps a shape to show.
FALLBACK_SHAPE = (8, 8, 1)
FALLBACK_TEXT_LENGTH = 64
FALLBACK_BEAM_WIDTH = 8


def pixel_image(shape: tuple[int, int, int]) -> Schema:
    """An image as nested lists of 0–255 pixel values, H×W×C (or H×W for one channel)."""
    height, width, channels = shape
    pixel = {"type": "number", "minimum": 0, "maximum": 255}
    rows = _exactly(height, _exactly(width, pixel if channels == 1 else _exactly(channels, pixel)))
    if channels != 1:
        return rows
    return {"anyOf": [rows, _exactly(height, _exactly(width, _exactly(1, pixel)))]}


def _exactly(count: int, items: Schema) -> Schema:
    return {"type": "array", "items": items, "minItems": count, "maxItems": count}


def instances(image: Schema, description: str) -> Schema:
    return {
        "type": "array",
        "items": image,
        "minItems": 1,
        "maxItems": inputs.MAX_BATCH,
        "description": description,
    }


def unit_number(description: str) -> Schema:
    return {"type": "number", "minimum": 0, "maximum": 1, "description": description}


DETECT_FORMAT = {
    "type": "string",
    "enum": ["json", "png"],
    "default": "json",
    "description": "json: the boxes as JSON; png: one image returned with its boxes drawn",
}
IMAGE_FILE = {
    "type": "string",
    "format": "binary",
    "description": f"a PNG, JPEG, GIF or BMP file, one frame, at most {inputs.MAX_IMAGE_SIDE} pixels on a side",
}


def image_upload(*, with_options: bool) -> Schema:
    properties: Schema = {"image": IMAGE_FILE}
    if with_options:  # form fields are text: the thresholds as numbers written out
        properties |= {
            "score_threshold": {"type": "string", "pattern": "^(0(\\.[0-9]+)?|1(\\.0+)?)$"},
            "iou_threshold": {"type": "string", "pattern": "^(0(\\.[0-9]+)?|1(\\.0+)?)$"},
            "format": DETECT_FORMAT,
        }
    return {"type": "object", "required": ["image"], "properties": properties}


def components(limits: ServedLimits) -> dict[str, dict[str, Any]]:
    """The model-dependent schemas and examples the decorators refer to."""
    classifier = limits.classifier_shape or FALLBACK_SHAPE
    detector = limits.detector_shape or FALLBACK_SHAPE
    max_length = limits.max_text_length or FALLBACK_TEXT_LENGTH
    max_beam = limits.max_beam_width or FALLBACK_BEAM_WIDTH
    schemas = {
        "ClassifyRequest": {
            "type": "object",
            "required": ["instances"],
            "properties": {
                "instances": instances(
                    pixel_image(classifier),
                    f"images of the default classifier's shape {_shape(classifier)} "
                    "(other sizes are resized in the model, but JSON Schema cannot say 'any rectangle')",
                )
            },
        },
        "DetectRequest": {
            "type": "object",
            "required": ["instances"],
            "properties": {
                "instances": instances(
                    pixel_image(detector),
                    f"images of the default detector's shape {_shape(detector)} (any other size is letterboxed)",
                ),
                "score_threshold": unit_number("drop detections scoring at most this (default: the model's)"),
                "iou_threshold": unit_number("overlap above which the weaker of two boxes is dropped"),
                "format": DETECT_FORMAT,
            },
        },
        "TranslateRequest": {
            "type": "object",
            "required": ["texts"],
            "properties": {
                "texts": {
                    "type": "array",
                    "items": {"type": "string", "maxLength": max_length},
                    "minItems": 1,
                    "maxItems": inputs.MAX_BATCH,
                },
                "beam_width": {"type": "integer", "minimum": 1, "maximum": max_beam},
                "attention": {
                    "type": "boolean",
                    "default": False,
                    "description": "also answer the attention behind each best answer (versions exported "
                    "with it; others answer 400)",
                },
            },
        },
        "ImageUpload": image_upload(with_options=False),
        "DetectUpload": image_upload(with_options=True),
    }
    examples = {
        "digit": {"summary": "one image for the default classifier", "value": {"instances": [_blank(classifier)]}},
        "scene": {"summary": "one image for the default detector", "value": {"instances": [_blank(detector)]}},
        "dates": {"summary": "two dates", "value": {"texts": ["March 4, 1999", "20.01.2023"], "beam_width": 3}},
    }
    return {"schemas": schemas, "examples": examples}


def _shape(shape: tuple[int, int, int]) -> str:
    return "×".join(map(str, shape))


def _blank(shape: tuple[int, int, int]) -> list:
    height, width, channels = shape
    pixel: Any = 0 if channels == 1 else [0] * channels
    return [[pixel] * width for _ in range(height)]


# Which model and version a task route uses: ?model= (else the first of the task), ?version= or ?label= (not both;
# neither: the highest version). One object, exploded into those query keys, so the schema can say "not both".
TASK_QUERY = {
    "parameters": [
        {
            "name": "selection",
            "in": "query",
            "style": "form",
            "explode": True,
            "description": "?model=NAME, and ?version=N or ?label=LABEL (not both)",
            "schema": {
                "type": "object",
                "properties": {
                    "model": {"type": "string", "description": "a served model of this route's task"},
                    "version": {"type": "string", "pattern": "^[0-9]+$"},
                    "label": {"type": "string", "pattern": "^[a-zA-Z0-9_]+$"},
                },
                "not": {"required": ["version", "label"]},
            },
        }
    ]
}
PATH_PATTERNS = {"version": "^[0-9]+$", "label": "^[a-zA-Z0-9_]+$"}  # model_config.LABEL_PATTERN

PREDICT_REQUEST = {
    "type": "object",
    "description": (
        "TF Serving's predict request: rows (`instances`) or columns (`inputs`) of the signature's inputs, "
        'as GET /v1/models/{name}/metadata lists them; binary strings as {"b64": ...}'
    ),
    "properties": {
        "signature_name": {"type": "string", "default": "serving_default"},
        "instances": {"type": "array", "minItems": 1, "maxItems": inputs.MAX_BATCH},
        "inputs": {},
    },
    "oneOf": [{"required": ["instances"]}, {"required": ["inputs"]}],
}
PREDICT = {
    "responses": errors(*INFERENCE_ERRORS, 415),
    "openapi_extra": {
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": PREDICT_REQUEST, "example": {"instances": [_blank(FALLBACK_SHAPE)]}}},
        }
    },
}
SECURITY_SCHEMES = {
    "adminToken": {"type": "http", "scheme": "bearer", "description": "MODELSERVICE_ADMIN_TOKEN (the admin API only)"}
}
ADMIN_OFF = "The admin API is off on this server (no MODELSERVICE_ADMIN_TOKEN): every request gets 403."
# A path no route matches, such as a name with a line break in it, gets the plain-text 404 of BentoML's router.
UNROUTED = {"text/plain": {"schema": {"type": "string", "example": "Not Found"}}}


def completed(document: dict[str, Any], limits: ServedLimits, *, admin_on: bool) -> dict[str, Any]:
    """FastAPI's document with the served models' components, and without what FastAPI derives wrongly here.

    The admin routes need a bearer token where the admin API is on; where it is off no header makes a difference.
    """
    for path, operations in document["paths"].items():
        for operation in operations.values():
            _fix_parameters(operation)
            # FastAPI's request validation never runs on these routes (their parameters are plain strings, their
            # bodies read raw): it cannot answer 422.
            operation["responses"].pop("422", None)
            if "{" in path:
                operation["responses"]["404"]["content"] |= UNROUTED
            if path.startswith("/admin/"):
                _admin(operation, admin_on)
    found = document.setdefault("components", {})
    schemas = found.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    model_dependent = components(limits)
    schemas |= model_dependent["schemas"]
    found["examples"] = model_dependent["examples"]
    found["securitySchemes"] = SECURITY_SCHEMES
    return document


def _admin(operation: dict[str, Any], admin_on: bool) -> None:
    if admin_on:
        operation["security"] = [{"adminToken": []}]
    else:
        operation["description"] = f"{operation.get('description', '')}\n\n{ADMIN_OFF}".strip()


def _fix_parameters(operation: dict[str, Any]) -> None:
    """One function serves /v1/models/{name}, …/versions/{version} and …/labels/{label}: where the path has no
    `version` or `label`, FastAPI documents the function's as query parameters. They are not part of the API (the
    fast path ignores them on :predict): the document names them in the path only, as a version number and a
    label (model_config.LABEL_PATTERN)."""
    kept = []
    for parameter in operation.get("parameters", []):
        name = parameter["name"]
        if name in PATH_PATTERNS and parameter["in"] == "query":
            continue
        if name in PATH_PATTERNS:
            parameter["schema"] = {"type": "string", "pattern": PATH_PATTERNS[name]}
        kept.append(parameter)
    if "parameters" in operation:
        operation["parameters"] = kept
