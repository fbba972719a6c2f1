"""Token verification with a local JWKS: every refusal in the issue has its own test, with
real keys and real signatures (RSA, RSA-PSS, ECDSA, Ed25519, HMAC)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.filters.jwt_authn.helpers import (
    b64,
    claims,
    compiled,
    ec_key,
    ed_key,
    local_provider,
    policy,
    raw_token,
    rsa_key,
    send,
)

RSA = rsa_key("rsa-1")
EC = ec_key("ec-1")
ED = ed_key("ed-1")
POLICY = compiled(policy({"idp": local_provider(RSA, EC, ED)}))


def _assert_401(out, reason: str) -> None:
    assert out.status == 401, (out.status, out.reason)
    assert out.reason == reason
    www = out.header("www-authenticate")
    assert www is not None and www.startswith('Bearer realm="http://api.example/orders"')
    if reason == "missing":
        assert www == 'Bearer realm="http://api.example/orders"'  # RFC 6750 3.1, as Envoy
    else:
        assert www == 'Bearer realm="http://api.example/orders", error="invalid_token"'


@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"])
async def test_rsa_algorithms_verify(alg):
    token = jwt.encode(claims(), RSA.private, algorithm=alg, headers={"kid": RSA.kid})
    out = await send(POLICY, token=token)
    assert out.status == 200, out.reason
    assert out.request.metadata["jwt_authn"]["idp"]["sub"] == "alice"


@pytest.mark.parametrize("alg", ["ES256", "ES384", "ES512"])
async def test_ecdsa_curves_verify(alg):
    key = ec_key(f"ec-{alg}", alg)
    pol = compiled(policy({"idp": local_provider(key)}))
    assert (await send(pol, token=key.sign(claims()))).status == 200


async def test_eddsa_verifies():
    assert (await send(POLICY, token=ED.sign(claims()))).status == 200


async def test_missing_token_is_401_missing():
    _assert_401(await send(POLICY), "missing")


async def test_other_authorization_scheme_is_missing():
    _assert_401(await send(POLICY, headers={"authorization": "Basic YTpi"}), "missing")


async def test_token_in_access_token_param_by_default():
    out = await send(POLICY, target=f"/orders?access_token={RSA.sign(claims())}")
    assert out.status == 200


@pytest.mark.parametrize("spelling", ["none", "None", "NONE", "nOnE", " none"])
async def test_alg_none_is_refused_in_any_spelling(spelling):
    token = raw_token({"alg": spelling, "kid": RSA.kid}, claims())
    _assert_401(await send(POLICY, token=token), "bad_algorithm")
    # and with a signature part that is not empty
    token = raw_token({"alg": spelling}, claims(), b"x")
    _assert_401(await send(POLICY, token=token), "bad_algorithm")


async def test_rsa_public_key_as_hmac_secret_is_refused():
    """Algorithm confusion: HS256 signed with the RSA public key's PEM and its JWK n."""
    from cryptography.hazmat.primitives import serialization

    pem = RSA.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "kid": RSA.kid, "typ": "JWT"}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims()).encode())}"
    for secret in (pem, RSA.jwk["n"].encode()):
        sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        out = await send(POLICY, token=f"{signing_input}.{b64(sig)}")
        assert out.status == 401
        assert out.reason in {"bad_algorithm", "bad_signature"}


async def test_hmac_works_only_with_an_explicit_oct_key():
    secret = b"k" * 32
    oct_jwks = json.dumps({"keys": [{"kty": "oct", "kid": "h1", "k": b64(secret)}]})
    provider = {"issuer": "https://issuer.example", "localJwks": {"inlineString": oct_jwks}}
    pol = compiled(policy({"idp": provider}))
    token = jwt.encode(claims(), secret, algorithm="HS256", headers={"kid": "h1"})
    assert (await send(pol, token=token)).status == 200
    # the same kind of token against the RSA-only provider
    _assert_401(
        await send(POLICY, token=jwt.encode(claims(), secret, algorithm="HS256")),
        "bad_algorithm",
    )


async def test_oct_keys_in_config_dump_are_redacted():
    secret = b"s" * 32
    oct_jwks = json.dumps({"keys": [{"kty": "oct", "k": b64(secret)}]})
    pol = compiled(policy({"idp": {"localJwks": {"inlineString": oct_jwks}}}))
    dumped = json.dumps(pol.spec.redacted())
    assert b64(secret) not in dumped
    assert "[redacted]" in dumped


