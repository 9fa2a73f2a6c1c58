# syntax=docker/dockerfile:1
# The Trainyard control-plane image: the REST API, the scheduling loop and the Kubernetes
# backend, as the Helm chart (helm/trainyard) runs it.
#
#   docker build -t REGISTRY/trainyard:0.1.0 .        # from the repository root
#
# Two stages: the first builds the wheel and installs it with its pinned dependencies
# (pyproject.toml; the `postgres` extra for an external store; every transitive one
# pinned too, by image-constraints.txt) into a virtualenv; the
# second is the same slim base plus that virtualenv and nothing else: no compilers, no
# pip cache, no sources, and no torch (torch is only in the `worker` extra, which the
# worker image installs). The base is pinned to an exact Python patch release; pin it by
# digest as well in your registry mirror (PYTHON_IMAGE=python:3.11.7-slim-bookworm@sha256:...).
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md image-constraints.txt ./
COPY trainyard ./trainyard
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/trainyard \
    && /opt/trainyard/bin/pip install --constraint image-constraints.txt "$(ls /wheels/trainyard-*.whl)[postgres]" \
    && /opt/trainyard/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)" \
    && /opt/trainyard/bin/trainyard serve --help >/dev/null

FROM ${PYTHON_IMAGE}
# A fixed unprivileged uid/gid (the chart's podSecurityContext uses the same), owning only
# the home, where the SQLite store lives when no PostgreSQL is configured.
RUN groupadd --gid 10001 trainyard \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/trainyard \
       --shell /usr/sbin/nologin trainyard \
    && mkdir -p /var/lib/trainyard \
    && chown 10001:10001 /var/lib/trainyard \
    && chmod 0700 /var/lib/trainyard
COPY --from=build /opt/trainyard /opt/trainyard
ENV PATH=/opt/trainyard/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TRAINYARD_HOME=/var/lib/trainyard \
    TRAINYARD_HOST=0.0.0.0 \
    TRAINYARD_PORT=8080
USER 10001:10001
WORKDIR /var/lib/trainyard
# The API, /healthz, /readyz and /metrics.
EXPOSE 8080
# In a pod the backend uses the in-cluster config (the chart's ServiceAccount).
ENTRYPOINT ["trainyard", "serve", "--backend", "kubernetes"]
