"""Schemathesis hooks for this service (schemathesis.toml loads them for `st run`; test_openapi.py imports them).

A multipart upload's `image` is a file: its schema says "binary", and no JSON Schema can say "bytes that decode
as a PNG". Schemathesis fills it with random bytes, which the routes rightly refuse (400, "could not be decoded"),
so a request schemathesis means as valid gets a real PNG instead. Requests meant as invalid keep their bytes.
"""

import io

import schemathesis
from PIL import Image


def _png(side: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (side, side), 0).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png()


@schemathesis.hook
def map_case(context: schemathesis.HookContext, case: schemathesis.Case) -> schemathesis.Case:
    meant_valid = case.meta is not None and case.meta.generation.mode.is_positive
    upload = (case.media_type or "").startswith("multipart/") and isinstance(case.body, dict) and "image" in case.body
    if meant_valid and upload:
        case.body["image"] = PNG
    return case
