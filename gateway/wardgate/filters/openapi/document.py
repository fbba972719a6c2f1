"""Loading an OpenAPI document: read it (YAML or JSON), pull every file it ``$ref``s into one
self-contained *bundle* whose references are all local JSON pointers, check the version
and validate it with openapi-spec-validator.

Contract: :func:`load_document` returns a :class:`Document` or raises
:class:`SpecError` with one human-readable line per problem. It never raises anything else
for bad input (cycles, oversized or malformed files, Swagger 2.0, remote references)."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import yaml

from wardgate.errors import SpecError as SpecError  # noqa: PLC0414 - re-export

MAX_SPEC_BYTES = 16 * 1024 * 1024
"""Largest single spec file read (the bundle of all files together may be larger)."""

MAX_FILES = 256
"""Most files one spec may pull in through ``$ref``."""

MAX_NODES = 2_000_000
"""Most JSON nodes in the bundle: YAML aliases can make a small file expand into an
enormous document ("billion laughs"); past this it is refused instead of exhausting
memory."""

FILES_KEY = "x-wardgate-files"
"""Where external files live in the bundle: ``#/x-wardgate-files/<n>/...``."""


@dataclass(frozen=True, slots=True)
class Document:
    """A loaded, bundled, validated OpenAPI document."""

    bundle: dict[str, Any]
    """The root document with every external file inlined under :data:`FILES_KEY` and
    every ``$ref`` rewritten to a local pointer (``#/...``)."""

    version: str
    """``3.0`` or ``3.1``."""

    sources: tuple[tuple[str, str], ...]
    """Every file read, as ``(path, sha256 hex)`` (empty for an inline document)."""

    def resolve(self, node: Any) -> Any:
        """``node`` with ``$ref`` chains followed (for non-schema objects: parameters,
        request bodies, responses, path items...). Raises :class:`SpecError` on a
        cycle of references or a dangling one."""
        seen: set[str] = set()
        while isinstance(node, dict) and isinstance(node.get("$ref"), str):
            ref = node["$ref"]
            if ref in seen:
                raise SpecError([f"$ref cycle through {ref}"])
            seen.add(ref)
            node = self.pointer(ref)
        return node

    def pointer(self, ref: str) -> Any:
        """The node a local ``#/...`` reference points at."""
        return follow_pointer(self.bundle, ref)


def follow_pointer(root: Any, ref: str) -> Any:
    """Follow a local JSON pointer reference (``#/a/b~1c``) in ``root``."""
    if not ref.startswith("#"):
        raise SpecError([f"$ref {ref}: not a local reference after bundling"])
    node = root
    fragment = unquote(ref[1:])
    if fragment in ("", "/"):
        return root
    if not fragment.startswith("/"):
        raise SpecError([f"$ref {ref}: only JSON pointer fragments are supported"])
    for raw in fragment[1:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise SpecError([f"$ref {ref}: points at nothing"])
    return node


def _pointer_escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


class _Bundler:
    """Inline external files, rewriting references so that all of them are local."""

    def __init__(self, base_dir: Path | None) -> None:
        self.base_dir = base_dir.resolve() if base_dir is not None else None
        self.files: dict[Path, int] = {}
        self.contents: list[Any] = []
        self.sources: list[tuple[str, str]] = []
        self.problems: list[str] = []
        self.budget = MAX_NODES

    def add_file(self, path: Path) -> int:
        """The index of ``path`` in the bundle, reading it on first use."""
        resolved = path.resolve()
        if resolved in self.files:
            return self.files[resolved]
        if len(self.files) >= MAX_FILES:
            raise SpecError([f"more than {MAX_FILES} files referenced"])
        index = len(self.contents)
        self.files[resolved] = index
        self.contents.append(None)
        data, digest = read_spec_file(path)
        self.sources.append((str(path), digest))
        self.contents[index] = self.rewrite(data, resolved.parent, index)
        return index

    def rewrite(self, node: Any, here: Path | None, index: int | None) -> Any:
        """A copy of ``node`` with every ``$ref`` made local to the bundle."""
        self.budget -= 1
        if self.budget < 0:
            raise SpecError(
                [f"the document has more than {MAX_NODES} nodes (after expanding YAML aliases)"]
            )
        if isinstance(node, dict):
            out: dict[str, Any] = {}
            for key, value in node.items():
                if key == "$ref" and isinstance(value, str):
                    out[key] = self.local_ref(value, here, index)
                else:
                    out[key] = self.rewrite(value, here, index)
            return out
        if isinstance(node, list):
            return [self.rewrite(item, here, index) for item in node]
        return node

    def local_ref(self, ref: str, here: Path | None, index: int | None) -> str:
        target, _, fragment = ref.partition("#")
        if target == "":
            # A reference within the same file.
            if index is None:
                return ref
            return (
                f"#/{FILES_KEY}/{index}{fragment}"
                if fragment.startswith("/")
                else (f"#/{FILES_KEY}/{index}")
            )
        if "://" in target or target.startswith("//"):
            raise SpecError(
                [
                    f"$ref {ref}: remote references are not supported (bundle the file next to "
                    "the spec)"
                ]
            )
        if here is None or self.base_dir is None:
            raise SpecError([f"$ref {ref}: an inline spec can only use local references (#/...)"])
        path = (here / unquote(target)).resolve()
        if not path.is_relative_to(self.base_dir):
            raise SpecError([f"$ref {ref}: points outside the spec's directory"])
        other = self.add_file(path)
        suffix = fragment if fragment.startswith("/") else ""
        return f"#/{FILES_KEY}/{other}{suffix}"


def read_spec_file(path: Path) -> tuple[Any, str]:
    """Parse one YAML/JSON file; returns the data and the sha256 of its bytes."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecError([f"{path}: cannot read the file: {exc.strerror or exc}"]) from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError([f"{path}: larger than {MAX_SPEC_BYTES} bytes"])
    return parse_spec_text(raw, str(path)), hashlib.sha256(raw).hexdigest()


def parse_spec_text(raw: bytes, source: str) -> Any:
    """YAML (a superset of JSON) without custom tags. Aliases are allowed; their expansion
    is bounded by :data:`MAX_NODES` when the bundle is built."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError([f"{source}: not UTF-8 text (byte {exc.start})"]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError([f"{source}: not valid YAML/JSON: {' '.join(str(exc).split())}"]) from None
    except RecursionError:
        raise SpecError([f"{source}: nested too deeply"]) from None


def load_document(
    *, spec_file: str | None = None, inline: dict[str, Any] | None = None
) -> Document:
    """Load, bundle and validate a document given as a file path or inline."""
    try:
        if spec_file is not None:
            path = Path(spec_file)
            bundler = _Bundler(path.absolute().parent)
            root_index = bundler.add_file(path)
            root = bundler.contents[root_index]
            externals = bundler.contents[1:]
            # The root file is index 0: its self-references were rewritten to
            # #/x-wardgate-files/0/...; point them back at the root instead.
            root = _reroot(root)
            externals = [_reroot(item) for item in externals]
        else:
            bundler = _Bundler(None)
            root = bundler.rewrite(copy.deepcopy(inline), None, None)
            externals = []
    except RecursionError:
        raise SpecError(["the document is nested too deeply"]) from None
    if not isinstance(root, dict):
        raise SpecError(["the OpenAPI document must be a mapping"])
    version = _version(root)
    if externals:
        root[FILES_KEY] = {str(i + 1): item for i, item in enumerate(externals)}
    try:
        _check_json_compatible(root)
    except RecursionError:
        raise SpecError(["the document is nested too deeply"]) from None
    document = Document(bundle=root, version=version, sources=tuple(bundler.sources))
    _check_refs(document)
    _validate(root, version)
    return document


def _check_refs(document: Document) -> None:
    """Every reference points at something, and no chain of references loops back on
    itself without a real object in between (``A -> B -> A``)."""
    problems: list[str] = []
    seen: set[str] = set()
    for ref in _refs(document.bundle):
        if ref in seen:
            continue
        seen.add(ref)
        try:
            document.resolve({"$ref": ref})
        except SpecError as exc:
            problems.extend(exc.problems)
        if len(problems) >= 20:
            break
    if problems:
        raise SpecError(sorted(set(problems)))


def _refs(node: Any) -> Iterator[str]:
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str):
                yield ref
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


