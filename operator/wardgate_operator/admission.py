"""The admission server: a plain aiohttp AdmissionReview endpoint over TLS.

* ``POST /inject`` (mutating, pods): the JSONPatch from :func:`injection.inject`.
* ``POST /validate`` (validating, Microgateways): the same :func:`evaluation.evaluate` the
  operator runs; refuses invalid policies and baseline violations (each violated floor
  listed), answers clamps as warnings. For ``SecurityBaseline`` objects: refuses a spec
  that does not parse, with every problem (one bad baseline would otherwise stop rendering
  for every Microgateway).
* ``GET /healthz``.

Stateless, so the chart runs several replicas. Not kopf's webhook machinery: that removes
its webhook configuration on shutdown and has no namespace selector. The certificate files
are re-read when they change, so a rotated certificate is served without a restart.

Every answer is an ``admission.k8s.io/v1`` AdmissionReview. A request that is not one gets
``allowed: false`` with code 400 (HTTP 400); an unexpected error ``allowed: false`` with
code 500: the injector fails closed and never crashes on input.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from wardgate.config.baseline import SecurityBaselineSpec
from wardgate_operator.baseline import ClusterBaseline, matching, namespace_labels
from wardgate_operator.evaluation import evaluate
from wardgate_operator.injection import InjectionError, inject, resource_ceiling
from wardgate_operator.kube import KubeApi, KubeError, namespace_path
from wardgate_operator.models import (
    SidecarConfig,
    SpecError,
    parse_baseline_spec,
    parse_sidecar_config,
)
from wardgate_operator.reconciling import cluster_baselines

log = logging.getLogger("wardgate_operator.admission")

MAX_REVIEW_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class BaselineView:
    """The baselines the validating webhook applies to one namespace."""

    baselines: Sequence[tuple[str, SecurityBaselineSpec]]
    invalid: Sequence[str] = ()
    available: bool = True


BaselineSource = Callable[[str], Awaitable[BaselineView]]
"""namespace -> the baselines selected for it."""


async def no_baselines(_: str) -> BaselineView:
    """The default without API access: nothing known (the operator still enforces)."""
    return BaselineView((), available=False)


def static_baselines(
    baselines: Sequence[ClusterBaseline], namespaces: Mapping[str, Mapping[str, str]]
) -> BaselineSource:
    """Baselines and namespace labels known up front (tests, offline use)."""

    async def source(namespace: str) -> BaselineView:
        labels = namespace_labels(namespace, namespaces.get(namespace))
        return BaselineView(matching(baselines, labels))

    return source


def api_baselines(api: KubeApi, ttl: float = 10.0) -> BaselineSource:
    """Baselines and namespace labels read from the API (needs get/list on
    securitybaselines and get on namespaces), cached for ``ttl`` seconds. When the API
    cannot be read the view says so (``available=False``): the webhook then admits with a
    warning, and the operator still enforces the floors."""
    cache: dict[str, tuple[float, Any]] = {}

    async def cached(key: str, load: Callable[[], Awaitable[Any]]) -> Any:
        now = asyncio.get_running_loop().time()
        hit = cache.get(key)
        if hit is not None and now - hit[0] < ttl:
            return hit[1]
        value = await load()
        cache[key] = (now, value)
        return value

    async def source(namespace: str) -> BaselineView:
        try:
            baselines, invalid = await cached("baselines", lambda: cluster_baselines(api))
            ns = await cached(f"ns/{namespace}", lambda: api.get(namespace_path(namespace)))
        except KubeError as exc:
            log.warning("baselines unavailable: %s", exc)
            return BaselineView((), available=False)
        labels = namespace_labels(namespace, ((ns or {}).get("metadata") or {}).get("labels"))
        return BaselineView(matching(baselines, labels), invalid)

    return source


class ReviewError(Exception):
    """The body is not a usable AdmissionReview."""


def _review(data: object) -> tuple[str, dict[str, Any]]:
    if not isinstance(data, dict):
        raise ReviewError("the body is not a JSON object")
    if data.get("apiVersion") != "admission.k8s.io/v1" or data.get("kind") != "AdmissionReview":
        raise ReviewError("expected apiVersion admission.k8s.io/v1, kind AdmissionReview")
    request = data.get("request")
    if not isinstance(request, dict):
        raise ReviewError("request is missing")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise ReviewError("request.uid is missing")
    return uid, request


def response(
    uid: str,
    allowed: bool,
    *,
    code: int = 200,
    message: str = "",
    patch: list[dict[str, Any]] | None = None,
    warnings: Sequence[str] = (),
) -> dict[str, Any]:
    """An AdmissionReview response."""
    answer: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if not allowed or message:
        answer["status"] = {"code": code, "message": message[:4000]}
    if patch:
        answer["patchType"] = "JSONPatch"
        answer["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    if warnings:
        # Kubernetes truncates warnings over 256 characters; keep them short and few.
        answer["warnings"] = [w[:256] for w in list(warnings)[:16]]
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": answer}


def _operation_object(request: Mapping[str, Any]) -> tuple[str, Mapping[str, Any] | None]:
    operation = str(request.get("operation", ""))
    obj = request.get("object")
    return operation, obj if isinstance(obj, Mapping) else None


async def review_inject(
    request: Mapping[str, Any],
    uid: str,
    template: SidecarConfig,
    baselines: BaselineSource = no_baselines,
) -> dict[str, Any]:
    """Answer one pod AdmissionReview request. The namespace is ``request.namespace``
    (pods created by controllers carry none in the object)."""
    operation, pod = _operation_object(request)
    if operation != "CREATE":
        return response(uid, True)
    kind = (
        (request.get("kind") or {}).get("kind") if isinstance(request.get("kind"), dict) else None
    )
    if kind != "Pod" or pod is None:
        return response(uid, False, code=400, message="expected a Pod in request.object")
    warnings: list[str] = []
    view = await baselines(str(request.get("namespace") or ""))
    ceiling = resource_ceiling(
        spec.sidecar_resources.model_dump(exclude_none=True) for _, spec in view.baselines
    )
    mandatory = [name for name, spec in view.baselines if spec.peer.require_client_certificate]
    try:
        patch = inject(pod, template, warnings, ceiling, mandatory[0] if mandatory else None)
    except InjectionError as exc:
        return response(uid, False, code=400, message=f"wardgate sidecar injection: {exc}")
    if patch:
        warnings.insert(0, "wardgate sidecar injected")
    return response(uid, True, patch=patch, warnings=warnings)


def review_validate_baseline(request: Mapping[str, Any], uid: str) -> dict[str, Any]:
    """Answer one SecurityBaseline AdmissionReview request: the operator's own parser."""
    operation, obj = _operation_object(request)
    if operation not in ("CREATE", "UPDATE"):
        return response(uid, True)
    if obj is None:
        return response(uid, False, code=400, message="expected a SecurityBaseline")
    try:
        parse_baseline_spec(obj.get("spec"))
    except SpecError as exc:
        return response(uid, False, code=422, message="; ".join(exc.problems))
    return response(uid, True)


