"""The configuration reference (``docs/configuration.md``), generated from the schema so
that it can never disagree with what ``wardgate validate`` accepts."""

from __future__ import annotations

import json
from typing import Any

from wardgate.config.policy import policy_json_schema


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str):
        target: dict[str, Any] = defs[ref.rsplit("/", 1)[-1]]
        return target
    return node


def _type_of(node: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in node:
        return "object"
    if "anyOf" in node:
        return " or ".join(_type_of(n, defs) for n in node["anyOf"])
    if "enum" in node:
        return "one of " + ", ".join(f"`{v}`" for v in node["enum"])
    kind = node.get("type", "any")
    if kind == "array":
        return f"list of {_type_of(node.get('items', {}), defs)}"
    if kind == "string" and node.get("pattern") and "(ms|s|m|h)" in node["pattern"]:
        return "duration (`250ms`, `5s`, `2m`)"
    return str(kind)


def _object_rows(
    node: dict[str, Any], defs: dict[str, Any], prefix: str, out: list[str], seen: frozenset[str]
) -> None:
    for name, prop in node.get("properties", {}).items():
        path = f"{prefix}.{name}" if prefix else name
        default = prop.get("default")
        shown = "" if default is None or isinstance(default, dict) else f"`{json.dumps(default)}`"
        description = (
            prop.get("description") or _resolve(prop, defs).get("description") or ""
        ).replace("\n", " ")
        out.append(f"| `{path}` | {_type_of(prop, defs)} | {shown} | {description} |")
        for child in [prop, prop.get("items", {}), *prop.get("anyOf", [])]:
            ref = child.get("$ref") if isinstance(child, dict) else None
            if isinstance(ref, str) and ref not in seen:
                target = _resolve(child, defs)
                suffix = "[]" if child is prop.get("items") else ""
                _object_rows(target, defs, path + suffix, out, seen | {ref})


def render_reference() -> str:
    schema = policy_json_schema()
    defs = schema.get("$defs", {})
    lines = [
        "# Policy configuration reference",
        "",
        "Generated from the schema by `make docs` (`wardgate schema` prints the JSON Schema).",
        "Do not edit by hand: `make test` fails when this file differs from the generator.",
        "",
        "The same document is the standalone policy file, the ConfigMap payload and the",
        "`Microgateway` resource's `spec`. Unknown fields are errors.",
        "",
        "| field | type | default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    _object_rows(schema, defs, "", lines, frozenset())
    return "\n".join(lines) + "\n"
