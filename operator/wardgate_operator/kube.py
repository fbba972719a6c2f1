"""The only module that talks to the Kubernetes API: a small aiohttp client for the few
calls the operator makes (read baselines, namespaces and pods; write ConfigMaps and status).

Credentials come from the same ``kopf.ConnectionInfo`` kopf itself logs in with (service
account in the cluster, kubeconfig outside), so the operator has one identity.
"""

from __future__ import annotations

import base64
import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from wardgate_operator.models import GROUP, VERSION


class KubeError(Exception):
    """An API call that failed; ``status`` is the HTTP status (0: no response)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"{status}: {message}" if status else message)


def microgateways_path(namespace: str | None = None, name: str | None = None) -> str:
    base = f"/apis/{GROUP}/{VERSION}"
    if namespace is None:
        return f"{base}/microgateways"
    path = f"{base}/namespaces/{quote(namespace)}/microgateways"
    return f"{path}/{quote(name)}" if name else path


BASELINES_PATH = f"/apis/{GROUP}/{VERSION}/securitybaselines"


def configmaps_path(namespace: str, name: str | None = None) -> str:
    path = f"/api/v1/namespaces/{quote(namespace)}/configmaps"
    return f"{path}/{quote(name)}" if name else path


def networkpolicies_path(namespace: str, name: str | None = None) -> str:
    path = f"/apis/networking.k8s.io/v1/namespaces/{quote(namespace)}/networkpolicies"
    return f"{path}/{quote(name)}" if name else path


def pods_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{quote(namespace)}/pods"


def namespace_path(name: str | None = None) -> str:
    return f"/api/v1/namespaces/{quote(name)}" if name else "/api/v1/namespaces"


def label_selector(match_labels: Mapping[str, str]) -> str:
    """``matchLabels`` as a ``labelSelector`` query value (expressions are filtered locally)."""
    return ",".join(f"{k}={v}" for k, v in sorted(match_labels.items()))


class KubeApi:
    """A session against one API server."""

    def __init__(
        self,
        server: str,
        *,
        token: str | None = None,
        scheme: str | None = None,
        ssl_context: ssl.SSLContext | bool = True,
        timeout: float = 30.0,
    ) -> None:
        self.server = server.rstrip("/")
        self._headers = {"Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"{scheme or 'Bearer'} {token}"
        self._ssl = ssl_context
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_connection_info(cls, info: Any) -> KubeApi:
        """From a ``kopf.ConnectionInfo`` (token, CA and client-certificate options)."""
        context: ssl.SSLContext | bool = True
        if str(info.server).startswith("https"):
            if info.insecure:
                context = False
            else:
                ctx = ssl.create_default_context(cafile=info.ca_path)
                if info.ca_data:
                    data = info.ca_data
                    text = data.decode() if isinstance(data, bytes) else data
                    if "BEGIN CERTIFICATE" not in text:
                        text = base64.b64decode(text).decode()
                    ctx.load_verify_locations(cadata=text)
                if info.certificate_path and info.private_key_path:
                    ctx.load_cert_chain(info.certificate_path, info.private_key_path)
                context = ctx
        token = info.token
        if token is None and info.username and info.password:
            raw = f"{info.username}:{info.password}".encode()
            return cls(
                info.server,
                token=base64.b64encode(raw).decode(),
                scheme="Basic",
                ssl_context=context,
            )
        return cls(info.server, token=token, scheme=info.scheme, ssl_context=context)

    @classmethod
    def in_cluster(cls, root: str = "/var/run/secrets/kubernetes.io/serviceaccount") -> KubeApi:
        """From the pod's service account (``KUBERNETES_SERVICE_HOST``/``_PORT``, the mounted
        token and CA). ``KubeError`` when not running in a pod."""
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        token_file, ca_file = Path(root) / "token", Path(root) / "ca.crt"
        if not host or not token_file.exists():
            raise KubeError(0, "not running in a pod with a service account token")
        server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file.exists() else None)
        return cls(server, token=token_file.read_text().strip(), ssl_context=context)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: object = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """One call; the decoded JSON answer, or :class:`KubeError`."""
        headers = {"Content-Type": content_type} if json is not None else {}
        try:
            async with self._client().request(
                method,
                self.server + path,
                json=json,
                params=params,
                headers=headers,
                ssl=self._ssl,
            ) as response:
                if response.status >= 400:
                    text = await response.text()
                    raise KubeError(response.status, text[:500])
                body = await response.json(content_type=None)
        except aiohttp.ClientError as exc:
            raise KubeError(0, f"{method} {path}: {type(exc).__name__}: {exc}") from None
        return body if isinstance(body, dict) else {}

    async def get(self, path: str) -> dict[str, Any] | None:
        """The object at ``path``, ``None`` when it does not exist."""
        try:
            return await self.request("GET", path)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(self, path: str, selector: str = "") -> list[dict[str, Any]]:
        params = {"labelSelector": selector} if selector else None
        body = await self.request("GET", path, params=params)
        items = body.get("items") or []
        return [item for item in items if isinstance(item, dict)]

    async def create(self, path: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("POST", path, json=obj)

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request(
            "PATCH", path, json=patch, content_type="application/merge-patch+json"
        )

    async def delete(self, path: str) -> None:
        try:
            await self.request("DELETE", path)
        except KubeError as exc:
            if exc.status != 404:
                raise
