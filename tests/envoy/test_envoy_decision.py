"""The protocol-neutral decision: header diffs, the body phase on what Envoy sent, metadata,
and the limitations a policy has behind Envoy."""

from __future__ import annotations

import dataclasses

from wardgate.config import load_policy_text
from wardgate.envoy.decision import CheckInput, decide, header_changes
from wardgate.envoy.limitations import envoy_limitations
from wardgate.filters.api import FilterConfig, HttpFilter, HttpRequest, LocalReply, Violation
from wardgate.runtime import CompiledPolicy, compile_policy


class _BodyFilter(HttpFilter):
    def __init__(self, seen: list[tuple[bytes, bool]]) -> None:
        self.seen = seen

    async def decode_headers(self, request: HttpRequest) -> LocalReply | None:
        request.headers["x-claim-sub"] = "alice"  # like claimToHeaders
        request.headers.popall("authorization", None)  # like forward: false
        return None

    async def decode_body(self, request: HttpRequest, body: bytes, complete: bool):
        self.seen.append((body, complete))
        if b"attack" in body:
            return LocalReply(
                403, "bodycheck", "attack", violations=(Violation("b.1", "body", "bad"),)
            )
        if not complete:
            return LocalReply(403, "bodycheck", "body_not_inspected")
        return None


class _BodyConfig(FilterConfig):
    name = "bodycheck"
    request_body_limit = 16

    def __init__(self) -> None:
        self.seen: list[tuple[bytes, bool]] = []

    def create_filter(self) -> HttpFilter:
        return _BodyFilter(self.seen)


# The WAF (on by default) is off here: these tests watch what the adapter hands the body
# phase, through a recording filter, and the WAF would answer first.
def _policy(yaml_text: str = 'waf: {mode: "off"}') -> tuple[CompiledPolicy, _BodyConfig]:
    base = compile_policy(load_policy_text(yaml_text))
    body = _BodyConfig()
    return dataclasses.replace(base, filters=(*base.filters, body), request_body_limit=16), body


def _check(**kwargs) -> CheckInput:
    headers = (
        (":authority", "api.example.com"),
        (":method", "POST"),
        ("authorization", "Bearer secret-token"),
        ("content-length", "5"),
        ("x-request-id", "rid-1"),
    )
    return CheckInput(**{"method": "POST", "target": "/items?x=1", "headers": headers, **kwargs})


def test_header_changes_set_append_remove():
    before = [("a", "1"), ("b", "2"), ("c", "3"), ("c", "4")]
    after = [("a", "1"), ("b", "9"), ("d", "5"), ("d", "6")]
    to_set, to_append, to_remove = header_changes(before, after)
    assert to_set == (("b", "9"), ("d", "5"))
    assert to_append == (("d", "6"),)
    assert to_remove == ("c",)


async def test_allowed_decision_carries_upstream_changes_not_values_in_metadata():
    policy, body = _policy()
    decision = await decide(policy, _check(body=b"hello"))
    assert decision.allowed and decision.status == 200
    assert decision.upstream_set == (("x-claim-sub", "alice"),)
    assert decision.upstream_remove == ("authorization",)
    assert body.seen == [(b"hello", True)]
    assert decision.request_id == "rid-1"
    assert "secret-token" not in repr(decision.metadata())
    assert decision.metadata()["wardgate"]["decision"] == "allow"


async def test_no_body_from_envoy_is_an_empty_incomplete_prefix():
    policy, body = _policy()
    decision = await decide(policy, _check(body=None))
    assert body.seen == [(b"", False)]
    assert not decision.allowed and decision.reason == "body_not_inspected"


async def test_partial_and_over_limit_bodies_are_incomplete_and_still_inspected():
    policy, body = _policy()
    decision = await decide(policy, _check(body=b"attack" + b"x" * 100, body_partial=True))
    assert body.seen == [(b"attack" + b"x" * 10, False)]  # cut at the filter's 16 bytes
    assert not decision.allowed and decision.status == 403
    assert decision.rule_ids == ("b.1",)
    assert decision.metadata()["wardgate"]["rule_ids"] == ["b.1"]


async def test_get_without_body_runs_the_body_phase_on_an_empty_body():
    # As in the native proxy: a filter may require a body, so it sees "none, complete".
    policy, body = _policy()
    check = CheckInput(method="GET", target="/", headers=(("host", "h"),))
    assert (await decide(policy, check)).allowed
    assert body.seen == [(b"", True)]


async def test_body_over_cap_is_413_when_envoy_sent_more_than_the_cap():
    policy = compile_policy(load_policy_text("limits: {maxRequestBodyBytes: 10}"))
    check = CheckInput(
        method="POST", target="/", headers=(("transfer-encoding", "chunked"),), body=b"y" * 11
    )
    decision = await decide(policy, check)
    assert decision.status == 413 and decision.reason == "body_too_large"


async def test_an_exception_in_the_adapter_is_a_500_refusal():
    policy, _ = _policy()
    broken = dataclasses.replace(policy, filters=(object(),))  # type: ignore[arg-type]
    decision = await decide(broken, _check(body=b"x"))
    assert not decision.allowed
    assert decision.status == 500 and decision.reason == "internal_error"


def test_limitations_name_body_readers_and_the_buffer_they_need():
    policy, _ = _policy()
    notes = envoy_limitations(policy)
    assert any("bodycheck read the request body (up to 16 bytes)" in n for n in notes)
    assert any("max_request_bytes >= 17" in n for n in notes)
