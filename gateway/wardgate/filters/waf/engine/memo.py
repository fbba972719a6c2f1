"""The memo: recent answers by (kind, name, value).

What a value matches depends only on its kind, name and text, and request after request
repeats most of them (header values, parameter names, the same bearer token or cookie of
one client): a dict lookup replaces the scans. Short values are their own key; longer ones
(a token, a JSON document) are keyed by a keyed SHA-256 digest of their text, truncated to
16 bytes, so the memo holds 16 bytes per long value, never the value itself.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence

from wardgate.filters.waf.rules import Rule
from wardgate.filters.waf.targets import Target

MEMO_SIZE = 8192
"""Distinct (kind, name, value) answers a memo keeps; past it the memo starts over."""
MEMO_VALUE_MAX = 256
"""Values up to this length are their own key; longer ones are keyed by a digest."""
MEMO_DIGEST_MAX = 65536
"""Values longer than this are neither stored nor looked up: they rarely repeat, and their
digest would cost a pass over the text on every request for nothing."""
DIGEST_BYTES = 16
"""128 bits: with a key chosen at random per process, nobody can make two different values
share a digest (and so share an answer), and by chance it will not happen either."""

_KEYED = hashlib.sha256(os.urandom(32))
"""SHA-256 state after a 32-byte key chosen at random per process: digests cannot be
computed, or collisions searched for, outside it. SHA-256 rather than BLAKE2b because
OpenSSL runs it on the CPU's SHA instructions, about twice as fast on a 1 KiB value here;
each digest copies this state (cheaper than hashing the key again). The digests never
leave the process, and truncation to 128 bits would stop length extension anyway."""

Key = tuple[str, str, str | bytes]
"""(kind, name, the value itself or the keyed digest of a long one); a digest is ``bytes``
and a value ``str``, so the two never compare equal."""


def memo_key(target: Target) -> Key | None:
    """The memo key of ``target``'s value, or ``None`` when values of its length are not
    remembered (:data:`MEMO_DIGEST_MAX`)."""
    value = target.value
    if len(value) <= MEMO_VALUE_MAX:
        return (target.kind, target.name, value)
    if len(value) > MEMO_DIGEST_MAX:
        return None
    keyed = _KEYED.copy()
    keyed.update(value.encode("utf-8", "surrogatepass"))
    return (target.kind, target.name, keyed.digest()[:DIGEST_BYTES])


class Memo:
    """A bounded map :data:`Key` -> the rules that value matches.

    Shared by threads without a lock: each method is one or two dict operations, each of
    them atomic, and an answer is the same whichever thread stored it. Memory stays flat
    however many distinct values arrive: at most :data:`MEMO_SIZE` entries, each at most
    :data:`MEMO_VALUE_MAX` characters or :data:`DIGEST_BYTES` bytes of key."""

    __slots__ = ("_answers",)

    def __init__(self) -> None:
        self._answers: dict[Key, tuple[Rule, ...]] = {}

    @property
    def lookup(self) -> Callable[[Key], tuple[Rule, ...] | None]:
        """The answer for a key from :func:`memo_key` (one dict lookup, for a hot loop)."""
        return self._answers.get

    def make_room(self) -> None:
        """Start over when full: a flood of unseen values only ever costs the memo."""
        if len(self._answers) > MEMO_SIZE:
            self._answers.clear()

    def put_all(self, keys: Sequence[Key], answers: Sequence[tuple[Rule, ...] | None]) -> None:
        """Remember each key's answer (``None``: no rule), after :meth:`make_room`."""
        self.make_room()
        table = self._answers
        for key, answer in zip(keys, answers, strict=True):
            table[key] = answer or ()

    def forget(self) -> None:
        """Forget every answer (tests and the cold benchmark)."""
        self._answers.clear()

    def __len__(self) -> int:
        return len(self._answers)
