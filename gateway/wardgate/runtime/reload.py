"""Hot reload: watch the policy file, compile off the event loop, swap atomically, keep the
last good policy on error.

The watch is a cheap ``stat`` poll of the file *through* its symlinks, plus the symlink
chain itself, so it sees both an in-place edit and the Kubernetes ConfigMap volume's atomic
swap of the ``..data`` symlink (the file path never changes there; what it resolves to
does). ``SIGHUP`` triggers the same reload at once.

Three rules keep a reload from ever weakening the policy by accident:

- **A file edited in place is read only once it is stable**: its size and mtime unchanged
  for :data:`SETTLE_SECONDS`. ``generator > policy.yaml`` truncates the file, then writes
  it; read in between, it is empty or cut short. An atomic replacement (a new inode, or a
  symlink now pointing elsewhere, as in the kubelet's ``..data`` swap) is complete the
  moment it is visible and is read at once.
- **An empty document is refused on reload** (at start it still means the built-in
  default), and a reload that removes a filter the running policy has is logged as a
  warning naming the filters and the sections that changed.
- **The watcher never dies**: every failure, whatever the file holds, is a refused reload
  with a reason, counted in ``wardgate_policy_reloads_total{result="failure"}``."""

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

SETTLE_SECONDS = 0.3
"""How long an in-place edit must leave size and mtime alone before the file is read."""


def fingerprint(path: Path) -> Fingerprint:
    """Identity of what ``path`` currently resolves to; ``None`` when it does not exist."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return None
    return (real, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def replaced_atomically(before: Fingerprint, after: Fingerprint) -> bool:
    """Whether the change from ``before`` to ``after`` can only be a finished write: the
    path now resolves to another file (rename over it, or a swapped symlink) rather than the
    same file rewritten in place."""
    if before is None or after is None:
        return after is not None
    return before[:3] != after[:3]


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
        self.settle = min(SETTLE_SECONDS, interval)
        self.on_swap = on_swap
        self.last_error: str | None = None
        self._seen: tuple[Fingerprint, ...] | None = self._fingerprints()
        self._lock = asyncio.Lock()

    def _fingerprints(self) -> tuple[Fingerprint, ...]:
        """The policy file's fingerprint, then those of the files the current policy read
        (an OpenAPI spec next to it): a change to any of them triggers a reload."""
        extra = [Path(path) for path, _ in self.holder.current.sources]
        return tuple(fingerprint(p) for p in [self.path, *extra])

    async def watch(self) -> None:
        """Poll until cancelled. Survives anything: a failure inside one round is logged
        and the next round runs."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self._poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the watcher must outlive any file content
                log.error(
                    "policy watcher round failed; watching on",
                    extra={"wardgate": {"error": type(exc).__name__}},
                )

    async def _poll_once(self) -> None:
        # realpath and stat are file-system calls: off the loop (a slow mount stalls no one).
        current = await asyncio.to_thread(self._fingerprints)
        if current == self._seen or current[0] is None:
            return
        in_place = self._seen is not None and any(
            not replaced_atomically(before, after)
            for before, after in zip(self._seen, current, strict=False)
            if before != after
        )
        if in_place:
            # Written in place: wait until it stops changing, so a truncate-then-write is
            # never read half-way. Another change starts the wait again next round.
            await asyncio.sleep(self.settle)
            if await asyncio.to_thread(self._fingerprints) != current:
                return
        await self.reload(expected=current)

    async def reload(self, expected: tuple[Fingerprint, ...] | None = None) -> bool:
        """Load, compile (in a worker thread) and swap. Returns whether a new generation was
        installed. An invalid policy (an empty one included) is logged and counted; the
        current one stays. With ``expected`` (the watcher's stable fingerprints), a file
        that changed again while it was read is not used: the next round reads it."""
        async with self._lock:
            self._seen = await asyncio.to_thread(self._fingerprints)
            try:
                compiled = await asyncio.to_thread(load_compiled, self.path, allow_empty=False)
            except PolicyError as exc:
                self._refuse(exc.problems)
                return False
            except Exception as exc:  # a loader bug must not take the watcher down
                self._refuse([f"internal error while loading the policy: {type(exc).__name__}"])
                return False
            if expected is not None and await asyncio.to_thread(self._fingerprints) != expected:
                self._seen = expected  # changed while read: the next round picks it up
                return False
            self.last_error = None
            if compiled.digest == self.holder.current.digest:
                metrics.RELOADS.labels(result="unchanged").inc()
                return False
            self._warn_removed_filters(compiled)
            installed = self.holder.swap(compiled)
            self._seen = await asyncio.to_thread(self._fingerprints)
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

    def _refuse(self, problems: list[str]) -> None:
        self.last_error = "; ".join(problems)
        metrics.RELOADS.labels(result="failure").inc()
        log.error(
            "policy reload failed; keeping the current policy",
            extra={
                "wardgate": {
                    "policy": {"path": str(self.path), "problems": problems},
                    "current_digest": self.holder.current.digest,
                }
            },
        )

    def _warn_removed_filters(self, new: CompiledPolicy) -> None:
        """Log a warning when ``new`` drops a filter the running policy has (a JWT or
        OpenAPI section deleted, the WAF switched off): legitimate, but never silent. The
        diff names filters and sections only, never values (they may hold secrets)."""
        old = self.holder.current
        removed = [name for name in old.filter_names() if name not in new.filter_names()]
        if not removed:
            return
        before = old.spec.model_dump(mode="json")
        after = new.spec.model_dump(mode="json")
        changed = sorted(
            key for key in before.keys() | after.keys() if before.get(key) != after.get(key)
        )
        log.warning(
            "policy reload removes filters the running policy has",
            extra={
                "wardgate": {
                    "policy": {
                        "path": str(self.path),
                        "removed_filters": removed,
                        "changed_sections": changed,
                        "current_digest": old.digest,
                        "new_digest": new.digest,
                    }
                }
            },
        )
