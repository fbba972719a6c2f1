"""The admin port (Envoy admin endpoints) shared by every serving command: ``wardgate run``
and ``wardgate ext-authz``. Below the adapters (``proxy``, ``envoy``), above the runtime."""
