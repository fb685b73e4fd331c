"""serving.forms: multipart bodies parsed from memory, with Starlette's field semantics and limits."""

import pytest

from serving.forms import parse_form
from serving.inputs import InputError

BOUNDARY = "b0undary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def body(*parts: tuple[str, str | None, bytes], boundary: str = BOUNDARY) -> bytes:
    """A form of (name, filename or None for a text field, data) parts."""
    encoded = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        content_type = "Content-Type: application/octet-stream\r\n" if filename else ""
        encoded += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n{content_type}\r\n".encode() + data + b"\r\n"
    return encoded + f"--{boundary}--\r\n".encode()


def test_a_file_and_text_fields_are_told_apart_by_the_filename():
    png = bytes(range(256)) * 40 + b"\r\n--not-the-boundary\r\n"  # binary data, CRLFs and dashes included
    form = parse_form(
        body(("image", "scene.png", png), ("score_threshold", None, b"0.25"), ("format", None, b"png")),
        CONTENT_TYPE,
        file_field="image",
    )
    assert form.files == {"image": png}
    assert form.fields == {"score_threshold": "0.25", "format": "png"}


def test_an_empty_file_and_an_empty_field_are_kept():
    form = parse_form(body(("image", "a.png", b""), ("note", None, b"")), CONTENT_TYPE, file_field="image")
    assert form.files == {"image": b""}
    assert form.fields == {"note": ""}


def test_text_fields_are_read_in_the_declared_charset():
    form = parse_form(
        body(("label", None, "café".encode("latin-1"))), CONTENT_TYPE + "; charset=latin-1", file_field="image"
    )
    assert form.fields == {"label": "café"}


@pytest.mark.parametrize(
    ("data", "content_type", "problem"),
    [
        (body(("image", "a.png", b"x")), "multipart/form-data", "the Content-Type header has no boundary"),
        (body(("image", "a.png", b"x"), ("other", "b.png", b"y")), CONTENT_TYPE, "more than 1 file(s)"),
        (body(*[(f"f{index}", None, b"1") for index in range(17)]), CONTENT_TYPE, "more than 16 text field(s)"),
        (body(*[("same", None, b"1")] * 17), CONTENT_TYPE, "more than 16 text field(s)"),
        (
            f"--{BOUNDARY}\r\nContent-Disposition: form-data\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode(),
            CONTENT_TYPE,
            'a part\'s Content-Disposition has no "name"',
        ),
        (b"not a multipart body", CONTENT_TYPE, "Expected boundary character"),
        (f"--{BOUNDARY}\r\nno colon here\r\n\r\nx\r\n".encode(), CONTENT_TYPE, "invalid character"),
    ],
    ids=[
        "no-boundary",
        "two-files",
        "seventeen-fields",
        "seventeen-parts-one-name",
        "no-name",
        "garbage",
        "bad-header",
    ],
)
def test_a_malformed_or_oversized_form_is_a_400_that_says_what_is_expected(data, content_type, problem):
    with pytest.raises(InputError) as caught:
        parse_form(data, content_type, file_field="image")
    assert caught.value.status == 400
    assert caught.value.message.startswith("malformed multipart body: ")
    assert problem in caught.value.message
    assert caught.value.expected == ("a multipart/form-data body: a file in field 'image' and at most 16 text fields")


def test_a_body_cut_before_its_closing_boundary_yields_only_the_complete_parts():
    whole = body(("format", None, b"json"), ("image", "a.png", b"x" * 100))
    form = parse_form(whole[: whole.index(b"x" * 100) + 50], CONTENT_TYPE, file_field="image")
    assert form.fields == {"format": "json"}
    assert form.files == {}  # the route answers "missing file field 'image'"
