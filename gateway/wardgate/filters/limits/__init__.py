"""The ``limits`` filter: size and shape limits, first in the chain and cheap."""

from wardgate.filters.limits.filter import LimitsConfig, LimitsFilter, body_too_large, compile

__all__ = ["LimitsConfig", "LimitsFilter", "body_too_large", "compile"]
