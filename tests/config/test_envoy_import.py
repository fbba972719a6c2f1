"""``wardgate import-envoy``: Envoy jwt_authn configs (the example, snake_case YAML,
proto-JSON camelCase, nested in a bootstrap or an Istio EnvoyFilter) into policies; every
unsupported field named; and the converted policy decides like the real Envoy 1.40 with the
original config on the same requests and keys."""

from __future__ import annotations

import json
import time

import aiohttp
import pytest
import yaml

from tests.conftest import ROOT, run_wardgate
from tests.envoy.harness import start_proxy_envoy
from tests.filters.jwt_authn.helpers import ISSUER, claims, compiled, jwks, rsa_key, send
from wardgate.config import load_policy_text
from wardgate.config.envoy_import import convert_envoy_jwt

EXAMPLE = ROOT / "examples" / "jwt" / "envoy-jwt-authn.yaml"
KEY = rsa_key("envoy-1")


def test_the_example_converts_and_validates():
    result = run_wardgate("import-envoy", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    policy = yaml.safe_load(result.stdout)
    spec = load_policy_text(result.stdout)
    assert spec.jwt is not None
    corp = policy["jwt"]["providers"]["corp"]
    assert corp["remoteJwks"]["cacheDuration"] == "300s"
    assert corp["remoteJwks"]["retryPolicy"]["retryBackOff"]["baseInterval"] == "200ms"
    assert corp["claimToHeaders"][1] == {"headerName": "x-tenant", "claimName": "org.tenant"}
    rules = policy["jwt"]["rules"]
    assert rules[0] == {"match": {"path": "/healthz"}, "skip": True}
    assert rules[2]["match"]["headers"] == [{"name": ":method", "stringMatch": {"exact": "GET"}}]
    assert policy["jwt"]["bypassCorsPreflight"] is True
    assert "payload_in_metadata" in result.stderr  # a difference is noted, not hidden
    assert "rules[0]: no requirement in Envoy means no JWT" in result.stderr


def test_unsupported_fields_are_named(tmp_path):
    config = {
        "providers": {
            "p": {
                "issuer": "x",
                "local_jwks": {"environment_variable": "JWKS"},
                "header_in_metadata": "hdr",
                "normalize_payload_in_metadata": {"space_delimited_claims": ["scope"]},
                "failed_status_in_metadata": "st",
            }
        },
        "rules": [
            {
                "match": {"prefix": "/", "query_parameters": [{"name": "debug"}]},
                "requires": {"extract_only_without_validation": {}},
            }
        ],
        "filter_state_rules": {"name": "x", "requires": {}},
        "strip_failure_response": True,
    }
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_wardgate("import-envoy", str(path))
    assert result.returncode == 1
    for field in (
        "providers.p.local_jwks.environment_variable",
        "providers.p.header_in_metadata",
        "providers.p.normalize_payload_in_metadata",
        "providers.p.failed_status_in_metadata",
        "rules[0].match.query_parameters",
        "rules[0].requires.extract_only_without_validation",
        "filter_state_rules",
        "strip_failure_response",
    ):
        assert f"unsupported: {field}: no Wardgate equivalent" in result.stderr, field


def test_proto_json_camel_case_in_a_bootstrap(tmp_path):
    bootstrap = {
        "staticResources": {
            "listeners": [
                {
                    "filterChains": [
                        {
                            "filters": [
                                {
                                    "typedConfig": {
                                        "httpFilters": [
                                            {
                                                "name": "envoy.filters.http.jwt_authn",
                                                "typedConfig": {
                                                    "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                                                    "providers": {
                                                        "idp": {
                                                            "issuer": ISSUER,
                                                            "localJwks": {
                                                                "inlineString": jwks(KEY)
                                                            },
                                                            "fromHeaders": [
                                                                {"name": "x-jwt", "valuePrefix": ""}
                                                            ],
                                                            "clockSkewSeconds": 30,
                                                            "maxLifetime": "3600s",
                                                        }
                                                    },
                                                    "rules": [
                                                        {
                                                            "match": {
                                                                "safeRegex": {
                                                                    "googleRe2": {},
                                                                    "regex": "/api/.*",
                                                                }
                                                            },
                                                            "requirementName": "idp_only",
                                                        }
                                                    ],
                                                    "requirementMap": {
                                                        "idp_only": {"providerName": "idp"}
                                                    },
                                                },
                                            },
                                            {"name": "envoy.filters.http.router"},
                                        ]
                                    }
                                }
                            ]
                        }
                    ]
                }
            ]
        }
    }
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(bootstrap))
    result = run_wardgate("import-envoy", str(path))
    assert result.returncode == 0, result.stderr
    policy = yaml.safe_load(result.stdout)
    rules = policy["jwt"]["rules"]
    assert rules[0]["requires"] == {"providerName": "idp"}
    assert rules[-1] == {"match": {"prefix": "/"}, "skip": True}  # Envoy lets the rest through
    assert policy["jwt"]["providers"]["idp"]["maxLifetime"] == "3600s"
    assert "remove it to refuse them" in result.stderr


