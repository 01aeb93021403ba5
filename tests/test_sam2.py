"""SAM 2 in the keypoint_mask slot: export, per-module parity, the memory bank, the served model.

No SAM 2 checkpoint exists here, so the model is the `tiny` configuration (the sam2.1_hiera_t
structure at toy size, random weights) built by the sam2 package's own config. Random weights
give meaningless masks: the reference is the package's own per-frame algorithm
(SAM2Base.track_step in PyTorch), and for the served model the same ONNX runtime in process.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from common.settings import REPO_ROOT
from devstack.tritonserver import private_triton
from triton_models.keypoints import Prompt

pytest.importorskip("sam2", reason="the sam2 package is in the export set: make export-tools")
torch = pytest.importorskip("torch")
pytestmark = pytest.mark.timeout(900)  # the module's export runs in the first test's setup

REPOSITORY = REPO_ROOT / "model_repository"
CLIP = REPO_ROOT.parent / "shared" / "data" / "videos" / "01_dog.mp4"
FRAMES = 9  # past num_maskmem (7) + the prompt frame: the bank must start dropping memories
POINTS = np.array([[60.0, 50.0], [20.0, 10.0]], np.float32)
LABELS = np.array([1, 0], np.int32)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    """The clip's first frames, RGB uint8, small and not square (96x128)."""
    out = []
    with av.open(str(CLIP)) as container:
        for frame in container.decode(video=0):
            out.append(cv2.resize(frame.to_ndarray(format="rgb24"), (128, 96), interpolation=cv2.INTER_AREA))
            if len(out) == FRAMES:
                break
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    """The random tiny model and its export through the CLI (released checkpoints' {"model": ...})."""
    from export.families import sam2

    torch.manual_seed(0)
    model = sam2.build_model("tiny")
    folder = tmp_path_factory.mktemp("sam2")
    torch.save({"model": model.state_dict()}, folder / "sam2_tiny.pt")
    out = folder / "keypoint_mask" / "1"
    # as a user runs it, in a process of its own
    command = [sys.executable, "-m", "export", "onnx", "sam2", "--checkpoint", str(folder / "sam2_tiny.pt")]
    # --no-simplify: onnxslim on these graphs takes minutes on a loaded 2-core box (the SAM tests
    # cover the simplifier); tracing and constant folding are the same as without it
    subprocess.run([*command, "--no-simplify", "--output", str(out)], check=True, cwd=REPO_ROOT, timeout=900)
    return model, out


