"""The kopf handlers: each a thin call into :mod:`wardgate_operator.reconciling`.

Importing this module registers the handlers in kopf's default registry (``kopf run`` and
``wardgate-operator run`` both do). Settings: kopf's progress and diff-base annotations use
the ``wardgate.dev`` prefix; no handler adds a finalizer (the ConfigMap is garbage-collected
through its owner reference, so deleting a Microgateway never waits for the operator).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf

from wardgate_operator.kube import KubeApi, microgateways_path
from wardgate_operator.models import GROUP, VERSION
from wardgate_operator.reconciling import check_propagation, reconcile, reconcile_all

Logger = logging.Logger | logging.LoggerAdapter[Any]

PROPAGATION_INTERVAL = float(os.environ.get("WARDGATE_PROPAGATION_INTERVAL", "30"))
"""Seconds between propagation checks per Microgateway."""

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
    if getattr(memo, "api", None) is None:
        info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(
            settings=settings
        )
        if info is None:
            raise kopf.PermanentError("no Kubernetes credentials (service account or kubeconfig)")
        memo.api = KubeApi.from_connection_info(info)


@kopf.on.cleanup()
async def close(memo: Any, **_: Any) -> None:
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


@kopf.on.event(*BASELINES)
async def baseline_event(type: str, memo: Any, logger: Logger, **_: Any) -> None:
    # Any baseline change may move any namespace's floor (its selector may have changed),
    # so every Microgateway is re-evaluated; unchanged ones cost reads only. The initial
    # listing (type None) is covered by the Microgateways' own resume handlers.
    if not type:
        return
    count = await reconcile_all(memo.api)
    logger.info("baseline change: %d Microgateways re-evaluated", count)


@kopf.on.event("", "v1", "namespaces")
async def namespace_event(name: str, type: str, memo: Any, **_: Any) -> None:
    # Namespace labels select baselines. The initial listing (type None) is covered by the
    # Microgateways' own resume handlers.
    if type in ("ADDED", "MODIFIED"):
        await reconcile_all(memo.api, name)


@kopf.timer(*MGW, interval=PROPAGATION_INTERVAL, initial_delay=1.0)
async def resync(body: kopf.Body, memo: Any, **_: Any) -> None:
    # A periodic resync as well: with --namespace (no cluster-scoped watches), baseline and
    # namespace changes arrive here within one interval. Unchanged objects cost reads only.
    await reconcile(memo.api, body)
    meta = body["metadata"]
    fresh = await memo.api.get(microgateways_path(meta["namespace"], meta["name"]))
    if fresh is not None:
        await check_propagation(memo.api, fresh)
