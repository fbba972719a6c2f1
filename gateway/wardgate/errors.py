"""Wardgate's own exceptions, in one place: what a command or the operator catches to tell a
person what to fix (anything else escaping is a bug)::

    Exception
     └── WardgateError               refused with a message meant for a person
          ├── ProblemsError          something a person wrote cannot be used: ``problems``
          │    │                     has one ``path: message`` line each, ``source`` says where
          │    ├── PolicyError       a policy document: YAML, schema, file (wardgate.config)
          │    ├── BaselineError     the policy with the SecurityBaselines' defaults laid under it
          │    ├── FilterCompileError  a section that validates but that a filter cannot compile
          │    │                     (a bad pattern, an unreadable JWKS file)
          │    └── SpecError         a document a policy or resource names: an OpenAPI spec, a
          │                          Microgateway or SecurityBaseline ``spec``
          ├── UsageError             a command-line option that cannot be used
          ├── RequestDescriptionError  ``wardgate explain``: a request description
          └── TlsConfigError         certificate, key or CA files that cannot be used

Modules raise these where they detect the problem (``wardgate.config`` re-exports
``PolicyError``, ``wardgate.filters.api`` ``FilterCompileError``); the CLIs catch them here
rather than bare ``ValueError``.
"""

from __future__ import annotations


class WardgateError(Exception):
    """Refused with a message meant for a person (the CLIs print it and exit non-zero)."""


class ProblemsError(WardgateError):
    """Something a person wrote cannot be used. ``problems`` holds one line per error, each
    starting with its field path (``limits.maxHeadersCount: ...``); ``source`` names the
    document (a file name, ``<stdin>``) when there is one."""

    kind = "document"
    """What was invalid, for :meth:`report` (``policy``, ``OpenAPI spec``, ...)."""

    def __init__(self, problems: list[str], source: str = "") -> None:
        self.source = source
        self.problems = problems
        joined = "; ".join(problems)
        super().__init__(f"{source}: {joined}" if source else joined)

    def report(self) -> str:
        """A multi-line report for people: the source, then one problem per line."""
        head = f"{self.source}: invalid {self.kind}" if self.source else f"invalid {self.kind}"
        return "\n".join([head] + [f"  {p}" for p in self.problems])


class PolicyError(ProblemsError):
    """A policy document that cannot be used (``source``: the file, or ``<stdin>``)."""

    kind = "policy"

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(problems, source)


class BaselineError(ProblemsError):
    """The app policy with the baselines' ``defaults`` laid under it does not validate
    (defaults that clash with what the app wrote)."""

    kind = "policy with the baselines' defaults"


class FilterCompileError(ProblemsError):
    """A filter's ``compile(policy)`` found a section that validates against the schema but
    cannot be compiled (``waf.exceptions[0].pattern: ...``)."""

    kind = "policy"


class SpecError(ProblemsError):
    """A document a policy or a resource names cannot be used: an OpenAPI document, or a
    ``Microgateway`` / ``SecurityBaseline`` spec (``spec.policy.limits: ...``)."""

    kind = "spec"


class UsageError(WardgateError, ValueError):
    """A command-line option that cannot be used (``--workers must be between 1 and 64``)."""


class RequestDescriptionError(WardgateError, ValueError):
    """A request description (``wardgate explain --request``) that cannot be understood."""


class TlsConfigError(WardgateError):
    """Certificate, key or CA files that cannot be used (the message names the file)."""
