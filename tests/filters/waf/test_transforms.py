"""Transformations, table-driven, plus properties: total (no exception on any input),
identity-preserving on unchanged values, linear decoders that stop at a fixpoint."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wardgate.filters.waf.transforms import TRANSFORMS, is_plain

CASES = [
    ("urlDecodeUni", "a%20b+c", "a b c"),
    ("urlDecodeUni", "%252e%252e%252f", "../"),
    ("urlDecodeUni", "%u002e%u002E/", "../"),
    ("urlDecodeUni", "%2B", "+"),  # only the first level turns + into a space
    ("urlDecodeUni", "100%", "100%"),
    ("urlDecodeUni", "%zz%4", "%zz%4"),
    ("urlDecodeUni", "%c0%ae", "\ufffd\ufffd"),  # overlong UTF-8 never becomes "."
    ("urlDecodePath", "a+b%2fc", "a+b/c"),
    ("htmlEntityDecode", "&lt;script&gt;", "<script>"),
    ("htmlEntityDecode", "&#60;&#x3C;&#0000060;", "<<<"),
    ("htmlEntityDecode", "&colon;&lbrace;&LBRACE;", ":{{"),
    ("htmlEntityDecode", "&lt no semicolon", "< no semicolon"),
    ("htmlEntityDecode", "AT&T & co", "AT&T & co"),
    ("jsDecode", "\\x3cscript\\u003e", "<script>"),
    ("jsDecode", "\\u{61}lert", "alert"),
    ("jsDecode", "c\\at", "cat"),
    ("jsDecode", "a\\\\b", "a\\b"),
    ("jsDecode", "\\101", "A"),
    ("cssDecode", "\\6a avascript", "javascript"),
    ("unicodeNormalize", "\uff1cscript\uff1e", "<script>"),
    ("removeNulls", "a\0b", "ab"),
    ("compressWhitespace", "a \t\n  b", "a b"),
    ("removeWhitespace", "j a\tv a", "java"),
    ("replaceComments", "UNION/**/SELECT/*x", "UNION SELECT "),
    ("removeCommentsChar", "a/*b*/--#", "ab"),
    ("normalizePath", "/a/./b//../c/", "/a/c/"),
    ("normalizePath", "../../etc", "../../etc"),
    ("normalizePathWin", "a\\b\\..\\c", "a/c"),
    ("backslashToSlash", "..\\..\\win.ini", "../../win.ini"),
    ("cmdLine", "C^M\"D /C, w'h'o;am", "cmd/c who am"),
    ("shellUnquote", "w'h'o\\am^i$@", "whoami"),
    ("lowercase", "SeLeCt", "select"),
    ("trim", "  x ", "x"),
    (
        "removeXmlDeclarations",
        '<?xml version="1.0"?><svg onload=alert(1)><?XML\tv="1"?>',
        "<svg onload=alert(1)>",
    ),
    ("removeXmlDeclarations", "<?xml :echo 1;", "<?xml :echo 1;"),
    ("removeXmlDeclarations", "<?import implementation =", "<?import implementation ="),
    ("removeXmlDeclarations", '<?xml a="><script>x</script>"?>', '<?xml a="><script>x</script>"?>'),
]


@pytest.mark.parametrize(("name", "given_", "expected"), CASES)
def test_transformation(name, given_, expected):
    assert TRANSFORMS[name](given_) == expected


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_unchanged_value_is_returned_as_the_same_object(name):
    value = "plainvalue123"
    result = TRANSFORMS[name](value)
    assert result == value and result is value


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200))
def test_every_transformation_is_total(text):
    for transform in TRANSFORMS.values():
        assert isinstance(transform(text), str)


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(max_size=60).filter(lambda t: "%" not in t and t[:1] < "\ud800"),
    levels=st.integers(1, 4),
)
def test_url_decoding_undoes_every_level_of_encoding(text, levels):
    encoded = text
    for _ in range(levels):
        encoded = quote(encoded, safe="")
    assert TRANSFORMS["urlDecodePath"](encoded) == text


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=80))
def test_plain_values_are_left_alone_by_the_skipped_transformations(text):
    from wardgate.filters.waf.transforms import PLAIN_IDENTITY

    if is_plain(text):
        for name in PLAIN_IDENTITY:
            assert TRANSFORMS[name](text) == text