@pytest.mark.parametrize("crit", [["exp"], ["b64"], ["http://example.com/x"], []])
async def test_crit_header_is_refused(crit):
    header = {"alg": "RS256", "kid": RSA.kid, "crit": crit, "http://example.com/x": True}
    token = RSA.sign(claims(), **{k: v for k, v in header.items() if k not in ("alg", "kid")})
    _assert_401(await send(POLICY, token=token), "malformed")


@pytest.mark.parametrize(
    "extra",
    [
        {"jku": "https://attacker.example/jwks.json"},
        {"x5u": "https://attacker.example/cert.pem"},
        {"jwk": {"kty": "oct", "k": "AAAA"}},
        {"x5c": ["MIIB"]},
    ],
)
async def test_key_carrying_headers_are_refused_even_with_a_good_signature(extra):
    _assert_401(await send(POLICY, token=RSA.sign(claims(), **extra)), "malformed")


async def test_embedded_jwk_with_its_own_key_is_not_trusted():
    attacker = rsa_key("rsa-1")  # same kid, different key, advertised in the header
    token = attacker.sign(claims(), jwk=attacker.jwk)
    assert (await send(POLICY, token=token)).status == 401


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t.replace(".", "=.", 1),  # padding
        lambda t: "+" + t[1:] if t[0] != "+" else t,  # standard base64 alphabet
        lambda t: t.split(".")[0] + ".!!!." + t.split(".")[2],
        lambda t: t + ".extra",
        lambda t: ".".join(t.split(".")[:2]),
        lambda t: t.split(".")[0] + "." + t.split(".")[1] + ".",  # empty signature
        lambda t: "",
        lambda t: "a.b",
        lambda t: t.replace(".", " .", 1),
    ],
)
async def test_malformed_base64_and_structure_are_refused(mangle):
    out = await send(POLICY, token=mangle(RSA.sign(claims())))
    assert out.status == 401
    assert out.reason in {"malformed", "missing"}


async def test_non_canonical_base64_is_refused():
    """A last character with stray low bits decodes to the same bytes: refused."""
    token = RSA.sign(claims())
    head, payload, sig = token.split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    # a 2048-bit signature is 256 bytes: 342 chars, the last one carries 4 unused bits
    last = alphabet.index(sig[-1])
    assert last & 0b1111 == 0
    forged = sig[:-1] + alphabet[last | 1]
    _assert_401(await send(POLICY, token=f"{head}.{payload}.{forged}"), "malformed")


async def test_duplicate_json_keys_are_refused():
    payload = json.dumps(claims()).encode()[:-1] + b', "sub": "admin"}'
    header = json.dumps({"alg": "RS256", "kid": RSA.kid}).encode()
    signing_input = f"{b64(header)}.{b64(payload)}".encode()
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    sig = RSA.private.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    out = await send(POLICY, token=f"{signing_input.decode()}.{b64(sig)}")
    _assert_401(out, "malformed")
    dup_header = b'{"alg":"RS256","alg":"none","kid":"rsa-1"}'
    _assert_401(await send(POLICY, token=raw_token(dup_header, claims(), b"x")), "malformed")


@pytest.mark.parametrize(
    "claim,value",
    [
        ("exp", "9999999999"),
        ("exp", True),
        ("exp", [1]),
        ("exp", -1),
        ("exp", 1e300),
        ("nbf", "0"),
        ("iat", {"t": 1}),
        ("iat", 10**20),
    ],
)
async def test_time_claims_of_wrong_type_or_range_are_refused(claim, value):
    _assert_401(await send(POLICY, token=RSA.sign(claims(**{claim: value}))), "malformed")


async def test_nan_and_infinity_are_refused():
    for literal in (b"NaN", b"Infinity", b"1e999"):
        body = json.dumps(claims(exp=1)).encode().replace(b'"exp": 1', b'"exp": ' + literal)
        header = json.dumps({"alg": "RS256", "kid": RSA.kid}).encode()
        out = await send(POLICY, token=raw_token(header, body, b"x" * 256))
        _assert_401(out, "malformed")