async def review_validate(
    request: Mapping[str, Any], uid: str, baselines: BaselineSource
) -> dict[str, Any]:
    """Answer one Microgateway (or SecurityBaseline) AdmissionReview request."""
    kind = request.get("kind")
    if isinstance(kind, Mapping) and kind.get("kind") == "SecurityBaseline":
        return review_validate_baseline(request, uid)
    operation, obj = _operation_object(request)
    if operation not in ("CREATE", "UPDATE"):
        return response(uid, True)
    if obj is None:
        return response(uid, False, code=400, message="expected a Microgateway in request.object")
    meta = obj.get("metadata") or {}
    namespace = str(request.get("namespace") or meta.get("namespace") or "")
    view = await baselines(namespace)
    evaluation = evaluate(
        name=str(meta.get("name") or request.get("name") or "unnamed"),
        namespace=namespace,
        uid=str(meta.get("uid") or ""),
        spec=obj.get("spec"),
        baselines=view.baselines,
        invalid_baselines=view.invalid,
    )
    violations = [f for f in evaluation.findings if f.kind != "clamp"]
    if not evaluation.accepted or violations:
        lines = list(evaluation.problems) + [
            f"spec.{f}" for f in violations if f"spec.{f}" not in evaluation.problems
        ]
        return response(uid, False, code=422, message="; ".join(lines))
    warnings = [f"spec.{f}" for f in evaluation.findings if f.kind == "clamp"]
    if not view.available:
        warnings.append(
            "baseline check unavailable in the webhook; the operator still enforces baselines"
        )
    return response(uid, True, warnings=warnings)


