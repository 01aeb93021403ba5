"""Request bodies read and parsed within bounds fixed before any byte is parsed.

A JSON endpoint needs a kilobyte; without bounds a 50 MB body costs the gateway hundreds of MB, a
100,000-deep array exhausts the parser's recursion and a 5,000-digit integer trips CPython's
int-conversion guard (both were 500s). Here the body is read up to a byte limit (413 past it,
without reading the rest), its nesting depth and element count are counted on the raw text by a
linear scan before `json.loads` runs, and integers longer than a digit limit are refused by the
parser hook. Multipart forms count their parts and the bytes of their text fields (`FormBudget`).
Each violation raises `BodyTooLarge` with a sentence for the user; routes answer it as 413 in
their own error family.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, web


class BodyTooLarge(Exception):
    """A bound was exceeded; `str(exc)` is the user-facing sentence."""


class FieldTooLarge(BodyTooLarge):
    """One text field of a form is over its bound (the rest of the form may be fine)."""


@dataclass(frozen=True)
class JsonLimits:
    max_bytes: int = 64 * 1024
    max_depth: int = 32
    max_elements: int = 10_000  # values in arrays plus members of objects, all levels
    max_int_digits: int = 100


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The whole body, or BodyTooLarge as soon as it is longer than `max_bytes` (declared or sent)."""
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise BodyTooLarge(f"The request body is {declared} bytes; at most {max_bytes} are accepted.")
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(64 * 1024):
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLarge(f"The request body is over the {max_bytes}-byte limit.")
        chunks.append(chunk)
    return b"".join(chunks)


def check_shape(text: str, limits: JsonLimits) -> None:
    """Depth and element count of JSON `text`, counted without parsing (strings skipped)."""
    depth = 0
    elements = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            elements += 1
            if depth > limits.max_depth:
                raise BodyTooLarge(f"The JSON body nests deeper than {limits.max_depth} levels.")
        elif char in "]}":
            depth -= 1
        elif char == ",":
            elements += 1
            if elements > limits.max_elements:
                raise BodyTooLarge(f"The JSON body holds more than {limits.max_elements} elements.")


def _bounded_int(limits: JsonLimits) -> Any:
    def parse_int(digits: str) -> int:
        if len(digits.lstrip("-")) > limits.max_int_digits:
            raise BodyTooLarge(f"The JSON body holds an integer longer than {limits.max_int_digits} digits.")
        return int(digits)

    return parse_int


def _not_json(name: str) -> Any:
    # Python's json reads NaN, Infinity and -Infinity, which RFC 8259 JSON does not have
    raise ValueError(f"{name} is not a JSON value")


def loads(raw: bytes, limits: JsonLimits) -> Any:
    """Parse `raw` within `limits`; raises BodyTooLarge, or ValueError when it is not JSON
    (RFC 8259: NaN and Infinity included)."""
    text = raw.decode("utf-8")  # UnicodeDecodeError is a ValueError
    check_shape(text, limits)
    return json.loads(text, parse_int=_bounded_int(limits), parse_constant=_not_json)


async def read_json(request: web.Request, limits: JsonLimits) -> Any:
    """The body parsed as JSON within `limits`: BodyTooLarge, or ValueError when not JSON."""
    return loads(await read_body(request, limits.max_bytes), limits)


def field_label(name: str | None) -> str:
    """A client-chosen field name as quoted in an error: the API's own names as they are, anything
    else (long, odd characters) not echoed."""
    if name and len(name) <= 40 and name.replace("_", "").isascii() and name.replace("_", "").isalnum():
        return f"'{name}'"
    return "(unnamed or unusual name)"


@dataclass
class FormBudget:
    """Counts the parts and text bytes of one form; every part passes `part()` before it is read."""

    max_parts: int = 32
    max_text_bytes: int = 64 * 1024
    parts: int = 0
    text_bytes: int = 0

    def part(self) -> None:
        self.parts += 1
        if self.parts > self.max_parts:
            raise BodyTooLarge(f"The form has more than {self.max_parts} parts.")

    def count_text(self, size: int) -> None:
        """`size` more bytes of text fields (read by the caller within its own field bound)."""
        self.text_bytes += size
        if self.text_bytes > self.max_text_bytes:
            raise BodyTooLarge(f"The form's text fields are over the {self.max_text_bytes}-byte limit.")

    async def text(self, part: BodyPartReader, max_field_bytes: int) -> str:
        """A text field, read only up to its bound: FieldTooLarge past `max_field_bytes`,
        BodyTooLarge past the form's total of text bytes."""
        raw = bytearray()
        while chunk := await part.read_chunk(8192):
            raw += chunk
            if len(raw) > max_field_bytes:
                name = field_label(part.name)
                raise FieldTooLarge(f"Form field {name} is over the {max_field_bytes}-byte limit.")
            if self.text_bytes + len(raw) > self.max_text_bytes:
                raise BodyTooLarge(f"The form's text fields are over the {self.max_text_bytes}-byte limit.")
        self.text_bytes += len(raw)
        return raw.decode("utf-8", errors="replace")
