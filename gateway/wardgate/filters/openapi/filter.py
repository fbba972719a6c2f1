"""The ``openapi`` filter: route the request to a declared operation, check its security
requirements, parameters and body, and optionally the response.

Request order (each step refuses with its own status; detect mode records instead):

1. path hygiene (dot segments, encoded ``/`` or ``\\``: 400), base path, route: 404/403;
2. method: 405 with ``Allow``;
3. ``security``: 401 / 403 (before anything else is judged, so an anonymous caller learns
   nothing about parameters);
4. parameters and unknown query parameters: 400;
5. body (``decode_body``): declared media type (415), size (413), presence and schema (400).

All violations of steps 4-5 are reported together, each named by location."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from wardgate.config.openapi import OpenApiMode, OpenApiSectionSpec, ResponseMode
from wardgate.config.policy import PolicySpec
from wardgate.filters.api import (
    FilterCompileError,
    FilterConfig,
    HttpFilter,
    HttpRequest,
    HttpResponse,
    LocalReply,
    Violation,
)
from wardgate.filters.json_body import JsonBodyError, strict_document
from wardgate.filters.openapi import security
from wardgate.filters.openapi.bodies import (
    BodyError,
    is_json,
    media_type,
    parse_form,
    parse_json,
    parse_multipart,
    parse_text,
)
from wardgate.filters.openapi.document import Document, SpecError, load_document
from wardgate.filters.openapi.operations import (
    BodyPlan,
    CompiledSpec,
    MediaPlan,
    Operation,
    PathEntry,
    compile_spec,
)
from wardgate.filters.openapi.params import (
    RequestParams,
    check_params,
    parse_cookies,
    parse_query,
)

NAME = "openapi"


class OpenApiConfig(FilterConfig):
    """The compiled spec and options for one policy generation."""

    name = NAME

    def __init__(
        self, section: OpenApiSectionSpec, document: Document, spec: CompiledSpec, jwt_on: bool
    ) -> None:
        self.section = section
        self.document = document
        self.spec = spec
        self.jwt_on = jwt_on
        self.request_body_limit = section.max_body_bytes
        self.response_on = section.response.mode != ResponseMode.OFF
        self.strip = section.response.strip_undeclared_properties
        self.response_body_limit = (
            section.response.max_body_bytes if (self.response_on or self.strip) else None
        )
        self.sources = document.sources

    def create_filter(self) -> HttpFilter:
        return OpenApiFilter(self)

    def limitations(self) -> tuple[str, ...]:
        notes: list[str] = []
        spec = self.spec
        if self.section.security.value == "ignore":
            notes.append("security requirements are not checked (security: ignore)")
        elif spec.jwt_operations and not self.jwt_on:
            notes.append(
                f"{spec.jwt_operations} operation(s) require a bearer/OAuth 2/OpenID Connect "
                "token but the jwt section is not configured: security requirements "
                "cannot be enforced, so these operations are refused (401, fail closed); "
                "configure the jwt section, or set openapi.security: ignore if the service "
                "checks tokens itself"
            )
        if spec.presence_only_schemes:
            notes.append(
                "security schemes checked for presence only (the service verifies the "
                f"credential): {', '.join(spec.presence_only_schemes)}"
            )
        if spec.excluded:
            notes.append(f"operations excluded from checks: {', '.join(spec.excluded)}")
        notes.append(
            f"request bodies over {self.section.max_body_bytes} bytes are refused (413) for "
            "operations with a request body"
        )
        notes.append(
            "does not apply to gRPC: an OpenAPI document cannot describe gRPC calls, so "
            "gRPC requests (POST /package.Service/Method) are refused as not in the API "
            "unless the spec lists each such path as a POST operation with an "
            "application/grpc request body, and their protobuf messages are never validated"
        )
        return tuple(notes)


def _match_operation(
    config: OpenApiConfig, request: HttpRequest
) -> tuple[Operation, dict[str, str]] | LocalReply:
    """The declared operation and the path's captured parameters, or the refusal (400 path
    not normalized, the configured status for an unknown path, 405 an undeclared method)."""
    problem = _path_problem(request.path)
    if problem is not None:
        return LocalReply(
            400,
            NAME,
            "path_not_normalized",
            problem,
            (Violation("openapi.path.normalized", "path", problem),),
        )
    found = _route(config.spec, request.path)
    if found is None:
        return LocalReply(
            config.section.unknown_path_status,
            NAME,
            "unknown_path",
            "the path is not declared by the API",
            (Violation("openapi.path", "path", "no declared path matches"),),
        )
    entry, captures = found
    operation = entry.operations.get(request.method)
    if operation is None:
        return LocalReply(
            405,
            NAME,
            "method_not_allowed",
            "the method is not declared for this path",
            (Violation("openapi.method", "method", "method not declared"),),
            headers=(("allow", entry.allow),),
        )
    return operation, captures


def _parameter_violations(
    operation: Operation, params: RequestParams, section: OpenApiSectionSpec
) -> list[Violation]:
    """Every parameter that breaks the operation's declaration, and undeclared query
    parameters when the section refuses them."""
    violations: list[Violation] = []
    check_params(operation.params, params, violations)
    if section.reject_unknown_query_parameters:
        for key in params.query:
            if not operation.knows_query(key):
                violations.append(
                    Violation(
                        "openapi.query.unknown",
                        f"query:{_safe(key)}",
                        "query parameter not declared",
                    )
                )
    return violations


class OpenApiFilter(HttpFilter):
    """Per-request state: the matched operation between the header and body phases."""

    __slots__ = ("config", "operation", "params")

    def __init__(self, config: OpenApiConfig) -> None:
        self.config = config
        self.operation: Operation | None = None
        self.params: RequestParams | None = None

    async def decode_headers(self, request: HttpRequest) -> LocalReply | None:
        config = self.config
        matched = _match_operation(config, request)
        if isinstance(matched, LocalReply):
            return _decide(request, config.section.mode, matched)
        operation, captures = matched
        if operation.excluded:
            return None
        self.operation = operation
        headers = request.headers
        query = parse_query(request.query)
        cookies = parse_cookies(headers.get("cookie"))
        decision = security.check(operation.security, request.metadata, headers, query, cookies)
        if decision is not None:
            extra = (("www-authenticate", decision.challenge),) if decision.challenge else ()
            return _decide(
                request,
                operation.mode,
                LocalReply(
                    decision.status,
                    NAME,
                    decision.reason,
                    decision.violation.message,
                    (decision.violation,),
                    headers=extra,
                ),
            )
        params = RequestParams(captures, query, headers, cookies)
        self.params = params
        violations = _parameter_violations(operation, params, config.section)
        body = operation.body
        if body is not None:
            early = _early_body_check(body, headers, config.section.max_body_bytes)
            if early is not None:
                return _decide(request, operation.mode, early)
        if violations:
            return _decide(request, operation.mode, _bad_request(violations))
        return None

    async def decode_body(
        self, request: HttpRequest, body: bytes, complete: bool
    ) -> LocalReply | None:
        operation = self.operation
        if operation is None:
            return None
        plan = operation.body
        if plan is None:
            if body:
                return _decide(
                    request,
                    operation.mode,
                    _bad_request(
                        [
                            Violation(
                                "openapi.body.undeclared",
                                "body",
                                "the operation declares no request body",
                            )
                        ]
                    ),
                )
            return None
        if not complete:
            return _decide(request, operation.mode, _too_large(self.config.section.max_body_bytes))
        return _decide(request, operation.mode, check_body(plan, request, body))

    def encode_headers(self, request: HttpRequest, response: HttpResponse) -> LocalReply | None:
        operation = self.operation
        config = self.config
        if operation is None or response.local or operation.responses is None:
            return None
        if not config.response_on:
            return None
        plan = operation.responses.for_status(response.status)
        if plan is None:
            return _decide_response(
                request,
                config,
                Violation("openapi.response.status", "response:status", "status not declared"),
            )
        if plan.media:
            mime, _ = media_type(response.headers.get("content-type"))
            if mime and plan.matcher.match(mime) is None:
                return _decide_response(
                    request,
                    config,
                    Violation(
                        "openapi.response.contentType",
                        "response:header:content-type",
                        "content type not declared for this status",
                    ),
                )
        return None

    def encode_body(
        self, request: HttpRequest, response: HttpResponse, body: bytes, complete: bool
    ) -> LocalReply | None:
        operation = self.operation
        config = self.config
        if operation is None or response.local or operation.responses is None:
            return None
        plan = operation.responses.for_status(response.status)
        if plan is None or not body:
            return None
        mime, _ = media_type(response.headers.get("content-type"))
        key = plan.matcher.match(mime) if mime else None
        media = plan.media.get(key) if key is not None else None
        if media is None or media.kind != "json":
            return None
        if not complete:
            if config.response_on:
                return _decide_response(
                    request,
                    config,
                    Violation(
                        "openapi.response.size", "response:body", "response too large to check"
                    ),
                )
            return None
        try:
            value = parse_json(body)
        except BodyError as exc:
            if config.response_on:
                return _decide_response(
                    request, config, Violation("openapi.response.body", "response:body", str(exc))
                )
            return None
        if config.response_on and media.schema is not None and not media.schema.check(value):
            found = media.schema.violations(value, "response:body", json_path=True)
            reply = _decide_response(request, config, *found)
            if reply is not None:
                return reply
        if media.stripper is not None and media.stripper.strip(value):
            # ASCII escapes: the same JSON, and safe for any string the service sent.
            response.body = json.dumps(value, separators=(",", ":")).encode()
        return None


def _route(spec: CompiledSpec, path: str) -> tuple[PathEntry, dict[str, str]] | None:
    for base in spec.base_paths:
        if base and not (path == base or path.startswith(base + "/")):
            continue
        relative = path[len(base) :] or "/"
        found = spec.router.match(relative)
        if found is not None:
            entry, _, captures = found
            return entry, captures
    return None


def _path_problem(path: str) -> str | None:
    """Paths an upstream could read differently from the router: dot segments (raw or
    percent-encoded) and encoded ``/`` or ``\\`` (which some servers decode into
    separators), and backslashes."""
    if "\\" in path:
        return "the path contains a backslash"
    for segment in path.split("/"):
        text = unquote(segment) if "%" in segment else segment
        if text in (".", ".."):
            return "the path contains a dot segment"
        if "/" in text or "\\" in text:
            return "the path contains an encoded separator"
    return None


def _safe(text: str) -> str:
    short = text[:64]
    return short if short.isprintable() else "(unprintable)"


def _bad_request(violations: list[Violation]) -> LocalReply:
    return LocalReply(
        400,
        NAME,
        "request_invalid",
        f"the request does not match the API ({len(violations)} violation(s))",
        tuple(violations[:50]),
    )


def _too_large(limit: int) -> LocalReply:
    return LocalReply(
        413,
        NAME,
        "body_too_large",
        f"the request body is larger than the {limit} bytes that can be checked",
        (Violation("openapi.maxBodyBytes", "body", "body too large to check"),),
    )


def _unsupported(plan: BodyPlan) -> LocalReply:
    return LocalReply(
        415,
        NAME,
        "unsupported_media_type",
        f"the content type is not declared for this operation (declared: {plan.allowed})",
        (Violation("openapi.body.contentType", "header:content-type", "not declared"),),
    )


def _early_body_check(plan: BodyPlan, headers: Any, limit: int) -> LocalReply | None:
    """415 / 413 from the headers alone, so a refused client never uploads its body."""
    declared = headers.get("content-length")
    if declared is None or not declared.isdigit() or int(declared) == 0:
        return None
    if int(declared) > limit:
        return _too_large(limit)
    mime, _ = media_type(headers.get("content-type"))
    if not mime or plan.matcher.match(mime) is None:
        return _unsupported(plan)
    return None


def check_body(plan: BodyPlan, request: HttpRequest, body: bytes) -> LocalReply | None:
    """Presence, media type, parsing and schema of a complete request body. A JSON body is
    parsed once per request (:func:`~wardgate.filters.json_body.strict_document`): the WAF
    after this filter reuses the value instead of parsing the bytes again."""
    if not body:
        if plan.required:
            return _bad_request(
                [Violation("openapi.body.required", "body", "a request body is required")]
            )
        return None
    mime, params = media_type(request.headers.get("content-type"))
    key = plan.matcher.match(mime) if mime else None
    if key is None:
        return _unsupported(plan)
    media = plan.media[key]
    try:
        value = _parse(media, mime, params, body, request)
    except (BodyError, JsonBodyError) as exc:
        return _bad_request([Violation("openapi.body.parse", "body", str(exc))])
    if media.schema is None or value is _OPAQUE:
        return None
    if media.schema.check(value):
        return None
    return _bad_request(media.schema.violations(value, "body", json_path=True))


_OPAQUE = object()


def _parse(
    media: MediaPlan, mime: str, params: dict[str, str], body: bytes, request: HttpRequest
) -> Any:
    kind = media.kind
    if kind == "json" or (kind != "opaque" and is_json(mime)):
        return strict_document(request, body)
    if kind == "form":
        return parse_form(body, media.shape)
    if kind == "multipart":
        return parse_multipart(body, params.get("boundary", ""), media.shape)
    if kind == "text":
        return parse_text(body, params.get("charset"))
    return _OPAQUE


def _decide(request: HttpRequest, mode: OpenApiMode, reply: LocalReply | None) -> LocalReply | None:
    """Enforce: the reply. Detect: record its violations and continue."""
    if reply is None:
        return None
    if mode == OpenApiMode.DETECT:
        request.findings.extend(reply.violations)
        return None
    return reply


def _decide_response(
    request: HttpRequest, config: OpenApiConfig, *violations: Violation
) -> LocalReply | None:
    if config.section.response.mode == ResponseMode.ENFORCE:
        return LocalReply(
            502,
            NAME,
            "response_invalid",
            "the service's response does not match the API",
            tuple(violations),
        )
    request.findings.extend(violations)
    return None


def compile(policy: PolicySpec) -> OpenApiConfig | None:
    """Load and compile the section's spec, or ``None`` when the section is absent."""
    section = policy.openapi
    if section is None:
        return None
    try:
        document = load_document(spec_file=section.spec_file, inline=section.inline)
        spec = compile_spec(document, section)
    except SpecError as exc:
        raise FilterCompileError([f"openapi: {p}" for p in exc.problems]) from None
    return OpenApiConfig(section, document, spec, jwt_on=_jwt_configured(policy))


def _jwt_configured(policy: PolicySpec) -> bool:
    """Whether the policy turns the ``jwt_authn`` filter on (its section is set). Read
    from the schema, not the filter: filters do not know each other."""
    return policy.jwt is not None
