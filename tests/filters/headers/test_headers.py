"""The ``headers`` filter: removals before additions, Envoy's three append actions, request
changes on the way up and response changes on the way back (local replies included)."""

from __future__ import annotations

from multidict import CIMultiDict

from wardgate.config import load_policy_text
from wardgate.filters.api import HttpRequest, HttpResponse
from wardgate.filters.headers.filter import compile as compile_headers

POLICY = """
headers:
  request:
    remove: [x-internal]
    add:
      - {name: x-internal, value: from-policy, appendAction: APPEND_IF_EXISTS_OR_ADD}
      - {name: x-env, value: prod}
      - {name: x-tenant, value: default, appendAction: ADD_IF_ABSENT}
      - {name: x-trace, value: gw, appendAction: APPEND_IF_EXISTS_OR_ADD}
  response:
    remove: [server]
    add: [{name: x-frame-options, value: DENY}]
"""


def _request(*headers: tuple[str, str]) -> HttpRequest:
    return HttpRequest("GET", "/", "/", "", CIMultiDict(headers))


async def test_request_removals_run_first_then_each_append_action() -> None:
    config = compile_headers(load_policy_text(POLICY))
    assert config is not None
    request = _request(
        ("X-Internal", "forged"),
        ("x-env", "dev"),
        ("x-tenant", "acme"),
        ("x-trace", "client"),
    )
    assert await config.create_filter().decode_headers(request) is None
    headers = request.headers
    assert headers.getall("x-internal") == ["from-policy"]  # the client's copy is gone
    assert headers.getall("x-env") == ["prod"]  # overwritten (the default action)
    assert headers.getall("x-tenant") == ["acme"]  # kept: only added when absent
    assert headers.getall("x-trace") == ["client", "gw"]  # appended


async def test_absent_headers_are_added_by_every_action() -> None:
    config = compile_headers(load_policy_text(POLICY))
    assert config is not None
    request = _request()
    await config.create_filter().decode_headers(request)
    assert dict(request.headers) == {
        "x-internal": "from-policy",
        "x-env": "prod",
        "x-tenant": "default",
        "x-trace": "gw",
    }


def test_response_changes_apply_to_local_replies_too() -> None:
    config = compile_headers(load_policy_text(POLICY))
    assert config is not None
    for local in (False, True):
        response = HttpResponse(403, CIMultiDict([("Server", "app/1.0")]), local=local)
        assert config.create_filter().encode_headers(_request(), response) is None
        assert dict(response.headers) == {"x-frame-options": "DENY"}


def test_a_policy_without_header_changes_adds_no_filter() -> None:
    assert compile_headers(load_policy_text("limits: {maxUrlBytes: 100}\n")) is None
