"""``headers``: add and remove request and response headers (Envoy's route-level
``request_headers_to_add`` / ``request_headers_to_remove`` and their response twins)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from wardgate.config.base import HeaderName, SpecModel


class AppendAction(StrEnum):
    """What to do when the header is already present (Envoy's ``HeaderAppendAction``)."""

    APPEND_IF_EXISTS_OR_ADD = "APPEND_IF_EXISTS_OR_ADD"
    ADD_IF_ABSENT = "ADD_IF_ABSENT"
    OVERWRITE_IF_EXISTS_OR_ADD = "OVERWRITE_IF_EXISTS_OR_ADD"


class HeaderValueOptionSpec(SpecModel):
    """One header to add (Envoy's ``HeaderValueOption``)."""

    name: HeaderName
    """The header name."""

    value: Annotated[str, Field(max_length=8192, pattern=r"^[^\r\n\x00]*$")]
    """The value, sent as written (no CR, LF or NUL)."""

    append_action: AppendAction = AppendAction.OVERWRITE_IF_EXISTS_OR_ADD
    """How to combine with a header already present."""


class HeaderMutationSpec(SpecModel):
    """Headers to remove, then headers to add, in that order."""

    remove: tuple[HeaderName, ...] = ()
    """Header names to remove."""

    add: tuple[HeaderValueOptionSpec, ...] = ()
    """Headers to add."""


class HeadersSpec(SpecModel):
    """Header changes on the way to the upstream and on the way back to the client. Request
    changes run after every check (so a check never sees a header the policy added)."""

    request: HeaderMutationSpec = HeaderMutationSpec()
    """Changes to the request sent upstream."""

    response: HeaderMutationSpec = HeaderMutationSpec()
    """Changes to the response sent to the client, local replies included."""
