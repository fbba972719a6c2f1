"""The shared benchmark harness: every ``bench/*.py`` script starts, pins, loads and measures
its peers through these modules, so all suites measure the same way.

* :mod:`bench.harness.procs`: ports, processes (start/stop, readiness), CPU pinning
  (:class:`CpuLayout`), CPU time and RSS from ``/proc``.
* :mod:`bench.harness.load`: ``wrk`` runs, paced requests (``bench/pace.c``), medians over
  interleaved rounds, in-process timing.
* :mod:`bench.harness.targets`: the nginx upstream, Envoy (plain, jwt_authn, TLS), nginx +
  ModSecurity + CRS, ``wardgate run``.
* :mod:`bench.harness.workload`: the full-policy comparison's token, JSON body and policies.
"""

from bench.harness.load import (
    PACE_CONNECTIONS,
    Load,
    build_pace,
    median_load,
    median_us,
    percentile,
    rotated,
    run_pace,
    run_wrk,
    wrk_script,
)
from bench.harness.procs import (
    BIN,
    ENVOY,
    GATEWAY_ENV,
    PIDS,
    RESULTS,
    ROOT,
    CpuLayout,
    apt_install,
    cpu_seconds,
    ensure_tools,
    free_port,
    only_child,
    open_fds,
    pinned,
    process,
    rss_mib,
    wait_http,
    wait_port,
)
from bench.harness.targets import (
    ensure_modsecurity,
    envoy_proxy,
    envoy_proxy_config,
    jwt_authn_filter,
    nginx_modsecurity,
    nginx_upstream,
    wardgate_proxy,
)

__all__ = [
    "BIN",
    "ENVOY",
    "GATEWAY_ENV",
    "PACE_CONNECTIONS",
    "PIDS",
    "RESULTS",
    "ROOT",
    "CpuLayout",
    "Load",
    "apt_install",
    "build_pace",
    "cpu_seconds",
    "ensure_modsecurity",
    "ensure_tools",
    "envoy_proxy",
    "envoy_proxy_config",
    "free_port",
    "jwt_authn_filter",
    "median_load",
    "median_us",
    "nginx_modsecurity",
    "nginx_upstream",
    "only_child",
    "open_fds",
    "percentile",
    "pinned",
    "process",
    "rotated",
    "rss_mib",
    "run_pace",
    "run_wrk",
    "wait_http",
    "wait_port",
    "wardgate_proxy",
    "wrk_script",
]
