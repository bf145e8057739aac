# syntax=docker/dockerfile:1
# llm-gateway image: docker build -t llm-gateway . && docker run -p 8080:8080 llm-gateway
# Config: /app/config.yaml (baked in; every ${VAR:-default} in it reads the container's
# environment), or mount your own and point GATEWAY_CONFIG at it.
# Reproducible: the base image is named by digest and every Python package comes from
# requirements.lock (pinned, hash-checked). See deploy/README.md, "The image".

# python:3.11-slim as published on 2026-08-25 (3.11.16, Debian trixie; multi-arch index;
# from docker-library/repo-info). The tag is for people, the digest is what Docker pulls.
# To bump: docker buildx imagetools inspect python:3.11-slim   (first "Digest:" line)
# and write the new tag@digest here, then rebuild and run the tests.
ARG PYTHON_IMAGE=python:3.11.16-slim-trixie@sha256:be1575ed968de893bd54f4c56315ff7c4736ce522c1bca08fd521731aafc0d76

# ---- build: the locked dependencies and the package in a self-contained venv
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first (cached until the lock changes), then the code. The lock also pins
# the build backend, so the package builds without fetching anything unhashed.
COPY requirements.lock ./
RUN pip install --no-cache-dir pip==26.3 \
    && pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml README.md LICENSE ./
COPY gateway ./gateway
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && pip check \
    && pip uninstall --yes setuptools pip \
    && gateway --help >/dev/null

# ---- runtime: the venv, the config, an unprivileged user; no pip or setuptools
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GATEWAY_CONFIG=/app/config.yaml
# The base image's own installers are dead weight here and show up in scanners.
RUN python -m pip uninstall --yes --disable-pip-version-check pip setuptools wheel \
    && rm -rf /usr/local/lib/python3.*/ensurepip/_bundled \
    && groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --no-create-home --home-dir /app \
       --shell /usr/sbin/nologin gateway
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=root:root config.yaml /app/config.yaml
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"]
CMD ["gateway", "serve", "--host", "0.0.0.0", "--port", "8080"]
