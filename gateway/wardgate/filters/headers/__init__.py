"""The ``headers`` filter: add and remove request and response headers."""

from wardgate.filters.headers.filter import HeadersConfig, HeadersFilter, compile

__all__ = ["HeadersConfig", "HeadersFilter", "compile"]
