# syntax=docker/dockerfile:1

# Build:  docker build --build-arg REVISION=$(git rev-parse HEAD) -t tencent-ci-exporter:0.1.0 .
# Demo:   docker run --rm -p 9873:9873 tencent-ci-exporter:0.1.0 --demo
# Real:   see README.md, "Running in containers".
#
# The base is a build argument: the official Python slim image by default, or any Debian-like
# image with `python3` and its venv module (Debian's python3 and python3-venv packages; the
# tests build on such a base made by mmdebstrap). Both stages use it: a virtual environment
# belongs to the interpreter it was made with, so the final stage makes its own.
ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

# --- builder: turns the project and its dependencies into wheels --------------------------
FROM ${PYTHON_IMAGE} AS builder

# The commit, for `--version` and tencent_ci_exporter_build_info: the context has no .git, so
# it is stamped into exporter/_build.py before the wheel is built (a stamp of `unknown` counts
# as none).
ARG REVISION=unknown

WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
# pip comes in a venv: Debian's python3 has none of its own and refuses to install into itself.
# Wheels only: the final stage installs them without a compiler, a cache or network access.
RUN python3 -m exporter.build --revision "${REVISION}" \
    && python3 -m venv /opt/build \
    && /opt/build/bin/python -m pip wheel --no-cache-dir --wheel-dir /wheels .

# --- final: the installed wheels in a venv, nothing that built them -----------------------
FROM ${PYTHON_IMAGE}

# Re-declared: an ARG before the first FROM is visible to FROM lines only.
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="tencent-ci-exporter" \
      org.opencontainers.image.description="Prometheus exporter for Tencent Cloud CI (Cloud Infinite) media-processing queues and jobs" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv
ENV PATH="/opt/venv/bin:${PATH}"

# The venv has no pip: the builder's pip (bind-mounted with the wheels, so no layer of this
# image keeps either) installs into it through --python.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    --mount=type=bind,from=builder,source=/opt/build,target=/opt/build \
    python3 -m venv --without-pip /opt/venv \
    && /opt/build/bin/python -m pip --python /opt/venv/bin/python install --no-cache-dir --no-index --find-links=/wheels "tencent-ci-exporter==${VERSION}" \
    && groupadd --system --gid 10001 exporter \
    && useradd --system --no-log-init --uid 10001 --gid 10001 \
       --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin exporter

# A fixed numeric uid, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 9873

# No curl in the image; the venv's Python is there anyway. Set HEALTHCHECK_URL when the exporter
# listens elsewhere (another --web.listen-address, or --web.config.file with TLS).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/opt/venv/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('HEALTHCHECK_URL', 'http://127.0.0.1:9873/healthz'), timeout=4)"]

ENTRYPOINT ["tencent-ci-exporter"]
