# Minimal image: installs the project, trains the quick classifier, date normaliser, detector and transfer demo at build time, serves them on port 3000.
# Build here with: podman build --network host --build-arg BASE_IMAGE=<tag> -t modelservice .
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
WORKDIR /app
ENV BENTOML_HOME=/app/.bentoml TF_CPP_MIN_LOG_LEVEL=2 CI=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md ./
COPY models models
COPY pipelines pipelines
COPY serving serving
RUN pip install --no-cache-dir ".[cpu]"
RUN python -m pipelines.classifier --skip-if-exported && python -m pipelines.seq2seq --skip-if-exported && python -m pipelines.detector --skip-if-exported && python -m pipelines.transfer --skip-if-exported
EXPOSE 3000
CMD ["modelservice", "serve", "--host", "0.0.0.0", "--port", "3000"]
