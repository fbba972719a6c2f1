"""Helpers: compile a policy around an OpenAPI document and run described requests through
the real chain (the same code ``wardgate explain`` and the proxy run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from wardgate.config import load_policy_text
from wardgate.runtime import CompiledPolicy, compile_policy
from wardgate.runtime.explain import RequestDescription, explain

ROOT = Path(__file__).resolve().parents[3]
PETSTORE = ROOT / "examples" / "petstore" / "openapi.yaml"


def policy_for(spec: dict[str, Any] | None = None, **options: Any) -> CompiledPolicy:
    """A policy whose ``openapi`` section has ``spec`` inline (default: the petstore). The
    WAF (on by default) is off here: these tests judge the openapi filter alone."""
    if spec is None:
        spec = yaml.safe_load(PETSTORE.read_text())
    section = {"inline": spec, **options}
    document = {"openapi": section, "waf": {"mode": "off"}}
    return compile_policy(load_policy_text(json.dumps(document)))


async def decide(
    policy: CompiledPolicy,
    method: str,
    target: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The decision for one request, as ``wardgate explain`` reports it."""
    desc = RequestDescription(method, target, tuple((headers or {}).items()), body)
    if metadata is None:
        return await explain(policy, desc)
    return await _explain_with_metadata(policy, desc, metadata)


async def _explain_with_metadata(
    policy: CompiledPolicy, desc: RequestDescription, metadata: dict[str, Any]
) -> dict[str, Any]:
    """Like explain, with dynamic metadata set first (what jwt_authn writes)."""
    from wardgate.runtime.chain import RequestPipeline
    from wardgate.runtime.explain import build_request

    request = build_request(policy, desc)
    request.metadata.update(metadata)
    pipeline = RequestPipeline(policy, request)
    reply = await pipeline.decode_request(desc.body, True)
    if reply is None:
        return {"decision": "allow", "detected": [v.as_dict() for v in request.findings]}
    return {
        "decision": "deny",
        "status": reply.status,
        "reason": reply.reason,
        "violations": [v.as_dict() for v in reply.violations],
        "headers": dict(reply.headers),
    }


def locations(result: dict[str, Any]) -> list[str]:
    return [v["location"] for v in result.get("violations", [])]


def minimal_spec(paths: dict[str, Any], version: str = "3.0.3", **extra: Any) -> dict[str, Any]:
    return {"openapi": version, "info": {"title": "t", "version": "1"}, "paths": paths, **extra}
