# bland-dialer image: `dialer serve` on port 8080, as uid 10001, read-only root friendly.
# Build:  docker build -t bland-dialer .
# Run:    docker run --read-only --tmpfs /tmp -v dialer-data:/var/lib/dialer bland-dialer
# PYTHON_IMAGE may be any Debian-based image with python3 (3.11+) and its venv module;
# .ci/image builds with a bookworm base made by debootstrap (no registry for images here).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# checkov:skip=CKV_DOCKER_7:FROM is the PYTHON_IMAGE argument, whose default has a version tag

FROM ${PYTHON_IMAGE} AS build
# PIP_INDEX_URL / PIP_FIND_LINKS / PIP_NO_INDEX may be passed as build args to install from a
# mirror or a wheelhouse; they are build-stage only and never reach the final image.
ARG PIP_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/dialer
WORKDIR /src

# Dependencies first, in their own layer: it is rebuilt only when the pins or the dependency
# list change, not on every source edit. The list comes from pyproject.toml, the versions
# from requirements.txt (constraints only: its dev tools are not installed).
COPY pyproject.toml requirements.txt ./
RUN python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > dependencies.txt \
 && /opt/dialer/bin/pip install -c requirements.txt -r dependencies.txt

# Then the project itself (its dependencies are all there: pip only checks them).
COPY README.md ./
COPY schemas/ schemas/
COPY consumers/ consumers/
COPY service/ service/
COPY sandbox/ sandbox/
RUN /opt/dialer/bin/pip install -c requirements.txt . \
 && /opt/dialer/bin/pip check \
 && /opt/dialer/bin/dialer --help > /dev/null

FROM ${PYTHON_IMAGE}
RUN groupadd --gid 10001 dialer \
 && useradd --no-log-init --uid 10001 --gid dialer --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin dialer \
 && install -d -o dialer -g dialer -m 0750 /var/lib/dialer
COPY --from=build /opt/dialer /opt/dialer
ENV PATH=/opt/dialer/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DIALER_DATA_DIR=/var/lib/dialer \
    DIALER_HTTP_PORT=8080 \
    DIALER_LOG_FORMAT=json
# The only paths written at run time: the SQLite ledger (unused with PostgreSQL) and /tmp.
VOLUME ["/var/lib/dialer"]
USER 10001:10001
WORKDIR /var/lib/dialer
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('DIALER_HTTP_PORT', '8080'), timeout=4)"]
ENTRYPOINT ["dialer"]
CMD ["serve"]
