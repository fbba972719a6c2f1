"""The ``openapi`` filter: only requests the service's OpenAPI spec declares get through."""
