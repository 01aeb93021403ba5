"""The `auto` / `rvm` / `salient` video foreground: the tracker in-process on real DAVIS frames,
the `foreground` Triton model over real gRPC, and the `model` field of both video endpoints."""

from __future__ import annotations

import io
import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import av
import cv2
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from conftest import SHARED, VIDEO_MASKS, Stack, finished_status, mask_error
from media import serve
from tritonclient.utils import InferenceServerException

from common.settings import REPO_ROOT
from triton_models.foreground import ForegroundTracker, PersonGate
from triton_models.mask_geometry import dilate, iou

# DAVIS frames about halved: quick on two cores, big enough for both networks (even: H.264 4:2:0)
SMALL = (428, 240)


def _davis(seq: str, count: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    root = VIDEO_MASKS / seq
    names = sorted(p.stem for p in (root / "frames").glob("*.jpg"))[:count]
    frames = [
        cv2.resize(cv2.cvtColor(cv2.imread(str(root / "frames" / f"{n}.jpg")), cv2.COLOR_BGR2RGB), SMALL,
                   interpolation=cv2.INTER_AREA)
        for n in names
    ]  # fmt: skip
    masks = [
        cv2.resize(cv2.imread(str(root / "masks" / f"{n}.png"), cv2.IMREAD_GRAYSCALE), SMALL) > 127
        for n in names
    ]
    return frames, masks


class OnnxModels:
    """The exported graphs Triton serves, under onnxruntime in this process."""

    def __init__(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        opts.log_severity_level = 3
        repo = REPO_ROOT / "model_repository"
        self.u2netp = ort.InferenceSession(
            str(repo / "u2netp/1/model.onnx"), opts, providers=["CPUExecutionProvider"]
        )
        self.rvm = ort.InferenceSession(
            str(repo / "rvm/1/model.onnx"), opts, providers=["CPUExecutionProvider"]
        )

    def saliency(self, rgb: np.ndarray) -> np.ndarray:
        return self.u2netp.run(["alpha"], {"image": np.ascontiguousarray(rgb)})[0]

    def people(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        state = [np.zeros((1, 1, 1, 1), np.float32)] * 4
        out = []
        for f in frames:
            feed = {"frame": f[None], **{f"r{k + 1}i": s for k, s in enumerate(state)}}
            alpha, *state = self.rvm.run(["alpha", "r1o", "r2o", "r3o", "r4o"], feed)
            out.append(alpha[0])
        return out


@pytest.fixture(scope="module")
def onnx_models() -> OnnxModels:
    return OnnxModels()


def _track(models: OnnxModels, frames: list[np.ndarray], people: list[np.ndarray] | None) -> list:
    tracker = ForegroundTracker(models.saliency)
    return [
        tracker.step(f, None if people is None else p) for f, p in zip(frames, people or frames, strict=True)
    ]


def test_person_gate_has_hysteresis() -> None:
    gate = PersonGate()
    assert not any(gate.update(0.0) for _ in range(5))
    states = [gate.update(1.0) for _ in range(3)]
    assert states[-1], "a person covering the subject switches people on within a few frames"
    # a single frame where RVM sees nobody, or alternating evidence, does not switch it off
    assert all(gate.update(s) for s in (0.0, 1.0, 0.0, 0.2, 0.0))
    assert not [gate.update(0.0) for _ in range(20)][-1], "people who left switch it off"


def test_salient_subject_that_is_not_a_person(onnx_models: OnnxModels) -> None:
    """A car: RVM sees nothing, the salient foreground follows it with soft edges."""
    frames, gts = _davis("car-shadow", 8)
    people = onnx_models.people(frames)
    assert max((p > 127).mean() for p in people) < 0.01  # RVM alone would give an empty mask
    results = _track(onnx_models, frames, people)
    assert not any(r.people_are_subject for r in results)
    j = np.mean([iou(r.alpha > 127, g) for r, g in zip(results, gts, strict=True)])
    assert j > 0.8, j
    edge = results[-1].alpha
    assert ((edge > 0) & (edge < 255)).sum() > 0, "soft alpha at the edges"


def test_people_keep_rvm_matte_and_join_what_they_ride(onnx_models: OnnxModels) -> None:
    """A rider on a horse: people are the subject (RVM's own alpha on them), the horse joins."""
    frames, gts = _davis("horsejump-high", 10)
    people = onnx_models.people(frames)
    results = _track(onnx_models, frames, people)
    assert all(r.people_are_subject for r in results[4:]), "people switch on within a few frames"
    j_auto = np.mean([iou(r.alpha > 127, g) for r, g in zip(results, gts, strict=True)])
    j_rvm = np.mean([iou(p > 127, g) for p, g in zip(people, gts, strict=True)])
    assert j_auto > j_rvm + 0.15, (j_auto, j_rvm)
    last, rider = results[-1], people[-1] > 127
    assert (last.person[rider] > 0.5).mean() > 0.9, "people's pixels take RVM's alpha and colour"
    assert (last.alpha[rider] >= people[-1][rider]).all(), "never less of a person than RVM sees"


def _dog_clip(start: int, stop: int, size: tuple[int, int]) -> list[np.ndarray]:
    """Frames start..stop-1 of the real clip of a woman playing with her dog, resized."""
    with av.open(str(SHARED / "data" / "videos" / "01_dog.mp4")) as container:
        rgb = (f.to_ndarray(format="rgb24") for f in itertools.islice(container.decode(video=0), start, stop))
        return [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in rgb]


def test_people_keep_the_other_subject_beside_them(onnx_models: OnnxModels) -> None:
    """A woman and the dog she plays with, apart: people are the subject, and the dog (a main
    salient subject of its own, not touching her, moving) stays in the matte on every frame."""
    frames = _dog_clip(0, 16, SMALL)
    people = onnx_models.people(frames)
    results = _track(onnx_models, frames, people)
    assert all(r.people_are_subject for r in results[2:])
    for r, p in list(zip(results, people, strict=True))[2:]:
        beside = (r.alpha > 127) & ~dilate(p > 127, 5)
        assert beside.sum() > 0.4 * (p > 127).sum(), "the dog beside her is kept"


def test_a_person_does_not_vanish_when_saliency_looks_at_the_dog(onnx_models: OnnxModels) -> None:
    """Frames where U2-Net-p sees only the dog: the woman, the subject a frame ago, stays whole
    (found by a new user at 480x270: she vanished on 5 of 16 frames)."""
    frames = _dog_clip(170, 186, (480, 270))
    people = onnx_models.people(frames)
    results = _track(onnx_models, frames, people)
    for r, p in list(zip(results, people, strict=True))[4:]:
        her = p > 127
        assert ((r.alpha > 127) & her).sum() > 0.9 * her.sum()


def test_tiny_frame_is_refused(onnx_models: OnnxModels) -> None:
    with pytest.raises(ValueError, match="too small"):
        ForegroundTracker(onnx_models.saliency).step(np.zeros((4, 300, 3), np.uint8), None)


@pytest.mark.parametrize("shape", [(8, 1280), (1280, 8), (8, 8), (9, 2047)])
def test_thin_frames_are_followed(onnx_models: OnnxModels, shape: tuple[int, int]) -> None:
    """The smallest frames the model takes (the pipeline pads thinner ones to 8 px): optical flow
    on a 512x8 work frame once failed (an OpenCV assertion; 24x512 even crashed the process)."""
    frames, _ = _davis("car-shadow", 3)
    tracker = ForegroundTracker(onnx_models.saliency)
    for f in frames:
        thin = cv2.resize(f, shape[::-1], interpolation=cv2.INTER_AREA)
        result = tracker.step(thin, np.full(shape, 255, np.uint8))
        assert result.alpha.shape == shape


# --- the Triton model ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(triton_url: str) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(triton_url) as c:
        yield c


def _grpc_sequence(
    client: grpcclient.InferenceServerClient, seq: int, frames: list[np.ndarray], model: str | None
) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for i, frame in enumerate(frames):
        inputs = [grpcclient.InferInput("frame", [1, *frame.shape], "UINT8")]
        inputs[0].set_data_from_numpy(frame[None])
        if i == 0 and model is not None:
            choice = grpcclient.InferInput("model", [1, 1], "BYTES")
            choice.set_data_from_numpy(np.array([[model.encode()]], dtype=np.object_))
            inputs.append(choice)
        r = client.infer("foreground", inputs, sequence_id=seq, sequence_start=i == 0,
                         sequence_end=i == len(frames) - 1)  # fmt: skip
        out.append((r.as_numpy("alpha")[0], r.as_numpy("foreground")[0]))
    return out


def test_foreground_model_over_grpc(client, onnx_models: OnnxModels) -> None:
    frames, gts = _davis("dog", 6)
    auto = _grpc_sequence(client, 9101, frames, None)  # no `model` input: auto
    j = np.mean([iou(a > 127, g) for (a, _), g in zip(auto, gts, strict=True)])
    assert j > 0.7, j  # RVM alone is empty on this dog
    local = _track(onnx_models, frames, onnx_models.people(frames))
    for (alpha, colour), mine, frame in zip(auto, local, frames, strict=True):
        assert alpha.shape == frame.shape[:2] and colour.shape == frame.shape
        assert np.abs(alpha.astype(int) - mine.alpha).max() <= 8  # same algorithm, same graphs
    rvm = _grpc_sequence(client, 9102, frames, "rvm")
    direct = onnx_models.people(frames)
    assert all(np.array_equal(a, d) for (a, _), d in zip(rvm, direct, strict=True))
    salient = _grpc_sequence(client, 9103, frames, "salient")
    assert all(np.array_equal(c, f) for (_, c), f in zip(salient, frames, strict=True))


def test_foreground_model_refuses_bad_requests(client) -> None:
    frame = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(InferenceServerException, match="model must be one of") as refused:
        _grpc_sequence(client, 9104, [frame], "RVM")
    assert "INVALID_ARGUMENT" in str(refused.value.status())  # the caller's mistake, not INTERNAL
    with pytest.raises(InferenceServerException, match="H,W >= 8"):
        _grpc_sequence(client, 9105, [np.zeros((4, 64, 3), np.uint8)], None)
    with pytest.raises(InferenceServerException, match="differs from the sequence's"):
        _grpc_sequence(client, 9106, [frame, np.zeros((48, 32, 3), np.uint8)], "salient")
    assert client.is_model_ready("foreground")


# --- the REST field -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def davis_clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("davis-clips")
    frames, _ = _davis("car-shadow", 12)
    with av.open(str(folder / "car.mp4"), mode="w") as out:
        stream = out.add_stream("libx264", rate=24, options={"crf": "16"})
        stream.width, stream.height, stream.pix_fmt = SMALL[0], SMALL[1], "yuv420p"
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode())
    return folder


@pytest.fixture(scope="module")
def davis_url(davis_clips: Path) -> Iterator[str]:
    with serve(davis_clips) as url:
        yield url


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session


async def _mask_video(http: aiohttp.ClientSession, stack: Stack, body: dict) -> list[np.ndarray]:
    headers = {"api_token": stack.token}
    async with http.post(f"{stack.url}/foreground_mask", json=body, headers=headers) as r:
        payload = await r.json()
        assert r.status == 202, payload
    status = await finished_status(http, stack, payload["request_id"], 180)
    assert status["status"] == "completed", status
    async with http.get(status["mask_url"]) as r:
        data = await r.read()
    with av.open(io.BytesIO(data)) as c:
        return [f.to_ndarray(format="gray") for f in c.decode(video=0)]


async def test_model_field_on_foreground_mask(
    stack: Stack, http: aiohttp.ClientSession, davis_url: str
) -> None:
    _, gts = _davis("car-shadow", 12)
    url = f"{davis_url}/car.mp4"
    auto = await _mask_video(http, stack, {"video": url})
    rvm = await _mask_video(http, stack, {"video": url, "model": "rvm"})
    j_auto = np.mean([iou(m > 127, g) for m, g in zip(auto, gts, strict=True)])
    assert j_auto > 0.8, j_auto  # the default finds a car ...
    assert max((m > 127).mean() for m in rvm) < 0.01  # ... which RVM alone does not see


async def test_model_field_is_validated(stack: Stack, http: aiohttp.ClientSession, davis_url: str) -> None:
    headers = {"api_token": stack.token}
    for bad in ("sam", 3, ""):
        body = {"video": f"{davis_url}/car.mp4", "model": bad}
        status, error = await mask_error(
            http, "POST", f"{stack.url}/foreground_mask", json=body, headers=headers
        )
        assert status == 422
        assert "'model'" in error["error"]["details"] and "salient" in error["error"]["details"]
    for bad in ("portrait", "RVM", ""):
        form = aiohttp.FormData()
        form.add_field("file", Path(__file__).read_bytes(), filename="clip.mp4", content_type="video/mp4")
        form.add_field("model", bad)
        async with http.post(f"{stack.url}/video/submit/v1", data=form, headers=headers) as r:
            assert r.status == 400
            assert (await r.json()) == {"detail": "model must be one of: auto, rvm, salient"}
