"""Fast protobuf classes for the Envoy messages the gRPC services parse and write.

``envoy-data-plane`` (betterproto2) is the schema: its generated classes carry every field's
number, wire type, label, map and oneof. Decoding a ``CheckRequest`` with them is pure
Python (about a millisecond per check here), so at import this module turns the same
metadata into protobuf descriptors and lets the C ``upb`` runtime (the ``protobuf``
package) parse and serialize. Nothing is typed in by hand: a field Envoy adds upstream
arrives here with the next ``envoy-data-plane``.

Only the wire matters, so types are declared under a private package (``wardgate.wire``),
enums as ``int32`` (same varint encoding), and the ``google.protobuf`` well-known types
refer to protobuf's own (so ``Struct.update`` works). ``tests/envoy/test_envoy_wire.py``
checks byte-level agreement with ``envoy-data-plane`` both ways.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import betterproto2
from envoy_data_plane.envoy.service.auth.v3 import CheckRequest as _CheckRequest
from envoy_data_plane.envoy.service.auth.v3 import CheckResponse as _CheckResponse
from envoy_data_plane.envoy.service.ext_proc.v3 import ProcessingRequest as _ProcessingRequest
from envoy_data_plane.envoy.service.ext_proc.v3 import (
    ProcessingResponse as _ProcessingResponse,
)
from envoy_data_plane.message_pool import default_message_pool
from google.protobuf import (
    any_pb2,
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    empty_pb2,
    message_factory,
    struct_pb2,
    timestamp_pb2,
    wrappers_pb2,
)

_FD = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "wardgate.wire"
_WELL_KNOWN_FILES = (any_pb2, duration_pb2, empty_pb2, struct_pb2, timestamp_pb2, wrappers_pb2)
_SCALARS = {
    betterproto2.TYPE_BOOL: _FD.TYPE_BOOL,
    betterproto2.TYPE_INT32: _FD.TYPE_INT32,
    betterproto2.TYPE_INT64: _FD.TYPE_INT64,
    betterproto2.TYPE_UINT32: _FD.TYPE_UINT32,
    betterproto2.TYPE_UINT64: _FD.TYPE_UINT64,
    betterproto2.TYPE_SINT32: _FD.TYPE_SINT32,
    betterproto2.TYPE_SINT64: _FD.TYPE_SINT64,
    betterproto2.TYPE_FLOAT: _FD.TYPE_FLOAT,
    betterproto2.TYPE_DOUBLE: _FD.TYPE_DOUBLE,
    betterproto2.TYPE_FIXED32: _FD.TYPE_FIXED32,
    betterproto2.TYPE_SFIXED32: _FD.TYPE_SFIXED32,
    betterproto2.TYPE_FIXED64: _FD.TYPE_FIXED64,
    betterproto2.TYPE_SFIXED64: _FD.TYPE_SFIXED64,
    betterproto2.TYPE_STRING: _FD.TYPE_STRING,
    betterproto2.TYPE_BYTES: _FD.TYPE_BYTES,
    betterproto2.TYPE_ENUM: _FD.TYPE_INT32,
}


def _proto_name(cls: type) -> str:
    url = default_message_pool.type_to_url[cls]
    return url.rpartition("/")[2]


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


class _Builder:
    """Walks betterproto2 message classes into one ``FileDescriptorProto``."""

    def __init__(self) -> None:
        self.file = descriptor_pb2.FileDescriptorProto(
            name="wardgate/envoy_wire.proto", package=_PACKAGE, syntax="proto3"
        )
        self.file.dependency.extend(m.DESCRIPTOR.name for m in _WELL_KNOWN_FILES)
        self.refs: dict[type, str] = {}

    def message(self, cls: type) -> str:
        """The type reference (``.pkg.Name``) for ``cls``, declaring it on first use."""
        full = _proto_name(cls)
        if full.startswith("google.protobuf."):
            return "." + full
        ref = self.refs.get(cls)
        if ref is not None:
            return ref
        local = full.replace(".", "_")
        ref = self.refs[cls] = f".{_PACKAGE}.{local}"
        proto = self.file.message_type.add(name=local)
        meta_cls: Any = cls
        groups: dict[str, int] = {}
        synthetic: list[descriptor_pb2.FieldDescriptorProto] = []
        for field in dataclasses.fields(cls):
            meta = betterproto2.FieldMetadata.get(field)
            out = proto.field.add(name=field.name, number=meta.number)
            if meta.proto_type == betterproto2.TYPE_MAP:
                self._map(proto, out, field.name, meta, meta_cls, ref)
                continue
            out.label = _FD.LABEL_REPEATED if meta.repeated else _FD.LABEL_OPTIONAL
            if meta.proto_type == betterproto2.TYPE_MESSAGE:
                target = (
                    meta.unwrap() if meta.unwrap else meta_cls._betterproto.cls_by_field[field.name]
                )
                out.type = _FD.TYPE_MESSAGE
                out.type_name = self.message(target)
            else:
                out.type = _SCALARS[meta.proto_type]
            if meta.group:
                if meta.group not in groups:
                    groups[meta.group] = len(proto.oneof_decl)
                    proto.oneof_decl.add(name=meta.group)
                out.oneof_index = groups[meta.group]
            elif meta.optional and not meta.repeated and out.type != _FD.TYPE_MESSAGE:
                synthetic.append(out)
        for out in synthetic:  # proto3 `optional`: synthetic oneofs come after real ones
            out.proto3_optional = True
            out.oneof_index = len(proto.oneof_decl)
            proto.oneof_decl.add(name=f"_{out.name}")
        return ref

    def _map(
        self,
        proto: descriptor_pb2.DescriptorProto,
        out: descriptor_pb2.FieldDescriptorProto,
        name: str,
        meta: Any,
        meta_cls: Any,
        ref: str,
    ) -> None:
        key_meta, value_meta = meta.map_meta
        entry = proto.nested_type.add(name=f"{_camel(name)}Entry")
        entry.options.map_entry = True
        entry.field.add(
            name="key", number=1, label=_FD.LABEL_OPTIONAL, type=_SCALARS[key_meta.proto_type]
        )
        value = entry.field.add(name="value", number=2, label=_FD.LABEL_OPTIONAL)
        if value_meta.proto_type == betterproto2.TYPE_MESSAGE:
            value.type = _FD.TYPE_MESSAGE
            value.type_name = self.message(meta_cls._betterproto.cls_by_field[f"{name}.value"])
        else:
            value.type = _SCALARS[value_meta.proto_type]
        out.label = _FD.LABEL_REPEATED
        out.type = _FD.TYPE_MESSAGE
        out.type_name = f"{ref}.{entry.name}"


def _build() -> dict[type, Any]:
    builder = _Builder()
    roots = (_CheckRequest, _CheckResponse, _ProcessingRequest, _ProcessingResponse)
    for root in roots:
        builder.message(root)
    pool = descriptor_pool.DescriptorPool()
    for module in _WELL_KNOWN_FILES:
        pool.Add(descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb))
    pool.Add(builder.file)
    return {
        root: message_factory.GetMessageClass(
            pool.FindMessageTypeByName(builder.refs[root].lstrip("."))
        )
        for root in roots
    }


_CLASSES = _build()

CheckRequest: Any = _CLASSES[_CheckRequest]
"""``envoy.service.auth.v3.CheckRequest`` (upb)."""
CheckResponse: Any = _CLASSES[_CheckResponse]
"""``envoy.service.auth.v3.CheckResponse`` (upb)."""
ProcessingRequest: Any = _CLASSES[_ProcessingRequest]
"""``envoy.service.ext_proc.v3.ProcessingRequest`` (upb)."""
ProcessingResponse: Any = _CLASSES[_ProcessingResponse]
"""``envoy.service.ext_proc.v3.ProcessingResponse`` (upb)."""
Struct: Any = type(CheckResponse().dynamic_metadata)
"""``google.protobuf.Struct`` in the same pool (for ``CopyFrom`` into responses)."""