async def test_expired_token_is_refused_beyond_the_clock_skew():
    now = int(time.time())
    assert (await send(POLICY, token=RSA.sign(claims(exp=now - 30)))).status == 200  # skew 60
    _assert_401(await send(POLICY, token=RSA.sign(claims(exp=now - 120))), "expired")


async def test_not_yet_valid_and_future_iat_are_refused():
    now = int(time.time())
    _assert_401(await send(POLICY, token=RSA.sign(claims(nbf=now + 600))), "not_yet_valid")
    _assert_401(await send(POLICY, token=RSA.sign(claims(iat=now + 600))), "not_yet_valid")


async def test_expiration_is_required_by_default():
    _assert_401(await send(POLICY, token=RSA.sign(claims(exp=None))), "malformed")


async def test_max_lifetime():
    pol = compiled(policy({"idp": local_provider(RSA, maxLifetime="1h")}))
    now = int(time.time())
    assert (await send(pol, token=RSA.sign(claims(iat=now, exp=now + 3000)))).status == 200
    _assert_401(await send(pol, token=RSA.sign(claims(iat=now, exp=now + 7200))), "expired")
    _assert_401(await send(pol, token=RSA.sign(claims(iat=None))), "malformed")


async def test_issuer_audience_subject():
    _assert_401(await send(POLICY, token=RSA.sign(claims(iss="https://evil"))), "unknown_issuer")
    out = await send(POLICY, token=RSA.sign(claims(aud="billing")))
    assert (out.status, out.reason) == (403, "audience")  # as Envoy
    assert 'error="invalid_token"' in (out.header("www-authenticate") or "")
    assert (await send(POLICY, token=RSA.sign(claims(aud=["billing", "orders"])))).status == 200
    pol = compiled(policy({"idp": local_provider(RSA, subjects={"prefix": "spiffe://prod/"})}))
    _assert_401(await send(pol, token=RSA.sign(claims(sub="spiffe://dev/x"))), "subject")
    assert (await send(pol, token=RSA.sign(claims(sub="spiffe://prod/x")))).status == 200


async def test_oversized_token_is_refused_before_decoding():
    pol = compiled(policy({"idp": local_provider(RSA)}, maxTokenBytes=1024))
    big = RSA.sign(claims(pad="x" * 2000))
    _assert_401(await send(pol, token=big), "malformed")
    assert (await send(pol, token=RSA.sign(claims()))).status == 200


def _es256_parts(token: str) -> tuple[str, bytes]:
    head, payload, sig = token.split(".")
    import base64

    return f"{head}.{payload}", base64.urlsafe_b64decode(sig + "==")


N256 = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@pytest.mark.parametrize(
    "r_s",
    [
        lambda r, s: (0, s),
        lambda r, s: (r, 0),
        lambda r, s: (0, 0),
        lambda r, s: (r + N256, s),  # r out of range: would be reduced mod n by a lax check
        lambda r, s: (r, N256),
    ],
)
async def test_ecdsa_r_or_s_zero_or_out_of_range_is_refused(r_s):
    token = EC.sign(claims())
    signing_input, sig = _es256_parts(token)
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    r2, s2 = r_s(r, s)
    if r2.bit_length() > 256 or s2.bit_length() > 256:
        forged = r2.to_bytes(33, "big")[-32:] + s2.to_bytes(33, "big")[-32:]
    else:
        forged = r2.to_bytes(32, "big") + s2.to_bytes(32, "big")
    out = await send(POLICY, token=f"{signing_input}.{b64(forged)}")
    _assert_401(out, "bad_signature")


