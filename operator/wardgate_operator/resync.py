"""The periodic resync: the safety net for changes no watch delivered, and the propagation
check's clock."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from wardgate_operator.baseline_status import update_baseline_statuses
from wardgate_operator.kube import KubeApi, KubeError, microgateways_path
from wardgate_operator.propagation import SidecarReader, check_propagation, http_sidecar_reader
from wardgate_operator.reconciling import reconcile

log = logging.getLogger("wardgate_operator.resync")


async def resync_once(
    api: KubeApi, namespaces: Sequence[str] = (), reader: SidecarReader = http_sidecar_reader
) -> int:
    """Re-evaluate every Microgateway and check its propagation, then refresh every
    SecurityBaseline's status. One failing object never stops the others. Returns how many
    Microgateways were handled."""
    handled = 0
    scopes: list[str | None] = list(namespaces) or [None]
    for namespace in scopes:
        try:
            items = await api.list(microgateways_path(namespace))
        except KubeError as exc:
            log.warning("resync: cannot list Microgateways: %s", exc)
            continue
        for item in items:
            meta = item.get("metadata") or {}
            try:
                await reconcile(api, item)
                fresh = await api.get(microgateways_path(meta["namespace"], meta["name"]))
                if fresh is not None:
                    await check_propagation(api, fresh, reader)
                handled += 1
            except (KubeError, KeyError) as exc:
                log.warning(
                    "resync of %s/%s failed: %s", meta.get("namespace"), meta.get("name"), exc
                )
    try:
        await update_baseline_statuses(api, namespaces)
    except KubeError as exc:
        log.warning("resync: SecurityBaseline status not updated: %s", exc)
    return handled


async def resync_forever(
    api: KubeApi,
    interval: float,
    namespaces: Sequence[str] = (),
    reader: SidecarReader = http_sidecar_reader,
) -> None:
    """Every ``interval`` seconds, :func:`resync_once`: propagation status, and the safety
    net for changes no watch delivered (namespace labels, a deleted ConfigMap, a missed
    event)."""
    while True:
        await asyncio.sleep(interval)
        await resync_once(api, namespaces, reader)
