"""The ``waf`` filter: deny rules against attacks in every part of a request."""

from wardgate.filters.waf.filter import WafConfig, WafFilter, compile, request_targets

__all__ = ["WafConfig", "WafFilter", "compile", "request_targets"]