async def test_ecdsa_der_signature_is_refused():
    """JWS uses r||s; a DER-encoded ECDSA signature (another spelling) is refused."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    token = EC.sign(claims())
    signing_input, _ = _es256_parts(token)
    der = EC.private.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    decode_dss_signature(der)
    _assert_401(await send(POLICY, token=f"{signing_input}.{b64(der)}"), "bad_signature")


async def test_kid_of_another_key_type_does_not_verify():
    token = RSA.sign(claims(), kid=EC.kid)  # RS256 signature, kid of the EC key
    _assert_401(await send(POLICY, token=token), "bad_signature")


async def test_unknown_kid_with_local_jwks():
    _assert_401(await send(POLICY, token=RSA.sign(claims(), kid="nope")), "unknown_kid")


async def test_token_without_kid_tries_matching_keys():
    token = jwt.encode(claims(), RSA.private, algorithm="RS256")
    assert (await send(POLICY, token=token)).status == 200


async def test_signature_from_another_key_is_refused():
    other = rsa_key("rsa-1")
    _assert_401(await send(POLICY, token=other.sign(claims())), "bad_signature")


async def test_a_cached_token_is_still_checked_for_expiry():
    """The verified-token cache never extends a token's life."""
    now = int(time.time())
    token = RSA.sign(claims(exp=now + 1))
    pol = compiled(policy({"idp": local_provider(RSA, clockSkewSeconds=0)}))
    assert (await send(pol, token=token)).status == 200
    provider = pol.filters[1].providers["idp"]  # type: ignore[attr-defined]
    assert len(provider._cache) == 1
    # a token already past its exp is refused before the cache is consulted, and not cached
    expired = RSA.sign(claims(exp=now - 5))
    assert (await send(pol, token=expired)).status == 401
    assert len(provider._cache) == 1


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
async def test_a_token_altered_in_any_byte_is_refused(data):
    token = TOKENS[data.draw(st.sampled_from(sorted(TOKENS)))]
    index = data.draw(st.integers(0, len(token) - 1))
    op = data.draw(st.sampled_from(["replace", "insert", "delete"]))
    char = data.draw(st.sampled_from("AQgw-_.x0Z=+/"))  # not space: the header value is trimmed
    if op == "replace":
        altered = token[:index] + char + token[index + 1 :]
    elif op == "insert":
        altered = token[:index] + char + token[index:]
    else:
        altered = token[:index] + token[index + 1 :]
    if altered == token:
        return
    out = await send(POLICY, token=altered)
    assert out.status in (401, 403), (op, index, char)  # 403: the change hit "aud"
    assert "jwt_authn" not in out.request.metadata


TOKENS = {"EdDSA": ED.sign(claims()), "ES256": EC.sign(claims()), "RS256": RSA.sign(claims())}


async def test_the_cache_never_outlives_exp_nor_skips_claim_checks(monkeypatch):
    from types import SimpleNamespace

    from wardgate.filters.jwt_authn import provider as provider_module

    now = time.time()
    pol = compiled(policy({"idp": local_provider(RSA, clockSkewSeconds=0)}))
    token = RSA.sign(claims(exp=int(now) + 30))
    assert (await send(pol, token=token)).status == 200
    cache = pol.filters[1].providers["idp"]._cache  # type: ignore[attr-defined]
    assert len(cache) == 1  # verified once, cached
    assert (await send(pol, token=token)).status == 200  # served from the cache
    monkeypatch.setattr(provider_module, "time", SimpleNamespace(time=lambda: now + 60))
    out = await send(pol, token=token)
    assert (out.status, out.reason) == (401, "expired")
    assert len(cache) == 0


async def test_a_cached_token_is_still_checked_against_other_audiences():
    pol = compiled(
        policy(
            {"idp": local_provider(RSA)},
            [
                {
                    "match": {"prefix": "/billing"},
                    "requires": {
                        "providerAndAudiences": {"providerName": "idp", "audiences": ["billing"]}
                    },
                },
                {"match": {"prefix": "/"}, "requires": {"providerName": "idp"}},
            ],
        )
    )
    token = RSA.sign(claims())  # aud: orders
    assert (await send(pol, target="/orders", token=token)).status == 200
    assert (await send(pol, target="/billing", token=token)).reason == "audience"


# RFC 7515 Appendix A.3: the ES256 example (public key and compact JWS as published).
RFC7515_A3_JWK = {
    "kty": "EC",
    "crv": "P-256",
    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
}
RFC7515_A3_JWS = (
    "eyJhbGciOiJFUzI1NiJ9"
    ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
    ".DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"
)


async def test_rfc7515_a3_es256_example(monkeypatch):
    from types import SimpleNamespace

    from wardgate.filters.jwt_authn import provider as provider_module

    doc = json.dumps({"keys": [RFC7515_A3_JWK]})
    pol = compiled(policy({"rfc": {"issuer": "joe", "localJwks": {"inlineString": doc}}}))
    # at the RFC's time the token is valid (exp 1300819380, March 2011)...
    monkeypatch.setattr(provider_module, "time", SimpleNamespace(time=lambda: 1300819300.0))
    out = await send(pol, token=RFC7515_A3_JWS)
    assert out.status == 200, out.reason
    assert out.request.metadata["jwt_authn"]["rfc"]["http://example.com/is_root"] is True
    # ...its payload altered (is_root:true -> is_root:fals) no longer verifies...
    head, payload, sig = RFC7515_A3_JWS.split(".")
    forged = payload[:-4] + "ZmFsc2V9"[:4]
    assert (await send(pol, token=f"{head}.{forged}.{sig}")).status == 401
    monkeypatch.undo()
    # ...and today it is long expired
    assert (await send(pol, token=RFC7515_A3_JWS)).reason == "expired"


