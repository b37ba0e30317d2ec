# syntax=docker/dockerfile:1

# Build:  docker build -t tencent-ci-exporter:0.1.0 .
# Demo:   docker run --rm -p 9873:9873 tencent-ci-exporter:0.1.0 --demo
# Real:   see README.md, "Running in containers".

ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

# --- builder: turns the project and its dependencies into wheels --------------------------
FROM ${PYTHON_IMAGE} AS builder

WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
# Wheels only: the final stage installs them without a compiler, a cache or network access.
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels .

# --- final: the installed wheels, nothing that built them ---------------------------------
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
    PYTHONUNBUFFERED=1

# The wheels are bind-mounted from the builder, so no layer of this image keeps them.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir --no-index --find-links=/wheels "tencent-ci-exporter==${VERSION}" \
    && groupadd --system --gid 10001 exporter \
    && useradd --system --no-log-init --uid 10001 --gid 10001 \
       --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin exporter

# A fixed numeric uid, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 9873

# slim has no curl; Python is there anyway. Set HEALTHCHECK_URL when the exporter listens
# elsewhere (another --web.listen-address, or --web.config.file with TLS).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('HEALTHCHECK_URL', 'http://127.0.0.1:9873/healthz'), timeout=4)"]

ENTRYPOINT ["tencent-ci-exporter"]
