"""Routing and refusals of the openapi filter on the petstore example: 404/403, 405 with
Allow, 400 naming each violation by location, 415, 413, detect mode, exclusions."""

from __future__ import annotations

import json

import pytest

from tests.filters.openapi.helpers import decide, locations, minimal_spec, policy_for

UUID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def petstore():
    return policy_for(rejectAdditionalProperties=True, security="ignore")


async def test_declared_requests_pass(petstore):
    for method, target in [
        ("GET", "/api/v1/pets"),
        ("GET", "/api/v1/pets?limit=5&tags=cat,dog"),
        ("GET", "/api/v1/pets/7"),
        ("DELETE", "/api/v1/pets/7"),
        ("GET", f"/api/v1/owners/{UUID}/pets?filter[species]=cat&filter[minAge]=2"),
    ]:
        result = await decide(petstore, method, target)
        assert result["decision"] == "allow", (method, target, result)


async def test_unknown_path_is_404_and_configurable_to_403():
    for target in ["/api/v1/nothing", "/pets", "/api/v1/pets/7/extra", "/api/v1/pets/"]:
        result = await decide(policy_for(), "GET", target)
        assert (result["decision"], result["status"], result["reason"]) == (
            "deny",
            404,
            "unknown_path",
        ), target
    result = await decide(policy_for(unknownPathStatus=403), "GET", "/api/v1/nothing")
    assert result["status"] == 403


async def test_undeclared_method_is_405_with_allow(petstore):
    result = await decide(petstore, "PATCH", "/api/v1/pets/7", metadata={})
    assert result["status"] == 405
    assert result["headers"]["allow"] == "GET, DELETE"


async def test_every_violation_is_named_by_location_without_values(petstore):
    secret = "s3cr3t-value-xyz"
    result = await decide(
        petstore,
        "GET",
        f"/api/v1/pets?limit={secret}&tags=UPPER&debug={secret}",
        headers={"x-request-tag": secret * 10},
    )
    assert result["status"] == 400
    assert sorted(locations(result)) == sorted(
        ["query:limit", "query:tags", "query:debug", "header:x-request-tag"]
    )
    assert secret not in json.dumps(result)


async def test_path_parameter_is_validated(petstore):
    for target in ["/api/v1/pets/0", "/api/v1/pets/abc", "/api/v1/pets/99999999999999999999"]:
        result = await decide(petstore, "GET", target)
        assert result["status"] == 400, target
        assert locations(result) == ["path:petId"]
    result = await decide(petstore, "GET", "/api/v1/owners/not-a-uuid/pets")
    assert locations(result) == ["path:ownerId"]


async def test_json_body_violations_name_json_paths(petstore):
    body = json.dumps({"name": "", "age": "old", "tag": None, "extra": 1}).encode()
    result = await decide(petstore, "POST", "/api/v1/pets", JSON, body)
    assert result["status"] == 400
    # The undeclared property is named (body:$.extra), not the object holding it.
    assert sorted(locations(result)) == ["body:$.age", "body:$.extra", "body:$.name"]
    ok = json.dumps({"name": "Rex", "species": "dog", "tag": None}).encode()
    assert (await decide(petstore, "POST", "/api/v1/pets", JSON, ok))["decision"] == "allow"


async def test_required_body_missing_is_400(petstore):
    result = await decide(petstore, "POST", "/api/v1/pets", JSON)
    assert (result["status"], locations(result)) == (400, ["body"])


async def test_undeclared_content_type_is_415(petstore):
    result = await decide(petstore, "POST", "/api/v1/pets", {"content-type": "text/xml"}, b"<pet/>")
    assert (result["status"], result["reason"]) == (415, "unsupported_media_type")
    result = await decide(petstore, "POST", "/api/v1/pets", {}, b'{"name":"x"}')
    assert result["status"] == 415


