# syntax=docker/dockerfile:1
# llm-gateway image: docker build -t llm-gateway . && docker run -p 8080:8080 llm-gateway
# Config: /app/config.yaml (baked in; every ${VAR:-default} in it reads the container's
# environment), or mount your own and point GATEWAY_CONFIG at it.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: install the package and its dependencies into a self-contained venv
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first (cached unless pyproject.toml changes), then the code.
COPY pyproject.toml README.md LICENSE ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
    && pip install --upgrade pip \
    && pip install -r /tmp/requirements.txt
COPY gateway ./gateway
RUN pip install --no-deps . && gateway --help >/dev/null

# ---- runtime: the venv, the config, an unprivileged user
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GATEWAY_CONFIG=/app/config.yaml
RUN groupadd --system --gid 10001 gateway \
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
