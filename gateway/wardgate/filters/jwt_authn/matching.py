"""Rule matching for ``jwt.rules``: the shared matchers of :mod:`wardgate.filters.matching`
(Envoy's ``RouteMatch`` and ``StringMatcher``), also used by the ``peer`` filter."""

from wardgate.filters.matching import (
    RequestPredicate,
    StringPredicate,
    normalise_path,
    route_matcher,
    string_matcher,
)

__all__ = [
    "RequestPredicate",
    "StringPredicate",
    "normalise_path",
    "route_matcher",
    "string_matcher",
]
