"""The chart against the operator's own code: the CRDs it ships, the arguments it starts the
operator and injector with, the sidecar config it renders, and the SecurityBaseline it can
create are all accepted by the real parsers and models of ``wardgate_operator``. A full
``helm test`` script run against the real injector, with the certificate the chart generated,
closes the loop."""

from __future__ import annotations

import asyncio
import copy
import os
import socket
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import pytest
import yaml

from tests.chart import k8s
from tests.chart.render import (
    CHART,
    KUBE_VERSIONS,
    NAMESPACE,
    RELEASE,
    VALUE_SETS,
    Rendered,
    render,
)
from tests.chart.test_helm_test_script import SERVICE_URL, run_script, write_tls
from tests.conftest import ROOT
from wardgate_operator import crds as crd_generator
from wardgate_operator.admission import load_sidecar_config
from wardgate_operator.cli import _parser
from wardgate_operator.models import parse_baseline_spec

CRD_NAMES = {
    "microgateways.wardgate.dev": "Namespaced",
    "securitybaselines.wardgate.dev": "Cluster",
}


KEEP = {"helm.sh/resource-policy": "keep"}


@pytest.fixture(scope="module")
def chart_crds() -> dict[str, dict[str, Any]]:
    """The CRDs as the chart renders them, without the keep annotation and the chart's
    labels (checked here, then replaced by the generator's one label)."""
    out = {}
    for rendered in render().of_kind("CustomResourceDefinition"):
        doc = copy.deepcopy(rendered)
        assert doc["metadata"].pop("annotations") == KEEP
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "wardgate"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        doc["metadata"]["labels"] = {"app.kubernetes.io/part-of": "wardgate"}
        out[doc["metadata"]["name"]] = doc
    return out


# --- CRDs ---------------------------------------------------------------------------------


def test_chart_ships_both_crds_as_generated(chart_crds: dict[str, dict[str, Any]]) -> None:
    assert {name: crd["spec"]["scope"] for name, crd in chart_crds.items()} == CRD_NAMES
    # What Helm installs is exactly what the generator writes (`make docs`).
    generated = {name.removesuffix(".yaml"): crd for name, crd in crd_generator.all_crds().items()}
    assert chart_crds == generated


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_crds_validate(chart_crds: dict[str, dict[str, Any]], version: str) -> None:
    for crd in chart_crds.values():
        k8s.validate(crd, version)
        assert crd["spec"]["group"] == "wardgate.dev"
        (served,) = [v for v in crd["spec"]["versions"] if v["served"] and v["storage"]]
        assert served["name"] == "v1alpha1"
    # The operator reports Microgateway status through the status subresource (RBAC
    # microgateways/status); SecurityBaselines carry no operator-written status.
    (mg_version,) = chart_crds["microgateways.wardgate.dev"]["spec"]["versions"]
    assert "status" in mg_version["subresources"]


def test_crds_are_templates_behind_values() -> None:
    """Templates, so `helm upgrade` updates them (Helm never upgrades crds/); kept on
    uninstall by default (deleting a CRD deletes every Microgateway); both switchable."""
    with helm.Chart.load(CHART) as chart:
        assert chart.crds == []  # nothing in crds/: one way in, the templates
    assert render({"crds": {"enabled": False}}).of_kind("CustomResourceDefinition") == []
    plain = render({"crds": {"keep": False}}).of_kind("CustomResourceDefinition")
    assert len(plain) == 2 and all("annotations" not in c["metadata"] for c in plain)
    upgrade = render(upgrade=True).of_kind("CustomResourceDefinition")
    assert [c["metadata"]["annotations"] for c in upgrade] == [KEEP, KEEP]


def test_webhook_and_rbac_name_the_crds(chart_crds: dict[str, dict[str, Any]]) -> None:
    r = render()
    mg = chart_crds["microgateways.wardgate.dev"]["spec"]
    (config,) = r.of_kind("ValidatingWebhookConfiguration")
    (rule,) = config["webhooks"][0]["rules"]
    assert rule["apiGroups"] == [mg["group"]]
    assert rule["resources"] == [mg["names"]["plural"]]
    assert rule["scope"] == mg["scope"]
    (role,) = r.of_kind("ClusterRole")
    resources = {
        res
        for rule in role["rules"]
        if "wardgate.dev" in rule["apiGroups"]
        for res in rule["resources"]
    }
    plurals = {crd["spec"]["names"]["plural"] for crd in chart_crds.values()}
    assert resources == plurals | {"microgateways/status", "securitybaselines/status"}


