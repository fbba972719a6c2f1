"""The policy schema (pydantic models) and loading. No runtime behaviour lives here."""

from wardgate.config.loading import (
    PolicyError,
    load_policy_file,
    load_policy_text,
    validate_document,
)
from wardgate.config.policy import PolicySpec, policy_json_schema

__all__ = [
    "PolicyError",
    "PolicySpec",
    "load_policy_file",
    "load_policy_text",
    "policy_json_schema",
    "validate_document",
]
