"""Filters, one package each, in chain order: ``limits`` → ``jwt_authn`` → ``openapi`` →
``waf`` → (upstream) → ``headers``. The contract is in :mod:`wardgate.filters.api`."""