def _crd_schema(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    return dict(version["schema"]["openAPIV3Schema"])


@pytest.mark.parametrize("value_set", ["baseline", "minimal"])
def test_rendered_security_baseline_is_accepted(
    chart_crds: dict[str, dict[str, Any]], value_set: str
) -> None:
    values = (
        VALUE_SETS["baseline"]
        if value_set == "baseline"
        else {"securityBaseline": {"enabled": True}}
    )
    (baseline,) = render(values).of_kind("SecurityBaseline")
    # By the API server's structural schema (approximated with JSON Schema)...
    jsonschema.validate(baseline, _crd_schema(chart_crds["securitybaselines.wardgate.dev"]))
    # ...and by the operator, which parses it with the same model.
    parsed = parse_baseline_spec(baseline["spec"])
    if value_set == "baseline":
        assert parsed.jwt.required is True
        assert parsed.waf.minimum_mode == "enforce"


def test_the_example_baseline_can_come_from_values() -> None:
    example = yaml.safe_load((ROOT / "examples" / "k8s" / "securitybaseline.yaml").read_text())
    spec = dict(example["spec"])
    selector = spec.pop("namespaceSelector")
    values = {"securityBaseline": {"enabled": True, "name": example["metadata"]["name"],
                                   "namespaceSelector": selector, "spec": spec}}  # fmt: skip
    (baseline,) = render(values).of_kind("SecurityBaseline")
    assert baseline["spec"] == example["spec"]
    assert parse_baseline_spec(baseline["spec"]) == parse_baseline_spec(example["spec"])


def test_baseline_values_schema_follows_the_model() -> None:
    # A field the operator's model does not know is refused by the chart already...
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError, match="floors"):
        chart.validate_schema({"securityBaseline": {"enabled": True, "spec": {"floors": {}}}})
    # ...and a value the model refuses (paranoia level 5) is refused too.
    with (
        helm.Chart.load(CHART) as chart,
        pytest.raises(helm.HelmValuesError, match="minimumParanoiaLevel"),
    ):
        chart.validate_schema({"securityBaseline": {"spec": {"waf": {"minimumParanoiaLevel": 5}}}})


# --- the processes the chart starts --------------------------------------------------------


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_container_args_are_accepted_by_the_operator_cli(value_set: str) -> None:
    r = render(VALUE_SETS[value_set])
    for component in ("operator", "injector"):
        (container,) = r.one("Deployment", f"-{component}")["spec"]["template"]["spec"][
            "containers"
        ]
        args = _parser().parse_args(container["args"])
        assert args.command == ("run" if component == "operator" else "injector")
    operator_args = _parser().parse_args(
        r.one("Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]["args"]
    )
    watched = VALUE_SETS[value_set].get("operator", {}).get("watchNamespaces", [])
    assert operator_args.namespace == watched
    assert operator_args.all_namespaces is (not watched)
    # The liveness endpoint the operator serves by default is what the probe checks.
    assert operator_args.liveness == "http://0.0.0.0:8080/healthz"


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_sidecar_config_is_accepted_by_the_injector(value_set: str, tmp_path: Path) -> None:
    r = render(VALUE_SETS[value_set])
    path = tmp_path / "sidecar.yaml"
    path.write_text(r.one("ConfigMap", "-sidecar")["data"]["sidecar.yaml"])
    config = load_sidecar_config(path)  # what `wardgate-operator injector --sidecar-config` does
    sidecar = VALUE_SETS[value_set].get("sidecar", {})
    assert config.mode == sidecar.get("mode", "native")
    assert config.admin_port == sidecar.get("adminPort", 9901)
    assert config.image == "ghcr.io/wardgate/wardgate:0.1.0"


# --- helm test against the real injector ---------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_listening(
    port: int, proc: asyncio.subprocess.Process, timeout: float = 60.0
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if proc.returncode is not None:
            raise AssertionError(f"injector exited with {proc.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.2)
    raise AssertionError("injector did not listen")


async def test_helm_test_passes_against_the_real_injector(tmp_path: Path) -> None:
    r: Rendered = render()
    files = write_tls(r, tmp_path / "tls")
    (container,) = r.one("Deployment", "-injector")["spec"]["template"]["spec"]["containers"]
    port = _free_port()
    # The chart's arguments, with the pod's paths mapped to the files rendered here.
    paths = {"/tls/tls.crt": str(files["tls.crt"]), "/tls/tls.key": str(files["tls.key"]),
             "/etc/wardgate/sidecar.yaml": str(files["sidecar.yaml"]), "0.0.0.0:9443": f"127.0.0.1:{port}"}  # fmt: skip
    args = [paths.get(a, a) for a in container["args"]]
    exe = Path(sys.executable).parent / "wardgate-operator"
    log = (tmp_path / "injector.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        str(exe),
        *args,
        stdout=log,
        stderr=log,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
    )
    try:
        await _wait_listening(port, proc)
        code, out, err = await run_script(files, port)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), timeout=30)
        log.close()
    assert code == 0, f"{out}\n{err}\n{(tmp_path / 'injector.log').read_text()[-2000:]}"
    assert f"ok: {SERVICE_URL}/healthz over verified TLS" in out
    assert "ok: /inject adds the sidecar ghcr.io/wardgate/wardgate:0.1.0" in out
    assert "ok: /inject leaves other pods alone" in out
    assert RELEASE in SERVICE_URL and NAMESPACE in SERVICE_URL
