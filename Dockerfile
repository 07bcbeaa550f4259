# One image for every process of WedSync realtime:
#   docker run IMAGE                     -> wedsync api (the default command)
#   docker run IMAGE worker conflicts    -> wedsync worker NAME (presence, conflicts,
#                                           notifications, retention)
#   docker run IMAGE migrate             -> wedsync migrate (schema + streams + buckets)
# No secret is baked in: WEDSYNC_JWT_SECRET (or a public key / JWKS URL), WEDSYNC_DATA_KEY,
# WEDSYNC_ADMIN_TOKEN and the service URLs come from the environment (compose.yaml,
# deploy/k8s/). Linted with hadolint (tests/test_deploy.py).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- build: the project and its dependencies into a virtualenv ----------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/wedsync
COPY pyproject.toml README.md ./
COPY app ./app
COPY workers ./workers
COPY runtime ./runtime
COPY streams ./streams
COPY config ./config
COPY client ./client
COPY wedsync ./wedsync
RUN /opt/wedsync/bin/pip install --no-cache-dir . \
    && find /opt/wedsync -name '__pycache__' -type d -prune -exec rm -rf {} +

# -- runtime: the virtualenv only, run as an unprivileged user ------------------------------
FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 wedsync \
    && useradd --system --uid 10001 --gid wedsync --home-dir /var/lib/wedsync \
       --create-home --shell /usr/sbin/nologin wedsync
COPY --from=build /opt/wedsync /opt/wedsync
ENV PATH=/opt/wedsync/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    WEDSYNC_HOST=0.0.0.0 \
    WEDSYNC_PORT=8000 \
    WEDSYNC_LOG_FORMAT=json \
    WEDSYNC_DATA_DIR=/var/lib/wedsync
USER 10001:10001
WORKDIR /var/lib/wedsync
EXPOSE 8000
# liveness of `wedsync api` (workers and migrate serve no HTTP: compose turns it off there)
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('WEDSYNC_PORT', '8000') + '/healthz', timeout=2)"]
ENTRYPOINT ["wedsync"]
CMD ["api"]
