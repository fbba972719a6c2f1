"""Logs (ECS JSON, Envoy format), Prometheus metrics and the admin state."""
