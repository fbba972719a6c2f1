"""The processes a benchmark measures: the nginx upstream, Envoy (plain, with extra HTTP
filters such as jwt_authn, TLS, HTTP/2 upstream), nginx + ModSecurity + CRS, and
``wardgate run``. Each is a context manager yielding its listening port, one worker each,
pinned to the CPUs given; proxies register their pid in :data:`PIDS` for CPU per request.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.harness.procs import (
    ENVOY,
    GATEWAY_ENV,
    NGINX,
    PIDS,
    apt_install,
    free_port,
    only_child,
    pinned,
    process,
    wait_http,
    wait_port,
)

UPSTREAM_SERVER = """
  server {{
    listen 127.0.0.1:{port};
    location / {{ return 200 "ok\\n"; }}
  }}"""


def nginx_conf(workdir: Path, servers: str, modules: str = "", error_level: str = "error") -> str:
    """An nginx.conf with one worker, no access log, temp paths in ``workdir``."""
    return f"""
worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log {error_level};
{modules}
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {workdir}/body;
  proxy_temp_path {workdir}/proxy;
  fastcgi_temp_path {workdir}/fcgi;
  uwsgi_temp_path {workdir}/uwsgi;
  scgi_temp_path {workdir}/scgi;
  client_max_body_size 20m;
  keepalive_requests 1000000;
{servers}
}}
"""


@contextlib.contextmanager
def nginx_upstream(workdir: Path, cpus: str = "") -> Iterator[int]:
    """nginx answering ``200 ok`` to everything: the upstream every proxy is measured in
    front of."""
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(nginx_conf(workdir, UPSTREAM_SERVER.format(port=port)))
    with process(pinned([NGINX, "-c", str(conf), "-p", str(workdir)], cpus)):
        wait_http(f"http://127.0.0.1:{port}/")
        yield port


def envoy_proxy_config(
    port: int,
    admin: int,
    upstream_port: int,
    http2_upstream: bool,
    tls: tuple[str, str] | None = None,
    http_filters: list[dict[str, Any]] | None = None,
) -> str:
    """Envoy as a plain reverse proxy (HTTP/1.1 and HTTP/2 clients: ``codec_type`` AUTO);
    to the upstream over HTTP/1.1, or HTTP/2 with ``http2_upstream`` (gRPC). With ``tls``
    (certificate and key files) the listener serves TLS 1.2+ with ALPN ``http/1.1``.
    ``http_filters`` (Envoy filter configs, e.g. :func:`jwt_authn_filter`) run before the
    router."""
    transport = (
        f"""
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: ["http/1.1"]
            tls_params: {{tls_minimum_protocol_version: TLSv1_2}}
            tls_certificates:
            - certificate_chain: {{filename: {tls[0]}}}
              private_key: {{filename: {tls[1]}}}
      filters:"""
        if tls is not None
        else """
    - filters:"""
    )
    protocol = (
        """
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}"""
        if http2_upstream
        else ""
    )
    # YAML is a superset of JSON: each extra filter goes in as one JSON flow mapping.
    extra = "".join(f"\n          - {json.dumps(f)}" for f in http_filters or [])
    return f"""
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
  - name: ingress
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:{transport}
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          codec_type: AUTO
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: upstream}}
          http_filters:{extra}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 2s{protocol}
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream_port}}}}}
"""


def jwt_authn_filter(config: dict[str, Any]) -> dict[str, Any]:
    """Envoy's jwt_authn HTTP filter with ``config`` (providers, rules) as its typed config."""
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3."
            "JwtAuthentication",
            **config,
        },
    }


@contextlib.contextmanager
def envoy_proxy(
    workdir: Path,
    upstream_port: int,
    cpus: str = "",
    http2_upstream: bool = False,
    tls: tuple[str, str] | None = None,
    http_filters: list[dict[str, Any]] | None = None,
) -> Iterator[int]:
    """Envoy 1.40, one worker, pinned to ``cpus`` (:func:`envoy_proxy_config`)."""
    port, admin = free_port(), free_port()
    conf = workdir / f"envoy-{port}.yaml"
    conf.write_text(
        envoy_proxy_config(port, admin, upstream_port, http2_upstream, tls, http_filters)
    )
    cmd = [ENVOY, "-c", str(conf), "--concurrency", "1", "--log-level", "error"]
    with process(pinned([*cmd, "--disable-hot-restart"], cpus)) as proc:
        wait_http(f"http://127.0.0.1:{admin}/ready")
        PIDS[port] = proc.pid
        yield port