_ROOT_PREFIX = f"#/{FILES_KEY}/0"


def _reroot(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(_ROOT_PREFIX):
                rest = value[len(_ROOT_PREFIX) :]
                out[key] = "#" + rest if rest else "#"
            else:
                out[key] = _reroot(value)
        return out
    if isinstance(node, list):
        return [_reroot(item) for item in node]
    return node


def _version(root: dict[str, Any]) -> str:
    if "swagger" in root:
        raise SpecError(
            [
                f"Swagger {root.get('swagger')} is not supported: convert the document to "
                "OpenAPI 3 (for example with swagger2openapi)"
            ]
        )
    declared = root.get("openapi")
    if not isinstance(declared, str):
        raise SpecError(["not an OpenAPI document: the 'openapi' version field is missing"])
    if declared.startswith("3.0."):
        return "3.0"
    if declared.startswith("3.1."):
        return "3.1"
    raise SpecError([f"OpenAPI {declared} is not supported (use 3.0.x or 3.1.x)"])


def _check_json_compatible(root: Any) -> None:
    """YAML allows non-string keys and dates; OpenAPI documents are JSON."""
    for where, key in _non_string_keys(root, "#"):
        raise SpecError([f"{where}: mapping key {key!r} is not a string (quote it)"])
    try:
        json.dumps(root, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SpecError([f"the document has a value JSON cannot represent: {exc}"]) from None


def _non_string_keys(node: Any, where: str) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                yield where, key
            else:
                yield from _non_string_keys(value, f"{where}/{_pointer_escape(key)}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _non_string_keys(item, f"{where}/{i}")


def _validate(root: dict[str, Any], version: str) -> None:
    from openapi_spec_validator import OpenAPIV30SpecValidator, OpenAPIV31SpecValidator

    validator_cls = OpenAPIV30SpecValidator if version == "3.0" else OpenAPIV31SpecValidator
    problems: list[str] = []
    try:
        for error in validator_cls(root).iter_errors():
            location = "/".join(str(p) for p in getattr(error, "path", ()) or ())
            message = " ".join(str(getattr(error, "message", error)).split())
            if len(message) > 300:
                message = message[:300] + "..."
            problems.append(f"#/{location}: {message}" if location else message)
            if len(problems) >= 20:
                problems.append("(more errors not shown)")
                break
    except RecursionError:
        problems.append("the document's references nest too deeply to validate")
    except Exception as exc:  # the validator raises its own types for broken references
        ref = getattr(exc, "ref", None)
        detail = f"unresolvable $ref {ref}" if isinstance(ref, str) else type(exc).__name__
        problems.append(f"the document cannot be validated: {detail}")
    if problems:
        raise SpecError([f"invalid OpenAPI {version} document: {p}" for p in problems])
