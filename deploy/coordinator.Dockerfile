# syntax=docker/dockerfile:1
# The aptfleet coordinator: REST API + dashboard (`aptfleet serve`). Each run is a
# `python -m server.coordinator.job` process that submits the Flower app (built from /app) to the
# SuperLink named by APTFLEET_SUPERLINK. The same image runs deploy/prestart.sh (migrate).
# Build from the repository root: docker build -f deploy/coordinator.Dockerfile .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 \
    FLWR_TELEMETRY_ENABLED=0 \
    FLWR_DISABLE_UPDATE_CHECK=1 \
    RAY_USAGE_STATS_ENABLED=0

# A C compiler: apt_core builds its native kernels (apt_core/kernels/c_update.py, c_elementwise.py) for the CPU it
# runs on at first use; without one it falls back to slower torch kernels and says so.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

# torch first, from the PyTorch CPU index: the PyPI wheel would pull several GB of CUDA.
# The project pins torch==2.13.0, which this CPU build (2.13.0+cpu) satisfies.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

WORKDIR /app
COPY pyproject.toml README.md .gitignore ./
COPY apt_core/ apt_core/
COPY client/ client/
COPY server/ server/
# Editable, so /app stays the Flower app directory that `flwr run` bundles. The coordinator
# extra brings the REST API, the store, the Flower server side and the `aptfleet` CLI.
RUN pip install -e ".[coordinator]"
COPY deploy/prestart.sh deploy/prestart.sh

# No secret is baked in: APTFLEET_DATABASE_URL (with its password) comes at run time.
RUN useradd --create-home --uid 10001 aptfleet && install -d -o aptfleet -g aptfleet /data \
    && install -d -m 700 -o aptfleet -g aptfleet /certs
USER aptfleet
ENV APTFLEET_HOST=0.0.0.0 \
    APTFLEET_PORT=8080 \
    APTFLEET_DATA_DIR=/data
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=3)"]
CMD ["aptfleet", "serve"]