async def test_malformed_json_is_400_not_a_crash(petstore):
    for body in [b"{", b'{"name": NaN}', b'{"name":"a","name":"b"}', b"\xff\xfe", b"[" * 5000]:
        result = await decide(petstore, "POST", "/api/v1/pets", JSON, body)
        assert result["status"] == 400, body[:20]
        assert locations(result) == ["body"]


async def test_body_on_an_operation_without_request_body_is_refused(petstore):
    result = await decide(petstore, "GET", "/api/v1/pets", JSON, b'{"a":1}')
    assert (result["status"], locations(result)) == (400, ["body"])


async def test_body_larger_than_max_body_bytes_is_413():
    policy = policy_for(maxBodyBytes=64)
    body = json.dumps({"name": "x" * 40, "tag": "y" * 40}).encode()
    result = await decide(policy, "POST", "/api/v1/pets", JSON, body)
    assert (result["status"], result["reason"]) == (413, "body_too_large")


async def test_read_only_property_in_a_request_is_refused():
    policy = policy_for(security="ignore")
    spec_pet = {"name": "Rex", "id": 5}
    # createPet takes NewPet (no id at all); a schema with a readOnly id refuses it too.
    spec = minimal_spec(
        {
            "/p": {
                "post": {
                    "requestBody": {
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["id", "name"],
                                    "properties": {
                                        "id": {"type": "integer", "readOnly": True},
                                        "name": {"type": "string"},
                                    },
                                }
                            }
                        }
                    },
                    "responses": {"200": {"description": "ok"}},
                }
            }
        }
    )
    policy = policy_for(spec)
    result = await decide(policy, "POST", "/p", JSON, json.dumps(spec_pet).encode())
    assert locations(result) == ["body:$.id"]
    # ...and a readOnly required property is not required in requests.
    ok = await decide(policy, "POST", "/p", JSON, b'{"name":"Rex"}')
    assert ok["decision"] == "allow"


async def test_unknown_query_parameters_can_be_allowed():
    strict = await decide(policy_for(), "GET", "/api/v1/pets?utm_source=x")
    assert locations(strict) == ["query:utm_source"]
    lax = policy_for(rejectUnknownQueryParameters=False)
    assert (await decide(lax, "GET", "/api/v1/pets?utm_source=x"))["decision"] == "allow"


async def test_additional_properties_are_allowed_unless_the_policy_says():
    body = json.dumps({"name": "Rex", "color": "brown"}).encode()
    lax = await decide(policy_for(), "POST", "/api/v1/pets", JSON, body)
    assert lax["decision"] == "allow"
    strict = policy_for(rejectAdditionalProperties=True)
    result = await decide(strict, "POST", "/api/v1/pets", JSON, body)
    assert locations(result) == ["body:$.color"]


async def test_detect_mode_lets_through_and_records_findings():
    policy = policy_for(mode="detect")
    result = await decide(policy, "GET", "/api/v1/pets?limit=0")
    assert result["decision"] == "allow"
    assert [d["location"] for d in result["detected"]] == ["query:limit"]
    result = await decide(policy, "GET", "/nowhere")
    assert result["decision"] == "allow"
    assert result["detected"][0]["ruleId"] == "openapi.path"


async def test_per_operation_mode_and_exclusion():
    policy = policy_for(
        operations=[
            {"operationId": "listPets", "mode": "detect"},
            {"path": "/pets/{petId}", "method": "GET", "exclude": True},
        ]
    )
    listed = await decide(policy, "GET", "/api/v1/pets?limit=0")
    assert listed["decision"] == "allow" and listed["detected"]
    excluded = await decide(policy, "GET", "/api/v1/pets/notanumber")
    assert excluded["decision"] == "allow"
    # Other operations still enforce.
    assert (await decide(policy, "DELETE", "/api/v1/pets/x"))["decision"] == "deny"


async def test_overrides_that_match_nothing_are_refused_at_compile():
    from wardgate.runtime.compiled import PolicyCompileError

    with pytest.raises(PolicyCompileError) as info:
        policy_for(operations=[{"operationId": "nope", "exclude": True}])
    assert "operationId 'nope' matches no operation" in str(info.value)


