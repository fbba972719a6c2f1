"""The ``wardgate-operator`` command: ``run``, ``injector``, ``crds``, ``render``, ``inject``."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from wardgate.errors import UsageError, WardgateError
from wardgate_operator.models import API_VERSION, SidecarConfig, SpecError


class ManifestError(WardgateError):
    """A manifest file named on the command line cannot be read or is not YAML."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wardgate-operator", description="Wardgate control plane: operator and injector."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the kopf operator (one replica, standalone)")
    run.add_argument("--namespace", action="append", default=[], metavar="NS")
    run.add_argument("--all-namespaces", action="store_true")
    run.add_argument("--liveness", default="http://0.0.0.0:8080/healthz")

    inj = sub.add_parser("injector", help="run the admission webhook server (TLS)")
    inj.add_argument("--listen", default="0.0.0.0:9443", metavar="HOST:PORT")
    inj.add_argument("--tls-cert", type=Path, default=Path("/tls/tls.crt"))
    inj.add_argument("--tls-key", type=Path, default=Path("/tls/tls.key"))
    inj.add_argument("--sidecar-config", type=Path, default=Path("/etc/wardgate/sidecar.yaml"))
    inj.add_argument("--cert-check-interval", type=float, default=10.0)
    inj.add_argument(
        "--baselines-from-cluster",
        action="store_true",
        help="read SecurityBaselines for /validate and /inject (floors, sidecar ceilings, "
        "mandatory mutual TLS; needs get/list on securitybaselines and get on namespaces); "
        "without it /validate checks schema and compilation only",
    )

    crds = sub.add_parser("crds", help="write the CRD manifests")
    crds.add_argument("--out", action="append", type=Path, required=True, metavar="DIR")

    render = sub.add_parser("render", help="print what the operator would apply, offline")
    render.add_argument("files", nargs="+", type=Path, metavar="FILE")
    render.add_argument(
        "--namespace-label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="labels of the Microgateways' namespace (selects baselines)",
    )

    inject = sub.add_parser("inject", help="print a manifest with the sidecar injected")
    inject.add_argument("-f", "--filename", required=True, help="manifest file, - for stdin")
    group = inject.add_mutually_exclusive_group(required=True)
    group.add_argument("--sidecar-config", type=Path, help="the injector's sidecar.yaml")
    group.add_argument("--image", help="gateway image (other sidecar settings default)")
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    import kopf

    import wardgate_operator.handlers  # noqa: F401 - registers the handlers

    if args.all_namespaces and args.namespace:
        print("wardgate-operator run: --namespace and --all-namespaces exclude each other")
        return 2
    kopf.configure(verbose=False)
    kopf.run(
        standalone=True,
        clusterwide=args.all_namespaces or not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness,
        memo=kopf.Memo(namespaces=list(args.namespace)),
    )
    return 0


