"""The policy document: one schema for the standalone file, the ConfigMap payload and the
``Microgateway`` custom resource's ``spec``."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from wardgate.config.base import DURATION_PATTERN, SpecModel, format_duration, redacted_dump
from wardgate.config.headers import HeadersSpec
from wardgate.config.jwt import JwtSpec
from wardgate.config.lattice import APP, NESTED, REQUIRED
from wardgate.config.limits import LimitsSpec
from wardgate.config.openapi import OpenApiSectionSpec
from wardgate.config.peer import PeerSpec
from wardgate.config.proxy import ProxySpec
from wardgate.config.waf import WafSpec


class PolicySpec(SpecModel):
    """A Wardgate policy. Every section is optional and has a secure default; an empty
    document is the built-in default policy."""

    limits: Annotated[LimitsSpec, NESTED] = LimitsSpec()
    """Request size and shape limits."""

    proxy: Annotated[ProxySpec, APP] = ProxySpec()
    """Forwarding behaviour: request ids, forwarding headers, timeouts."""

    headers: Annotated[HeadersSpec, APP] = HeadersSpec()
    """Header changes on requests and responses."""

    peer: Annotated[PeerSpec | None, NESTED] = None
    """Which calling workloads (client certificate identities, mutual TLS) may use which
    routes. Absent: no caller identity checks."""

    # A baseline can make JWT mandatory (a provider present), never pick the provider.
    jwt: Annotated[JwtSpec | None, REQUIRED] = None
    """JWT authentication (Envoy jwt_authn). Absent: no JWT checks."""

    openapi: Annotated[OpenApiSectionSpec | None, APP] = None
    """OpenAPI allow-listing (off when absent): only declared operations get through."""

    waf: Annotated[WafSpec, NESTED] = WafSpec()
    """The web application firewall: on and enforcing at paranoia level 1 by default."""

    def canonical_json(self) -> str:
        """The policy as canonical JSON (sorted keys, defaults included): what the digest
        covers, so two documents that mean the same policy have the same digest."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        """``sha256:<hex>`` of :meth:`canonical_json`."""
        return "sha256:" + hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def redacted(self) -> dict[str, Any]:
        """The effective policy with secret values replaced, for ``/config_dump``."""
        return redacted_dump(self)


def policy_json_schema() -> dict[str, Any]:
    """The JSON Schema of the policy document (by alias), for editors and the CRD."""
    schema = PolicySpec.model_json_schema(by_alias=True, mode="validation")
    _durations_as_text(schema)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Wardgate policy"
    return schema


def _durations_as_text(node: Any) -> None:
    """Show duration defaults as documents write them (``5s``), not as float seconds."""
    if isinstance(node, dict):
        if node.get("pattern") == DURATION_PATTERN and isinstance(node.get("default"), float):
            node["default"] = format_duration(node["default"])
        for child in node.values():
            _durations_as_text(child)
    elif isinstance(node, list):
        for child in node:
            _durations_as_text(child)
