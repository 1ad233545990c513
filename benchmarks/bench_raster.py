"""GeoTIFF prediction on the CPU: megapixels per second and peak resident memory, 10k^2 vs 40k^2.

    python benchmarks/bench_raster.py                        # 10,000^2 and 40,000^2, a few minutes
    python benchmarks/bench_raster.py --sizes 4000 16000     # quicker
    python benchmarks/bench_raster.py --model-scale 256      # a heavier model input

Each raster is a synthetic RGB uint8 GeoTIFF (UTM 33N, 0.5 m pixels), tiled 512 x 512 and DEFLATE
compressed (predictor 2), a mosaic of ToyDOTA scenes, written once into ``--workdir`` and reused.
Each measurement runs in a fresh process, so that its peak resident set size (``ru_maxrss``) is
its own:

* ``read``: every window (1024 px, gap 200) read, scaled and masked by ``RasterReader``, no model:
  the input path's ceiling;
* ``predict``: ``Detector.predict_raster`` with a small seeded model (``demo_atss_le90`` shrunk:
  ResNet-18, 32-channel neck and head, windows resized to ``--model-scale`` px, 10 detections per
  window), a 2048 px preview, then the GeoJSON, GeoPackage, DOTA and JSON files written.

Megapixels per second count the raster's pixels (not the windows' overlap) over the wall time of
the pass (model construction excluded; for ``predict`` the output files included, ``write_s``).
``peak_mib`` is the process's peak RSS, ``predict_peak_mib`` the peak before the output files were
written (those hold every detection, so they grow with the detections, not with the pixels), and
``over_base_mib`` the latter above what the process held before the raster was opened (Python,
torch, the model). Windows are read
in the order ``predict`` runs them; only a batch (and one batch read ahead) is in memory, and GDAL's
block cache is capped (``rotdet.geo.raster.DEFAULT_CACHE_BYTES``), so peak memory must not grow
with the raster: the run ends with the 40k / 10k ratio of ``over base``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_record, print_table  # noqa: E402

BLOCK = 512
POOL = 6  # distinct 1024 px ToyDOTA scenes the mosaic is made of


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class RssSampler:
    """VmRSS every ``interval`` s in a thread: :meth:`timeline` gives ``points`` evenly spaced maxima
    (MiB), to see whether memory climbs during the pass or only steps up at its start."""

    def __init__(self, interval: float = 0.2) -> None:
        import threading

        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.samples.append(rss_mib())

    def timeline(self, points: int = 10) -> list[float]:
        self._stop.set()
        self._thread.join()
        s = self.samples or [rss_mib()]
        step = len(s) / points
        return [
            round(max(s[int(i * step) : max(int((i + 1) * step), int(i * step) + 1)]), 1)
            for i in range(points)
        ]


def write_synthetic(path: Path, side: int) -> float:
    """A ``side`` x ``side`` RGB GeoTIFF mosaic of ToyDOTA scenes; returns the seconds it took."""
    import rasterio
    from rasterio.transform import Affine
    from rasterio.windows import Window

    from rotdet.data import make_toy_image

    start = time.perf_counter()
    pool = [
        make_toy_image(100 + i, size=(2 * BLOCK, 2 * BLOCK))[0][..., ::-1].transpose(2, 0, 1)
        for i in range(POOL)
    ]
    profile = dict(
        driver="GTiff",
        width=side,
        height=side,
        count=3,
        dtype="uint8",
        crs="EPSG:32633",
        transform=Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 5000000.0),
        tiled=True,
        blockxsize=BLOCK,
        blockysize=BLOCK,
        compress="deflate",
        predictor=2,
        photometric="RGB",
        BIGTIFF="IF_SAFER",
        num_threads="ALL_CPUS",
    )
    tmp = path.with_name(f".{path.name}.partial")
    blocks = -(-side // BLOCK)
    with rasterio.open(tmp, "w", **profile) as ds:
        for by in range(blocks):
            h = min(BLOCK, side - by * BLOCK)
            strip = np.empty((3, h, side), np.uint8)
            for bx in range(blocks):
                w = min(BLOCK, side - bx * BLOCK)
                tile = pool[(bx * 7 + by * 13) % POOL]  # neighbours differ; quarters of the scenes
                oy, ox = (by % 2) * BLOCK, (bx % 2) * BLOCK
                strip[:, :, bx * BLOCK : bx * BLOCK + w] = tile[:, oy : oy + h, ox : ox + w]
            ds.write(strip, window=Window(0, by * BLOCK, side, h))
    tmp.rename(path)
    return time.perf_counter() - start


def worker(args: argparse.Namespace) -> None:
    """One measurement in this process; prints one JSON line."""
    import torch

    from rotdet.configs import load_config
    from rotdet.engine import Detector
    from rotdet.engine.inference import PATCH_PADDING, plan_windows
    from rotdet.geo.raster import RasterReader, raster_env

    torch.set_flush_denormal(True)
    result: dict = {"raster": args.worker, "mode": args.mode}
    if args.mode == "predict":
        overrides = [
            "model.backbone.pretrained=false",
            "model.bbox_head.feat_channels=32",
            "model.bbox_head.stacked_convs=1",
            "model.bbox_head.norm_cfg=null",
            "model.neck.out_channels=32",
            "model.bbox_head.in_channels=32",
            f"data.img_scale=[{args.model_scale},{args.model_scale}]",
            "model.test_cfg.score_thr=0.0",
            "model.test_cfg.nms_pre=10",
            "model.test_cfg.max_per_img=10",
        ]
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "untrained": on purpose
            det = Detector.from_config(load_config("demo_atss_le90", overrides), device="cpu")
    base = rss_mib()
    sampler = RssSampler()
    start = time.perf_counter()
    if args.mode == "read":
        with raster_env(), RasterReader(args.worker) as reader:
            width, height = reader.width, reader.height
            windows, _ = plan_windows(width, height, args.window, args.gap)
            for window in windows.tolist():
                found = reader.read(window)
                if found is not None and found[1] is not None:
                    found[0][~found[1]] = PATCH_PADDING
        result["windows"] = len(windows)
    else:
        found = det.predict_raster(args.worker, size=args.window, gap=args.gap, batch_size=args.batch_size,
                                   preview_size=2048)  # fmt: skip
        result["predict_s"] = time.perf_counter() - start
        result["predict_peak_mib"] = peak_mib()  # before the output files (their size is O(detections))
        height, width = found.pixel.image_size
        with tempfile.TemporaryDirectory() as out:
            t = time.perf_counter()
            found.write_geojson(Path(out) / "scene.geojson")
            found.write_gpkg(Path(out) / "scene.gpkg")
            found.write_dota_txt(Path(out) / "scene.txt")
            found.write_json(Path(out) / "scene.json")
            result["write_s"] = time.perf_counter() - t
        result.update(windows=found.windows, detections=len(found))
    seconds = time.perf_counter() - start
    result["rss_timeline_mib"] = sampler.timeline()
    result.update(
        side=width,
        megapixels=width * height / 1e6,
        seconds=seconds,
        mp_per_s=width * height / 1e6 / seconds,
        base_mib=base,
        peak_mib=peak_mib(),
        over_base_mib=result.get("predict_peak_mib", peak_mib()) - base,
        torch_threads=torch.get_num_threads(),
    )
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 40000], help="raster sides in px")
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "rotdet_bench_raster"))
    parser.add_argument("--window", type=int, default=1024)
    parser.add_argument("--gap", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--model-scale", type=int, default=128, help="px the model sees per window")
    parser.add_argument("--modes", nargs="+", default=["read", "predict"], choices=["read", "predict"])
    parser.add_argument("--out", default=None, help="JSON-lines file (default: benchmarks/results.jsonl)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="predict", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    import rasterio

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for side in args.sizes:
        path = workdir / f"synthetic_{side}.tif"
        if not path.exists():
            print(f"writing {path} ...", flush=True)
            print(f"  {write_synthetic(path, side):.1f} s, {path.stat().st_size / 2**20:.0f} MiB", flush=True)
        for mode in args.modes:
            cmd = [sys.executable, __file__, "--worker", str(path), "--mode", mode]
            for flag in ("window", "gap", "batch_size", "model_scale"):
                cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
            print(f"{mode} {side}^2 ...", flush=True)
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row["file_mib"] = path.stat().st_size / 2**20
            rows.append(row)
    columns = ["mode", "side", "megapixels", "file_mib", "windows", "detections", "seconds", "mp_per_s",
               "write_s", "base_mib", "predict_peak_mib", "peak_mib", "over_base_mib"]  # fmt: skip
    print_table(rows, columns)
    growth = {}
    for mode in args.modes:
        mine = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["side"])
        if len(mine) >= 2:
            growth[mode] = mine[-1]["over_base_mib"] / max(mine[0]["over_base_mib"], 1e-9)
            print(
                f"{mode}: peak RSS over base {mine[0]['over_base_mib']:.0f} MiB at {mine[0]['side']}^2, "
                f"{mine[-1]['over_base_mib']:.0f} MiB at {mine[-1]['side']}^2 "
                f"({mine[-1]['megapixels'] / mine[0]['megapixels']:.0f}x the pixels): x{growth[mode]:.2f}"
            )
    append_record(
        "raster",
        rows,
        Path(args.out) if args.out else None,
        window=args.window,
        gap=args.gap,
        batch_size=args.batch_size,
        model_scale=args.model_scale,
        rasterio=rasterio.__version__,
        gdal=rasterio.__gdal_version__,
        memory_growth=growth,
    )


if __name__ == "__main__":
    main()
