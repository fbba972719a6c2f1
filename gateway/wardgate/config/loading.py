"""Reading policy documents: YAML or JSON text in, a validated :class:`PolicySpec` out, or a
:class:`PolicyError` naming every problem with its field path."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from wardgate.config.base import POLICY_DIR_CONTEXT
from wardgate.config.baseline import SecurityBaselineSpec
from wardgate.config.policy import PolicySpec
from wardgate.errors import PolicyError as PolicyError  # noqa: PLC0414 - re-export

MAX_POLICY_BYTES = 4 * 1024 * 1024
MAX_NESTING_DEPTH = 64
"""Deepest nesting of mappings and sequences a policy may use (real policies stay below 15).
Checked on the token stream before parsing: the YAML composer recurses once per level."""
MAX_DOCUMENT_NODES = 200_000
"""Most values a parsed document may hold once aliases are expanded: a YAML alias is a
reference, so a few kilobytes of nested aliases can stand for billions of values, which
validation would then walk."""

_OPENING_TOKENS = (
    yaml.BlockMappingStartToken,
    yaml.BlockSequenceStartToken,
    yaml.FlowMappingStartToken,
    yaml.FlowSequenceStartToken,
)
_CLOSING_TOKENS = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)


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


def parse_document(text: str, source: str, allow_empty: bool = True) -> Mapping[str, Any]:
    """Parse YAML (a superset of JSON) into a mapping, or raise :class:`PolicyError`.
    An empty document (nothing but whitespace and comments) is an empty mapping, the
    default policy, when ``allow_empty``; otherwise it is an error (a reload must never read
    a file caught between truncation and rewrite as "no checks"). Nesting deeper than
    :data:`MAX_NESTING_DEPTH` and documents expanding to more than
    :data:`MAX_DOCUMENT_NODES` values are refused before they are built or validated."""
    try:
        _check_nesting(text, source)
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise PolicyError(source, [f"not valid YAML: {_one_line(str(exc))}"]) from None
    if data is None:
        if not allow_empty:
            raise PolicyError(
                source,
                [
                    "the document is empty; an empty policy means the built-in default only "
                    "at start, a reload refuses it (a file being rewritten is empty for a "
                    "moment), so the current policy stays. Write `{}` for the default on "
                    "purpose"
                ],
            )
        return {}
    _check_size(data, source)
    if not isinstance(data, Mapping):
        raise PolicyError(source, [f"the document must be a mapping, not {type(data).__name__}"])
    return data


def _check_nesting(text: str, source: str) -> None:
    """Refuse documents nested deeper than :data:`MAX_NESTING_DEPTH`. The scanner is
    iterative, so this cannot itself run out of stack."""
    depth = 0
    for token in yaml.scan(text, Loader=_StrictLoader):
        if isinstance(token, _OPENING_TOKENS):
            depth += 1
            if depth > MAX_NESTING_DEPTH:
                raise PolicyError(
                    source, [f"the document is nested deeper than {MAX_NESTING_DEPTH} levels"]
                )
        elif isinstance(token, _CLOSING_TOKENS):
            depth -= 1


def _check_size(data: object, source: str) -> None:
    """Refuse documents that hold more than :data:`MAX_DOCUMENT_NODES` values with aliases
    expanded (an iterative walk that stops as soon as the budget is spent)."""
    budget = MAX_DOCUMENT_NODES
    stack = [data]
    while stack:
        node = stack.pop()
        budget -= 1
        if budget < 0:
            raise PolicyError(
                source,
                [
                    f"the document holds more than {MAX_DOCUMENT_NODES} values once its "
                    "aliases are expanded"
                ],
            )
        if isinstance(node, Mapping):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


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
    text: str,
    source: str = "<policy>",
    base_dir: str | Path | None = None,
    allow_empty: bool = True,
) -> PolicySpec:
    """Parse and validate a policy document given as text (relative file references
    resolve against ``base_dir``, by default the working directory)."""
    return validate_document(parse_document(text, source, allow_empty), source, base_dir)


def load_policy_file(path: str | Path, allow_empty: bool = True) -> PolicySpec:
    """Read, parse and validate a policy file. Unreadable, oversized, non-UTF-8 or invalid
    files raise :class:`PolicyError`, and so does an empty one unless ``allow_empty``."""
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
    return load_policy_text(text, source, Path(path).absolute().parent, allow_empty)


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --- SecurityBaseline files (``wardgate validate --baseline``) ------------------------


def load_baseline_file(path: str) -> list[tuple[str, SecurityBaselineSpec]]:
    """Read ``SecurityBaseline`` manifests (one or more YAML documents; a bare baseline
    ``spec`` works too). Raises ``PolicyError`` naming every problem with its path."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(path, [f"cannot read the file: {exc}"]) from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise PolicyError(path, [f"not valid YAML: {' '.join(str(exc).split())}"]) from None
    out: list[tuple[str, SecurityBaselineSpec]] = []
    problems: list[str] = []
    for index, doc in enumerate(docs):
        if not isinstance(doc, Mapping):
            problems.append(f"document {index + 1}: not a mapping")
            continue
        if "kind" in doc:
            if doc.get("kind") != "SecurityBaseline":
                continue
            name = str((doc.get("metadata") or {}).get("name") or f"document-{index + 1}")
            spec, prefix = doc.get("spec") or {}, "spec."
        else:
            name, spec, prefix = f"document-{index + 1}", doc, ""
        try:
            out.append((name, SecurityBaselineSpec.model_validate(spec)))
        except ValidationError as exc:
            problems.extend(f"{name}: {prefix}{line}" for line in format_validation_errors(exc))
    if problems:
        raise PolicyError(path, problems)
    if not out:
        raise PolicyError(path, ["no SecurityBaseline in the file"])
    return out