def admission_app(
    template: SidecarConfig, baselines: BaselineSource = no_baselines
) -> web.Application:
    """The aiohttp application (TLS is the runner's business)."""
    app = web.Application(client_max_size=MAX_REVIEW_BYTES)

    async def handle(request: web.Request, kind: str) -> web.Response:
        uid = ""
        try:
            try:
                data = await request.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise ReviewError("the body is not JSON") from None
            uid, review = _review(data)
        except ReviewError as exc:
            return web.json_response(response(uid, False, code=400, message=str(exc)), status=400)
        try:
            if kind == "inject":
                answer = await review_inject(review, uid, template, baselines)
            else:
                answer = await review_validate(review, uid, baselines)
        except Exception as exc:  # fail closed, never crash: the apiserver gets a verdict
            log.error("admission %s failed: %s", kind, type(exc).__name__)
            answer = response(uid, False, code=500, message="internal error in wardgate webhook")
        log.info(
            "admission %s uid=%s namespace=%s allowed=%s",
            kind,
            uid,
            review.get("namespace"),
            answer["response"]["allowed"],
        )
        return web.json_response(answer)

    async def inject_handler(request: web.Request) -> web.Response:
        return await handle(request, "inject")

    async def validate_handler(request: web.Request) -> web.Response:
        return await handle(request, "validate")

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app.router.add_post("/inject", inject_handler)
    app.router.add_post("/validate", validate_handler)
    app.router.add_get("/healthz", healthz)
    return app


# --- TLS with reloading certificates ---------------------------------------------------


class CertificateReloader:
    """An SSL context whose certificate chain is re-read when the files change (cert-manager
    rotates the Secret; the kubelet swaps the mounted files)."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert, self.key = cert, key
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._stamp = self._current_stamp()
        self.context.load_cert_chain(cert, key)
        self.reloads = 0

    def _current_stamp(self) -> tuple[float, int, float, int]:
        c, k = os.stat(self.cert), os.stat(self.key)
        return (c.st_mtime, c.st_size, k.st_mtime, k.st_size)

    def check(self) -> bool:
        """Reload when the files changed; keep the old chain if the new one is unusable
        (a half-written rotation). Returns whether a new chain was loaded."""
        try:
            stamp = self._current_stamp()
            if stamp == self._stamp:
                return False
            self.context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            log.warning("certificate reload failed, keeping the old one: %s", type(exc).__name__)
            return False
        self._stamp = stamp
        self.reloads += 1
        log.info("serving certificate reloaded")
        return True

    async def watch(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            # stat and PEM parsing are file I/O: off the loop that answers admission reviews.
            await asyncio.to_thread(self.check)


@dataclass
class InjectorServer:
    """A running admission server (for the CLI and tests)."""

    runner: web.AppRunner
    reloader: CertificateReloader
    port: int
    _watch: asyncio.Task[None]

    async def close(self) -> None:
        self._watch.cancel()
        await self.runner.cleanup()


async def start_injector(
    *,
    host: str,
    port: int,
    cert: Path,
    key: Path,
    template: SidecarConfig,
    baselines: BaselineSource = no_baselines,
    reload_interval: float = 10.0,
) -> InjectorServer:
    """Start serving; ``port`` 0 picks a free port (see ``InjectorServer.port``)."""
    reloader = CertificateReloader(cert, key)
    runner = web.AppRunner(admission_app(template, baselines), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=reloader.context)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    task = asyncio.create_task(reloader.watch(reload_interval))
    return InjectorServer(runner, reloader, bound, task)


def load_sidecar_config(path: Path) -> SidecarConfig:
    """Read the chart's ``sidecar.yaml``; :class:`SpecError` naming the file and every
    problem when it cannot be read, parsed or validated."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SpecError([f"cannot read: {exc.strerror or exc}"], str(path)) from None
    except (yaml.YAMLError, UnicodeDecodeError):
        raise SpecError(["not valid YAML"], str(path)) from None
    return parse_sidecar_config(data, str(path))
