"""Names vulture reports as unused that are used where it cannot see (``make lint`` runs
vulture over tools/, so this file; it is never imported). Only true false positives belong
here, each with the reason; dead code is deleted instead."""

# ruff: noqa: B018
# mypy: ignore-errors

from wardgate.admin.state import ServerState
from wardgate.config.jwt import AsyncFetchSpec, JwtRequirementSpec
from wardgate.config.waf import WafFamily
from wardgate.filters.api import HttpRequest, HttpResponse
from wardgate.filters.waf.rules import Rule
from wardgate.proxy.h2 import grpc
from wardgate.proxy.upstream_client import UpstreamConnection
from wardgate_operator import models

_ = object()

# Enum members and protocol constants: a complete table, read by value (YAML, the wire).
WafFamily.XSS, WafFamily.RCE, WafFamily.LFI, WafFamily.RFI, WafFamily.SSRF, WafFamily.PHP
WafFamily.JAVA, WafFamily.NODEJS, WafFamily.SSTI, WafFamily.NOSQLI, WafFamily.LDAP
WafFamily.XXE, WafFamily.CRLF, WafFamily.PROTOCOL, WafFamily.SCANNER
ServerState.PRE_INITIALIZING  # Envoy's ServerInfo.State names, all of them
grpc.CANCELLED  # the gRPC status code table

# Policy fields accepted from documents (pydantic reads them; Envoy compatibility).
AsyncFetchSpec.fast_listener
JwtRequirementSpec.allow_missing  # checked through exactly_one() by name
Rule.references  # rule metadata from rules/*.yaml, for people reading the rules

# The filter contract: filters may read it (none of the shipped ones does yet).
HttpRequest.body_complete
HttpResponse.body_complete

# Callbacks and settings that libraries read: httptools, expat, ssl, h2, protobuf, kopf,
# PyYAML, aiohttp, kmock.
UpstreamConnection.on_message_begin, UpstreamConnection.on_status, UpstreamConnection.on_header
(
    UpstreamConnection.on_headers_complete,
    UpstreamConnection.on_body,
    UpstreamConnection.on_message_complete,
)
_.buffer_text, _.buffer_size, _.StartElementHandler, _.EndElementHandler
_.CharacterDataHandler, _.EntityDeclHandler, _.StartDoctypeDeclHandler, _.DefaultHandler
_.num_tickets
_.local_settings, _.max_allowed_table_size, _.max_inbound_frame_size
_.type_name, _.oneof_index, _.proto3_optional, _.map_entry
_.progress_storage, _.diffbase_storage, _.server_timeout, _.disabled
_.ignore_aliases
_.content_length
_.reconnect_backoff
_.opaque_data
_.added_later  # tests/config/test_merge_directions.py: a field declared to be missing

# Status subresource fields (the API server and kubectl read them, the code writes them).
models.MicrogatewayStatusCondition.last_transition_time
models.MicrogatewayStatusCondition.observed_generation
models.MicrogatewayStatus.observed_generation
models.MicrogatewayStatus.config_map
models.SecurityBaselineStatus.observed_generation
models.SecurityBaselineStatus.non_compliant
