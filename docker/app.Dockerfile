# Gateway and worker image (one image, two entry points, the same ones `make run` starts):
#   python -m gateway.app      (HTTP gateway)
#   python -m worker.main      (arq worker)
#   python -m gateway.webhooks (webhook sender)
# Not built in CI: the dev machines have no Docker engine.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 DATA_DIR=/data
WORKDIR /opt/matting
COPY pyproject.toml README.md ./
COPY common ./common
COPY gateway ./gateway
COPY triton_models ./triton_models
COPY worker ./worker
COPY export ./export
RUN pip install --no-cache-dir . && useradd --system --uid 10001 matting \
 && mkdir -p /data && chown matting /data
USER matting
EXPOSE 8080
CMD ["python", "-m", "gateway.app"]
