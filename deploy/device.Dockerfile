# syntax=docker/dockerfile:1
# One aptfleet device: a Flower SuperNode that runs the ClientApp (client.client_app),
# which trains with APT on its partition of the data. Arguments go to flower-supernode:
#   docker run -v ./certs:/certs:ro aptfleet/device --root-certificates /certs/ca.crt \
#       --auth-supernode-private-key /certs/node-3.key --superlink HOST:8000 \
#       --node-config 'partition-id=3 num-partitions=5 device-class="mcu"'
# Build from the repository root: docker build -f deploy/device.Dockerfile .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 \
    FLWR_TELEMETRY_ENABLED=0 \
    FLWR_DISABLE_UPDATE_CHECK=1

# A C compiler: apt_core builds its native kernels (apt_core/kernels/c_update.py, c_elementwise.py) for the CPU it
# runs on at first use; without one it falls back to slower torch kernels and says so.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

# torch first, from the PyTorch CPU index: the PyPI wheel would pull several GB of CUDA.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

WORKDIR /app
COPY pyproject.toml README.md .gitignore ./
COPY apt_core/ apt_core/
COPY client/ client/
COPY server/ server/
# Only the device extra: flwr and the task data, none of the coordinator's stack.
RUN pip install -e ".[device]"

RUN useradd --create-home --uid 10001 aptfleet \
    && install -d -m 700 -o aptfleet -g aptfleet /certs
USER aptfleet
ENTRYPOINT ["flower-supernode"]
CMD ["--help"]
