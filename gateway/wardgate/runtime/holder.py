"""The one mutable reference to the current policy."""

from __future__ import annotations

import dataclasses

from wardgate.runtime.compiled import CompiledPolicy


class PolicyHolder:
    """Holds the current :class:`CompiledPolicy`. A request reads :attr:`current` once at
    its start and keeps that object to the end, so a swap never changes the policy under an
    in-flight request. Swapping is a single reference assignment (atomic under the GIL and
    on one event loop)."""

    def __init__(self, policy: CompiledPolicy) -> None:
        self._current = policy

    @property
    def current(self) -> CompiledPolicy:
        return self._current

    def swap(self, policy: CompiledPolicy) -> CompiledPolicy:
        """Install ``policy`` as the next generation and return it (with its generation)."""
        installed = dataclasses.replace(policy, generation=self._current.generation + 1)
        self._current = installed
        return installed
