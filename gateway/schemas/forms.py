"""Form fields -> typed values (the image `Params`), with background_api.txt's errors.

The fields, their ranges and choices are gateway.schemas.requests.ImageForm (also what the OpenAPI
document shows); this module turns its validation errors into the document's shapes. A
bg_color-style colour that does not parse is 400 with the document's exact `detail`; a number
that does not parse is 422 "Invalid request data" (the document's generic 422); a number out of
range or an unknown choice is 400 with a `message` naming the field and what it accepts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, TypeVar, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from gateway.errors import BgApiError
from gateway.images.params import Params
from gateway.schemas.requests import RGB_FIELDS, HdImageForm

BG_COLOR_ERROR = "bg_color must be in format 'R,G,B' (e.g., '255,0,0')"
INVALID_REQUEST = {"message": "Invalid request data"}
FormT = TypeVar("FormT", bound=BaseModel)
_RANGE_ERRORS = frozenset({"greater_than_equal", "less_than_equal", "finite_number"})
_CHOICE_ERRORS = frozenset({"literal_error", "enum"})


def _color_error(field: str) -> BgApiError:
    # The document fixes this wording for bg_color; the gradient colours share the format.
    return BgApiError(400, {"detail": BG_COLOR_ERROR.replace("bg_color", field)})


def _choices(model: type[BaseModel], field: str) -> tuple[str, ...]:
    """The values of a Literal field (or of an optional one: Literal | None)."""
    annotation = model.model_fields[field].annotation
    if get_origin(annotation) is not Literal:
        annotation = next(arg for arg in get_args(annotation) if get_origin(arg) is Literal)
    return tuple(str(value) for value in get_args(annotation))


def _bounds(model: type[BaseModel], field: str) -> tuple[float, float]:
    lo, hi = float("-inf"), float("inf")
    for rule in model.model_fields[field].metadata:
        if isinstance(rule, annotated_types.Ge):
            lo = float(rule.ge)  # type: ignore[arg-type]
        elif isinstance(rule, annotated_types.Le):
            hi = float(rule.le)  # type: ignore[arg-type]
    return lo, hi


def form_error(model: type[BaseModel], error: ErrorDetails, *, key: str = "message") -> BgApiError:
    """One pydantic error on a form field -> the background document's error (400 or 422)."""
    field = str(error["loc"][0]) if error["loc"] else ""
    if field in RGB_FIELDS:
        return _color_error(field)
    if error["type"] in _CHOICE_ERRORS:
        return BgApiError(400, {key: f"{field} must be one of: {', '.join(_choices(model, field))}"})
    if error["type"] in _RANGE_ERRORS:
        lo, hi = _bounds(model, field)
        kind = "an integer" if model.model_fields[field].annotation is int else "a number"
        return BgApiError(400, {key: f"{field} must be {kind} between {lo:g} and {hi:g}"})
    if error["type"] == "string_pattern_mismatch":  # the URL fields (colours are handled above)
        return BgApiError(400, {key: f"{field} must be an http(s) URL"})
    if error["type"] == "string_too_long":
        limit = (error.get("ctx") or {}).get("max_length")
        return BgApiError(400, {key: f"{field} must be at most {limit} characters"})
    return BgApiError(422, INVALID_REQUEST)


def validate_form(model: type[FormT], form: Mapping[str, str], *, key: str = "message") -> FormT:
    """`form` validated by `model`; raises the first error as form_error does."""
    try:
        return model.model_validate({name: value.strip() for name, value in form.items()})
    except ValidationError as exc:
        raise form_error(model, exc.errors()[0], key=key) from None


def parse_params(form: Mapping[str, str], operation: str) -> Params:
    """Only fields the caller sent override the defaults; unknown fields are ignored.

    Raises BgApiError: 400 for an unknown choice, a colour or a number out of range, 422 for a
    number that does not parse."""
    parsed = validate_form(HdImageForm, {**form, "operation": operation})
    return parsed.params(parsed.operation)
