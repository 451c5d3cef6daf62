# simclr-search: the `simclr` CLI (train, evaluate; later export, index, serve) in a container.
#   docker build -t simclr-search .                                   # CPU
#   docker build -t simclr-search:cuda --build-arg BASE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04 .
#   docker run --rm -v $PWD/images:/data simclr-search train --data /data --time-budget-min 10
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
COPY cli ./cli
ARG EXTRAS=train,serve
RUN pip install --no-cache-dir ".[${EXTRAS}]"

RUN useradd --create-home --uid 10001 simclr
USER simclr
WORKDIR /home/simclr
ENTRYPOINT ["simclr"]
CMD ["--help"]
