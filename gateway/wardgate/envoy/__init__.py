"""Envoy adapters over the compiled policy: ext_authz (HTTP, gRPC) and ext_proc servers."""
