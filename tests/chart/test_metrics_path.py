"""The metrics path end to end (issue 13, item 2): the chart's PodMonitor -> its selector and
port name -> the injected pod's sidecar port of that name -> a real ``wardgate run`` started
with the injected container's own arguments -> the scrape answers with the series the
chart's dashboard queries.

What only a real cluster shows: prometheus-operator turning the PodMonitor into a scrape
config, and the pod network between Prometheus and the pod (NetworkPolicy, CNI)."""

from __future__ import annotations

import re
import socket
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.chart import k8s
from tests.chart.render import VALUE_SETS, render
from tests.operator.test_pod_as_kubelet_sees_it import pod_template
from wardgate_operator.injection import apply_patch, inject
from wardgate_operator.models import SidecarConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _arg(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


@pytest.mark.timeout(180)
async def test_pod_monitor_scrapes_a_real_sidecar(gateway_process, upstream, tmp_path):
    ports = {"proxyPort": free_port(), "statusPort": free_port(), "adminPort": free_port()}
    values: dict[str, Any] = {**VALUE_SETS["monitoring"], "sidecar": {"mode": "classic", **ports}}
    rendered = render(values)
    (monitor,) = rendered.of_kind("PodMonitor")
    config = SidecarConfig.model_validate(
        yaml.safe_load(rendered.one("ConfigMap", "-sidecar")["data"]["sidecar.yaml"])
    )

    # The injected pod, as the webhook makes it from the chart's sidecar config.
    pod = pod_template()
    pod = apply_patch(pod, inject(pod, config))
    spec = monitor["spec"]
    assert spec["namespaceSelector"] == {"any": True}
    assert k8s.selector_matches(spec["selector"], pod["metadata"]["labels"])
    (endpoint,) = spec["podMetricsEndpoints"]
    targets = [
        (c["name"], p["containerPort"])
        for c in pod["spec"]["containers"]
        for p in c.get("ports") or ()
        if p.get("name") == endpoint["port"]
    ]
    assert targets == [("wardgate", ports["statusPort"])]  # one target per pod: the sidecar

    # The sidecar's own arguments, with the policy file and the upstream of this test.
    (sidecar,) = [c for c in pod["spec"]["containers"] if c["name"] == "wardgate"]
    args = list(sidecar["args"])
    assert sidecar["command"] == ["wardgate"] and args[0] == "run"
    policy = tmp_path / "policy.yaml"
    policy.write_text("{}\n")
    args[args.index("--policy") + 1] = str(policy)
    args[args.index("--upstream") + 1] = upstream
    for flag in ("--listen", "--status"):  # all interfaces in the pod; loopback here
        args[args.index(flag) + 1] = _arg(args, flag).replace("0.0.0.0", "127.0.0.1")
    proc = gateway_process(*args[1:])
    assert proc.admin == f"127.0.0.1:{ports['adminPort']}"

    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://{_arg(args, '--listen')}/echo") as resp:
            assert resp.status == 200
        probe = sidecar["readinessProbe"]["httpGet"]
        assert probe["port"] == endpoint["port"]  # the kubelet probes the same port
        async with session.get(f"http://127.0.0.1:{ports['statusPort']}{probe['path']}") as resp:
            assert resp.status == 200
        scrape = f"http://127.0.0.1:{ports['statusPort']}{endpoint['path']}"
        async with session.get(scrape) as resp:
            assert resp.status == 200
            text = await resp.text()
    families = {f.name for f in text_string_to_metric_families(text)}
    samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples["wardgate_requests_total"] >= 1
    # Every series the dashboard queries is in the scrape or its family is.
    dashboard = rendered.one("ConfigMap", "-dashboard")["data"]["wardgate.json"]
    queried = set(re.findall(r"(wardgate_[a-z0-9_]+)", dashboard))
    base = {re.sub(r"_(total|bucket|sum|count)$", "", q) for q in queried}
    assert base <= families | {re.sub(r"_(total|bucket|sum|count)$", "", s) for s in samples}
