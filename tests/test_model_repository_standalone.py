"""model_repository/ on its own, as on a Triton host: a copy served by a real tritonserver whose
Python models see the triton_models package (installed from its own pyproject.toml) and the
runtime libraries, and nothing of this repository: not the gateway, the export tool or common/.

The Python backend's stub runs the `python` first on PATH (devstack.tritonserver.triton_env) in isolated
mode: it ignores PYTHONPATH and puts its working directory on sys.path. So the package is
installed into the site-packages of a bare venv put first on PATH (the dev venv's libraries
reach it through one .pth line, which leaves the dev venv's own .pth files, the editable install
of this project among them, unprocessed), and tritonserver runs from a directory holding nothing.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import venv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from conftest import IMAGES, require_models

from common.model_contract import MODELS
from common.settings import REPO_ROOT, Settings
from devstack.processes import free_port
from devstack.tritonserver import triton_service

PROBE = "import_probe"
FORBIDDEN = ("gateway", "export", "common")
PROBE_CONFIG = f"""name: "{PROBE}"
backend: "python"
max_batch_size: 0
input [ {{ name: "x" data_type: TYPE_UINT8 dims: [ 1 ] }} ]
output [ {{ name: "importable" data_type: TYPE_STRING dims: [ -1 ] }} ]
"""
# Answers which of FORBIDDEN the stub could import: the test's witness that the isolation holds.
PROBE_MODEL = f"""import importlib.util

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        found = [n for n in {FORBIDDEN!r} if importlib.util.find_spec(n) is not None]
        out = pb_utils.Tensor("importable", np.array(found or [""], dtype=object))
        return [pb_utils.InferenceResponse(output_tensors=[out]) for _ in requests]
"""


def _bare_python(root: Path) -> tuple[Path, Path]:
    """A venv without this project, seeing the dev venv's libraries: (bin, site-packages)."""
    env = root / "venv"
    venv.create(env, with_pip=False)
    site = env / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    (site / "runtime_libraries.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env / "bin", site


def _install_triton_models(root: Path, site: Path) -> None:
    """`pip install --target` of the package from a copy (the build writes beside its source)."""
    source = root / "src" / "triton_models"
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    shutil.copytree(REPO_ROOT / "triton_models", source, ignore=skip)
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target"]
    subprocess.run([*pip, str(site), str(source)], check=True, capture_output=True, timeout=240)


def _repository(root: Path) -> Path:
    repo = root / "model_repository"
    skip = shutil.ignore_patterns("__pycache__", "*.md")
    shutil.copytree(REPO_ROOT / "model_repository", repo, ignore=skip)
    (repo / PROBE / "1").mkdir(parents=True)
    (repo / PROBE / "config.pbtxt").write_text(PROBE_CONFIG)
    (repo / PROBE / "1" / "model.py").write_text(PROBE_MODEL)
    return repo


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[grpcclient.InferenceServerClient]:
    require_models(REPO_ROOT / "model_repository")
    root = tmp_path_factory.mktemp("standalone")
    settings = Settings(
        model_repository=_repository(root),
        triton_grpc_port=free_port(),
        triton_http_port=free_port(),
        triton_metrics_port=free_port(),
        data_dir=root / "data",
    )
    svc = triton_service(settings, root / "tritonserver.log", root / "backends")
    python_bin, site = _bare_python(root)
    _install_triton_models(root, site)
    svc.env["PATH"] = f"{python_bin}:{svc.env['PATH']}"
    svc.env["PYTHONPATH"] = str(site)  # not the repository root (the stub ignores it anyway)
    empty = root / "cwd"
    empty.mkdir()
    # Service.start runs every process from the repository root, which the stub would import from.
    svc.argv = ["env", f"--chdir={empty}", *svc.argv]
    svc.start()
    try:
        svc.wait_ready(240)
        with grpcclient.InferenceServerClient(settings.triton_grpc_url) as c:
            yield c
    finally:
        svc.stop()


def test_the_models_cannot_import_the_rest_of_the_repository(client) -> None:
    x = grpcclient.InferInput("x", [1], "UINT8")
    x.set_data_from_numpy(np.zeros(1, np.uint8))
    found = client.infer(PROBE, [x]).as_numpy("importable")
    assert [n.decode() for n in found if n] == []


def test_every_model_loads(client) -> None:
    assert [m.name for m in MODELS if not client.is_model_ready(m.name)] == []


def test_stateless_and_stateful_models_answer(client) -> None:
    blob = grpcclient.InferInput("image_bytes", [1], "BYTES")
    photo = IMAGES / "sod_bsds300" / "images" / "100098.jpg"
    blob.set_data_from_numpy(np.array([photo.read_bytes()], dtype=object))
    assert client.infer("matte_image", [blob]).as_numpy("alpha").shape == (321, 481)

    frame = grpcclient.InferInput("frame", [1, 48, 64, 3], "UINT8")
    frame.set_data_from_numpy(np.full((1, 48, 64, 3), 128, np.uint8))
    result = client.infer("foreground", [frame], sequence_id=7, sequence_start=True, sequence_end=True)
    assert result.as_numpy("alpha").shape == (1, 48, 64)

    subject = grpcclient.InferInput("subject", [40, 30, 4], "UINT8")
    subject.set_data_from_numpy(np.full((40, 30, 4), 200, np.uint8))
    assert client.infer("background_generator", [subject]).as_numpy("background").shape == (40, 30, 3)
