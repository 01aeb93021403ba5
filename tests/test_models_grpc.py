"""The public Triton models over real gRPC against a real tritonserver, compared with raw
onnxruntime on the original graphs (export.reference). Tolerances: export.parity.PARITY_TOLERANCES."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
from conftest import IMAGES, VIDEOS
from PIL import Image
from tritonclient.utils import InferenceServerException

from common.settings import REPO_ROOT
from export import reference, sources
from export.parity import PARITY_TOLERANCES, compare, video_frames
from gateway.images.process import _model_input
from triton_models.decode import SRGB_ICC, Limits, decode

SOD = IMAGES / "sod_bsds300" / "images"
SMALL = (320, 180)  # sequence-semantics tests run on real frames shrunk, to stay quick on 2 cores


@pytest.fixture(scope="module")
def client(triton_url: str) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(triton_url) as c:
        yield c


@pytest.fixture(scope="module")
def raw_u2netp() -> ort.InferenceSession:
    return reference.raw_session(sources.locate(sources.SOURCES["u2netp"]))


@pytest.fixture(scope="module")
def raw_rvm() -> ort.InferenceSession:
    return reference.raw_session(sources.locate(sources.SOURCES["rvm"]))


def _input(name: str, data: np.ndarray) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(data.shape), "BYTES" if data.dtype == object else "UINT8")
    tensor.set_data_from_numpy(data)
    return tensor


def _bytes(blob: bytes) -> list[grpcclient.InferInput]:
    return [_input("image_bytes", np.array([blob], dtype=object))]


def _small_frames(name: str, count: int) -> list[np.ndarray]:
    return [cv2.resize(f, SMALL, interpolation=cv2.INTER_AREA) for f in video_frames(VIDEOS / name, count)]


def _sequence(
    client: grpcclient.InferenceServerClient, seq: int, frames: list[np.ndarray]
) -> list[np.ndarray]:
    out = []
    for i, frame in enumerate(frames):
        r = client.infer(
            "rvm", [_input("frame", frame[None])], sequence_id=seq,
            sequence_start=i == 0, sequence_end=i == len(frames) - 1,
        )  # fmt: skip
        out.append(r.as_numpy("alpha")[0])
    return out


@pytest.mark.parametrize("name", ["100098.jpg", "103041.jpg", "105053.jpg"])
def test_u2netp_and_matte_image_match_rembg_reference(client, raw_u2netp, name: str) -> None:
    path = SOD / name
    rgb = np.asarray(Image.open(path).convert("RGB"))
    expected = reference.u2netp_alpha(raw_u2netp, rgb)
    direct = client.infer("u2netp", [_input("image", rgb)]).as_numpy("alpha")
    ensemble = client.infer("matte_image", _bytes(path.read_bytes())).as_numpy("alpha")
    for model, got in (("u2netp", direct), ("matte_image", ensemble)):
        assert got.dtype == np.uint8
        agreement = compare(model, "alpha", name, got, expected, PARITY_TOLERANCES[model])
        assert agreement.passed, agreement
    assert np.array_equal(direct, ensemble)  # decoding in Triton == decoding here


def test_matte_image_applies_exif_orientation(client) -> None:
    rgb = Image.open(SOD / "100098.jpg").convert("RGB")
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: viewers rotate it 90 degrees clockwise
    rgb.transpose(Image.Transpose.ROTATE_90).save(buf, "JPEG", quality=95, exif=exif)
    alpha = client.infer("matte_image", _bytes(buf.getvalue())).as_numpy("alpha")
    assert alpha.shape == (rgb.height, rgb.width)


def test_rvm_matches_raw_recurrent_loop_on_real_720p_frames(client, raw_rvm) -> None:
    frames = list(video_frames(VIDEOS / "06_pingpong.mp4", 4))
    expected = list(reference.rvm_sequence(raw_rvm, frames))
    for i, frame in enumerate(frames):
        r = client.infer(
            "rvm", [_input("frame", frame[None])], sequence_id=4242,
            sequence_start=i == 0, sequence_end=i == len(frames) - 1,
        )  # fmt: skip
        for output, ref in (("alpha", expected[i][0]), ("foreground", expected[i][1])):
            got = r.as_numpy(output)[0]
            agreement = compare("rvm", output, f"#{i}", got, ref, PARITY_TOLERANCES["rvm"])
            assert agreement.passed, agreement


def test_interleaved_sequences_equal_each_alone(client, triton_url: str) -> None:
    a, b = _small_frames("01_dog.mp4", 5), _small_frames("21_biker.mp4", 5)
    alone_a, alone_b = _sequence(client, 101, a), _sequence(client, 102, b)

    # Both videos in flight at once (one thread each, frames of one video in order), so the
    # sequence batcher can put frames of the two into one batch.
    def run(seq: int, frames: list[np.ndarray]) -> list[np.ndarray]:
        with grpcclient.InferenceServerClient(triton_url) as own:
            return _sequence(own, seq, frames)

    with ThreadPoolExecutor(2) as pool:
        futures = {201: pool.submit(run, 201, a), 202: pool.submit(run, 202, b)}
        got = {seq: f.result(timeout=240) for seq, f in futures.items()}
    for mine, alone in ((got[201], alone_a), (got[202], alone_b)):
        for x, y in zip(mine, alone, strict=True):
            assert np.array_equal(x, y)
    assert not np.array_equal(alone_a[-1], alone_a[0])  # the clip moves: a stale state would show


def test_new_start_resets_the_state(client) -> None:
    frames = _small_frames("05_default_juggle.mp4", 4)
    first = _sequence(client, 303, frames[:1])[0]
    for i, frame in enumerate(frames):  # run on without END, then START again on the same id
        client.infer("rvm", [_input("frame", frame[None])], sequence_id=304, sequence_start=i == 0)
    warm = client.infer("rvm", [_input("frame", frames[0][None])], sequence_id=304).as_numpy("alpha")[0]
    restarted = client.infer(
        "rvm", [_input("frame", frames[0][None])], sequence_id=304, sequence_start=True, sequence_end=True
    ).as_numpy("alpha")[0]
    assert np.array_equal(restarted, first)
    assert not np.array_equal(warm, first)  # without the reset the state would have carried over


def test_rvm_without_a_sequence_is_refused(client) -> None:
    frame = np.zeros((1, 32, 32, 3), np.uint8)
    with pytest.raises(InferenceServerException):
        client.infer("rvm", [_input("frame", frame)])


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"definitely not an image", "not an image in a supported format"),
        (b"", "empty"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "image_decode"),
    ],
)
def test_bad_image_bytes_give_an_error_and_the_server_stays_up(client, blob: bytes, message: str) -> None:
    with pytest.raises(InferenceServerException, match=message):
        client.infer("matte_image", _bytes(blob))
    assert client.is_server_live() and client.is_model_ready("matte_image")
    ok = client.infer("matte_image", _bytes((SOD / "100098.jpg").read_bytes())).as_numpy("alpha")
    assert ok.shape == (321, 481)


@pytest.mark.parametrize("icc", [None, SRGB_ICC], ids=["plain", "icc"])
def test_image_decode_keeps_transparency_as_the_gateway_does(client, icc: bytes | None) -> None:
    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[..., 0], rgba[..., 2] = 200, np.arange(40, dtype=np.uint8)[:, None] * 5
    rgba[..., 3] = np.linspace(0, 255, 60).astype(np.uint8)  # transparent left, opaque right
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG", icc_profile=icc)
    result = client.infer("image_decode", _bytes(buf.getvalue()))
    gateway = decode(buf.getvalue(), Limits(max_side=None, max_pixels=100_000_000))
    assert gateway.alpha is not None and np.array_equal(result.as_numpy("alpha"), gateway.alpha)
    assert np.array_equal(result.as_numpy("image"), _model_input(gateway))  # what the gateway's models see


def test_image_decode_of_an_opaque_image_has_an_opaque_alpha(client) -> None:
    result = client.infer("image_decode", _bytes((SOD / "100098.jpg").read_bytes()))
    assert result.as_numpy("image").shape == (321, 481, 3)
    assert result.as_numpy("alpha").shape == (321, 481) and result.as_numpy("alpha").min() == 255


def test_decompression_bomb_is_refused(client) -> None:
    buf = io.BytesIO()
    Image.new("1", (12000, 9000)).save(buf, "PNG")  # 108 MP in a few kB
    assert len(buf.getvalue()) < 1_000_000
    with pytest.raises(InferenceServerException, match="exceeds the limit"):
        client.infer("image_decode", _bytes(buf.getvalue()))


def test_example_client_runs(triton_url: str) -> None:
    run = subprocess.run(
        [sys.executable, "examples/grpc_client.py", "--url", triton_url, "--frames", "3",
         str(SOD / "100098.jpg"), str(VIDEOS / "13_butterfly.mp4")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "matte_image: alpha (321, 481) uint8" in run.stdout
    assert "done: 3 video frames" in run.stdout
