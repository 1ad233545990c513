"""Data pipeline throughput: splitting large ToyDOTA scenes and loading training batches.

    python benchmarks/bench_data.py            # 4 scenes of 3000 x 3000 px
    python benchmarks/bench_data.py --quick    # 2 scenes of 2048 x 2048 px, fewer batches

Split: megapixels of source image per second through ``split_dataset`` (mmrotate's ss setting,
1024/200, PNG patches), with 1 and 2 processes. Loader: batches per second of 2 patches through the
mmrotate DOTA training pipeline (RResize 1024, flips, Normalize, Pad) from a DataLoader with 0 and 2
workers. Prints a table and appends a JSON line to ``benchmarks/results.jsonl``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_record, print_table  # noqa: E402

from rotdet.data.dataset import DOTADataset, collate  # noqa: E402
from rotdet.data.split import SPLIT_PRESETS, split_dataset  # noqa: E402
from rotdet.data.toy import TOY_CLASSES, make_toy_dota  # noqa: E402


def bench_split(src: Path, work: Path, nproc: int, megapixels: float) -> dict:
    out = work / f"split_{nproc}"
    start = time.perf_counter()
    summary = split_dataset(
        [src / "images"], [src / "labelTxt"], out, SPLIT_PRESETS["ss"], nproc=nproc, progress=False
    )
    seconds = time.perf_counter() - start
    return {
        "case": f"split ss, {nproc} proc",
        "images": summary["images"],
        "patches": summary["patches"],
        "seconds": seconds,
        "throughput": megapixels / seconds,
        "unit": "MP/s",
    }


def bench_loader(split_dir: Path, workers: int, batches: int) -> dict:
    ds = DOTADataset(split_dir / "annfiles", split_dir / "images", TOY_CLASSES, "le90")
    loader = torch.utils.data.DataLoader(
        ds, batch_size=2, shuffle=True, num_workers=workers, collate_fn=collate, persistent_workers=False
    )
    torch.manual_seed(0)
    it = iter(loader)
    next(it)  # start-up (worker launch, first decode) is not throughput
    start = time.perf_counter()
    n = 0
    for _ in range(batches):
        try:
            next(it)
        except StopIteration:
            it = iter(loader)
            next(it)
        n += 1
    seconds = time.perf_counter() - start
    return {
        "case": f"loader bs2, {workers} workers",
        "images": len(ds),
        "patches": None,
        "seconds": seconds,
        "throughput": n / seconds,
        "unit": "batches/s",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small scenes, few batches")
    parser.add_argument(
        "--out", type=Path, default=None, help="results file (default benchmarks/results.jsonl)"
    )
    args = parser.parse_args()
    n_img, side, batches = (2, 2048, 10) if args.quick else (4, 3000, 40)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_toy_dota(work / "toy", n_img, "large", seed=0, size=(side, side))
        megapixels = n_img * side * side / 1e6
        for nproc in (1, 2):
            rows.append(bench_split(work / "toy", work, nproc, megapixels))
        for workers in (0, 2):
            rows.append(bench_loader(work / "split_1", workers, batches))
    print_table(rows, ["case", "images", "patches", "seconds", "throughput", "unit"])
    append_record(
        "bench_data",
        rows,
        out=args.out,
        settings={
            "scenes": n_img,
            "side": side,
            "batches": batches,
            "torch_threads": torch.get_num_threads(),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
