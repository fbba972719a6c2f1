"""The ``wardgate`` command: ``run``, ``demo``, ``validate``, ``explain``, ``schema``,
``import-envoy``, ``ext-authz``, ``precompile-waf``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from wardgate import __version__
from wardgate.config import PolicyError, policy_json_schema
from wardgate.observability.logs import AccessLogFormat, configure_gateway_log
from wardgate.runtime import load_compiled
from wardgate.runtime.explain import RequestDescriptionError, explain, parse_request_description

if TYPE_CHECKING:
    from wardgate.proxy.h2.settings import H2Settings

DEMO_POLICY = Path("examples/demo/policy.yaml")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wardgate",
        description="Wardgate: an Envoy-compatible API microgateway with a WAF.",
    )
    parser.add_argument("--version", action="version", version=f"wardgate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the gateway in front of an upstream")
    run.add_argument("--upstream", required=True, help="upstream base URL, http://host:port")
    _add_serving_options(run, default_listen="127.0.0.1:8080")
    _add_tls_options(run)
    run.add_argument(
        "--ext-authz-grpc",
        metavar="HOST:PORT",
        help="also serve Envoy's gRPC ext_authz here, same policy, same process",
    )
    run.add_argument(
        "--ext-authz-http",
        metavar="HOST:PORT",
        help="also serve Envoy's HTTP ext_authz here, same policy, same process",
    )

    demo = sub.add_parser("demo", help="run the gateway in front of a built-in demo upstream")
    _add_serving_options(demo, default_listen="127.0.0.1:8080")

    validate = sub.add_parser(
        "validate",
        help="check policy files and Microgateway/SecurityBaseline manifests (multi-document "
        "YAML); exit 0 when all are valid",
    )
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.add_argument(
        "-o", "--output", choices=["text", "json"], default="text", help="json: for machines"
    )
    validate.add_argument("-q", "--quiet", action="store_true", help="no informational notes")
    validate.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="FILE",
        help="SecurityBaseline manifest(s) the policies must meet (as the operator checks)",
    )

    schema = sub.add_parser("schema", help="print the policy JSON Schema")
    schema.add_argument(
        "--format",
        choices=["json", "markdown"],
        default="json",
        help="markdown: the configuration reference",
    )

    _add_ext_authz_parser(sub)
    _add_precompile_parser(sub)

    exp = sub.add_parser("explain", help="run a request through a policy offline")
    exp.add_argument("--policy", help="policy file (default: the built-in default policy)")
    exp.add_argument(
        "--request",
        required=True,
        help="request file: YAML/JSON description or raw HTTP; - for stdin",
    )
    tune = sub.add_parser(
        "tune",
        help="propose the narrowest WAF exceptions from access logs of a detect-mode rollout",
    )
    tune.add_argument("logs", nargs="+", metavar="LOG", help="ECS access-log files; - for stdin")
    tune.add_argument(
        "--min-hits", type=int, default=1, help="leave out groups with fewer hits (default 1)"
    )
    imp = sub.add_parser(
        "import-envoy",
        help="convert an Envoy jwt_authn filter config (YAML/JSON) into a Wardgate policy",
    )
    imp.add_argument("file", metavar="FILE", help="Envoy config; - for stdin")
    imp.add_argument("-o", "--output", help="write the policy here (default: stdout)")
    return parser


def _add_precompile_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser(
        "precompile-waf",
        help="write the WAF's compiled databases into a read-only store (image build step)",
    )
    cmd.add_argument(
        "--out",
        help="store directory (default: $WARDGATE_HS_STORE, else share/wardgate/hyperscan "
        "under the installation prefix, where the gateway looks)",
    )
    cmd.add_argument(
        "--paranoia-level",
        type=int,
        nargs="*",
        default=[],
        choices=[1, 2, 3, 4],
        help="also the default WAF at these paranoia levels",
    )
    cmd.add_argument(
        "--policy",
        action="append",
        default=[],
        metavar="FILE",
        help="also every database this policy needs",
    )


def _add_ext_authz_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser(
        "ext-authz",
        help="serve the policy as Envoy's external authorization service (HTTP and/or gRPC)",
    )
    cmd.add_argument("--policy", required=True, help="policy file, watched for changes")
    cmd.add_argument("--http", metavar="HOST:PORT", help="serve HTTP ext_authz here")
    cmd.add_argument("--grpc", metavar="HOST:PORT", help="serve gRPC ext_authz (and ext_proc) here")
    cmd.add_argument(
        "--admin",
        metavar="HOST:PORT",
        help="admin port (Envoy admin endpoints, /stats/prometheus); off unless given",
    )
    cmd.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def _add_serving_options(cmd: argparse.ArgumentParser, default_listen: str) -> None:
    cmd.add_argument("--policy", help="policy file, watched for changes (default: built-in)")
    cmd.add_argument("--listen", default=default_listen, metavar="HOST:PORT")
    cmd.add_argument(
        "--admin",
        default="127.0.0.1:9901",
        metavar="HOST:PORT",
        help="admin port (Envoy admin endpoints); keep it on localhost",
    )
    cmd.add_argument(
        "--status",
        metavar="HOST:PORT",
        help="read-only status port (/ready, /stats/prometheus, /policy); off unless given",
    )
    cmd.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    cmd.add_argument(
        "--access-log",
        default="ecs",
        choices=get_args(AccessLogFormat),
        help="access log format on stdout",
    )
    cmd.add_argument(
        "--access-log-format",
        default="",
        metavar="FORMAT",
        help="with --access-log envoy: an Envoy format string, e.g. "
        "'%%REQ(:PATH)%% %%RESPONSE_CODE%% %%DYNAMIC_METADATA(wardgate:rules)%%'",
    )
    cmd.add_argument(
        "--drain-timeout",
        type=float,
        default=20.0,
        help="seconds in-flight requests get to finish on SIGTERM",
    )
    cmd.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    _add_http2_options(cmd)


def _add_http2_options(cmd: argparse.ArgumentParser) -> None:
    from wardgate.proxy.h2.settings import H2Settings

    default = H2Settings()
    cmd.add_argument(
        "--upstream-protocol",
        default=default.upstream_protocol,
        choices=["http1", "h2c", "auto"],
        help="protocol to the upstream: http1, h2c (HTTP/2 prior knowledge) or auto (the "
        "client's protocol; gRPC needs auto or h2c)",
    )
    for flag, field, text in (
        (
            "--http2-max-concurrent-streams",
            "max_concurrent_streams",
            "streams per HTTP/2 connection; raise it when clients see REFUSED_STREAM",
        ),
        ("--http2-initial-stream-window", "initial_stream_window", "bytes per stream window"),
        (
            "--http2-initial-connection-window",
            "initial_connection_window",
            "bytes per connection window",
        ),
        (
            "--http2-max-header-list-size",
            "max_header_list_size",
            "decoded request header bytes per HTTP/2 request",
        ),
    ):
        cmd.add_argument(
            flag, type=int, default=getattr(default, field), help=f"{text} (default: %(default)s)"
        )


def _http2_settings(args: argparse.Namespace) -> H2Settings:
    from wardgate.proxy.h2.settings import H2Settings

    values = {
        "max_concurrent_streams": (args.http2_max_concurrent_streams, 1, 2**31 - 1),
        "initial_stream_window": (args.http2_initial_stream_window, 65535, 2**31 - 1),
        "initial_connection_window": (args.http2_initial_connection_window, 65535, 2**31 - 1),
        "max_header_list_size": (args.http2_max_header_list_size, 1024, 2**24),
    }
    for name, (value, low, high) in values.items():
        if not low <= value <= high:
            flag = "--http2-" + name.replace("_", "-")
            raise ValueError(f"{flag} must be between {low} and {high}, not {value}")
    return H2Settings(
        upstream_protocol=args.upstream_protocol, **{k: v[0] for k, v in values.items()}
    )


def _add_tls_options(cmd: argparse.ArgumentParser) -> None:
    group = cmd.add_argument_group("TLS (see docs/gateway.md)")
    group.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this PEM chain")
    group.add_argument("--tls-key", metavar="FILE", help="private key of --tls-cert (PEM)")
    group.add_argument(
        "--tls-client-ca",
        metavar="FILE",
        help="require client certificates chaining to this PEM bundle (mutual TLS)",
    )
    group.add_argument(
        "--tls-handshake-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="a client that has not completed the TLS handshake by then is dropped",
    )
    group.add_argument(
        "--upstream-ca", metavar="FILE", help="verify the https upstream against this bundle"
    )
    group.add_argument(
        "--upstream-sni", metavar="NAME", help="SNI and verified name (default: URL host)"
    )
    group.add_argument("--upstream-cert", metavar="FILE", help="client certificate for upstream")
    group.add_argument("--upstream-key", metavar="FILE", help="key of --upstream-cert")


def _tls_options(args: argparse.Namespace) -> object:
    from wardgate.proxy.tls import TlsOptions

    return TlsOptions(
        cert=getattr(args, "tls_cert", None),
        key=getattr(args, "tls_key", None),
        client_ca=getattr(args, "tls_client_ca", None),
        handshake_timeout=getattr(args, "tls_handshake_timeout", 10.0),
        upstream_ca=getattr(args, "upstream_ca", None),
        upstream_sni=getattr(args, "upstream_sni", None),
        upstream_cert=getattr(args, "upstream_cert", None),
        upstream_key=getattr(args, "upstream_key", None),
    )


def _run_options(args: argparse.Namespace, upstream: str) -> object:
    from wardgate.proxy.server import RunOptions, parse_host_port
    from wardgate.proxy.tls import TlsOptions

    listen_host, listen_port = parse_host_port(args.listen, "--listen")
    admin_host, admin_port = parse_host_port(args.admin, "--admin")
    status_host, status_port = (
        parse_host_port(args.status, "--status") if args.status else ("0.0.0.0", None)  # noqa: S104
    )
    if args.workers < 1 or args.workers > 64:
        raise ValueError("--workers must be between 1 and 64")
    if args.access_log_format:
        from wardgate.observability.access_format import compile_format

        if args.access_log != "envoy":
            raise ValueError("--access-log-format needs --access-log envoy")
        compile_format(args.access_log_format)  # a FormatError names the bad operator
    tls = _tls_options(args)
    assert isinstance(tls, TlsOptions)
    return RunOptions(
        upstream=upstream,
        policy_path=args.policy,
        listen_host=listen_host,
        listen_port=listen_port,
        admin_host=admin_host,
        admin_port=admin_port,
        status_host=status_host,
        status_port=status_port,
        workers=args.workers,
        access_log=args.access_log,
        access_log_format=args.access_log_format,
        drain_timeout=args.drain_timeout,
        log_level=args.log_level,
        tls=tls,
        http2=_http2_settings(args),
    )


def _cmd_run(args: argparse.Namespace) -> int:
    from wardgate.proxy.server import RunOptions, run
    from wardgate.proxy.tls import TlsConfigError
    from wardgate.proxy.upstream import Upstream

    try:
        options = _run_options(args, args.upstream)
        assert isinstance(options, RunOptions)
        Upstream(args.upstream, options.tls)
    except (ValueError, TlsConfigError) as exc:
        print(f"wardgate run: {exc}", file=sys.stderr)
        return 2
    if args.ext_authz_grpc or args.ext_authz_http:
        return _run_beside_ext_authz(options, args)
    return run(options)


def _run_beside_ext_authz(options: object, args: argparse.Namespace) -> int:
    """``wardgate run`` plus the ext_authz servers in one process, on one policy holder
    (one reload updates both doors)."""
    from wardgate.envoy.server import ExtAuthzOptions, ExtAuthzServer
    from wardgate.proxy.server import (
        GatewayProcess,
        RunOptions,
        install_event_loop_policy,
        parse_host_port,
    )

    assert isinstance(options, RunOptions)
    if options.workers != 1:
        print("wardgate run: --ext-authz-* needs --workers 1", file=sys.stderr)
        return 2
    try:
        authz = ExtAuthzOptions(
            grpc_listen=parse_host_port(args.ext_authz_grpc, "--ext-authz-grpc")
            if args.ext_authz_grpc
            else None,
            http_listen=parse_host_port(args.ext_authz_http, "--ext-authz-http")
            if args.ext_authz_http
            else None,
        )
        policy = load_compiled(options.policy_path)
    except ValueError as exc:
        print(f"wardgate run: {exc}", file=sys.stderr)
        return 2
    except PolicyError as exc:
        print(exc.report(), file=sys.stderr)
        return 1

    async def main() -> None:
        process = GatewayProcess(options, policy, serve_admin=True)
        process.install_signals()
        await process.start()
        server = ExtAuthzServer(process.holder, authz, process.reloader, watch=False)
        await server.start()
        try:
            await process.run_until_stopped()
        finally:
            await server.stop()

    configure_gateway_log(options.log_level)
    install_event_loop_policy()
    try:
        asyncio.run(main())
    except OSError as exc:
        print(f"wardgate run: cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from wardgate.proxy.demo import start_demo_upstream
    from wardgate.proxy.server import RunOptions, run

    if args.policy is None and DEMO_POLICY.exists():
        args.policy = str(DEMO_POLICY)
    ready = threading.Event()
    port_box: list[int] = []

    def upstream_thread() -> None:
        async def main() -> None:
            _, port = await start_demo_upstream()
            port_box.append(port)
            ready.set()
            await asyncio.Event().wait()

        asyncio.run(main())

    threading.Thread(target=upstream_thread, daemon=True, name="demo-upstream").start()
    ready.wait(10)
    try:
        options = _run_options(args, f"http://127.0.0.1:{port_box[0]}")
    except ValueError as exc:
        print(f"wardgate demo: {exc}", file=sys.stderr)
        return 2
    assert isinstance(options, RunOptions)
    base = f"http://{args.listen}"
    print(
        f"""
