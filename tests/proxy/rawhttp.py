"""A raw HTTP/1.1 client over a socket, for requests no well-behaved client library sends."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    raw: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def raw_request(address: str, payload: bytes, timeout: float = 10.0) -> RawResponse:
    """Send ``payload`` as is and read one response (until the connection closes or the
    declared length is read)."""
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(payload)
        await writer.drain()
        data = b""
        async with asyncio.timeout(timeout):
            while b"\r\n\r\n" not in data:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            if not lines or not lines[0].startswith("HTTP/"):
                return RawResponse(0, {}, b"", data)
            status = int(lines[0].split(" ")[1])
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "content-length" in headers:
                while len(body) < int(headers["content-length"]):
                    chunk = await reader.read(65536)
                    if not chunk:
                        break
                    body += chunk
            elif headers.get("transfer-encoding") == "chunked":
                while not body.endswith(b"0\r\n\r\n"):
                    chunk = await reader.read(65536)
                    if not chunk:
                        break
                    body += chunk
                body = _dechunk(body)
        return RawResponse(status, headers, body, data)
    finally:
        writer.close()


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return out
