"""Which token texts count as a compact JWT (``in_jwt_alphabet``): only those may be
vouched for to the WAF, so anything outside base64url and ``.`` must be refused."""

from __future__ import annotations

import pytest

from wardgate.filters.jwt_authn.extract import in_jwt_alphabet


@pytest.mark.parametrize(
    "token",
    ["eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln-_x", "abc", "...", "-_.", "A1", ""],
)
def test_base64url_and_dots_are_the_jwt_alphabet(token: str) -> None:
    assert in_jwt_alphabet(token)


@pytest.mark.parametrize(
    "token",
    [
        "eyJ.eyJ.sig=",  # padding is not base64url in a JWT
        "eyJ.eyJ.s+g/",  # base64 (not url) characters
        "eyJ.eyJ.sig ",  # a space
        "eyJ.eyJ.sig'--",
        "eyJ.eyJ.sïg",  # a non-ASCII letter (str.isalnum would say yes)
        "eyJ.eyJ.sig\x00",
        "١٢٣",  # Arabic-Indic digits: digits to str.isalnum, not ASCII
    ],
)
def test_anything_else_is_not(token: str) -> None:
    assert not in_jwt_alphabet(token)
