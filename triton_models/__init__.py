"""Code that runs inside tritonserver: what the Python-backend models under model_repository/ import.

The package stands alone: it imports numpy, OpenCV, Pillow, pillow-heif and onnxruntime, never
the gateway, the export tool, shared settings or the web/queue stack, so a Triton host installs
it by itself (`pip install ./triton_models`, see pyproject.toml here) next to a copy of
model_repository/. The gateway, benchmarks and tests import it too, so a result means the same
thing on both sides of the gRPC hop.

Modules:
- config: a model's config.pbtxt as the Python backend passes it (parameters, version folder)
- serving: the per-request `execute` loop and sequence controls every model.py shares
- onnx: onnxruntime sessions for the CPU configs; generic_onnx: the runner of `export add` models
- decode: image bytes -> sRGB pixels + the image's own alpha (gateway and `image_decode`)
- studio: the non-AI backdrop behind `background_generator`
- keypoints/: the point-prompted tracker (`keypoint_mask`); foreground/: the video foreground of
  any subject (`foreground`); mask_geometry: box and mask helpers both trackers use
"""
