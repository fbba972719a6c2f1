"""The ``jwt_authn`` filter: JWT authentication with Envoy jwt_authn semantics.

Contract with the rest of the chain:

* Runs after ``limits`` and before ``openapi``. For each request the first ``jwt.rules``
  entry whose ``match`` covers it decides; no rule: 403 (``no_rule``). ``skip: true`` lets
  the request through without looking at tokens.
* Refusals are :class:`~wardgate.filters.api.LocalReply` objects with a stable ``reason``
  (``missing``, ``malformed``, ``bad_algorithm``, ``expired``, ``not_yet_valid``,
  ``bad_signature``, ``unknown_issuer``, ``audience``, ``subject``, ``unknown_kid``,
  ``jwks_unavailable``, ``insufficient_claims``, ``no_rule``, ``ambiguous_path``): 401 with
  ``WWW-Authenticate: Bearer realm="...", error="invalid_token"`` for invalid tokens and
  ``Bearer realm="..."`` (no error code, RFC 6750 3.1, as Envoy) when none was sent; 403
  with ``error="invalid_token"`` for a token meant for another audience (as Envoy); 403
  with ``error="insufficient_scope"`` when a valid token lacks the rule's claims; 503 when
  the issuer's keys were never fetched (or are stale beyond ``maxStaleness``).
  Violations name the rule, the provider and the token's location, never the token.
* On success, ``request.metadata["jwt_authn"]`` is a dict mapping provider name to the
  verified claims dict (Envoy's ``payload_in_metadata``), for every provider whose token
  was verified. Later filters read scopes there: ``scope`` (space-separated string) or
  ``scp`` (list or string). Absent when no token was verified (``allowMissing``). The
  claims dicts are shared with the verified-token cache: read them, never modify them.
* The only other effect is on ``request.headers`` (what the upstream receives): the token's
  header or cookie is removed unless ``forward: true``; ``claimToHeaders`` and
  ``forwardPayloadHeader`` headers are set, and any client-sent header of those names is
  removed on every request, so the upstream can trust them.
"""

from wardgate.filters.jwt_authn.filter import JwtAuthnConfig, JwtAuthnFilter, compile

__all__ = ["JwtAuthnConfig", "JwtAuthnFilter", "compile"]
