"""Reading policy documents: YAML or JSON text in, a validated :class:`PolicySpec` out, or a
:class:`PolicyError` naming every problem with its field path."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from wardgate.config.base import POLICY_DIR_CONTEXT
from wardgate.config.policy import PolicySpec

MAX_POLICY_BYTES = 4 * 1024 * 1024


class PolicyError(Exception):
    """A policy document that cannot be used. ``problems`` holds one line per error, each
    starting with its field path (``limits.maxHeadersCount: ...``)."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))

    def report(self) -> str:
        """A multi-line report for people: the source, then one problem per line."""
        return "\n".join([f"{self.source}: invalid policy"] + [f"  {p}" for p in self.problems])


class _StrictLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses duplicate mapping keys: with a plain loader the
    last duplicate silently wins, which can hide a weaker setting below a stricter one."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    loader.flatten_mapping(node)
    seen: dict[Hashable, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {mark.line + 1})", mark
            )
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def parse_document(text: str, source: str) -> Mapping[str, Any]:
    """Parse YAML (a superset of JSON) into a mapping, or raise :class:`PolicyError`.
    An empty document is an empty mapping (the default policy)."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise PolicyError(source, [f"not valid YAML: {_one_line(str(exc))}"]) from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise PolicyError(source, [f"the document must be a mapping, not {type(data).__name__}"])
    return data


def validate_document(
    data: Mapping[str, Any], source: str, base_dir: str | Path | None = None
) -> PolicySpec:
    """Validate a parsed document, or raise :class:`PolicyError` listing every error.
    ``base_dir`` is the directory relative file references in the policy resolve against
    (the policy file's directory; ``None``: the working directory)."""
    context = {POLICY_DIR_CONTEXT: str(base_dir)} if base_dir is not None else None
    try:
        return PolicySpec.model_validate(data, context=context)
    except ValidationError as exc:
        raise PolicyError(source, format_validation_errors(exc)) from None


def format_validation_errors(exc: ValidationError) -> list[str]:
    """One ``path: message`` line per pydantic error, paths in document (camelCase) form."""
    lines = []
    for err in exc.errors(include_url=False):
        path = _format_loc(err["loc"]) or "(document)"
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown field (check the spelling; see `wardgate schema`)"
        lines.append(f"{path}: {message}")
    return lines


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-", "constrained-")):
            continue
        else:
            out += ("." if out else "") + part
    return out


def load_policy_text(
    text: str, source: str = "<policy>", base_dir: str | Path | None = None
) -> PolicySpec:
    """Parse and validate a policy document given as text (relative file references
    resolve against ``base_dir``, by default the working directory)."""
    return validate_document(parse_document(text, source), source, base_dir)


def load_policy_file(path: str | Path) -> PolicySpec:
    """Read, parse and validate a policy file. Unreadable, oversized, non-UTF-8 or invalid
    files raise :class:`PolicyError`."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise PolicyError(source, [f"cannot read the file: {exc.strerror or exc}"]) from None
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError(source, [f"the file is larger than {MAX_POLICY_BYTES} bytes"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(source, [f"not UTF-8 text (byte {exc.start})"]) from None
    return load_policy_text(text, source, Path(path).absolute().parent)


def _one_line(text: str) -> str:
    return " ".join(text.split())
