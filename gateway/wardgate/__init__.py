"""Wardgate: an Envoy-compatible API microgateway with a web application firewall."""

__version__ = "0.1.0"
