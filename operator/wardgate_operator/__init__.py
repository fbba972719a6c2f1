"""The Wardgate control plane (kopf operator, injector). Built in its own issue."""
