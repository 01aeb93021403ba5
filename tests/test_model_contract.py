"""common/model_contract.py is the one description of the Triton models: every config.pbtxt,
the table in model_repository/README.md and the gateway's readiness check agree with it, and the
server-side code imports only what a Triton host installs."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from common.model_contract import GATEWAY_MODELS, MODELS, ModelSpec, TensorSpec, model_spec
from common.settings import REPO_ROOT
from gateway.triton import REQUIRED_MODELS

REPOSITORY = REPO_ROOT / "model_repository"
CONFIGS = sorted([*REPOSITORY.glob("*/config.pbtxt"), *REPOSITORY.glob("*/configs/*.pbtxt")])


def _config(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def _dtype(config_type: int) -> str:
    name = mc.DataType.Name(config_type).removeprefix("TYPE_")
    return "BYTES" if name == "STRING" else name


Row = tuple[str, str, tuple[int, ...], bool]  # name, dtype, config dims, optional


def _tensors(tensors: list[mc.ModelInput] | list[mc.ModelOutput]) -> list[Row]:
    return [(t.name, _dtype(t.data_type), tuple(t.dims), getattr(t, "optional", False)) for t in tensors]


def _spec_tensors(specs: tuple[TensorSpec, ...]) -> list[Row]:
    return [(t.name, t.dtype, t.config_dims, t.optional) for t in specs]


def test_every_model_folder_is_in_the_contract_and_back() -> None:
    folders = {p.parent.name for p in REPOSITORY.glob("*/config.pbtxt")}
    assert folders == {m.name for m in MODELS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPOSITORY)))
def test_config_matches_the_contract(path: Path) -> None:
    config = _config(path)
    spec = model_spec(path.parent.name if path.name == "config.pbtxt" else path.parent.parent.name)
    assert config.name == spec.name
    if path.name == "config.pbtxt":
        assert config.max_batch_size == spec.max_batch_size
    else:  # a host's config may batch less (rvm on the GPU: 1, docs/gpu.md) but sends the same shapes
        assert (config.max_batch_size > 0) == (spec.max_batch_size > 0)
        assert config.max_batch_size <= spec.max_batch_size
    assert config.HasField("sequence_batching") == spec.stateful
    assert _tensors(config.input) == _spec_tensors(spec.inputs)
    assert _tensors(config.output) == _spec_tensors(spec.outputs)


def test_configs_name_only_files_that_exist() -> None:
    for path in REPOSITORY.glob("*/config.pbtxt"):
        if "configs/gpu.pbtxt" in path.read_text() and "no configs/gpu.pbtxt" not in path.read_text():
            assert (path.parent / "configs" / "gpu.pbtxt").is_file(), path


def _cell(spec: ModelSpec, tensors: tuple[TensorSpec, ...]) -> str:
    return "; ".join(
        f"{'optional ' if t.optional else ''}`{t.name}` {t.dtype} {spec.shape(t)}" for t in tensors
    )


def test_readme_table_is_the_contract() -> None:
    rows = [
        "| model | stateful | gateway calls it | inputs | outputs |",
        "|---|---|---|---|---|",
        *(
            f"| `{m.name}` | {'yes' if m.stateful else 'no'} | {'yes' if m.gateway_calls else 'no'} "
            f"| {_cell(m, m.inputs)} | {_cell(m, m.outputs)} |"
            for m in MODELS
        ),
    ]
    assert "\n".join(rows) in (REPOSITORY / "README.md").read_text()


def test_readiness_checks_exactly_the_models_the_gateway_calls() -> None:
    assert REQUIRED_MODELS == GATEWAY_MODELS
    assert set(GATEWAY_MODELS) == {"rvm", "u2netp", "foreground", "keypoint_mask", "background_generator"}


# --- what the server side may import ---------------------------------------------------------------

# A Triton host installs triton_models and its dependencies (triton_models/pyproject.toml) only.
RUNTIME = {"numpy", "cv2", "PIL", "pillow_heif", "onnxruntime", "openvino", "triton_python_backend_utils"}
# Thin adapters, as in Triton's tutorials: the work happens in triton_models.
ADAPTER = {"numpy", "triton_python_backend_utils", "triton_models"}


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots - set(sys.stdlib_module_names)


@pytest.mark.parametrize(
    "path", sorted((REPO_ROOT / "triton_models").rglob("*.py")), ids=lambda p: str(p.relative_to(REPO_ROOT))
)
def test_triton_models_imports_only_its_runtime(path: Path) -> None:
    assert _imported_roots(path) <= RUNTIME | {"triton_models"}


@pytest.mark.parametrize(
    "path", sorted(REPOSITORY.glob("*/*/*.py")), ids=lambda p: str(p.relative_to(REPO_ROOT))
)
def test_model_py_is_a_thin_adapter(path: Path) -> None:
    assert _imported_roots(path) <= ADAPTER