@contextlib.contextmanager
def wardgate_proxy(
    upstream_port: int, policy: Path | None, cpus: str = "", extra: tuple[str, ...] = ()
) -> Iterator[int]:
    """``wardgate run`` with ``policy`` (the built-in default without one), one worker,
    access log off; ``extra`` arguments are appended (e.g. ``--tls-cert``)."""
    port, admin = free_port(), free_port()
    cmd = [sys.executable, "-m", "wardgate", "run", "--upstream"]
    cmd += [f"http://127.0.0.1:{upstream_port}"]
    cmd += ["--policy", str(policy)] if policy is not None else []
    cmd += ["--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}"]
    cmd += ["--access-log", "off", "--log-level", "error", "--workers", "1", *extra]
    with process(pinned(cmd, cpus), env=GATEWAY_ENV) as proc:
        wait_http(f"http://127.0.0.1:{admin}/ready")
        PIDS[port] = proc.pid
        yield port


MODSEC_MODULE = Path("/usr/lib/nginx/modules/ngx_http_modsecurity_module.so")
CRS_RULES = Path("/usr/share/modsecurity-crs/rules")
CRS_SETUP = Path("/etc/modsecurity/crs/crs-setup.conf")

MODSEC_CONF = """
SecRuleEngine On
SecRequestBodyAccess On
SecRequestBodyLimit 13107200
SecRequestBodyNoFilesLimit 1048576
SecRequestBodyLimitAction Reject
SecPcreMatchLimit 100000
SecPcreMatchLimitRecursion 100000
SecResponseBodyAccess Off
SecAuditEngine Off
SecDebugLogLevel 0
SecTmpDir {tmp}
SecDataDir {tmp}
SecArgumentSeparator &
SecCookieFormat 0
SecStatusEngine Off
SecRule REQUEST_HEADERS:Content-Type "(?:application(?:/soap\\+|/)|text/)xml" \\
  "id:'200000',phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML"
SecRule REQUEST_HEADERS:Content-Type "application/json" \\
  "id:'200001',phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
SecRule REQBODY_ERROR "!@eq 0" \\
  "id:'200002',phase:2,t:none,log,deny,status:400,msg:'Failed to parse request body.'"
Include {setup}
Include {rules}/*.conf
"""
"""ModSecurity 3 with the OWASP CRS as Debian installs it (paranoia level 1, blocking)."""

MODSEC_SERVER = """
  server {{
    listen 127.0.0.1:{port};
    modsecurity on;
    modsecurity_rules_file {tmp}/modsec.conf;
    location / {{ proxy_pass http://127.0.0.1:{upstream_port}; }}
  }}"""


def ensure_modsecurity() -> str | None:
    """``None`` when nginx + ModSecurity + CRS can run here (installed if missing, as
    root), else why not."""
    if not MODSEC_MODULE.exists() or not CRS_RULES.exists():
        apt_install("libnginx-mod-http-modsecurity", "modsecurity-crs")
    if not Path(NGINX).exists():
        return "nginx is not installed"
    if not MODSEC_MODULE.exists():
        return f"{MODSEC_MODULE} missing (Debian package libnginx-mod-http-modsecurity)"
    if not CRS_RULES.exists() or not CRS_SETUP.exists():
        return "OWASP CRS missing (Debian package modsecurity-crs)"
    return None


@contextlib.contextmanager
def nginx_modsecurity(
    workdir: Path, upstream_port: int | None = None, cpus: str = ""
) -> Iterator[tuple[int, int]]:
    """nginx (one worker) with ModSecurity + CRS in front of ``upstream_port``, or of an
    upstream server of its own when None: (ModSecurity port, upstream port). The caller
    checks :func:`ensure_modsecurity` first."""
    tmp = workdir / "modsec"
    tmp.mkdir(exist_ok=True)
    port = free_port()
    servers = ""
    if upstream_port is None:
        upstream_port = free_port()
        servers = UPSTREAM_SERVER.format(port=upstream_port)
    servers += MODSEC_SERVER.format(port=port, tmp=tmp, upstream_port=upstream_port)
    (tmp / "modsec.conf").write_text(MODSEC_CONF.format(tmp=tmp, setup=CRS_SETUP, rules=CRS_RULES))
    conf = tmp / "nginx.conf"
    conf.write_text(nginx_conf(tmp, servers, f"load_module {MODSEC_MODULE};", "crit"))
    with process(pinned([NGINX, "-c", str(conf), "-p", str(tmp)], cpus)) as proc:
        wait_port(upstream_port, proc)
        wait_port(port, proc)
        PIDS[port] = only_child(proc.pid)  # the worker: the master only supervises
        yield port, upstream_port
