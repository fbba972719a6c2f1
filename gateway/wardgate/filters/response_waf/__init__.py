"""The ``response_waf`` filter: error masking (information leakage in upstream responses
answered with a generic 502) and security headers on responses (``waf.response``)."""

from wardgate.filters.response_waf.filter import (
    ResponseWafConfig,
    ResponseWafFilter,
    compile,
    inspectable,
)
from wardgate.filters.response_waf.patterns import SIGNATURES, LeakScanner, default_scanner

__all__ = [
    "SIGNATURES",
    "LeakScanner",
    "ResponseWafConfig",
    "ResponseWafFilter",
    "compile",
    "default_scanner",
    "inspectable",
]