def _cmd_injector(args: argparse.Namespace) -> int:
    import logging

    from wardgate.proxy.server import parse_host_port
    from wardgate_operator.admission import (
        BaselineSource,
        api_baselines,
        load_sidecar_config,
        no_baselines,
        start_injector,
    )
    from wardgate_operator.kube import KubeError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        host, port = parse_host_port(args.listen, "--listen")
        template = load_sidecar_config(args.sidecar_config)
    except (UsageError, SpecError) as exc:
        print(f"wardgate-operator injector: {exc}", file=sys.stderr)
        return 2

    async def main() -> None:
        from wardgate_operator.kube import KubeApi

        baselines: BaselineSource = no_baselines
        if args.baselines_from_cluster:
            try:
                baselines = api_baselines(KubeApi.in_cluster())
            except KubeError as exc:
                print(f"wardgate-operator injector: {exc}; baselines off", file=sys.stderr)
        server = await start_injector(
            host=host,
            port=port,
            cert=args.tls_cert,
            key=args.tls_key,
            template=template,
            baselines=baselines,
            reload_interval=args.cert_check_interval,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(f"wardgate injector on https://{host}:{server.port}", file=sys.stderr, flush=True)
        await stop.wait()
        await server.close()

    try:
        asyncio.run(main())
    except OSError as exc:  # cannot listen; unusable TLS files (ssl.SSLError is an OSError)
        print(f"wardgate-operator injector: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_crds(args: argparse.Namespace) -> int:
    from wardgate_operator.crds import write_crds

    for out in args.out:
        for path in write_crds(out):
            print(path)
    return 0


def _documents(text: str, source: str) -> list[Any]:
    try:
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        raise ManifestError(f"{source}: not valid YAML: {' '.join(str(exc).split())}") from None


def _read(name: str) -> str:
    if name == "-":
        return sys.stdin.read()
    try:
        return Path(name).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{name}: cannot read: {exc}") from None


def _flatten(docs: list[Any]) -> Iterator[Any]:
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "List":
            yield from _flatten(list(doc.get("items") or []))
        else:
            yield doc


def _cmd_render(args: argparse.Namespace) -> int:
    from wardgate_operator.baseline import ClusterBaseline, matching, namespace_labels
    from wardgate_operator.evaluation import evaluate
    from wardgate_operator.models import parse_baseline_spec
    from wardgate_operator.rendering import pod_annotations

    labels: dict[str, str] = {}
    for item in args.namespace_label:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"--namespace-label {item!r}: use KEY=VALUE", file=sys.stderr)
            return 2
        labels[key] = value
    try:
        docs = [d for f in args.files for d in _flatten(_documents(_read(str(f)), str(f)))]
    except ManifestError as exc:
        print(f"wardgate-operator render: {exc}", file=sys.stderr)
        return 2
    baselines, microgateways, failed = [], [], False
    for doc in docs:
        if not isinstance(doc, dict) or doc.get("apiVersion") != API_VERSION:
            continue
        name = str((doc.get("metadata") or {}).get("name", "unnamed"))
        if doc.get("kind") == "SecurityBaseline":
            try:
                baselines.append(ClusterBaseline(name, parse_baseline_spec(doc.get("spec"))))
            except SpecError as exc:
                print(f"SecurityBaseline {name}: invalid", file=sys.stderr)
                for problem in exc.problems:
                    print(f"  {problem}", file=sys.stderr)
                failed = True
        elif doc.get("kind") == "Microgateway":
            microgateways.append(doc)
    out = []
    for doc in microgateways:
        meta = doc.get("metadata") or {}
        name = str(meta.get("name", "unnamed"))
        namespace = str(meta.get("namespace") or "default")
        selected = matching(baselines, namespace_labels(namespace, labels))
        evaluation = evaluate(
            name=name,
            namespace=namespace,
            uid=str(meta.get("uid") or "00000000-0000-0000-0000-000000000000"),
            spec=doc.get("spec"),
            baselines=selected,
        )
        for finding in evaluation.findings:
            print(f"{namespace}/{name}: {finding.kind}: spec.{finding}", file=sys.stderr)
        if not evaluation.accepted or evaluation.configmap is None:
            failed = True
            print(f"{namespace}/{name}: not accepted ({evaluation.reason})", file=sys.stderr)
            for problem in evaluation.problems:
                print(f"  {problem}", file=sys.stderr)
            continue
        assert evaluation.spec is not None
        annotations = pod_annotations(evaluation.spec, name)
        note = "# pod template annotations for injection:\n" + "".join(
            f"#   {k}: {v!r}\n" for k, v in annotations.items()
        )
        out.append(note + yaml.safe_dump(evaluation.configmap, sort_keys=False))
    sys.stdout.write("---\n".join(out))
    return 1 if failed else 0


POD_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
"""Where each workload kind ``inject`` handles keeps its pod template."""


def inject_document(doc: Any, template: SidecarConfig, warnings: list[str]) -> Any:
    """``doc`` with the sidecar injected into its pod or pod template (others unchanged)."""
    from wardgate_operator.injection import apply_patch, inject

    if not isinstance(doc, dict):
        return doc
    kind = doc.get("kind")
    if kind == "Pod":
        return apply_patch(doc, inject(doc, template, warnings))
    if kind == "List":
        return {**doc, "items": [inject_document(i, template, warnings) for i in doc["items"]]}
    path = POD_TEMPLATE_PATHS.get(str(kind))
    if path is None:
        return doc
    node: Any = doc
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return doc
    patch = inject(node, template, warnings)
    prefix = "/" + "/".join(path)
    return apply_patch(doc, [{**op, "path": prefix + op["path"]} for op in patch])


def _cmd_inject(args: argparse.Namespace) -> int:
    from wardgate_operator.admission import load_sidecar_config
    from wardgate_operator.injection import InjectionError
    from wardgate_operator.models import parse_sidecar_config

    try:
        if args.sidecar_config is not None:
            template = load_sidecar_config(args.sidecar_config)
        else:
            template = parse_sidecar_config({"image": args.image}, "--image")
        docs = _documents(_read(args.filename), args.filename)
        warnings: list[str] = []
        out = [inject_document(doc, template, warnings) for doc in docs]
    except (SpecError, ManifestError, InjectionError) as exc:
        print(f"wardgate-operator inject: {exc}", file=sys.stderr)
        return 1
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    sys.stdout.write(yaml.safe_dump_all(out, sort_keys=False))
    return 0


COMMANDS = {
    "run": _cmd_run,
    "injector": _cmd_injector,
    "crds": _cmd_crds,
    "render": _cmd_render,
    "inject": _cmd_inject,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return 130
