"""Hot reload: watch the policy file, compile off the event loop, swap atomically, keep the
last good policy on error.

The watch is a cheap ``stat`` poll of the file *through* its symlinks, plus the symlink
chain itself, so it sees both an in-place edit and the Kubernetes ConfigMap volume's atomic
swap of the ``..data`` symlink (the file path never changes there; what it resolves to
does). ``SIGHUP`` triggers the same reload at once."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

from wardgate.config import PolicyError
from wardgate.observability import metrics
from wardgate.runtime.compiled import CompiledPolicy
from wardgate.runtime.holder import PolicyHolder
from wardgate.runtime.loading import load_compiled

log = logging.getLogger("wardgate.reload")

Fingerprint = tuple[str, int, int, int, int] | None


def fingerprint(path: Path) -> Fingerprint:
    """Identity of what ``path`` currently resolves to; ``None`` when it does not exist."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return None
    return (real, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class PolicyReloader:
    """Reloads ``path`` into ``holder`` when it changes or when :meth:`reload` is called."""

    def __init__(
        self,
        path: str | Path,
        holder: PolicyHolder,
        interval: float = 1.0,
        on_swap: Callable[[CompiledPolicy], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.holder = holder
        self.interval = interval
        self.on_swap = on_swap
        self.last_error: str | None = None
        self._seen = self._fingerprints()
        self._lock = asyncio.Lock()

    def _fingerprints(self) -> tuple[Fingerprint, ...]:
        """The policy file's fingerprint, then those of the files the current policy read
        (an OpenAPI spec next to it): a change to any of them triggers a reload."""
        extra = [Path(path) for path, _ in self.holder.current.sources]
        return tuple(fingerprint(p) for p in [self.path, *extra])

    async def watch(self) -> None:
        """Poll until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            current = self._fingerprints()
            if current != self._seen and current[0] is not None:
                self._seen = current
                await self.reload()

    async def reload(self) -> bool:
        """Load, compile (in a worker thread) and swap. Returns whether a new generation was
        installed. An invalid policy is logged and counted; the current one stays."""
        async with self._lock:
            self._seen = self._fingerprints()
            try:
                compiled = await asyncio.to_thread(load_compiled, self.path)
            except PolicyError as exc:
                self.last_error = "; ".join(exc.problems)
                metrics.RELOADS.labels(result="failure").inc()
                log.error(
                    "policy reload failed; keeping the current policy",
                    extra={
                        "wardgate": {
                            "policy": {"path": str(self.path), "problems": exc.problems},
                            "current_digest": self.holder.current.digest,
                        }
                    },
                )
                return False
            self.last_error = None
            if compiled.digest == self.holder.current.digest:
                metrics.RELOADS.labels(result="unchanged").inc()
                return False
            installed = self.holder.swap(compiled)
            self._seen = self._fingerprints()
            metrics.RELOADS.labels(result="success").inc()
            metrics.POLICY_GENERATION.set(installed.generation)
            log.info(
                "policy reloaded",
                extra={
                    "wardgate": {
                        "policy": {
                            "digest": installed.digest,
                            "generation": installed.generation,
                        }
                    }
                },
            )
            if self.on_swap is not None:
                self.on_swap(installed)
            return True
