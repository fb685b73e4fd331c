# The model service: every exported model, served by one BentoML server on port 3000.
#
#   make train && docker build -t modelservice .           # bakes artifacts/ into the image
#   docker run --init -p 3000:3000 -p 8500:8500 modelservice   # HTTP on 3000, TF Serving's gRPC API on 8500
#   docker run --init -p 3000:3000 -v "$PWD/artifacts:/models:ro" modelservice   # or mount them at run time
#   docker build --build-arg TENSORFLOW=gpu -t modelservice:gpu .   # then: docker run --gpus all ...
#   docker build --build-arg EXTRAS=train -t modelservice-train .   # with the training code's dependencies
#                                                                   # (deploy/training-job.yaml runs it)
#
# Configuration: MODELSERVICE_* environment variables (`docker run --rm modelservice --help` lists them).
# Without a container registry (as in this project's CI) pass a local base: --build-arg BASE_IMAGE=<tag>.
ARG BASE_IMAGE=python:3.11-slim

# 1. The project and its dependencies, installed into a virtual environment that the runtime copies.
FROM ${BASE_IMAGE} AS build
ARG TENSORFLOW=cpu
ARG EXTRAS=""
WORKDIR /src
COPY pyproject.toml README.md ./
COPY models models
COPY pipelines pipelines
COPY serving serving
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv /opt/venv \
    && /opt/venv/bin/pip install --quiet --disable-pip-version-check ".[${TENSORFLOW}${EXTRAS:+,$EXTRAS}]" \
    && /opt/venv/bin/pip install --quiet --disable-pip-version-check --no-deps "tensorflow-serving-api>=2.20,<2.22" \
    && rm -rf /opt/venv/lib/python3*/site-packages/tensorflow/include  # C++ headers for building custom ops: 290 MB

# 2. The artifacts to bake in, if the build context has any (an image without them serves mounted ones).
FROM ${BASE_IMAGE} AS artifacts
COPY . /context
RUN mkdir -p /context/artifacts

# 3. The runtime: the environment, the artifacts and a non-root user; no build files, caches or sources.
#    jemalloc: `python -m serving` preloads it, so memory taken by a spike of large images goes back (serving/memory.py).
FROM ${BASE_IMAGE}
RUN apt-get update \
    && apt-get install --yes --no-install-recommends libjemalloc2 \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 --user-group modelservice
COPY --from=build /opt/venv /opt/venv
COPY --from=artifacts /context/artifacts /models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    BENTOML_HOME=/home/modelservice/bentoml \
    BENTOML_DO_NOT_TRACK=True \
    MODELSERVICE_MODEL_DIR=/models \
    MODELSERVICE_HOST=0.0.0.0 \
    MODELSERVICE_PORT=3000 \
    MODELSERVICE_GRPC_PORT=8500
USER modelservice
WORKDIR /home/modelservice
EXPOSE 3000 8500
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['MODELSERVICE_PORT']}/readyz\", timeout=2)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "serving"]
