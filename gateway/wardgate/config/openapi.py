"""``openapi``: the positive security model. Only requests the service's OpenAPI document
declares reach it; everything else is refused before the service sees it."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from wardgate.config.base import POLICY_DIR_CONTEXT, SpecModel

_METHODS = ("GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE")


class OpenApiMode(StrEnum):
    """What a violation does."""

    ENFORCE = "enforce"
    """Refuse the request (404/405/400/415/401/403) and count it."""

    DETECT = "detect"
    """Let the request through; the violation is logged and counted as a finding."""


class SecurityEnforcement(StrEnum):
    """Whether the spec's ``security`` requirements are enforced."""

    ENFORCE = "enforce"
    """Operations with ``security`` requirements need verified JWT claims (from the
    ``jwt`` section) with the required scopes, or the credential the scheme names."""

    IGNORE = "ignore"
    """Do not check ``security`` here: the service authenticates every request itself."""


class OperationSelectorSpec(SpecModel):
    """Selects operations by ``operationId``, or by ``method`` and ``path`` (the path
    template exactly as written in the spec, for example ``/pets/{petId}``)."""

    operation_id: str | None = None
    """The operation's ``operationId``."""

    method: Annotated[str, Field(pattern=r"^[A-Za-z]+$")] | None = None
    """The HTTP method, with ``path``."""

    path: Annotated[str, Field(pattern=r"^/")] | None = None
    """The path template as written in the spec, with ``method`` (or alone: every
    method of that path)."""

    @model_validator(mode="after")
    def _one_way(self) -> OperationSelectorSpec:
        if self.operation_id is None and self.path is None:
            raise ValueError("give operationId, or path (and optionally method)")
        if self.operation_id is not None and (self.path is not None or self.method is not None):
            raise ValueError("give either operationId or path/method, not both")
        if self.method is not None and self.method.upper() not in _METHODS:
            raise ValueError(f"method must be one of {', '.join(_METHODS)}")
        return self


class OperationOverrideSpec(OperationSelectorSpec):
    """Per-operation settings."""

    mode: OpenApiMode | None = None
    """This operation's mode (default: the section's ``mode``)."""

    exclude: bool = False
    """Do not check requests to this operation at all (they are routed and pass
    unchecked). Listed by ``wardgate validate``."""


class ResponseMode(StrEnum):
    """What response checking does."""

    OFF = "off"
    DETECT = "detect"
    """Check, log and count; the response passes unchanged."""

    ENFORCE = "enforce"
    """An undeclared status or a body that does not match the declared schema is replaced
    by a 502 (the service's answer never reaches the client)."""


class ResponseCheckSpec(SpecModel):
    """Checking the service's responses against the declared ``responses``."""

    mode: ResponseMode = ResponseMode.OFF
    """Off by default: response checking costs a buffered body per response."""

    strip_undeclared_properties: bool = False
    """Remove JSON object properties the response schema does not declare (where the schema
    lists ``properties`` and says nothing about additional ones), so a field the service
    adds by mistake never leaks. Applies in both modes."""

    max_body_bytes: Annotated[int, Field(ge=1, le=67108864)] = 1048576
    """Largest response body checked; a longer one is not checked (enforce: 502)."""


class OpenApiSectionSpec(SpecModel):
    """Allow only what the OpenAPI 3.0/3.1 document declares: operations, parameters
    (with their ``style``/``explode``), request bodies per media type and, with the
    ``jwt`` section, the ``security`` requirements. Give the document as ``specFile``
    or ``inline``."""

    spec_file: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    """Path of the OpenAPI document (YAML or JSON). Relative paths resolve against the
    policy file's directory. ``$ref``s to other files resolve against the document's own
    directory and must stay inside it."""

    inline: dict[str, Any] | None = None
    """The OpenAPI document itself, inline in the policy."""

    mode: OpenApiMode = OpenApiMode.ENFORCE
    """Refuse violations (``enforce``) or only report them (``detect``)."""

    unknown_path_status: Literal[404, 403] = 404
    """Status for a path the spec does not declare."""

    reject_unknown_query_parameters: bool = True
    """Refuse query parameters the operation does not declare."""

    reject_additional_properties: bool = False
    """Refuse JSON body properties not declared where the schema does not say whether
    additional properties are allowed (JSON Schema allows them by default). An explicit
    ``additionalProperties`` in the schema always wins."""

    max_body_bytes: Annotated[int, Field(ge=0, le=67108864)] = 1048576
    """Largest request body checked. A body declared or found longer is refused 413 for
    operations with a request body (the body cannot be checked)."""

    security: SecurityEnforcement = SecurityEnforcement.ENFORCE
    """Enforce the spec's ``security`` requirements (needs the ``jwt`` section for bearer,
    OAuth 2 and OpenID Connect schemes; without it such operations are refused, fail
    closed) or leave them to the service."""

    operations: tuple[OperationOverrideSpec, ...] = ()
    """Per-operation overrides (mode, exclusion)."""

    response: ResponseCheckSpec = ResponseCheckSpec()
    """Response checking."""

    @field_validator("spec_file")
    @classmethod
    def _absolute(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        path = Path(value)
        if not path.is_absolute():
            context = info.context or {}
            base = context.get(POLICY_DIR_CONTEXT)
            path = (Path(base) if base is not None else Path.cwd()) / path
        return str(path)

    @model_validator(mode="after")
    def _one_source(self) -> OpenApiSectionSpec:
        if (self.spec_file is None) == (self.inline is None):
            raise ValueError("give exactly one of specFile or inline")
        return self
