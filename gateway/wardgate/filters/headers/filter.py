"""Header mutations, Envoy-style: removals first, then additions with an append action.
It is last in the chain, so request checks never see headers the policy itself added, and
(encode phases run in reverse) first on the response, so it also applies to local replies."""

from __future__ import annotations

from dataclasses import dataclass

from multidict import CIMultiDict

from wardgate.config.headers import AppendAction, HeaderMutationSpec
from wardgate.config.policy import PolicySpec
from wardgate.filters.api import FilterConfig, HttpFilter, HttpRequest, HttpResponse, LocalReply

NAME = "headers"


@dataclass(frozen=True, slots=True)
class HeaderMutation:
    """Compiled removals and additions for one direction."""

    remove: tuple[str, ...]
    add: tuple[tuple[str, str, AppendAction], ...]

    @classmethod
    def from_spec(cls, spec: HeaderMutationSpec) -> HeaderMutation:
        return cls(
            remove=spec.remove,
            add=tuple((h.name, h.value, h.append_action) for h in spec.add),
        )

    def __bool__(self) -> bool:
        return bool(self.remove or self.add)

    def apply(self, headers: CIMultiDict[str]) -> None:
        """Apply to ``headers`` in place."""
        for name in self.remove:
            headers.popall(name, None)
        for name, value, action in self.add:
            if action is AppendAction.OVERWRITE_IF_EXISTS_OR_ADD:
                headers[name] = value
            elif action is AppendAction.ADD_IF_ABSENT:
                headers.setdefault(name, value)
            else:
                headers.add(name, value)


class HeadersConfig(FilterConfig):
    name = NAME

    def __init__(self, request: HeaderMutation, response: HeaderMutation) -> None:
        self.request = request
        self.response = response
        self._filter = HeadersFilter(self)

    def create_filter(self) -> HttpFilter:
        return self._filter


class HeadersFilter(HttpFilter):
    def __init__(self, config: HeadersConfig) -> None:
        self.config = config

    async def decode_headers(self, request: HttpRequest) -> LocalReply | None:
        self.config.request.apply(request.headers)
        return None

    def encode_headers(self, request: HttpRequest, response: HttpResponse) -> LocalReply | None:
        self.config.response.apply(response.headers)
        return None


def compile(policy: PolicySpec) -> HeadersConfig | None:
    """``None`` (not in the chain) when the policy changes no header."""
    request = HeaderMutation.from_spec(policy.headers.request)
    response = HeaderMutation.from_spec(policy.headers.response)
    if not request and not response:
        return None
    return HeadersConfig(request, response)
