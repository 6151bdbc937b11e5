# One image for every DigitServe process: init (migrate + default model), serve, worker.
#
#   docker build -t digitserve .                                           # public slim Python base
#   podman build --build-arg BASE=localhost/debian:bookworm -t digitserve .  # no registry: local Debian base
#     (behind a TLS-inspecting proxy add: --secret id=ca_bundle,src=/etc/ssl/certs/ca-certificates.crt)
#
# BASE is any Debian-like image: one with Python 3.10+ (python:3.11-slim) is used as is;
# a bare Debian (bookworm: Python 3.11) gets python3 and venv from apt.
ARG BASE=python:3.11-slim
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=3 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Behind a TLS-inspecting proxy pip needs that proxy's CA: pass a CA bundle as the build secret
# `ca_bundle` (docker-compose.local.yml does); it is used during the build, never stored in the image.
# Python (when the base has none) and a virtualenv, as root; nothing else from apt.
RUN --mount=type=secret,id=ca_bundle set -eux; \
    if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi; \
    if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then \
      apt-get update; \
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv ca-certificates; \
      rm -rf /var/lib/apt/lists/*; \
    fi; \
    python3 -m venv /opt/venv; \
    pip install --upgrade pip setuptools wheel; \
    useradd --create-home --uid 10001 --shell /usr/sbin/nologin digitserve; \
    mkdir -p /app /var/lib/digitserve/models /data/mnist; \
    chown digitserve:digitserve /var/lib/digitserve /var/lib/digitserve/models /data/mnist

WORKDIR /app

# Dependencies first (TensorFlow is ~1.5 GB): this layer is rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
RUN --mount=type=secret,id=ca_bundle \
    if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi; \
    python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
      > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Then the code (see .dockerignore): an editable install keeps templates/, static/ and migrations/ beside
# it; the venv's setuptools builds it (no network in this layer).
COPY . .
RUN pip install --no-deps --no-build-isolation -e . && digitserve --help >/dev/null

USER digitserve
ENV VAR_DIR=/var/lib/digitserve \
    MODEL_CACHE_DIR=/var/lib/digitserve/models \
    MNIST_DIR=/data/mnist \
    HOST=0.0.0.0 \
    PORT=8080
EXPOSE 8080

# For `serve`: ready means DB, Redis, a live worker and an active model (/readyz). Workers and init
# override or disable it in docker-compose.yml.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=4 \
  CMD python3 -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('PORT', '8080'), timeout=4)"

# `docker stop` sends SIGTERM; web and worker finish what they hold (compose gives them stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["digitserve"]
CMD ["serve"]
