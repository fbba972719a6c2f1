"""The ``openapi`` filter: only requests the service's OpenAPI spec declares get through."""

from wardgate.filters.openapi.filter import OpenApiConfig, OpenApiFilter, compile

__all__ = ["OpenApiConfig", "OpenApiFilter", "compile"]
