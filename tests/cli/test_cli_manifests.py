"""``wardgate validate`` on GitOps manifests (issue 13, item 6): multi-document YAML with
Microgateways, SecurityBaselines and other objects; ``-o json``; ``--quiet``. The digest it
prints for a Microgateway is the one the operator renders into its ConfigMap."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.conftest import ROOT
from wardgate.cli import main
from wardgate_operator.evaluation import evaluate

DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "shop"},
    "spec": {"template": {"metadata": {"annotations": {"wardgate.dev/microgateway": "shop"}}}},
}


def manifests(tmp_path: Path, *docs: object) -> str:
    path = tmp_path / "manifests.yaml"
    path.write_text(yaml.safe_dump_all(list(docs)))
    return str(path)


def example(name: str) -> dict[str, object]:
    return dict(yaml.safe_load((ROOT / "examples/k8s" / name).read_text()))


def test_gitops_file_with_microgateway_baseline_and_other_objects(tmp_path, capsys):
    mgw, baseline = example("microgateway.yaml"), example("securitybaseline.yaml")
    path = manifests(tmp_path, DEPLOYMENT, mgw, baseline)
    assert main(["validate", "--quiet", path]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{path}#2 Microgateway/shop: valid (digest sha256:")
    assert out[1] == f"{path}#3 SecurityBaseline/production: valid SecurityBaseline"
    assert len(out) == 2  # --quiet: no notes; the Deployment is skipped


def test_json_output_and_the_operators_digest(tmp_path, capsys):
    mgw = example("microgateway.yaml")
    path = manifests(tmp_path, mgw)
    assert main(["validate", "-o", "json", path]) == 0
    verdict = json.loads(capsys.readouterr().out)
    (doc,) = verdict["documents"]
    assert verdict["valid"] is True and doc["valid"] is True
    assert (doc["kind"], doc["name"], doc["problems"]) == ("Microgateway", "shop", [])
    assert doc["notes"]  # informational notes are there unless --quiet
    rendered = evaluate(name="shop", namespace="shop", uid="u", spec=mgw["spec"], baselines=())
    assert rendered.configmap is not None
    assert (
        doc["digest"] == rendered.configmap["metadata"]["annotations"]["wardgate.dev/policy-digest"]
    )


def test_invalid_documents_are_named_with_spec_paths(tmp_path, capsys):
    mgw = example("microgateway.yaml")
    mgw["spec"]["limits"] = {"maxHeadersCount": 0}  # type: ignore[index]
    baseline = example("securitybaseline.yaml")
    baseline["spec"] = {"limits": {"maxUrlByte": 1}}
    path = manifests(tmp_path, mgw, baseline)
    assert main(["validate", path]) == 1
    out = capsys.readouterr().out
    assert f"{path}#1 Microgateway/shop: invalid policy" in out
    assert "  spec.limits.maxHeadersCount:" in out
    assert f"{path}#2 SecurityBaseline/production: invalid SecurityBaseline" in out
    assert "  spec.limits.maxUrlByte: unknown field" in out
    assert main(["validate", "-o", "json", path]) == 1
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["valid"] is False
    assert [d["valid"] for d in verdict["documents"]] == [False, False]


def test_a_file_without_wardgate_documents_is_an_error(tmp_path, capsys):
    path = manifests(tmp_path, DEPLOYMENT, {**DEPLOYMENT, "kind": "Service"})
    assert main(["validate", path]) == 1
    assert "no policy, Microgateway or SecurityBaseline in the file" in capsys.readouterr().out


def test_quiet_drops_only_notes(tmp_path, capsys):
    policy = str(ROOT / "examples/demo/policy.yaml")
    assert main(["validate", policy]) == 0
    loud = capsys.readouterr().out.splitlines()
    assert main(["validate", "-q", policy]) == 0
    quiet = capsys.readouterr().out.splitlines()
    assert len(loud) > len(quiet) == 1
    assert quiet[0] == loud[0]


def test_manifests_get_the_policy_files_bounds(tmp_path, capsys):
    """Alias bombs and deep nesting are refused before validation, as in a policy file."""
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n"
        for p, c in zip("abcdef", "bcdefg", strict=True)
    )
    path = tmp_path / "bomb.yaml"
    path.write_text("kind: Microgateway\napiVersion: wardgate.dev/v1alpha1\n---\n" + bomb)
    assert main(["validate", str(path)]) == 1
    assert "aliases are expanded" in capsys.readouterr().out
    deep = tmp_path / "deep.yaml"
    deep.write_text("apiVersion: wardgate.dev/v1alpha1\nkind: Microgateway\nspec: " + "[" * 100)
    assert main(["validate", str(deep)]) == 1
    assert "nested deeper than" in capsys.readouterr().out