@pytest.mark.parametrize(
    "text,message",
    [
        ("providers: [", "not valid YAML"),
        ("static_resources: {}", "no Envoy jwt_authn configuration found"),
        ("- a\n- b", "must be a mapping"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = run_wardgate("import-envoy", str(path))
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_missing_file_is_a_clear_error(tmp_path):
    result = run_wardgate("import-envoy", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2 and "cannot read" in result.stderr


def test_conversion_in_process_keeps_envoy_semantics():
    result = convert_envoy_jwt(
        {
            "providers": {"a": {"issuer": ISSUER, "local_jwks": {"inline_string": jwks(KEY)}}},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "a"}}],
        }
    )
    assert result.unsupported == []
    assert result.policy["jwt"]["rules"] == [
        {"match": {"prefix": "/"}, "requires": {"providerName": "a"}}
    ]


# --- differential: the real Envoy with the original config vs the converted policy -------


def _envoy_jwt_config() -> dict:
    return {
        "providers": {
            "idp": {
                "issuer": ISSUER,
                "audiences": ["orders"],
                "local_jwks": {"inline_string": jwks(KEY)},
                "require_expiration": True,
                "forward": False,
            }
        },
        "rules": [
            {"match": {"prefix": "/echo/health"}},
            {
                "match": {"prefix": "/echo/public"},
                "requires": {
                    "requires_any": {
                        "requirements": [{"provider_name": "idp"}, {"allow_missing": {}}]
                    }
                },
            },
            {"match": {"prefix": "/echo"}, "requires": {"provider_name": "idp"}},
        ],
    }


async def test_converted_policy_decides_like_envoy(upstream, tmp_path):
    jwt_authn = {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            **_envoy_jwt_config(),
        },
    }
    upstream_port = int(upstream.rsplit(":", 1)[1])
    envoy = await start_proxy_envoy(tmp_path, upstream_port, http_filters=[jwt_authn])
    try:
        await _compare_with_envoy(envoy.url)
    finally:
        envoy.stop()


async def _compare_with_envoy(envoy_url: str) -> None:
    converted = convert_envoy_jwt(_envoy_jwt_config())
    assert converted.unsupported == []
    policy = compiled(yaml.safe_dump(converted.policy))
    now = int(time.time())
    other = rsa_key("envoy-1")
    tokens = {
        "valid": KEY.sign(claims()),
        "expired": KEY.sign(claims(exp=now - 3600)),
        "not yet valid": KEY.sign(claims(nbf=now + 3600)),
        "other issuer": KEY.sign(claims(iss="https://evil.example")),
        "other audience": KEY.sign(claims(aud="billing")),
        "no exp": KEY.sign(claims(exp=None)),
        "bad signature": other.sign(claims()),
        "garbage": "not.a.jwt",
        "none": None,
    }
    paths = ["/echo/orders", "/echo/public/x", "/echo/health", "/other"]
    async with aiohttp.ClientSession() as http:
        mismatches = []
        for path in paths:
            for name, token in tokens.items():
                headers = {"authorization": f"Bearer {token}"} if token else {}
                async with http.get(f"{envoy_url}{path}", headers=headers) as resp:
                    envoy_status = resp.status
                    envoy_www = resp.headers.get("www-authenticate")
                    seen = await resp.json() if resp.status == 200 else None
                out = await send(policy, target=path, token=token)
                # send() runs only the request checks: 200 there means "let through" (the
                # upstream may still answer 404, as it does for /other through Envoy)
                if out.status != (envoy_status if envoy_status in (401, 403, 503) else 200):
                    mismatches.append((path, name, envoy_status, out.status))
                if envoy_status in (401, 403):
                    assert envoy_www is not None
                    assert (out.header("www-authenticate") or "").split(",")[1:] == envoy_www.split(
                        ","
                    )[1:], (name, envoy_www)
                if seen is not None and token and name == "valid":
                    forwarded = {k.lower() for k, _ in seen["headers"]}
                    assert ("authorization" in forwarded) == (
                        "authorization" in out.request.headers
                    ), path
    assert mismatches == []


@pytest.mark.parametrize(
    "config",
    [
        {"providers": ["not", "a", "map"], "rules": []},
        {"providers": {"a": "text"}, "rules": [{"match": "x"}]},
        {
            "providers": {
                "a": {"remote_jwks": {"http_uri": {"uri": "https://x", "timeout": "soon"}}}
            }
        },
        {"providers": {"a": {"local_jwks": {"inline_bytes": "!!!"}}}},
    ],
)
def test_wrong_shapes_are_named_not_tracebacks(config):
    result = convert_envoy_jwt(config)
    assert result.unsupported  # each problem named with its path


_NAMES = [
    "providers",
    "rules",
    "match",
    "requires",
    "issuer",
    "remote_jwks",
    "local_jwks",
    "http_uri",
    "uri",
    "timeout",
    "cache_duration",
    "from_headers",
    "name",
    "prefix",
    "provider_name",
    "requires_any",
    "requirements",
    "allow_missing",
    "claim_to_headers",
    "headers",
    "string_match",
    "safe_regex",
    "regex",
    "requirement_name",
    "requirement_map",
    "retry_policy",
    "num_retries",
    "subjects",
    "exact",
    "inline_bytes",
    "seconds",
]


def _values():
    from hypothesis import strategies as st

    scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.text(max_size=8))
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=3),
            st.dictionaries(st.sampled_from(_NAMES), children, max_size=4),
        ),
        max_leaves=20,
    )


def test_arbitrary_envoy_shaped_input_never_raises_unexpectedly():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=300, deadline=None)
    @given(st.dictionaries(st.sampled_from(_NAMES), _values(), max_size=4))
    def check(doc):
        doc.setdefault("providers", {})
        try:
            result = convert_envoy_jwt(doc)
        except ValueError:
            return  # "no / several jwt_authn configurations": a clear error
        assert isinstance(result.policy, dict)

    check()
