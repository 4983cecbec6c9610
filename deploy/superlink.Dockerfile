# syntax=docker/dockerfile:1
# A Flower SuperLink for the aptfleet app. It runs the ServerApp (server.flower.server_app) in a
# subprocess, which records every round in the coordinator's database (the `db-url` of
# the run config), so the image carries the project and its dependencies.
# Build from the repository root: docker build -f deploy/superlink.Dockerfile .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 \
    FLWR_TELEMETRY_ENABLED=0 \
    FLWR_DISABLE_UPDATE_CHECK=1

# torch first, from the PyTorch CPU index: the PyPI wheel would pull several GB of CUDA.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

WORKDIR /app
COPY pyproject.toml README.md .gitignore ./
COPY apt_core/ apt_core/
COPY client/ client/
COPY server/ server/
# The ServerApp records into the coordinator's database: the coordinator extra.
RUN pip install -e ".[coordinator]"

RUN useradd --create-home --uid 10001 aptfleet
USER aptfleet
# Fleet, Control and ServerAppIo APIs share this port (Flower's HTTP runtime API).
EXPOSE 8000
HEALTHCHECK --interval=5s --timeout=5s --start-period=20s --retries=10 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=3)"]
ENTRYPOINT ["flower-superlink"]
CMD ["--insecure", "--disable-runtime-dependency-installation", "--host", "0.0.0.0", "--port", "8000"]
