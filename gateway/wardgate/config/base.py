"""The base of every policy model: camelCase, closed, frozen, with secret-field marking."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel

POLICY_DIR_CONTEXT = "policy_dir"
"""Validation-context key holding the directory of the policy file being loaded: relative
file references in a policy resolve against it, not against the working directory (a
ConfigMap mounts the policy and its files side by side). Symlinks are kept, so a path keeps
following the ConfigMap's ``..data`` link."""


class SpecModel(BaseModel):
    """Base for every ``…Spec`` model.

    Contract: field names are camelCase in documents (Envoy field names in Kubernetes style),
    unknown fields are an error (a typo never silently weakens a policy), instances are
    immutable, and Python code builds them with ``model_validate`` on camelCase dicts.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=False,
        serialize_by_alias=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
    )


class _SecretMarker:
    """Metadata marking a field whose value never leaves the process (config_dump, logs)."""

    def __repr__(self) -> str:
        return "SECRET"


SECRET = _SecretMarker()
"""Put in ``Annotated[..., SECRET]`` to have :func:`redacted_dump` replace the value."""

REDACTED = "[redacted]"


def _is_secret(metadata: list[Any]) -> bool:
    return any(item is SECRET for item in metadata)


def redacted_dump(model: BaseModel) -> dict[str, Any]:
    """Dump ``model`` by alias in JSON mode with every field marked :data:`SECRET` replaced."""
    data = model.model_dump(mode="json", by_alias=True)
    _redact(model, data)
    return data


def _redact(model: BaseModel, data: dict[str, Any]) -> None:
    for name, info in type(model).model_fields.items():
        key = info.alias or name
        value = getattr(model, name)
        if value is None or key not in data:
            continue
        if _is_secret(info.metadata):
            data[key] = REDACTED
        elif isinstance(value, BaseModel):
            _redact(value, data[key])
        elif isinstance(value, list | tuple):
            for item, dumped in zip(value, data[key], strict=False):
                if isinstance(item, BaseModel):
                    _redact(item, dumped)
        elif isinstance(value, dict):
            for item_key, item in value.items():
                if isinstance(item, BaseModel):
                    _redact(item, data[key][item_key])


# --- durations ------------------------------------------------------------------------

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
DURATION_PATTERN = r"^[0-9]+(\.[0-9]+)?(ms|s|m|h)$"


def parse_duration(value: object) -> object:
    """Parse ``"250ms"``, ``"5s"``, ``"1.5s"``, ``"2m"``, ``"1h"`` (Envoy's protobuf Duration
    JSON form, plus ms/m/h) into seconds. Bare numbers are refused: a unit must be explicit."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError("a duration is a string with a unit, for example '5s' or '250ms'")
    # The pattern is anchored and has no nested quantifiers; the input is operator config,
    # never request data.
    match = _DURATION.match(value.strip())
    if match is None:
        raise ValueError(f"invalid duration {value!r}: use a number with ms, s, m or h")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _positive(seconds: float) -> float:
    if seconds <= 0:
        raise ValueError("a duration must be greater than zero")
    return seconds


def format_duration(seconds: float) -> str:
    """The document form of a duration: whole seconds as ``5s``, else milliseconds."""
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    millis = round(seconds * 1000, 3)
    return f"{int(millis) if float(millis).is_integer() else millis}ms"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    AfterValidator(_positive),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN}),
]
"""A positive duration, written with a unit in documents, held as seconds (float)."""

HeaderName = Annotated[
    str,
    Field(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", min_length=1, max_length=256),
    AfterValidator(str.lower),
]
"""An HTTP header field name (RFC 9110 token), normalised to lower case."""
