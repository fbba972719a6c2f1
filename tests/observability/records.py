"""One access-log record for the log tests: a WAF refusal with every field set, so a test
changes (``dataclasses.replace``) only what it is about."""

from __future__ import annotations

from wardgate.observability.logs import AccessRecord

REFUSED = AccessRecord(
    start=1_700_000_000.25,
    method="GET",
    path="/search",
    protocol="HTTP/1.1",
    status=403,
    response_flags="UAEX",
    bytes_received=0,
    bytes_sent=321,
    duration_ms=4,
    upstream_service_time_ms=None,
    forwarded_for="203.0.113.7",
    user_agent="curl/8.5",
    request_id="req-1",
    authority="api.example",
    upstream_host="",
    client_address="203.0.113.7",
    replied_by="waf",
    reason="attack_detected",
    rule_ids=("waf.942100", "waf.942190"),
    locations=("query:q",),
    policy_digest="abc123",
    policy_generation=3,
    findings=("waf.931100@query:next",),
)
"""A request the WAF refused (rules 942100 and 942190 on the query parameter ``q``)."""
