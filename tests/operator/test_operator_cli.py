"""``wardgate-operator crds | render | inject``: offline views of what the operator and
the webhook do, through the same functions."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.conftest import ROOT
from wardgate.config import load_policy_text
from wardgate_operator.cli import main
from wardgate_operator.crds import all_crds, render_file

MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: shop}
spec:
  selector: {matchLabels: {app: shop}}
  template:
    metadata:
      labels: {app: shop}
      annotations:
        wardgate.dev/microgateway: shop
        wardgate.dev/service-port: "8080"
        wardgate.dev/app-port: "8081"
    spec:
      containers: [{name: app, image: shop:1, ports: [{name: http, containerPort: 8080}]}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: report}
spec:
  schedule: "0 * * * *"
  jobTemplate:
    spec:
      template:
        metadata:
          annotations:
            wardgate.dev/microgateway: shop
            wardgate.dev/service-port: "8080"
            wardgate.dev/app-port: "8081"
        spec:
          restartPolicy: OnFailure
          containers: [{name: job, image: report:1}]
---
apiVersion: v1
kind: Service
metadata: {name: shop}
spec: {selector: {app: shop}, ports: [{port: 80, targetPort: http}]}
"""


def test_crds_writes_the_committed_files(tmp_path: Path, capsys):
    assert main(["crds", "--out", str(tmp_path / "a"), "--out", str(tmp_path / "b")]) == 0
    for directory in ("a", "b"):
        for name, crd in all_crds().items():
            assert (tmp_path / directory / name).read_text() == render_file(crd)


def test_inject_handles_workloads_and_leaves_other_objects_alone(tmp_path: Path, capsys):
    path = tmp_path / "app.yaml"
    path.write_text(MANIFEST)
    assert main(["inject", "-f", str(path), "--image", "ghcr.io/wardgate/wardgate:0.1.0"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    deployment, cronjob, service = docs
    pod_spec = deployment["spec"]["template"]["spec"]
    assert pod_spec["initContainers"][0]["name"] == "wardgate"
    job_spec = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert job_spec["initContainers"][0]["restartPolicy"] == "Always"  # Job still completes
    assert service == yaml.safe_load(MANIFEST.split("---\n")[2])
    for doc in docs:
        kubernetes_validate.validate(doc, "1.33", strict=True)
    # injecting the output again changes nothing (same inject() as the webhook)
    again = tmp_path / "again.yaml"
    again.write_text(yaml.safe_dump_all(docs))
    assert main(["inject", "-f", str(again), "--image", "ghcr.io/wardgate/wardgate:0.1.0"]) == 0
    assert list(yaml.safe_load_all(capsys.readouterr().out)) == docs


def test_inject_reports_bad_requests_without_traceback(tmp_path: Path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(MANIFEST.replace('"8081"', '"8080"', 1))
    assert main(["inject", "-f", str(path), "--image", "x:1"]) == 1
    assert "must differ" in capsys.readouterr().err


def test_render_prints_the_configmap_and_pod_annotations(tmp_path: Path, capsys):
    baseline = tmp_path / "baseline.yaml"
    baseline.write_text(
        "apiVersion: wardgate.dev/v1alpha1\nkind: SecurityBaseline\nmetadata: {name: prod}\n"
        "spec:\n  namespaceSelector: {matchLabels: {tier: prod}}\n"
        "  limits: {maxRequestBodyBytes: 1000}\n"
    )
    mgw = str(ROOT / "examples/k8s/microgateway.yaml")
    assert main(["render", mgw, str(baseline), "--namespace-label", "tier=prod"]) == 0
    captured = capsys.readouterr()
    assert "wardgate.dev/microgateway: 'shop'" in captured.out
    configmap = yaml.safe_load(captured.out)
    policy = load_policy_text(configmap["data"]["policy.yaml"])
    assert policy.limits.max_request_body_bytes == 1000
    assert "violation: spec.limits.maxRequestBodyBytes" in captured.err
    # the baseline does not select other namespaces
    assert main(["render", mgw, str(baseline)]) == 0
    configmap = yaml.safe_load(capsys.readouterr().out)
    assert (
        load_policy_text(configmap["data"]["policy.yaml"]).limits.max_request_body_bytes == 1048576
    )


def test_render_fails_on_invalid_microgateway(tmp_path: Path, capsys):
    path = tmp_path / "mgw.yaml"
    text = (ROOT / "examples/k8s/microgateway.yaml").read_text()
    path.write_text(text.replace("portName: http", "portName: http\n  servicePort: 8080"))
    assert main(["render", str(path)]) == 1
    assert "servicePort (deprecated) needs appPort" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["inject", "-f", "{missing}", "--image", "x:1"], 1, "missing.yaml: cannot read: "),
        (["inject", "-f", "{broken}", "--image", "x:1"], 1, "broken.yaml: not valid YAML: "),
        (["inject", "-f", "{app}", "--image", ""], 1, "--image: image: "),
        (["inject", "-f", "{app}", "--sidecar-config", "{broken}"], 1, "broken.yaml: not valid"),
        (["inject", "-f", "{app}", "--sidecar-config", "{sidecar}"], 1, "sidecar.yaml: proxyPort"),
        (["render", "{missing}"], 2, "missing.yaml: cannot read: "),
        (["render", "{broken}"], 2, "broken.yaml: not valid YAML: "),
        (["injector", "--listen", "nowhere"], 2, "--listen must be HOST:PORT"),
        (["injector", "--sidecar-config", "{missing}"], 2, "missing.yaml: cannot read: "),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path: Path, capsys, args, code, message):
    files = {"missing": tmp_path / "missing.yaml", "broken": tmp_path / "broken.yaml"}
    files["broken"].write_text("a: [unclosed\n")
    files["app"] = tmp_path / "app.yaml"
    files["app"].write_text(MANIFEST)
    files["sidecar"] = tmp_path / "sidecar.yaml"
    files["sidecar"].write_text("image: x:1\nproxyPort: 0\n")
    if args[0] == "injector" and "--sidecar-config" not in args:
        args = [*args, "--sidecar-config", str(files["sidecar"])]
    assert main([a.format(**files) for a in args]) == code
    err = capsys.readouterr().err
    assert message.format(**files) in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_injector_with_unusable_certificate_files_exits_1(tmp_path: Path, capsys):
    sidecar = tmp_path / "sidecar.yaml"
    sidecar.write_text("image: x:1\n")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_text("not a certificate\n")
    key.write_text("not a key\n")
    argv = ["injector", "--listen", "127.0.0.1:0", "--sidecar-config", str(sidecar)]
    assert main([*argv, "--tls-cert", str(cert), "--tls-key", str(key)]) == 1
    assert capsys.readouterr().err.startswith("wardgate-operator injector: [SSL")
    assert main([*argv, "--tls-cert", str(tmp_path / "none"), "--tls-key", str(key)]) == 1
    assert "No such file or directory" in capsys.readouterr().err


def test_a_programming_error_is_not_reported_as_bad_input(tmp_path: Path, monkeypatch):
    path = tmp_path / "app.yaml"
    path.write_text(MANIFEST)

    def broken(*_: object) -> None:
        raise ValueError("a bug, not the user's input")

    monkeypatch.setattr("wardgate_operator.cli.inject_document", broken)
    with pytest.raises(ValueError, match="a bug"):
        main(["inject", "-f", str(path), "--image", "x:1"])
