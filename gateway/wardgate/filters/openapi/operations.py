"""Compiling a loaded document into routes and per-operation check plans.

Everything a request needs is resolved here: ``$ref``s followed, path-item and operation
parameters merged, schemas compiled, media types indexed, security requirements bound to
their schemes. A request then only does dictionary lookups and compiled-validator calls."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from wardgate.config.openapi import OpenApiMode, OpenApiSectionSpec, SecurityEnforcement
from wardgate.filters.openapi.bodies import MediaMatcher, is_json, media_type
from wardgate.filters.openapi.document import Document, SpecError
from wardgate.filters.openapi.params import ALLOWED_STYLES, DEFAULT_STYLE, ParamPlan
from wardgate.filters.openapi.responses import Stripper, StripperBuilder
from wardgate.filters.openapi.routing import Router, TemplateError
from wardgate.filters.openapi.schemas import CompiledSchema, SchemaCompiler
from wardgate.filters.openapi.security import (
    Requirement,
    Scheme,
    SecurityPolicy,
    compile_scheme,
)
from wardgate.filters.openapi.shapes import ANY, Shape, shape_of

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
IGNORED_HEADERS = frozenset({"accept", "content-type", "authorization"})
"""Header parameters OpenAPI says to ignore (they are described elsewhere)."""


@dataclass(frozen=True, slots=True)
class MediaPlan:
    """How to parse and check one declared media type."""

    key: str
    kind: str
    """``json``, ``form``, ``multipart``, ``text`` or ``opaque``."""
    schema: CompiledSchema | None
    shape: Shape
    stripper: Stripper | None = None
    """Response media only, with ``stripUndeclaredProperties``."""


@dataclass(frozen=True, slots=True)
class BodyPlan:
    required: bool
    matcher: MediaMatcher
    media: dict[str, MediaPlan]
    allowed: str
    """The declared media types, for the 415 message."""


@dataclass(frozen=True, slots=True)
class ResponsePlan:
    """Declared responses of an operation: by exact status, by class (``2XX``), default."""

    by_status: dict[int, BodyPlan]
    by_class: dict[int, BodyPlan]
    default: BodyPlan | None

    def for_status(self, status: int) -> BodyPlan | None:
        found = self.by_status.get(status)
        if found is not None:
            return found
        found = self.by_class.get(status // 100)
        if found is not None:
            return found
        return self.default


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    template: str
    operation_id: str
    mode: OpenApiMode
    excluded: bool
    params: tuple[ParamPlan, ...]
    query_names: frozenset[str]
    query_prefixes: tuple[str, ...]
    """``deepObject`` parameters: ``name[`` prefixes."""
    open_query: bool
    """An exploded free-form object takes any query key."""
    body: BodyPlan | None
    security: SecurityPolicy
    responses: ResponsePlan | None

    def knows_query(self, key: str) -> bool:
        if self.open_query or key in self.query_names:
            return True
        return any(key.startswith(p) and key.endswith("]") for p in self.query_prefixes)


@dataclass(frozen=True, slots=True)
class PathEntry:
    template: str
    operations: dict[str, Operation]
    """By upper-case method."""
    allow: str


@dataclass(frozen=True, slots=True)
class CompiledSpec:
    router: Router[PathEntry]
    base_paths: tuple[str, ...]
    """Longest first; ``""`` is the root."""
    jwt_operations: int
    presence_only_schemes: tuple[str, ...]
    excluded: tuple[str, ...]


def base_paths(document: Document) -> tuple[str, ...]:
    """The path part of each ``servers`` URL (variables replaced by their default or
    each ``enum`` value); ``("",)`` without servers."""
    servers = document.bundle.get("servers") or [{"url": "/"}]
    out: set[str] = set()
    for server in servers:
        if not isinstance(server, Mapping):
            continue
        for url in _expand(str(server.get("url", "/")), server.get("variables") or {}):
            path = urlsplit(url).path if "://" in url else url.split("?")[0]
            out.add(path.rstrip("/"))
    return tuple(sorted(out or {""}, key=len, reverse=True))


def _expand(url: str, variables: Mapping[str, Any]) -> list[str]:
    urls = [url]
    for name, var in variables.items():
        if not isinstance(var, Mapping):
            continue
        values = [str(v) for v in var.get("enum") or [var.get("default", "")]]
        urls = [u.replace("{" + str(name) + "}", v) for u in urls for v in values]
    return urls


def compile_spec(document: Document, section: OpenApiSectionSpec) -> CompiledSpec:
    """Compile every operation. Raises :class:`SpecError` listing every problem."""
    builder = _Builder(document, section)
    return builder.build()


class _Builder:
    def __init__(self, document: Document, section: OpenApiSectionSpec) -> None:
        self.document = document
        self.section = section
        self.request_schemas = SchemaCompiler(
            document, "request", strict=section.reject_additional_properties
        )
        self.response_schemas = SchemaCompiler(document, "response", strict=False)
        self.problems: list[str] = []
        components = document.bundle.get("components") or {}
        self.schemes: dict[str, Scheme] = {}
        for name, node in (components.get("securitySchemes") or {}).items():
            resolved = self._resolve(node, f"components.securitySchemes.{name}")
            if isinstance(resolved, Mapping):
                self.schemes[name] = compile_scheme(name, resolved)
        self.root_security = document.bundle.get("security")
        self.used_overrides: set[int] = set()
        self.strippers = (
            StripperBuilder(document) if section.response.strip_undeclared_properties else None
        )
        self.check_responses = section.response.mode != "off" or self.strippers is not None

    def _resolve(self, node: Any, where: str) -> Any:
        try:
            return self.document.resolve(node)
        except SpecError as exc:
            self.problems.extend(f"{where}: {p}" for p in exc.problems)
            return None

    def build(self) -> CompiledSpec:
        router: Router[PathEntry] = Router()
        jwt = 0
        excluded: list[str] = []
        paths = self.document.bundle.get("paths") or {}
        for template, item in paths.items():
            path_item = self._resolve(item, f"paths.{template}")
            if not isinstance(path_item, Mapping):
                continue
            operations: dict[str, Operation] = {}
            for method in METHODS:
                node = path_item.get(method)
                if not isinstance(node, Mapping):
                    continue
                where = f"paths.{template}.{method}"
                op = self._operation(template, method, path_item, node, where)
                if op is None:
                    continue
                operations[method.upper()] = op
                if op.security.uses_jwt:
                    jwt += 1
                if op.excluded:
                    excluded.append(f"{op.method} {template}")
            if not operations:
                continue
            entry = PathEntry(template, operations, ", ".join(operations))
            try:
                router.add(template, entry)
            except TemplateError as exc:
                self.problems.append(f"paths.{template}: {exc}")
        unmatched = tuple(
            _describe(o)
            for i, o in enumerate(self.section.operations)
            if i not in self.used_overrides
        )
        for text in unmatched:
            self.problems.append(f"openapi.operations: {text} matches no operation in the spec")
        if self.problems:
            raise SpecError(self.problems)
        presence = tuple(
            sorted({s.name for s in self.schemes.values() if s.kind in ("apikey", "http")})
        )
        return CompiledSpec(
            router=router,
            base_paths=base_paths(self.document),
            jwt_operations=jwt,
            presence_only_schemes=presence,
            excluded=tuple(excluded),
        )

    def _override(self, template: str, method: str, op_id: str) -> tuple[OpenApiMode, bool]:
        mode = self.section.mode
        exclude = False
        for i, override in enumerate(self.section.operations):
            if override.operation_id is not None:
                hit = override.operation_id == op_id
            else:
                hit = override.path == template and (
                    override.method is None or override.method.lower() == method
                )
            if hit:
                self.used_overrides.add(i)
                mode = override.mode or mode
                exclude = exclude or override.exclude
        return mode, exclude

    def _operation(
        self,
        template: str,
        method: str,
        path_item: Mapping[str, Any],
        node: Mapping[str, Any],
        where: str,
    ) -> Operation | None:
        op_id = str(node.get("operationId", ""))
        mode, exclude = self._override(template, method, op_id)
        params = self._params(path_item, node, where)
        template_names = {part[1:-1] for part in _template_names(template)}
        declared_path = {p.name for p in params if p.location == "path"}
        for name in sorted(template_names - declared_path):
            self.problems.append(f"{where}: path parameter {name!r} is not declared")
        query_names: set[str] = set()
        prefixes: list[str] = []
        open_query = False
        for plan in params:
            if plan.location != "query":
                continue
            if plan.style == "deepObject":
                prefixes.append(plan.name + "[")
            elif plan.claims_exploded_properties:
                query_names.update(plan.shape.properties)
                if plan.shape.additional and not plan.shape.properties:
                    open_query = True
            else:
                query_names.add(plan.name)
        body = self._body(node.get("requestBody"), f"{where}.requestBody")
        security = self._security(node.get("security", self.root_security), where)
        responses = (
            self._responses(node.get("responses"), f"{where}.responses")
            if self.check_responses
            else None
        )
        return Operation(
            method=method.upper(),
            template=template,
            operation_id=op_id,
            mode=mode,
            excluded=exclude,
            params=params,
            query_names=frozenset(query_names),
            query_prefixes=tuple(prefixes),
            open_query=open_query,
            body=body,
            security=security,
            responses=responses,
        )

    def _params(
        self, path_item: Mapping[str, Any], node: Mapping[str, Any], where: str
    ) -> tuple[ParamPlan, ...]:
        merged: dict[tuple[str, str], Mapping[str, Any]] = {}
        for source in (path_item.get("parameters") or [], node.get("parameters") or []):
            for raw in source:
                param = self._resolve(raw, f"{where}.parameters")
                if not isinstance(param, Mapping):
                    continue
                location = str(param.get("in"))
                name = str(param.get("name"))
                key = (location, name.lower() if location == "header" else name)
                merged[key] = param
        plans: list[ParamPlan] = []
        for (location, name), param in merged.items():
            if location == "header" and name in IGNORED_HEADERS:
                continue
            plan = self._param(location, name, param, f"{where}.parameters.{name}")
            if plan is not None:
                plans.append(plan)
        return tuple(plans)

    def _param(
        self, location: str, name: str, param: Mapping[str, Any], where: str
    ) -> ParamPlan | None:
        style = str(param.get("style", DEFAULT_STYLE.get(location, "form")))
        if style not in ALLOWED_STYLES.get(location, frozenset()):
            self.problems.append(f"{where}: style {style!r} is not valid for {location}")
            return None
        explode = bool(param.get("explode", style == "form"))
        schema_node = param.get("schema")
        json_content = False
        if schema_node is None and isinstance(param.get("content"), Mapping):
            content = param["content"]
            key = next(iter(content), None)
            if key is not None and is_json(media_type(key)[0]):
                json_content = True
            schema_node = (content.get(key) or {}).get("schema") if key is not None else None
        schema = (
            self.request_schemas.compile(schema_node, where) if schema_node is not None else None
        )
        return ParamPlan(
            name=name,
            location=location,
            required=bool(param.get("required", location == "path")),
            style=style,
            explode=explode,
            shape=shape_of(self.document, schema_node) if schema_node is not None else ANY,
            schema=schema,
            json_content=json_content,
            allow_empty=bool(param.get("allowEmptyValue", False)),
        )

    def _media(
        self,
        content: Mapping[str, Any],
        where: str,
        compiler: SchemaCompiler,
        strippers: StripperBuilder | None = None,
    ) -> dict[str, MediaPlan]:
        media: dict[str, MediaPlan] = {}
        for key, node in content.items():
            mime, _ = media_type(key)
            schema_node = node.get("schema") if isinstance(node, Mapping) else None
            if is_json(mime):
                kind = "json"
            elif mime == "application/x-www-form-urlencoded":
                kind = "form"
            elif mime == "multipart/form-data":
                kind = "multipart"
            elif mime.startswith("text/"):
                kind = "text"
            else:
                kind = "opaque"
            schema = None
            if schema_node is not None and kind != "opaque":
                schema = compiler.compile(schema_node, f"{where}.content.{key}.schema")
            shape = shape_of(self.document, schema_node) if schema_node is not None else ANY
            stripper = (
                strippers.build(schema_node)
                if strippers is not None and kind == "json" and schema_node is not None
                else None
            )
            media[key] = MediaPlan(key, kind, schema, shape, stripper)
        return media

    def _body(self, raw: Any, where: str) -> BodyPlan | None:
        if raw is None:
            return None
        body = self._resolve(raw, where)
        if not isinstance(body, Mapping):
            return None
        content = body.get("content") or {}
        media = self._media(content, where, self.request_schemas)
        return BodyPlan(
            required=bool(body.get("required", False)),
            matcher=MediaMatcher.build(list(media)),
            media=media,
            allowed=", ".join(media) or "(none)",
        )

    def _security(self, raw: Any, where: str) -> SecurityPolicy:
        if self.section.security == SecurityEnforcement.IGNORE or not raw:
            return SecurityPolicy(())
        requirements: list[Requirement] = []
        for item in raw:
            if not isinstance(item, Mapping):
                continue
            requirement: list[tuple[Scheme, frozenset[str]]] = []
            for name, scopes in item.items():
                scheme = self.schemes.get(name)
                if scheme is None:
                    self.problems.append(f"{where}.security: unknown security scheme {name!r}")
                    continue
                requirement.append((scheme, frozenset(str(s) for s in scopes or [])))
            requirements.append(tuple(requirement))
        return SecurityPolicy(tuple(requirements))

    def _responses(self, raw: Any, where: str) -> ResponsePlan:
        by_status: dict[int, BodyPlan] = {}
        by_class: dict[int, BodyPlan] = {}
        default: BodyPlan | None = None
        for code, node in (raw or {}).items():
            response = self._resolve(node, f"{where}.{code}")
            if not isinstance(response, Mapping):
                continue
            media = self._media(
                response.get("content") or {},
                f"{where}.{code}",
                self.response_schemas,
                self.strippers,
            )
            plan = BodyPlan(False, MediaMatcher.build(list(media)), media, ", ".join(media))
            text = str(code).upper()
            if text == "DEFAULT":
                default = plan
            elif len(text) == 3 and text.endswith("XX") and text[0].isdigit():
                by_class[int(text[0])] = plan
            elif text.isdigit():
                by_status[int(text)] = plan
        return ResponsePlan(by_status, by_class, default)


def _template_names(template: str) -> list[str]:
    out = []
    start = template.find("{")
    while start >= 0:
        end = template.find("}", start)
        if end < 0:
            break
        out.append(template[start : end + 1])
        start = template.find("{", end)
    return out


def _describe(override: Any) -> str:
    if override.operation_id is not None:
        return f"operationId {override.operation_id!r}"
    return f"{override.method or '*'} {override.path}"