def test_modules_match_pytorch(tiny: tuple[object, Path]) -> None:
    """Each graph against its PyTorch module, at point/memory counts other than the trace's."""
    import onnxruntime as ort

    from export.families import sam2

    model, folder = tiny
    wrappers = sam2.modules(model)
    s, c, cm = model.image_size, model.hidden_dim, model.mem_dim
    e = s // 16
    rng = torch.Generator().manual_seed(1)
    feat = torch.randn(1, c, e, e, generator=rng)
    cases = {
        sam2.ENCODER_FILE: (torch.randint(0, 256, (1, 3, s, s), generator=rng).float(),),
        sam2.ATTENTION_FILE: (
            feat,
            torch.randn(1, c, e, e, generator=rng),
            torch.randn(5, cm, e, e, generator=rng),
            torch.randn(5, cm, e, e, generator=rng),
            torch.tensor([6, 4, 3, 1, 0]),
            torch.randn(4, c, generator=rng),
            torch.tensor([4.0, 1.0, 2.0, 3.0]) / 15,
        ),
        sam2.DECODER_FILE: (
            feat,
            torch.randn(1, c // 8, 4 * e, 4 * e, generator=rng),
            torch.randn(1, c // 4, 2 * e, 2 * e, generator=rng),
            torch.tensor([[[10.0, 200.0]]]),
            torch.tensor([[1]], dtype=torch.int32),
            torch.tensor([1.0]),
        ),
        sam2.MEMORY_FILE: (
            feat,
            torch.randn(1, 1, s, s, generator=rng) * 5,
            torch.tensor([[-1.0]]),
            torch.tensor([1.0]),
        ),
    }
    for name, inputs in cases.items():
        session = ort.InferenceSession(str(folder / name), providers=["CPUExecutionProvider"])
        with torch.no_grad():
            expected = wrappers[name](*inputs)
        expected = expected if isinstance(expected, tuple) else (expected,)
        feed = {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs, strict=True)}
        for want, got in zip(expected, session.run(None, feed), strict=True):
            assert got.shape == tuple(want.shape), name
            assert np.abs(got - want.numpy()).max() < 1e-3 * max(1.0, float(want.abs().max())), name


def _reference(model: object, frames: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The sam2 package's own per-frame algorithm (SAM2Base.track_step) in PyTorch: masks 0/255
    and object pointers [1,C]."""
    import torch.nn.functional as F

    size = model.image_size
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    bank: dict[str, dict[int, dict]] = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    masks, ptrs = [], []
    h, w = frames[0].shape[:2]
    for index, rgb in enumerate(frames):
        square = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_CUBIC).astype(np.float32)
        image = (torch.from_numpy(square).permute(2, 0, 1)[None] / 255.0 - mean) / std
        with torch.no_grad():
            _, feats, pos, sizes = model._prepare_backbone_features(model.forward_image(image))
            points = None
            if index == 0:
                coords = torch.from_numpy(POINTS / np.array([w, h], np.float32) * size)[None]
                points = {"point_coords": coords, "point_labels": torch.from_numpy(LABELS)[None]}
            out = model.track_step(index, index == 0, feats, pos, sizes, points, None, bank, num_frames=1000)
        bank["cond_frame_outputs" if index == 0 else "non_cond_frame_outputs"][index] = out
        logits = F.interpolate(out["pred_masks"], (h, w), mode="bilinear", align_corners=False)[0, 0]
        masks.append(np.where(logits.numpy() > 0, 255, 0).astype(np.uint8))
        ptrs.append(out["obj_ptr"].numpy())
    return masks, ptrs


def _runtime(folder: Path, frames: list[np.ndarray]) -> tuple[list[np.ndarray], list[int], list[np.ndarray]]:
    from triton_models.keypoints.sam2 import Sam2Models, Sam2Tracker

    tracker = Sam2Tracker(Sam2Models(folder))
    masks = [tracker.start(frames[0], Prompt(POINTS, LABELS))]
    held, ptrs = [tracker.memories], [tracker.newest.obj_ptr]
    for frame in frames[1:]:
        masks.append(tracker.step(frame))
        held.append(tracker.memories)
        ptrs.append(tracker.newest.obj_ptr)
    return masks, held, ptrs


def test_memory_bank_runtime_matches_the_package_video_algorithm(
    tiny: tuple[object, Path], frames: list[np.ndarray]
) -> None:
    model, folder = tiny
    expected, expected_ptrs = _reference(model, frames)
    got, held, ptrs = _runtime(folder, frames)
    assert held == [1, 2, 3, 4, 5, 6, 7, 7, 7]  # the conditioning frame + at most 6 recent ones
    for index, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert a.shape == frames[0].shape[:2] and a.dtype == np.uint8
        assert iou(a > 0, b > 0) > 0.98, f"frame {index}: IoU {iou(a > 0, b > 0):.3f}"
    # the object pointer is the decoder's output token, a summary of what the frame attended to:
    # it agrees to ~1e-7; a wrong temporal row, a missing memory or missing pointers (tried by
    # hand) each move it by 3e-5 or more from the frame where they first apply
    for index, (a, b) in enumerate(zip(ptrs, expected_ptrs, strict=True)):
        assert np.abs(a - b).max() < 1e-5, f"frame {index}"
    # random weights still give a mask that changes with the frame: the test can fail
    assert len({m.tobytes() for m in expected}) > 1


# --- through tritonserver --------------------------------------------------------------------


@pytest.fixture(scope="module")
def sam2_triton(
    tiny: tuple[object, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """A tritonserver of its own on copies of keypoint_mask (with the tiny SAM 2 graphs) and u2netp."""
    _, folder = tiny
    for needed in ("u2netp/1/model.onnx", "keypoint_mask/1/model.py"):
        if not (REPOSITORY / needed).is_file():
            pytest.fail(f"{needed} is missing: run `make models`")
    root = tmp_path_factory.mktemp("sam2_triton")
    repo = root / "repository"
    ignore = shutil.ignore_patterns("__pycache__", "*.onnx")
    shutil.copytree(REPOSITORY / "u2netp", repo / "u2netp", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPOSITORY / "keypoint_mask", repo / "keypoint_mask", ignore=ignore)
    for graph in folder.glob("sam2_*.onnx"):
        shutil.copy(graph, repo / "keypoint_mask" / "1" / graph.name)
    with private_triton(repo, root, timeout_s=180) as settings:
        yield f"127.0.0.1:{settings.triton_grpc_port}", root / "tritonserver.log"


def _infer(
    client: grpcclient.InferenceServerClient, frame: np.ndarray, sequence: int, start: bool, end: bool
) -> np.ndarray:
    tensors = [grpcclient.InferInput("frame", [1, *frame.shape], "UINT8")]
    tensors[0].set_data_from_numpy(frame[None])
    if start:
        for name, array, dtype in (("points", POINTS, "FP32"), ("labels", LABELS, "INT32")):
            tensor = grpcclient.InferInput(name, [1, *array.shape], dtype)
            tensor.set_data_from_numpy(array[None])
            tensors.append(tensor)
    result = client.infer(
        "keypoint_mask",
        tensors,
        outputs=[grpcclient.InferRequestedOutput("mask")],
        sequence_id=sequence,
        sequence_start=start,
        sequence_end=end,
    )
    return np.asarray(result.as_numpy("mask"))


def test_served_sequences_equal_the_in_process_runtime(
    tiny: tuple[object, Path], frames: list[np.ndarray], sam2_triton: tuple[str, Path]
) -> None:
    """Two interleaved sequences through tritonserver: each equals its own run in process."""
    _, folder = tiny
    url, log = sam2_triton
    assert "keypoint_mask: sam2 (tiny) backend" in log.read_text()
    short = frames[:5]
    expected, _, _ = _runtime(folder, short)
    client = grpcclient.InferenceServerClient(url)
    got: dict[int, list[np.ndarray]] = {11: [], 12: []}
    for index, frame in enumerate(short):
        for sequence in got:  # interleaved: each sequence must keep its own memory bank
            mask = _infer(client, frame, sequence, index == 0, index == len(short) - 1)
            assert mask.shape == (1, *frame.shape[:2]) and mask.dtype == np.uint8
            assert set(np.unique(mask)) <= {0, 255}
            got[sequence].append(mask[0])
    for sequence, masks in got.items():
        for index, (a, b) in enumerate(zip(masks, expected, strict=True)):
            assert iou(a > 0, b > 0) > 0.999, f"sequence {sequence} frame {index}"
    # a frame of a sequence that has ended is refused with a clear error, not tracked from nothing
    with pytest.raises(grpcclient.InferenceServerException, match="START"):
        _infer(client, short[0], 11, False, False)