# RFC 7520 4.1: RS256 over a text payload, key "bilbo.baggins@hobbiton.example".
RFC7520_RSA = {
    "kty": "RSA",
    "kid": "bilbo.baggins@hobbiton.example",
    "use": "sig",
    "n": "n4EPtAOCc9AlkeQHPzHStgAbgs7bTZLwUBZdR8_KuKPEHLd4rHVTeT-O-XV2jRojdNhxJWTDvNd7nqQ0VEiZQHz_AJmSCpMaJMRBSFKrKb2wqVwGU_NsYOYL-QtiWN2lbzcEe6XC0dApr5ydQLrHqkHHig3RBordaZ6Aj-oBHqFEHYpPe7Tpe-OfVfHd1E6cS6M1FZcD1NNLYD5lFHpPI9bTwJlsde3uhGqC0ZCuEHg8lhzwOHrtIQbS0FVbb9k3-tVTU4fg_3L_vniUFAKwuCLqKnS2BYwdq_mzSnbLY7h_qixoR7jig3__kRhuaxwUkRz5iaiQkqgc5gHdrNP5zw",
    "e": "AQAB",
}
RFC7520_4_1 = (
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9"
    ".SXTigJlzIGEgZGFuZ2Vyb3VzIGJ1c2luZXNzLCBGcm9kbywgZ29pbmcgb3V0IHlvdXIgZG9vci4gWW91IHN0ZXAgb250byB0aGUgcm9hZCwgYW5kIGlmIHlvdSBkb24ndCBrZWVwIHlvdXIgZmVldCwgdGhlcmXigJlzIG5vIGtub3dpbmcgd2hlcmUgeW91IG1pZ2h0IGJlIHN3ZXB0IG9mZiB0by4"
    ".MRjdkly7_-oTPTS3AXP41iQIGKa80A0ZmTuV5MEaHoxnW2e5CZ5NlKtainoFmKZopdHM1O2U4mwzJdQx996ivp83xuglII7PNDi84wnB-BDkoBwA78185hX-Es4JIwmDLJK3lfWRa-XtL0RnltuYv746iYTh_qHRD68BNt1uSNCrUCTJDt5aAE6x8wW1Kt9eRo4QPocSadnHXFxnt8Is9UzpERV0ePPQdLuW3IS_de3xyIrDaLGdjluPxUAhb6L2aXic1U12podGU0KLUQSE_oI-ZnmKJ3F4uOZDnd6QZWJushZ41Axf_fcIe8u9ipH84ogoree7vjbU5y18kDquDg"
)


async def test_rfc7520_4_1_signature_verifies_but_a_non_jwt_payload_is_refused():
    from wardgate.filters.jwt_authn.jose import b64url_decode
    from wardgate.filters.jwt_authn.keys import parse_jwks

    keyset = parse_jwks(json.dumps({"keys": [RFC7520_RSA]}).encode(), False, "rfc7520")
    head, payload, sig = RFC7520_4_1.split(".")
    (key,), known = keyset.candidates("RS256", "bilbo.baggins@hobbiton.example")
    assert known
    signing_input = f"{head}.{payload}".encode()
    assert key.verify("RS256", signing_input, b64url_decode(sig))  # the RFC's signature
    assert not key.verify("RS256", signing_input + b"x", b64url_decode(sig))
    assert not key.verify("PS256", signing_input, b64url_decode(sig))  # same key, other alg
    doc = json.dumps({"keys": [RFC7520_RSA]})
    pol = compiled(policy({"rfc": {"localJwks": {"inlineString": doc}}}))
    # a valid JWS whose payload is text, not a claims set, is not a JWT
    out = await send(pol, token=RFC7520_4_1)
    assert (out.status, out.reason) == (401, "malformed")
