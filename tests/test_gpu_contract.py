"""The GPU route, checked on the CPU: every config of a model with an exported graph, parsed with
Triton's own protobuf definitions (tritonclient's model_config_pb2), held to that graph by the
rules Triton r24.10 applies at load (export/triton_rules.py), and the TensorRT profiles made from
the graph checked buildable without TensorRT (export/tensorrt_build.py). No GPU, no Triton."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from common.settings import REPO_ROOT, Settings
from export import triton_rules
from export.families.rvm import DYNAMIC_AXES
from export.tensorrt_build import (
    MIN_SIDE,
    Profile,
    buildable_problems,
    dim_ranges,
    preset,
    profiles_for,
    trt_config_for,
)

REPOSITORY = REPO_ROOT / "model_repository"
GRAPH_MODELS = sorted(p.parent.parent.name for p in REPOSITORY.glob("*/1/model.onnx"))
GRAPH_CONFIGS = sorted(
    p
    for m in GRAPH_MODELS
    for p in [REPOSITORY / m / "config.pbtxt", *(REPOSITORY / m).glob("configs/*.pbtxt")]
)
STATE_INPUTS = ("r1i", "r2i", "r3i", "r4i")


def _config(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def _graph(model: str) -> onnx.ModelProto:
    return onnx.load(str(REPOSITORY / model / "1" / "model.onnx"), load_external_data=False)


def _gpu(model: str) -> mc.ModelConfig:
    """What tritonserver --model-config-name=gpu loads: configs/gpu.pbtxt, else config.pbtxt."""
    custom = REPOSITORY / model / "configs" / "gpu.pbtxt"
    return _config(custom if custom.is_file() else REPOSITORY / model / "config.pbtxt")


def test_the_shipped_graphs_are_exported() -> None:
    assert GRAPH_MODELS == ["rvm", "u2netp"], "run `python -m export models` (make models)"


@pytest.mark.parametrize("path", GRAPH_CONFIGS, ids=lambda p: str(p.relative_to(REPOSITORY)))
def test_config_loads_on_its_graph(path: Path) -> None:
    assert (
        triton_rules.problems(_config(path), _graph(path.parts[-2 if path.name == "config.pbtxt" else -3]))
        == []
    )


@pytest.mark.parametrize("model", GRAPH_MODELS)
def test_gpu_configs_are_native_on_gpu_instances(model: str) -> None:
    config = _gpu(model)
    assert config.platform == "onnxruntime_onnx"
    assert [g.kind for g in config.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]


def test_every_model_resolves_a_gpu_config() -> None:
    for folder in sorted(p.parent for p in REPOSITORY.glob("*/config.pbtxt")):
        assert _gpu(folder.name).name == folder.name


def test_keypoint_mask_has_the_gpu_config_its_cpu_config_names() -> None:
    assert "configs/gpu.pbtxt" in (REPOSITORY / "keypoint_mask" / "config.pbtxt").read_text()
    assert _gpu("keypoint_mask") != _config(REPOSITORY / "keypoint_mask" / "config.pbtxt")


@pytest.mark.parametrize("model", GRAPH_MODELS)
def test_trt_config_made_from_the_gpu_config_loads(model: str) -> None:
    config = trt_config_for(REPOSITORY / model, _graph(model))
    assert config.platform == "tensorrt_plan"
    assert triton_rules.problems(config, _graph(model)) == []


# --- the rules catch what the GPU configs got wrong before (defects 1, 2, 5 of issue 17) ----------


def _rvm_gpu() -> mc.ModelConfig:
    return _config(REPOSITORY / "rvm" / "configs" / "gpu.pbtxt")


def test_rules_refuse_a_control_the_graph_lacks() -> None:
    config = _rvm_gpu()
    start = config.sequence_batching.control_input.add(name="START")
    start.control.add(kind=mc.ModelSequenceBatching.Control.CONTROL_SEQUENCE_START, int32_false_true=[0, 1])
    found = triton_rules.problems(config, _graph("rvm"))
    assert any("'START' is not a graph input" in p for p in found)
    assert any("the graph has 5 inputs, the config declares 6" in p for p in found)


def test_rules_refuse_batching_states_of_free_size() -> None:
    config = _rvm_gpu()
    config.max_batch_size = 4
    assert any(
        "max_batch_size 4 with states of free size" in p for p in triton_rules.problems(config, _graph("rvm"))
    )


def test_rules_want_states_to_start_from_zeros() -> None:
    config = _rvm_gpu()
    config.sequence_batching.state[2].initial_state[0].ClearField("zero_data")
    found = triton_rules.problems(config, _graph("rvm"))
    assert found == ["state 'r3i'/'r3o': the state starts from zeros, so initial_state needs zero_data: true"]


def _frame_named_states(graph: onnx.ModelProto) -> onnx.ModelProto:
    """The graph as exported before: states named `height`/`width`/`channels` like the frame."""
    old = onnx.ModelProto()
    old.CopyFrom(graph)
    for value in old.graph.input:
        if value.name in STATE_INPUTS:
            for dim, name in zip(
                value.type.tensor_type.shape.dim[1:], ("channels", "height", "width"), strict=True
            ):
                dim.dim_param = name
    return old


def test_rules_refuse_state_dims_named_like_the_frame() -> None:
    found = triton_rules.problems(_rvm_gpu(), _frame_named_states(_graph("rvm")))
    assert len(found) == 4 and all("names dims ['height', 'width'] like a request input" in p for p in found)


def test_shared_dim_names_make_the_rvm_profiles_unbuildable() -> None:
    graph = _graph("rvm")
    old = _frame_named_states(graph)
    profiles = preset(graph, dim_ranges("rvm", graph, 1, Settings()))
    found = buildable_problems(old, profiles)
    assert any("dim 'height' is shared by frame[1]=2..16000, r1i[2]=1..256" in p for p in found)


# --- TensorRT profiles from the graph --------------------------------------------------------------


@pytest.mark.parametrize("model", GRAPH_MODELS)
def test_trt_presets_are_buildable(model: str) -> None:
    graph = _graph(model)
    profiles = preset(graph, dim_ranges(model, graph, _gpu(model).max_batch_size, Settings()))
    assert set(profiles) == set(triton_rules.graph_inputs(graph))
    assert buildable_problems(graph, profiles) == []
    assert profiles_for(graph, profiles, {}) == profiles


def test_rvm_profile_admits_every_frame_the_api_admits() -> None:
    settings = Settings()
    graph = _graph("rvm")
    frame = preset(graph, dim_ranges("rvm", graph, _gpu("rvm").max_batch_size, settings))["frame"]
    # one frame per execution (the GPU config's max_batch_size), any side from 2 px (the gateway
    # pads thinner frames) to VIDEO_MAX_SIDE, so portrait 4K as well as landscape
    assert frame == Profile((1, MIN_SIDE, MIN_SIDE, 3), (1, 720, 1280, 3), (1, 16000, 16000, 3))
    assert settings.video_max_side == 16000


def test_u2netp_profile_admits_every_image_side() -> None:
    settings = Settings()
    graph = _graph("u2netp")
    image = preset(graph, dim_ranges("u2netp", graph, 0, settings))["image"]
    assert image.min[:2] == (MIN_SIDE, MIN_SIDE) and image.max[:2] == (settings.image_max_side,) * 2


@pytest.mark.parametrize("height, width", [(720, 1280), (1280, 720), (3, 1280), (300, 511)])
def test_rvm_states_stay_inside_their_profiles(height: int, width: int) -> None:
    """Two frames through the graph on the CPU: the first with [1,1,1,1] zeros, the second with
    the states the first produced; every state fed fits its profile (what TensorRT would enforce)."""
    graph = _graph("rvm")
    profiles = preset(graph, dim_ranges("rvm", graph, 1, Settings()))
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    frame = np.random.default_rng(0).integers(0, 256, (1, height, width, 3), dtype=np.uint8)
    states = {name: np.zeros((1, 1, 1, 1), np.float32) for name in STATE_INPUTS}
    for _ in range(2):
        for name, state in states.items():
            p = profiles[name]
            assert all(lo <= d <= hi for lo, d, hi in zip(p.min, state.shape, p.max, strict=True)), (
                name,
                state.shape,
            )
        out = session.run([f"r{k}o" for k in range(1, 5)], {"frame": frame, **states})
        states = dict(zip(STATE_INPUTS, out, strict=True))


# --- export onnx rvm ------------------------------------------------------------------------------


def test_rvm_family_exports_every_state_dim_dynamic_and_apart_from_the_frame() -> None:
    frame_names = set(DYNAMIC_AXES["src"].values()) - {"batch"}
    for name in STATE_INPUTS:
        axes = DYNAMIC_AXES[name]
        assert sorted(axes) == [0, 1, 2, 3]  # the channels too: 1 on the first frame, 16.. after
        assert axes[0] == "batch" and not set(axes.values()) & frame_names
