"""The ``jwt_authn`` filter: JWT authentication with Envoy jwt_authn semantics."""
