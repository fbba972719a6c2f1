# syntax=docker/dockerfile:1
#
# Wardgate images. Two targets from one source tree:
#
#   docker build --target gateway  -t wardgate:dev .           # the sidecar / standalone gateway
#   docker build --target operator -t wardgate-operator:dev .  # operator, injector, helm test
#
# Both run as UID/GID 65532 with nothing writable but /tmp (mount an emptyDir there), so they
# work under `readOnlyRootFilesystem: true` and Pod Security "restricted". Compilers exist
# only in the build stages; the final images get a finished virtualenv without pip.
#
# The base image is pinned to an exact Python patch release. For reproducible production
# builds pin it by digest as well (tag@sha256:...), e.g. with Renovate or Dependabot; both
# stages must use the same image, because the virtualenv links to its interpreter.

############################## build stages ##############################

FROM docker.io/library/python:3.11.12-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# A C toolchain for dependencies published as source only (libinjection-python). Build stage
# only: the final images never contain it. Versions follow the pinned Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway/ gateway/
COPY operator/ operator/

# One virtualenv per target, at the path the final images use. pip compiles the bytecode
# at install time, so nothing needs to be written at run time.
FROM build AS build-gateway
RUN python -m venv /opt/wardgate/venv \
 && /opt/wardgate/venv/bin/pip install . \
 && /opt/wardgate/venv/bin/python -m compileall -q /opt/wardgate/venv/lib \
 && /opt/wardgate/venv/bin/pip uninstall -y pip setuptools
# The WAF's Hyperscan databases, compiled now instead of at every pod start (the sidecar's
# root filesystem is read-only and /tmp is in memory, so it has no cache across restarts).
# They land in the venv (share/wardgate/hyperscan), where the gateway looks first, owned by
# root and read-only for the runtime user. The pip wheel's Hyperscan targets no AVX2, so
# they load on any x86-64 node; a node that refuses one compiles it (slow start, never
# without the WAF). The build stage's own cache (~/.cache/wardgate) never reaches the final
# image. Policies with other WAF settings (paranoia levels, families off) get theirs with
#   RUN wardgate precompile-waf --paranoia-level 2 3 --policy /path/policy.yaml
RUN /opt/wardgate/venv/bin/wardgate precompile-waf

FROM build AS build-operator
RUN python -m venv /opt/wardgate/venv \
 && /opt/wardgate/venv/bin/pip install ".[operator]" \
 && /opt/wardgate/venv/bin/python -m compileall -q /opt/wardgate/venv/lib \
 && /opt/wardgate/venv/bin/pip uninstall -y pip setuptools

############################## runtime base ##############################

FROM docker.io/library/python:3.11.12-slim-bookworm AS runtime

# The interpreter's own pip/setuptools are not needed at run time: remove them (no package
# installation inside a running container).
RUN python -m pip uninstall -y pip setuptools wheel \
 && rm -rf /root/.cache

ENV PATH=/opt/wardgate/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/tmp \
    HOME=/tmp

WORKDIR /opt/wardgate
LABEL org.opencontainers.image.source="https://github.com/wardgate/wardgate" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="Wardgate"

############################## final images ##############################

FROM runtime AS operator
COPY --from=build-operator /opt/wardgate/venv /opt/wardgate/venv
LABEL org.opencontainers.image.title="wardgate-operator" \
      org.opencontainers.image.description="Wardgate operator, sidecar injector and admission webhooks"
# 8080: operator liveness (/healthz); 9443: injector webhooks (HTTPS).
EXPOSE 8080 9443
# Numeric, so the kubelet can check runAsNonRoot without an /etc/passwd lookup.
USER 65532:65532
ENTRYPOINT ["wardgate-operator"]
CMD ["--help"]

FROM runtime AS gateway
COPY --from=build-gateway /opt/wardgate/venv /opt/wardgate/venv
# `wardgate demo` reads examples/demo/policy.yaml relative to the working directory.
COPY examples/ /opt/wardgate/examples/
LABEL org.opencontainers.image.title="wardgate" \
      org.opencontainers.image.description="Wardgate API microgateway with a WAF (sidecar and standalone)"
# 8080: traffic; 9901: admin (Envoy admin endpoints, keep it on localhost in pods).
EXPOSE 8080 9901
USER 65532:65532
ENTRYPOINT ["wardgate"]
CMD ["--help"]
