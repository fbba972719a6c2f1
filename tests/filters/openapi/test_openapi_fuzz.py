"""Arbitrary requests never make the openapi filter raise: every answer is allow or a
deliberate refusal, never the chain's fail-closed 500 ``filter_error``."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.filters.openapi.helpers import decide, policy_for

POLICY = policy_for(
    rejectAdditionalProperties=True, response={"mode": "enforce", "stripUndeclaredProperties": True}
)
SEGMENT = st.one_of(
    st.sampled_from(
        ["api", "v1", "pets", "owners", "photo", "1", "0", "..", ".", "%2F", "%ff", ""]
    ),
    st.text(max_size=6),
)
TARGET = st.builds(
    lambda segs, query: "/" + "/".join(segs) + (f"?{query}" if query is not None else ""),
    st.lists(SEGMENT, max_size=5),
    st.one_of(
        st.none(),
        st.text(max_size=30),
        st.sampled_from(["limit=5", "tags=a,b", "filter[species]=cat", "limit=%ff"]),
    ),
)
CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=b",
        "text/plain",
        "",
        "multipart/form-data",
    ]
)
BODY = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        [
            b'{"name":"x"}',
            b"[",
            b'{"name":"\\ud800"}',
            b"--b\r\n\r\n--b--",
            b"name=a&name=b",
            b'{"a":' * 50,
        ]
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
    target=TARGET,
    content_type=CONTENT_TYPES,
    cookie=st.text(max_size=20),
    tag=st.text(max_size=20),
    body=BODY,
)
def test_no_request_makes_the_filter_fail(method, target, content_type, cookie, tag, body):
    headers = {"content-type": content_type, "cookie": cookie, "x-request-tag": tag}
    headers = {
        k: v for k, v in headers.items() if v.isprintable() and "\r" not in v and "\n" not in v
    }
    result = asyncio.run(decide(POLICY, method, target.replace(" ", "%20"), headers, body))
    assert result.get("reason") != "filter_error", result
    if result["decision"] == "deny":
        assert result["status"] in (400, 401, 404, 405, 413, 415)
