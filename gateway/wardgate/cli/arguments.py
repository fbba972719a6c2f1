"""The ``wardgate`` command line: every subcommand's arguments (what ``--help`` shows)."""

from __future__ import annotations

import argparse
from typing import get_args

from wardgate import __version__
from wardgate.observability.logs import AccessLogFormat


def build_parser() -> argparse.ArgumentParser:
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
        ("--http2-max-frame-size", "max_frame_size", "SETTINGS_MAX_FRAME_SIZE, bytes"),
        ("--http2-header-table-size", "header_table_size", "HPACK table a client may use"),
        (
            "--http2-max-control-frames-per-second",
            "max_control_frames_per_second",
            "SETTINGS/PING/PRIORITY/empty DATA frames per connection and second",
        ),
        (
            "--http2-premature-reset-min-streams",
            "premature_reset_min_streams",
            "streams a connection opens before its premature resets are judged",
        ),
        (
            "--http2-premature-reset-max-lifetime",
            "premature_reset_max_lifetime",
            "seconds: a stream reset sooner after opening is a premature reset",
        ),
        (
            "--http2-premature-reset-ratio",
            "premature_reset_ratio",
            "share of premature resets over which the connection is closed",
        ),
        (
            "--http2-max-outbound-buffer",
            "max_outbound_buffer",
            "bytes queued for a client that does not read before it is cut",
        ),
        (
            "--http2-idle-timeout",
            "connection_idle_timeout",
            "seconds an HTTP/2 connection without streams is kept",
        ),
    ):
        value = getattr(default, field)
        cmd.add_argument(
            flag,
            type=type(value),
            default=value,
            dest=f"http2_{field}",
            help=f"{text} (default: %(default)s)",
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
