"""benchmarks/gpu_smoke.py on the CPU (`--device cpu`), on a tiny input: the ONNX graphs run with
PyTorch operators agree with onnxruntime (the same comparison the GPU run makes), and the
script's report carries both models. Frame 8x520: rvm resizes it in-graph (long side > 512)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks import gpu_smoke


def test_gpu_smoke_runs_on_the_cpu(tmp_path: Path) -> None:
    report = tmp_path / "smoke.json"
    argv = ["--device", "cpu", "--sizes", "8x520", "--seconds", "0", "--warmup", "0", "--min-calls", "1"]
    assert gpu_smoke.main([*argv, "--check-frames", "2", "--json", str(report)]) == 0
    figures = json.loads(report.read_text())
    checks = [(c["model"], c["engine"], c["output"]) for c in figures["checks"]]
    assert checks == [("rvm", "torch-fp32", o) for _ in range(2) for o in ("alpha", "foreground")] + [
        ("u2netp", "torch-fp32", "alpha")
    ]
    assert all(c["passed"] and c["mean_abs"] < 0.05 for c in figures["checks"])
    assert [(t["model"], t["size"]) for t in figures["timings"]] == [("rvm", "520x8"), ("u2netp", "520x8")]


def test_the_check_refuses_a_different_matte() -> None:
    want = np.zeros((64, 64), np.uint8)
    want[16:48, 16:48] = 255
    got = np.roll(want, 12, axis=1)
    engine = gpu_smoke.Engine("torch-fp32", "fp32")
    assert not gpu_smoke.compare("rvm", engine, "64x64", "alpha", got, want).passed
    assert gpu_smoke.compare("rvm", engine, "64x64", "alpha", want, want).passed
