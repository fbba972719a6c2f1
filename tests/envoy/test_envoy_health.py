"""The gRPC health service on the ext_authz port (what kubelet's ``grpc`` probe asks)."""

from __future__ import annotations

import grpc


async def test_grpc_health_reports_serving_then_not_serving(authz_server):
    server = await authz_server("", http=False)
    async with grpc.aio.insecure_channel(server.grpc_address) as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=bytes,
            response_deserializer=bytes,
        )
        assert await check(b"") == b"\x08\x01"  # SERVING
        server.stopping.set()
        assert await check(b"") == b"\x08\x02"  # NOT_SERVING while shutting down
