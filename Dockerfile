# simclr-search: the `simclr` CLI (train, export, index, serve, search) in a container.
#   docker build -t simclr-search .                                   # CPU
#   docker build -t simclr-search:cuda --build-arg BASE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04 .
#   docker run --rm -v $PWD/images:/data simclr-search train --data /data --time-budget-min 10
#   docker run --rm -p 50051:50051 -p 9464:9464 -v $PWD/store:/home/simclr/store simclr-search \
#       serve --bundle /app/models/compact-cifar10 --store /home/simclr/store --address 0.0.0.0:50051
# A serving-only image without torch: --build-arg EXTRAS=serve
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

# CUDA bases ship without Python; python:* bases already have it.
RUN if ! command -v python3 >/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-pip \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SIMCLR_CACHE_DIR=/home/simclr/.cache/simclr-search

WORKDIR /app
COPY pyproject.toml README.md ./
COPY training ./training
COPY serving ./serving
COPY index ./index
COPY protos ./protos
COPY simclr_search ./simclr_search
COPY bundle ./bundle
COPY models ./models
ARG EXTRAS=train,serve
RUN pip install --no-cache-dir ".[${EXTRAS}]"

RUN useradd --create-home --uid 10001 simclr
USER simclr
WORKDIR /home/simclr
EXPOSE 50051 9464
HEALTHCHECK --interval=30s --timeout=5s CMD python3 -c "import grpc, sys; from grpc_health.v1 import health_pb2, health_pb2_grpc; s = health_pb2_grpc.HealthStub(grpc.insecure_channel('127.0.0.1:50051')); sys.exit(s.Check(health_pb2.HealthCheckRequest(), timeout=3).status != 1)" || exit 1
ENTRYPOINT ["simclr"]
CMD ["--help"]
