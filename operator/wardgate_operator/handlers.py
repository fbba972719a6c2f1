"""The kopf handlers: each a thin call into :mod:`wardgate_operator.reconciling` (or, for
the periodic loop, :mod:`wardgate_operator.resync`).

Importing this module registers the handlers in kopf's default registry (``kopf run`` and
``wardgate-operator run`` both do). Settings: kopf's progress and diff-base annotations use
the ``wardgate.dev`` prefix; no handler adds a finalizer (the ConfigMap is garbage-collected
through its owner reference, so deleting a Microgateway never waits for the operator).

Namespaces are not watched: label changes (which select baselines) are picked up by the
resync loop within one interval. SecurityBaselines are cluster-scoped and watched in every
mode; with ``--namespace`` the fan-out only touches the watched namespaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

import kopf

from wardgate_operator.baseline_status import update_baseline_statuses
from wardgate_operator.kube import KubeApi
from wardgate_operator.models import GROUP, VERSION
from wardgate_operator.reconciling import reconcile, reconcile_all
from wardgate_operator.resync import resync_forever

Logger = logging.Logger | logging.LoggerAdapter[Any]

PROPAGATION_INTERVAL = float(os.environ.get("WARDGATE_PROPAGATION_INTERVAL", "30"))
"""Seconds between resync rounds (propagation checks, re-evaluation of every Microgateway)."""

MGW = (GROUP, VERSION, "microgateways")
BASELINES = (GROUP, VERSION, "securitybaselines")


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    if getattr(memo, "namespaces", None):
        # Exact namespace names need no cluster-wide namespace scan (which would also need
        # cluster-wide list on namespaces).
        settings.scanning.disabled = True
    if getattr(memo, "api", None) is None:
        info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(
            settings=settings
        )
        if info is None:
            raise kopf.PermanentError("no Kubernetes credentials (service account or kubeconfig)")
        memo.api = KubeApi.from_connection_info(info)
    # Our own resync loop rather than a kopf timer: kopf timers put a finalizer on every
    # object, and deleting a Microgateway must never wait for the operator.
    namespaces = list(getattr(memo, "namespaces", None) or ())
    memo.resync = asyncio.create_task(
        resync_forever(memo.api, PROPAGATION_INTERVAL, namespaces), name="wardgate-resync"
    )


@kopf.on.cleanup()
async def close(memo: Any, **_: Any) -> None:
    task = getattr(memo, "resync", None)
    if isinstance(task, asyncio.Task):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    api = getattr(memo, "api", None)
    if isinstance(api, KubeApi):
        await api.close()


@kopf.on.resume(*MGW)
@kopf.on.create(*MGW)
@kopf.on.update(*MGW)
async def microgateway_changed(body: kopf.Body, memo: Any, logger: Logger, **_: Any) -> None:
    evaluation = await reconcile(memo.api, body)
    if not evaluation.accepted:
        # One warning per change; no exception, so no retry storm on a bad policy.
        kopf.warn(body, reason=evaluation.reason, message="; ".join(evaluation.problems)[:1000])
        logger.warning("not accepted: %s", evaluation.reason)
        return
    weakened = [f for f in evaluation.findings if f.kind != "clamp"]
    if weakened:
        # The policy was clamped to the baselines: tell the app team where it asked for less.
        message = "; ".join(f"spec.{f}" for f in weakened)[:1000]
        kopf.warn(body, reason="BaselineWeakened", message=message)


@kopf.on.event(*BASELINES)
async def baseline_event(type: str, memo: Any, logger: Logger, **_: Any) -> None:
    # Any baseline change may move any namespace's floor (its selector may have changed),
    # so every Microgateway is re-evaluated; unchanged ones cost reads only. The initial
    # listing (type None) is covered by the Microgateways' own resume handlers.
    if not type:
        return
    # With --namespace the operator may only read Microgateways there (per-namespace Roles).
    namespaces = list(getattr(memo, "namespaces", None) or ())
    count = 0
    for namespace in namespaces or [None]:
        count += await reconcile_all(memo.api, namespace)
    written = await update_baseline_statuses(memo.api, namespaces)
    logger.info(
        "baseline change: %d Microgateways re-evaluated, %d baseline statuses written",
        count,
        written,
    )