@pytest.mark.parametrize(
    "target",
    [
        "/api/v1/pets/../pets",
        "/api/v1/pets/%2e%2e/admin",
        "/api/v1/pets/1%2F2",
        "/api/v1/pets/1%5c2",
        "/api/v1/pets\\1",
    ],
)
async def test_ambiguous_paths_are_refused(target, petstore):
    result = await decide(petstore, "GET", target)
    assert (result["status"], result["reason"]) == (400, "path_not_normalized")


async def test_literal_paths_win_over_templates():
    spec = minimal_spec(
        {
            "/users/me": {"get": {"responses": {"200": {"description": "ok"}}}},
            "/users/{id}": {
                "get": {
                    "parameters": [
                        {
                            "name": "id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "integer"},
                        }
                    ],
                    "responses": {"200": {"description": "ok"}},
                }
            },
        }
    )
    policy = policy_for(spec)
    assert (await decide(policy, "GET", "/users/me"))["decision"] == "allow"
    assert (await decide(policy, "GET", "/users/12"))["decision"] == "allow"
    assert locations(await decide(policy, "GET", "/users/you")) == ["path:id"]


async def test_server_base_paths_with_variables():
    spec = minimal_spec(
        {"/ping": {"get": {"responses": {"200": {"description": "ok"}}}}},
        servers=[
            {
                "url": "https://api.example.com/{version}",
                "variables": {"version": {"default": "v1", "enum": ["v1", "v2"]}},
            }
        ],
    )
    policy = policy_for(spec)
    for target in ["/v1/ping", "/v2/ping"]:
        assert (await decide(policy, "GET", target))["decision"] == "allow"
    for target in ["/ping", "/v3/ping", "/v1ping"]:
        assert (await decide(policy, "GET", target))["status"] == 404


async def test_the_envoy_adapter_gives_the_same_answers(petstore):
    from wardgate.envoy.decision import CheckInput
    from wardgate.envoy.decision import decide as envoy_decide

    missing = CheckInput(method="POST", target="/api/v1/pets", headers=(("host", "h"),))
    decision = await envoy_decide(petstore, missing)
    assert (decision.status, decision.locations) == (400, ("body",))
    good = CheckInput(
        method="POST",
        target="/api/v1/pets",
        headers=(("host", "h"), ("content-type", "application/json"), ("content-length", "14")),
        body=b'{"name":"Rex"}',
    )
    assert (await envoy_decide(petstore, good)).allowed
    unknown = CheckInput(method="GET", target="/api/v1/admin", headers=(("host", "h"),))
    assert (await envoy_decide(petstore, unknown)).status == 404


async def test_lone_surrogates_are_a_400_not_a_filter_error(petstore):
    result = await decide(petstore, "POST", "/api/v1/pets", JSON, b'{"name": "\\ud800"}')
    assert (result["status"], result["reason"]) == (400, "request_invalid")
    assert result["violations"][0]["ruleId"] == "openapi.body.parse"
    ok = await decide(petstore, "POST", "/api/v1/pets", JSON, b'{"name": "\\ud83d\\ude00"}')
    assert ok["decision"] == "allow"


async def test_ext_proc_refuses_a_missing_required_body_too(petstore):
    from wardgate.envoy import wire
    from wardgate.envoy.ext_proc import ProcessStream

    def headers_message(method: str, end_of_stream: bool):
        message = wire.ProcessingRequest()
        rh = message.request_headers
        for name, value in ((":method", method), (":path", "/api/v1/pets"), (":authority", "h")):
            header = rh.headers.headers.add()
            header.key = name
            header.raw_value = value.encode()
        rh.end_of_stream = end_of_stream
        return message

    refused = await ProcessStream(petstore).process(headers_message("POST", True))
    assert refused.HasField("immediate_response")
    assert refused.immediate_response.status.code == 400
    listed = await ProcessStream(petstore).process(headers_message("GET", True))
    assert not listed.HasField("immediate_response")