Wardgate demo
  gateway:  {base}   (policy: {args.policy or "built-in default"})
  upstream: http://127.0.0.1:{port_box[0]}   (built-in demo service)
  admin:    http://{args.admin}/server_info

Try:
  curl -i {base}/echo                          # allowed: the upstream echoes what it received
  curl -i -X TRACE {base}/echo                 # blocked: 405, method not allowed
  curl -i "{base}/echo?file=../../etc/passwd"  # blocked: 403, WAF (path traversal)
  curl -i -H 'X-Api-Version: ${{jndi:ldap://x/a}}' {base}/echo   # blocked: 403, Log4Shell
  curl -i "{base}/echo?q=$(printf 'x%.0s' $(seq 9000))"   # blocked: 414, URL too long
  curl -s http://{args.admin}/stats/prometheus | grep wardgate_requests
Stop with Ctrl-C.
""",
        file=sys.stderr,
        flush=True,
    )
    return run(options)


def _cmd_validate(args: argparse.Namespace) -> int:
    if args.baseline:
        return _cmd_validate_baseline(args)
    from wardgate.envoy.limitations import envoy_limitations
    from wardgate.runtime.validation import validate_file

    results = [r for name in args.files for r in validate_file(name)]
    for result in results:
        if result.compiled is not None:
            result.notes.extend(f"(envoy) {t}" for t in envoy_limitations(result.compiled))
        if args.quiet:
            result.notes.clear()
    valid = all(r.valid for r in results)
    if args.output == "json":
        print(json.dumps({"valid": valid, "documents": [r.as_json() for r in results]}, indent=2))
        return 0 if valid else 1
    for result in results:
        doc = result.document
        if not result.valid:
            what = "policy" if doc.kind in ("Policy", "Microgateway") else doc.kind
            print(f"{doc.source}: invalid {what}")
            print("".join(f"  {p}\n" for p in result.problems), end="")
        elif result.compiled is not None:
            filters = ", ".join(result.compiled.filter_names())
            print(f"{doc.source}: valid (digest {result.compiled.digest}, filters: {filters})")
        else:
            print(f"{doc.source}: valid {doc.kind}")
        for text in result.notes:
            label = "note (envoy)" if text.startswith("(envoy) ") else "note"
            print(f"  {label}: {text.removeprefix('(envoy) ')}")
    return 0 if valid else 1


def _cmd_validate_baseline(args: argparse.Namespace) -> int:
    """``validate --baseline``: the operator's baseline merge, offline. Exit 1 when a policy
    is invalid or weakens a baseline; clamped defaults are notes."""
    from wardgate.config import load_policy_file
    from wardgate.config.baseline import BaselineError, apply_baselines, load_baseline_file

    try:
        baselines = [b for name in args.baseline for b in load_baseline_file(name)]
    except PolicyError as exc:
        print(exc.report())
        return 2
    failed = False
    for name in args.files:
        try:
            load_compiled(name)
            outcome = apply_baselines(load_policy_file(name), baselines)
        except PolicyError as exc:
            failed = True
            print(exc.report())
            continue
        except BaselineError as exc:
            failed = True
            print(f"{name}: the baselines' defaults do not fit the policy")
            for problem in exc.problems:
                print(f"  {problem}")
            continue
        weakening = outcome.of_kind("violation", "unenforceable")
        if weakening:
            failed = True
            print(f"{name}: weakens a baseline")
        else:
            digest = outcome.effective.digest() if outcome.effective else "-"
            print(f"{name}: meets the baselines (effective digest {digest})")
        for finding in outcome.findings:
            label = "note" if finding.kind == "clamp" else finding.kind
            print(f"  {label}: {finding}")
    return 1 if failed else 0


def _cmd_schema(args: argparse.Namespace) -> int:
    if args.format == "markdown":
        from wardgate.config.reference import render_reference

        sys.stdout.write(render_reference())
    else:
        print(json.dumps(policy_json_schema(), indent=2))
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    try:
        policy = load_compiled(args.policy)
    except PolicyError as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    try:
        raw = sys.stdin.buffer.read() if args.request == "-" else Path(args.request).read_bytes()
        description = parse_request_description(raw)
    except (OSError, RequestDescriptionError) as exc:
        print(f"wardgate explain: cannot read the request: {exc}", file=sys.stderr)
        return 2
    result = asyncio.run(explain(policy, description))
    print(json.dumps(result, indent=2))
    return 0 if result["decision"] == "allow" else 1


def _cmd_tune(args: argparse.Namespace) -> int:
    from wardgate.filters.waf.tuning import propose, read_hits, render_patch

    lines: list[str] = []
    for name in args.logs:
        try:
            text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            print(f"wardgate tune: cannot read {name}: {exc}", file=sys.stderr)
            return 2
        lines.extend(text.splitlines())
    reading = read_hits(lines)
    proposals = propose(reading.hits, args.min_hits)
    print(
        f"wardgate tune: {reading.lines} log lines, {reading.skipped} skipped, "
        f"{len(reading.hits)} WAF matches, {len(proposals)} proposed exceptions",
        file=sys.stderr,
    )
    sys.stdout.write(render_patch(proposals))
    return 0


def _cmd_import_envoy(args: argparse.Namespace) -> int:
    """Policy YAML on stdout (or ``--output``); unsupported fields and notes on stderr.
    Exit 0: fully converted; 1: some fields could not be converted (named); 2: bad input."""
    import yaml

    from wardgate.config.envoy_import import import_envoy_text

    try:
        raw = sys.stdin.read() if args.file == "-" else Path(args.file).read_text("utf-8")
        result = import_envoy_text(raw, args.file)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"wardgate import-envoy: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    except PolicyError as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    text = yaml.safe_dump(result.policy, sort_keys=False)
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    for line in result.unsupported:
        print(f"unsupported: {line}", file=sys.stderr)
    for line in result.notes:
        print(f"note: {line}", file=sys.stderr)
    return 1 if result.unsupported else 0


def _cmd_ext_authz(args: argparse.Namespace) -> int:
    from wardgate.envoy.server import ExtAuthzOptions, serve
    from wardgate.proxy.server import install_event_loop_policy, parse_host_port

    try:
        options = ExtAuthzOptions(
            grpc_listen=parse_host_port(args.grpc, "--grpc") if args.grpc else None,
            http_listen=parse_host_port(args.http, "--http") if args.http else None,
            admin_listen=parse_host_port(args.admin, "--admin") if args.admin else None,
        )
    except ValueError as exc:
        print(f"wardgate ext-authz: {exc}", file=sys.stderr)
        return 2
    if options.grpc_listen is None and options.http_listen is None:
        print(
            "wardgate ext-authz: give --http HOST:PORT, --grpc HOST:PORT or both", file=sys.stderr
        )
        return 2
    configure_gateway_log(args.log_level)
    install_event_loop_policy()
    try:
        asyncio.run(serve(args.policy, options))
    except PolicyError as exc:
        print(exc.report(), file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"wardgate ext-authz: cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_precompile_waf(args: argparse.Namespace) -> int:
    """Compile (or load from the cache) every database of the built-in default policy, of
    the default WAF at each ``--paranoia-level`` and of each ``--policy``, and write them
    into the store ``wardgate run`` reads at start (replacing what it held)."""
    import os

    from wardgate.config.waf import WafSpec
    from wardgate.filters import hyperscan_db as store
    from wardgate.filters.waf.filter import WafConfig

    configured = os.environ.get(store.STORE_ENV)
    out = Path(args.out or configured or store.default_store_dir())
    try:
        with store.exporting(out):
            load_compiled(None)
            for level in args.paranoia_level:
                WafConfig(WafSpec.model_validate({"paranoiaLevel": level}))
            for path in args.policy:
                load_compiled(path)
    except PolicyError as exc:
        print(exc.report(), file=sys.stderr)
        return 1
    count = len(list(out.glob("*.hsdb")))
    print(f"wardgate precompile-waf: {count} databases in {out}")
    return 0


COMMANDS = {
    "run": _cmd_run,
    "demo": _cmd_demo,
    "validate": _cmd_validate,
    "schema": _cmd_schema,
    "explain": _cmd_explain,
    "tune": _cmd_tune,
    "import-envoy": _cmd_import_envoy,
    "ext-authz": _cmd_ext_authz,
    "precompile-waf": _cmd_precompile_waf,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return 130
