"""What the admin port reports and changes: server state, start time, the policy holder."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wardgate.runtime import PolicyHolder, PolicyReloader


class ServerState(enum.StrEnum):
    """Envoy's ``ServerInfo.State`` names."""

    LIVE = "LIVE"
    DRAINING = "DRAINING"
    PRE_INITIALIZING = "PRE_INITIALIZING"


@dataclass
class GatewayState:
    holder: PolicyHolder
    reloader: PolicyReloader | None
    upstream: str
    listen: str
    admin: str
    workers: int
    status: str | None = None
    """The bound status listener (``HOST:PORT``), ``None`` when there is none."""
    started: float = field(default_factory=time.time)
    health_check_failed: bool = False
    draining: bool = False
    worker_pids: list[int] = field(default_factory=list)
    tls_info: Callable[[], dict[str, Any]] | None = None
    """The listener's TLS state for ``/server_info`` (``None``: plain HTTP)."""

    @property
    def state(self) -> ServerState:
        if self.draining or self.health_check_failed:
            return ServerState.DRAINING
        return ServerState.LIVE
