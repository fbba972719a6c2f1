"""Injection of the sidecar's TLS: a cert-manager Secret and a client CA bundle, from pod
annotations; each result applied with ``jsonpatch`` and validated with kubernetes-validate."""

from __future__ import annotations

import kubernetes_validate
import pytest

from tests.operator.test_injection import CLASSIC, TEMPLATE, injected, pod, sidecar_of
from wardgate_operator.injection import InjectionError, inject


def _volumes(body: dict) -> dict[str, dict]:
    return {v["name"]: v for v in body["spec"]["volumes"]}


@pytest.mark.parametrize("template", [TEMPLATE, CLASSIC], ids=["native", "classic"])
def test_tls_secret_and_client_ca_from_the_secret(template) -> None:
    result = injected(
        pod({"wardgate.dev/tls-secret": "shop-tls", "wardgate.dev/tls-client-ca": "secret"}),
        template,
    )
    kubernetes_validate.validate(result, "1.31", strict=True)
    sidecar = sidecar_of(result)
    args = sidecar["args"]
    assert args[args.index("--tls-cert") + 1] == "/etc/wardgate/tls/tls.crt"
    assert args[args.index("--tls-key") + 1] == "/etc/wardgate/tls/tls.key"
    assert args[args.index("--tls-client-ca") + 1] == "/etc/wardgate/tls/ca.crt"
    assert {"name": "wardgate-tls", "mountPath": "/etc/wardgate/tls", "readOnly": True} in (
        sidecar["volumeMounts"]
    )
    assert _volumes(result)["wardgate-tls"] == {
        "name": "wardgate-tls",
        "secret": {"secretName": "shop-tls"},
    }
    app = result["spec"]["containers"][0]
    assert "volumeMounts" not in app  # the app never sees the key


def test_client_ca_from_a_configmap_bundle() -> None:
    result = injected(
        pod(
            {
                "wardgate.dev/tls-secret": "shop-tls",
                "wardgate.dev/tls-client-ca": "configmap/mesh-roots",
            }
        )
    )
    kubernetes_validate.validate(result, "1.31", strict=True)
    args = sidecar_of(result)["args"]
    assert args[args.index("--tls-client-ca") + 1] == "/etc/wardgate/client-ca/ca.crt"
    assert _volumes(result)["wardgate-client-ca"]["configMap"] == {
        "name": "mesh-roots",
        "items": [{"key": "ca.crt", "path": "ca.crt"}],
    }


def test_without_tls_annotations_nothing_changes() -> None:
    sidecar = sidecar_of(injected(pod()))
    assert not any(a.startswith("--tls") for a in sidecar["args"])


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ({"wardgate.dev/tls-client-ca": "secret"}, "needs wardgate.dev/tls-secret"),
        ({"wardgate.dev/tls-secret": "Bad_Name"}, "not a Secret name"),
        (
            {"wardgate.dev/tls-secret": "ok", "wardgate.dev/tls-client-ca": "elsewhere"},
            "use 'secret', 'secret/<name>' or 'configmap/<name>', optionally ':<key>'",
        ),
        (
            {"wardgate.dev/tls-secret": "ok", "wardgate.dev/tls-client-ca": "configmap/a:b/c"},
            "not a data key",
        ),
        (
            {"wardgate.dev/tls-secret": "ok", "wardgate.dev/tls-client-ca": "configmap/A"},
            "not a resource name",
        ),
    ],
)
def test_unusable_tls_annotations_are_refused(annotations, message) -> None:
    with pytest.raises(InjectionError, match=message):
        inject(pod(annotations), TEMPLATE)
