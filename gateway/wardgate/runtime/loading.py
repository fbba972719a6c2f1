"""From a policy file (or none) to a :class:`CompiledPolicy`, with one error type."""

from __future__ import annotations

from pathlib import Path

from wardgate.config import PolicyError, PolicySpec, load_policy_file
from wardgate.runtime.compiled import CompiledPolicy, PolicyCompileError, compile_policy


def default_policy_spec() -> PolicySpec:
    """The built-in secure default used when no policy file is given: every section at its
    default (the WAF, once present, enforcing at its default level)."""
    return PolicySpec.model_validate({})


def load_compiled(
    path: str | Path | None, generation: int = 1, allow_empty: bool = True
) -> CompiledPolicy:
    """Load and compile ``path`` (``None``: the built-in default). Raises
    :class:`PolicyError` with every problem, schema and compile errors alike; an empty file
    is the built-in default when ``allow_empty`` (at start), an error otherwise (reload)."""
    spec = default_policy_spec() if path is None else load_policy_file(path, allow_empty)
    try:
        return compile_policy(spec, generation)
    except PolicyCompileError as exc:
        raise PolicyError(str(path or "<default>"), exc.problems) from None
