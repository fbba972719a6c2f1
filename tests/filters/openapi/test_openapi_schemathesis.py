"""schemathesis against ``examples/petstore`` behind a real ``wardgate run`` process.

schemathesis generates requests from the spec, conforming (positive) and not (negative).
Whether a request *as sent* conforms is decided by openapi-core (the reference) plus the
policy's stricter option (undeclared query parameters refused); each request is tagged so
the upstream's log shows whether it got through. Conforming requests must reach the
upstream; non-conforming ones must be refused and never reach it. The number of generated
requests is bounded to keep the runtime within the suite's budget."""

from __future__ import annotations

import asyncio
import copy
import re
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
import yaml
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest
from schemathesis import GenerationMode
from schemathesis.openapi import from_path

from tests.filters.openapi.helpers import PETSTORE
from tests.filters.openapi.test_openapi_proxy import PETSTORE_UPSTREAM

EXAMPLES_PER_MODE = 60


@pytest.fixture
def threaded_upstream() -> Iterator[tuple[str, Any]]:
    """The petstore upstream on its own event loop in a thread (the gateway under test is
    a separate process)."""
    app = PETSTORE_UPSTREAM.petstore_app()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, Any] = {}

    def serve() -> None:
        asyncio.set_event_loop(loop)
        runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        box["port"] = runner.addresses[0][1]
        box["runner"] = runner
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    yield f"http://127.0.0.1:{box['port']}", app
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def _oracle() -> OpenAPI:
    spec = copy.deepcopy(yaml.safe_load(PETSTORE.read_text()))
    # The policy leaves security to the service here (no jwt section in this test), so the
    # reference must not judge it either.
    for item in spec["paths"].values():
        for op in item.values():
            if isinstance(op, dict):
                op.pop("security", None)
    return OpenAPI.from_dict(spec)


def _as_openapi_request(sent: requests.PreparedRequest) -> MockRequest:
    """The request as sent, for openapi-core. (Its ``requests`` adapter drops blank query
    values such as ``?tags=``, which the service would see; this keeps them.)"""
    url = urlsplit(sent.url)
    headers = {k.lower(): v for k, v in sent.headers.items()}
    cookies = {}
    for part in headers.pop("cookie", "").split(";"):
        name, eq, value = part.strip().partition("=")
        if eq:
            cookies[name] = value
    body = sent.body.encode() if isinstance(sent.body, str) else sent.body
    return MockRequest(
        f"{url.scheme}://{url.netloc}",
        sent.method.lower(),
        url.path,
        args=parse_qsl(url.query, keep_blank_values=True),
        headers=headers,
        cookies=cookies,
        data=body,
        content_type=headers.get("content-type", ""),
    )


def _stricter_on_purpose(problem: str, url: str) -> bool:
    """Refusals where Wardgate is stricter than openapi-core by design (docs/openapi.md):
    dot segments and encoded separators in the path; a parameter or form field given more
    than once where one value is declared (parameter pollution); ``deepObject`` keys with
    non-word property names (``filter[a b]``), which openapi-core's parser skips but the
    service's parser sees."""
    if "path_not_normalized" in problem or "given more than once" in problem:
        return True
    keys = [k for k, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True)]
    odd = [k for k in keys if k.startswith("filter[") and not re.fullmatch(r"\w+", k[7:-1])]
    return bool(odd) and '"location":"query:filter"' in problem


def _declared_query(schema: Any) -> dict[tuple[str, str], set[str]]:
    out = {}
    for op in schema.get_all_operations():
        operation = op.ok()
        names = {p.name for p in operation.query}
        out[(operation.method.upper(), operation.path)] = names
    return out


def test_schemathesis_conforming_pass_non_conforming_refused(
    tmp_path, gateway_process, threaded_upstream
):
    upstream_url, app = threaded_upstream
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "openapi": {
                    "specFile": str(PETSTORE),
                    "security": "ignore",
                    "rejectUnknownQueryParameters": True,
                    "maxBodyBytes": 65536,
                },
                # This test judges the allow-list alone: schemathesis' random strings
                # (control characters in names, ...) are what the WAF refuses by design,
                # and its own corpus tests measure its false positives.
                "waf": {"mode": "off"},
            }
        )
    )
    gw = gateway_process("--upstream", upstream_url, "--policy", str(policy), "--access-log", "off")
    base = f"{gw.url}/api/v1"
    schema = from_path(str(PETSTORE))
    oracle = _oracle()
    declared = _declared_query(schema)
    operations = [op.ok() for op in schema.get_all_operations()]
    session = requests.Session()
    tally = {"conforming": 0, "refused": 0, "stricter": 0}
    mismatches: list[str] = []
    counter = iter(range(10**9))

    def check(case: Any) -> None:
        case_id = f"c{next(counter)}"
        response = case.call(
            base_url=base, session=session, headers={"x-test-case": case_id}, timeout=10
        )
        sent = response.request
        try:
            oracle.validate_request(_as_openapi_request(sent))
            conforms = True
        except Exception:
            conforms = False
        # deepObject parameters arrive as name[property].
        query_keys = {
            k.split("[")[0] for k, _ in parse_qsl(urlsplit(sent.url).query, keep_blank_values=True)
        }
        if query_keys - declared[(case.method.upper(), case.path)]:
            conforms = False
        reached = case_id in app[PETSTORE_UPSTREAM.CASES]
        if (
            not reached
            and response.status_code == 400
            and _stricter_on_purpose(response.text, sent.url)
        ):
            tally["stricter"] += 1
            return
        if reached != conforms:
            mismatches.append(
                f"{sent.method} {sent.url} -> {response.status_code} conforms={conforms}: {response.text[-250:]} body={(sent.body or b'')[:300]!r}"
            )
        elif conforms:
            tally["conforming"] += 1
        else:
            tally["refused"] += 1
            assert response.status_code in (400, 404, 405, 413, 415), response.status_code
            content_type = {k.lower(): v for k, v in response.headers.items()}["content-type"]
            assert content_type == ["application/problem+json"]

    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        strategy = st.sampled_from(operations).flatmap(
            lambda op, mode=mode: op.as_strategy(generation_mode=mode)
        )

        @settings(
            max_examples=EXAMPLES_PER_MODE,
            derandomize=True,  # the same requests on every run: CI must not be a lottery
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def run(case: Any) -> None:
            check(case)

        run()
    print("schemathesis tally:", tally)
    assert not mismatches, "\n".join(mismatches[:10])
    # The run is not vacuous: both classes occurred.
    assert tally["conforming"] >= 10 and tally["refused"] >= 10, tally
