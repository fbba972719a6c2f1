"""The fast path of ``normalise_path`` (nothing to resolve) gives exactly what the full
resolution gives, for any path."""

from __future__ import annotations

from urllib.parse import unquote

from hypothesis import given
from hypothesis import strategies as st

from wardgate.filters.matching import normalise_path


def _reference(path: str, decode: bool) -> str:
    """The resolution without the fast path (as it was before it was added)."""
    if decode:
        path = unquote(path, errors="replace")
    path = path.replace("\\", "/") if decode else path
    segments: list[str] = []
    for part in path.split("/")[1:]:
        lowered = part.lower()
        if part in ("", ".") or lowered == "%2e":
            continue
        if part == ".." or lowered in ("%2e%2e", ".%2e", "%2e."):
            if segments:
                segments.pop()
            continue
        segments.append(part)
    trailing = path.endswith("/") and bool(segments)
    return "/" + "/".join(segments) + ("/" if trailing else "")


@given(st.text(alphabet="/a.%2eE\\F", max_size=24), st.booleans())
def test_fast_path_agrees_with_the_full_resolution(path: str, decode: bool) -> None:
    assert normalise_path(path, decode) == _reference(path, decode)


@given(st.from_regex(r"/[a-z0-9_-]{1,8}(/[a-z0-9_-]{1,8}){0,4}/?", fullmatch=True))
def test_plain_paths_are_unchanged(path: str) -> None:
    assert normalise_path(path, True) == path == _reference(path, True)
