"""Cutting large DOTA images into patches, equivalent to mmrotate 0.3.4's ``img_split.py``.

Same input gives the same windows, the same patch pixels, the same label lines and the same file
names (``P0001__1024__0___0.png``) as mmrotate's tool:

* windows of ``size`` with step ``size - gap`` per size; with ``rates`` the *window* is rescaled
  (``int(size / rate)``, ``int(gap / rate)``), not the image. In each direction the last window
  starts at ``L - size``; a window is kept when more than ``img_rate_thr`` of its area lies in the
  image (if none does, those within 0.01 of the best rate are kept).
* an object goes to a window when the intersection of its polygon with the window over the polygon
  area (iof) is ``>= iof_thr``; its whole polygon is written, shifted into patch coordinates (not
  clipped), and its difficulty becomes 2 when iof < 1.
* patches smaller than the window (image border) are padded bottom/right with ``padding_value``
  (BGR order, as OpenCV holds the image) unless ``no_padding``.

On top of mmrotate's tool: images are processed in parallel with a progress bar, a rerun skips
images already finished (resumable), every file is written through a temporary name and renamed
(an interrupted run never leaves a truncated PNG), and unreadable images are reported, not fatal.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np

from rotdet.data.dota import (
    DotaAnnotation,
    ParseLog,
    format_dota_text,
    list_images,
    read_dota_txt,
)
from rotdet.fileio import atomic_write_bytes, remove_stale_temporaries

logger = logging.getLogger("rotdet.data")


@dataclass
class SplitConfig:
    """Settings of a split; the presets are mmrotate's ``split_configs/*.json`` (``ss_*``, ``ms_*``)."""

    sizes: list[int] = field(default_factory=lambda: [1024])
    gaps: list[int] = field(default_factory=lambda: [200])
    rates: list[float] = field(default_factory=lambda: [1.0])
    img_rate_thr: float = 0.6
    iof_thr: float = 0.7
    no_padding: bool = False
    padding_value: list[int] = field(default_factory=lambda: [104, 116, 124])
    save_ext: str = ".png"

    def window_sizes(self) -> tuple[list[int], list[int]]:
        """Per-rate window sizes and gaps, in mmrotate's order (rates outer, sizes inner)."""
        if len(self.sizes) != len(self.gaps):
            raise ValueError("sizes and gaps must have the same length")
        if len(self.sizes) != 1 and len(self.rates) != 1:
            raise ValueError("give several sizes or several rates, not both")
        sizes, gaps = [], []
        for rate in self.rates:
            sizes += [int(s / rate) for s in self.sizes]
            gaps += [int(g / rate) for g in self.gaps]
        return sizes, gaps


SPLIT_PRESETS: dict[str, SplitConfig] = {
    # single scale: mmrotate ss_{train,val,trainval,test}.json
    "ss": SplitConfig(sizes=[1024], gaps=[200], rates=[1.0]),
    # multi scale: mmrotate ms_{train,val,trainval,test}.json
    "ms": SplitConfig(sizes=[1024], gaps=[500], rates=[0.5, 1.0, 1.5]),
}


def sliding_windows(
    width: int, height: int, sizes: Sequence[int], gaps: Sequence[int], img_rate_thr: float = 0.6
) -> np.ndarray:
    """Windows over a ``width`` x ``height`` image: int64 [K, 4] ``(x0, y0, x1, y1)``, x-major order."""
    windows = []
    for size, gap in zip(sizes, gaps, strict=True):
        if size <= gap:
            raise ValueError(f"window size {size} must exceed its gap {gap}")
        step = size - gap
        starts = []
        for length in (width, height):
            n = 1 if length <= size else math.ceil((length - size) / step + 1)
            s = [step * i for i in range(n)]
            if len(s) > 1 and s[-1] + size > length:
                s[-1] = length - size
            starts.append(s)
        start = np.array(list(itertools.product(*starts)), dtype=np.int64).reshape(-1, 2)
        windows.append(np.concatenate([start, start + size], axis=1))
    windows = np.concatenate(windows, axis=0)
    inside = windows.copy()
    inside[:, 0::2] = np.clip(inside[:, 0::2], 0, width)
    inside[:, 1::2] = np.clip(inside[:, 1::2], 0, height)
    img_area = (inside[:, 2] - inside[:, 0]) * (inside[:, 3] - inside[:, 1])
    win_area = (windows[:, 2] - windows[:, 0]) * (windows[:, 3] - windows[:, 1])
    rates = img_area / win_area
    if not (rates > img_rate_thr).any():
        # A tiny image: keep the windows that cover it best rather than none.
        rates[np.abs(rates - rates.max()) < 0.01] = 1
    return windows[rates > img_rate_thr]


def polygon_area(polys: np.ndarray) -> np.ndarray:
    """Absolute area of polygons ``[N, K, 2]`` (float64 [N]) by the shoelace formula, in GEOS's
    form (x taken relative to the first vertex, ``sum x_i (y_{i-1} - y_{i+1})``): bit for bit the
    ``Polygon.area`` of shapely, which mmrotate uses for the iof's denominator."""
    p = np.asarray(polys, dtype=np.float64)
    x, y = p[..., 0], p[..., 1]
    xs = x - x[..., :1]
    k = p.shape[-2]
    total = np.zeros(p.shape[:-2])
    for i in range(1, k):  # the first vertex's term is 0 (xs = 0); summed in GEOS's order
        total = total + xs[..., i] * (y[..., i - 1] - y[..., (i + 1) % k])
    return np.abs(total / 2.0)


def clip_polygons(polys: np.ndarray, rects: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clip polygons by axis-aligned rectangles (Sutherland–Hodgman), vectorised over N pairs.

    polys: [N, K, 2]; rects: [N, 4] ``(x0, y0, x1, y1)``. Returns ``(points [N, M, 2] float64,
    count [N])``: the first ``count[i]`` points are the clipped polygon; the unused slots repeat the
    last point, so the shoelace formula over all M points gives the clipped area directly.

    For a convex polygon the result is the exact intersection. For a simple non-convex polygon cut
    into several pieces, the output is one ring joining the pieces by edges that run along the
    rectangle's side there and back: its shoelace area is still the exact intersection area.
    For a self-intersecting polygon (a bad label) the shoelace area counts each lobe with the sign of
    its orientation, so lobes of opposite turn cancel: the "area" is that of the signed ring, the
    same convention as the polygon's own area (shapely/GEOS would reject the geometry instead).
    """
    pts = polys.astype(np.float64)
    n = pts.shape[0]
    count = np.full(n, pts.shape[1], dtype=np.int64)
    rects = rects.astype(np.float64)
    # (axis, sign, bound): keep points with sign * (p[axis] - bound) >= 0
    for axis, sign, bound in (
        (0, 1.0, rects[:, 0]),
        (0, -1.0, rects[:, 2]),
        (1, 1.0, rects[:, 1]),
        (1, -1.0, rects[:, 3]),
    ):
        k = pts.shape[1]
        valid = np.arange(k)[None, :] < count[:, None]
        cur = pts
        # Previous vertex of each valid vertex (wrapping at the polygon's own count).
        prev_idx = np.arange(k)[None, :] - 1
        prev_idx = np.where(prev_idx < 0, np.maximum(count[:, None] - 1, 0), prev_idx)
        prev = np.take_along_axis(pts, prev_idx[..., None], axis=1)
        d_cur = sign * (cur[..., axis] - bound[:, None])
        d_prev = sign * (prev[..., axis] - bound[:, None])
        in_cur, in_prev = d_cur >= 0, d_prev >= 0
        denom = d_prev - d_cur
        t = np.divide(d_prev, denom, out=np.zeros_like(denom), where=denom != 0)
        inter = prev + t[..., None] * (cur - prev)
        inter[..., axis] = bound[:, None]  # exactly on the clip line, as the exact intersection is
        # Each edge prev->cur emits [intersection if it crosses] then [cur if cur is inside].
        emit_inter = valid & (in_cur != in_prev)
        emit_cur = valid & in_cur
        cand = np.stack([inter, cur], axis=2).reshape(n, 2 * k, 2)
        emit = np.stack([emit_inter, emit_cur], axis=2).reshape(n, 2 * k)
        new_count = emit.sum(axis=1)
        m = max(int(new_count.max()) if n else 0, 1)
        order = np.argsort(~emit, axis=1, kind="stable")[:, :m]
        pts = np.take_along_axis(cand, order[..., None], axis=1)
        count = new_count
    # Fill unused slots with the last real point (zero-length edges add no area).
    m = pts.shape[1]
    last = np.take_along_axis(pts, np.maximum(count - 1, 0)[:, None, None].repeat(2, axis=2), axis=1)
    unused = np.arange(m)[None, :] >= count[:, None]
    pts = np.where(unused[..., None], last, pts)
    pts[count == 0] = 0.0
    return pts, count


def poly_window_iof(polys: np.ndarray, windows: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Intersection over the polygon's area of polygons ``[N, 8]`` with windows ``[M, 4]``: [N, M].

    Matches mmrotate's ``bbox_overlaps_iof`` (which uses shapely): the intersection is only computed
    where the polygon's bounding box overlaps the window with positive area, and the polygon area
    is rounded to float32 and clipped to ``eps`` before dividing — so an object fully inside a window
    whose float64 area rounds *up* in float32 gets an iof just below 1, exactly as in mmrotate.

    The polygon area is shapely's bit for bit (GEOS's formula). The intersection area is computed
    to within a few ulps of the exact value; GEOS's own overlay is noisier and orders its ring
    differently, so when the exact iof equals the threshold (possible with integer DOTA coordinates:
    about 1 pair in 20,000 overlapping ones at 0.7 on the DOTA samples) mmrotate's decision is float
    noise (usually just below) while ours is the exact one (kept). Everywhere else the decisions agree.
    """
    polys = np.asarray(polys, dtype=np.float32).reshape(-1, 8)
    windows = np.asarray(windows).reshape(-1, 4)
    n, m = len(polys), len(windows)
    out = np.zeros((n, m), dtype=np.float64)
    if n * m == 0:
        return out
    pts = polys.reshape(n, 4, 2).astype(np.float64)
    lt, rb = pts.min(axis=1), pts.max(axis=1)
    w_lt, w_rb = windows[None, :, :2].astype(np.float64), windows[None, :, 2:].astype(np.float64)
    wh = np.clip(np.minimum(rb[:, None], w_rb) - np.maximum(lt[:, None], w_lt), 0, None)
    pi, wi = np.nonzero(wh[..., 0] * wh[..., 1] > 0)
    area = polygon_area(pts)
    inter = np.zeros(len(pi))
    # Polygons wholly inside their window need no clipping: their intersection is their own area,
    # bit for bit, so an untouched object is never marked truncated by rounding.
    inside = (lt[pi] >= w_lt[0, wi]).all(axis=1) & (rb[pi] <= w_rb[0, wi]).all(axis=1)
    inter[inside] = area[pi[inside]]
    cut = ~inside
    if cut.any():
        # Clip in window coordinates (an exact shift for integer windows): smaller numbers, less
        # rounding in the intersection points and the area.
        origin = windows[wi[cut], :2].astype(np.float64)
        size = (windows[wi[cut], 2:] - windows[wi[cut], :2]).astype(np.float64)
        local = pts[pi[cut]] - origin[:, None, :]
        clipped, _ = clip_polygons(local, np.concatenate([np.zeros_like(size), size], axis=1))
        inter[cut] = polygon_area(clipped)
    out[pi, wi] = inter
    unions = np.clip(area.astype(np.float32), eps, np.inf)[:, None]
    return out / unions


def window_objects(ann: DotaAnnotation, windows: np.ndarray, iof_thr: float = 0.7) -> list[DotaAnnotation]:
    """Per window, the objects with iof >= ``iof_thr``, shifted into window coordinates (float32,
    as mmrotate), with difficulty 2 for those cut by the window (iof < 1)."""
    iofs = poly_window_iof(ann.polygons, windows)
    result = []
    for i, (x0, y0, _, _) in enumerate(windows.tolist()):
        idx = np.nonzero(iofs[:, i] >= iof_thr)[0]
        sub = ann.select(idx)
        sub.polygons = sub.polygons + np.array([-x0, -y0] * 4, dtype=np.float32)
        sub.difficulties = np.where(iofs[idx, i] < 1, 2, sub.difficulties).astype(np.int64)
        sub.imagesource, sub.gsd = None, None  # mmrotate's patch label files carry no header
        result.append(sub)
    return result


def patch_name(img_id: str, window: Sequence[int]) -> str:
    """``<id>__<window size>__<x0>___<y0>``, mmrotate's patch naming."""
    x0, y0, x1, _ = (int(v) for v in window)
    return f"{img_id}__{x1 - x0}__{x0}___{y0}"


def crop_patch(
    img: np.ndarray, window: Sequence[int], padding_value: Sequence[int] | int | None
) -> np.ndarray:
    """The window's pixels of ``img`` [H, W, C]; padded bottom/right to the window's size with
    ``padding_value`` (per channel) unless it is None."""
    x0, y0, x1, y1 = (int(v) for v in window)
    patch = img[y0:y1, x0:x1]
    if padding_value is not None and (patch.shape[0] < y1 - y0 or patch.shape[1] < x1 - x0):
        padded = np.empty((y1 - y0, x1 - x0, *img.shape[2:]), dtype=img.dtype)
        padded[...] = padding_value
        padded[: patch.shape[0], : patch.shape[1]] = patch
        patch = padded
    return patch


def read_image_bgr(path: str | os.PathLike) -> np.ndarray | None:
    """Decode an image as 8-bit 3-channel BGR (grayscale and alpha converted, as ``cv2.imread``
    does by default); None when it cannot be read or decoded."""
    try:
        buf = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    if buf.size == 0:
        return None
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def _config_key(cfg: SplitConfig) -> str:
    return hashlib.sha1(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:16]


def split_image(
    img_path: str | os.PathLike,
    ann_path: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    cfg: SplitConfig,
) -> dict:
    """Split one image (and its label file, if any) into ``out_dir/images`` and ``out_dir/annfiles``.

    Returns ``{"id", "ok", "patches", "objects", "error"}``. A done-marker written last under
    ``out_dir/.done`` makes a rerun skip the image; a missing label file counts as no object (as
    mmrotate). Without a label source (test split) the patch label files are written empty.
    """
    img_path, out_dir = Path(img_path), Path(out_dir)
    img_id = img_path.stem
    marker = out_dir / ".done" / f"{img_id}.json"
    if marker.is_file():
        try:
            done = json.loads(marker.read_text())
            if done.get("config") == _config_key(cfg):
                return {**done, "skipped": True}
        except (OSError, ValueError):
            pass  # a damaged marker: redo the image
    img = read_image_bgr(img_path)
    if img is None:
        return {
            "id": img_id,
            "ok": False,
            "patches": 0,
            "objects": 0,
            "error": f"cannot read image {img_path}",
        }
    height, width = img.shape[:2]
    log = ParseLog()
    if ann_path is not None and Path(ann_path).is_file():
        ann = read_dota_txt(ann_path, log=log)
    else:
        if ann_path is not None:
            logger.warning("%s: no label file, treated as empty", ann_path)
        ann = DotaAnnotation.empty()
    sizes, gaps = cfg.window_sizes()
    windows = sliding_windows(width, height, sizes, gaps, cfg.img_rate_thr)
    anns = window_objects(ann, windows, cfg.iof_thr)
    pad = (
        None
        if cfg.no_padding
        else (cfg.padding_value[0] if len(cfg.padding_value) == 1 else cfg.padding_value)
    )
    names = []
    for window, win_ann in zip(windows, anns, strict=True):
        name = patch_name(img_id, window)
        patch = crop_patch(img, window, pad)
        ok, buf = cv2.imencode(cfg.save_ext, patch)
        if not ok:
            return {
                "id": img_id,
                "ok": False,
                "patches": len(names),
                "objects": 0,
                "error": f"cannot encode {name}",
            }
        atomic_write_bytes(out_dir / "images" / (name + cfg.save_ext), buf.tobytes())
        atomic_write_bytes(
            out_dir / "annfiles" / (name + ".txt"), format_dota_text(win_ann, header=False).encode()
        )
        names.append(name)
    result = {
        "id": img_id,
        "ok": True,
        "patches": len(names),
        "objects": len(ann),
        "skipped_lines": len(log.skipped),
        "error": None,
        "config": _config_key(cfg),
        "names": names,
    }
    atomic_write_bytes(marker, json.dumps(result).encode())
    return result


def _split_job(job: tuple) -> dict:
    img_path, ann_path, out_dir, cfg = job
    try:
        return split_image(img_path, ann_path, out_dir, cfg)
    except Exception as exc:  # noqa: BLE001 - one bad image must not stop the others
        return {
            "id": Path(img_path).stem,
            "ok": False,
            "patches": 0,
            "objects": 0,
            "error": f"{img_path}: {exc!r}",
        }


def _split_jobs(img_dirs, ann_dirs, out_dir: Path, cfg: SplitConfig) -> tuple[list[tuple], list[Path]]:
    """One job per image (its label file, if any) and the label files that have no image."""
    jobs = []
    seen: dict[str, Path] = {}
    orphans: list[Path] = []
    for img_dir, ann_dir in zip(img_dirs, ann_dirs, strict=True):
        images = list_images(img_dir)
        if ann_dir is not None:
            stems = {img.stem for img in images}
            orphans += [a for a in sorted(Path(ann_dir).glob("*.txt")) if a.stem not in stems]
        for img in images:
            if img.stem in seen:
                # mmrotate would silently write both images' patches under the same names
                raise ValueError(f"two images named {img.stem!r}: {seen[img.stem]} and {img}")
            seen[img.stem] = img
            ann = Path(ann_dir) / (img.stem + ".txt") if ann_dir is not None else None
            jobs.append((str(img), str(ann) if ann is not None else None, str(out_dir), cfg))
    return jobs, orphans


def split_dataset(
    img_dirs: Sequence[str | os.PathLike],
    ann_dirs: Sequence[str | os.PathLike | None] | None,
    out_dir: str | os.PathLike,
    cfg: SplitConfig | None = None,
    nproc: int = 1,
    progress: bool = True,
) -> dict:
    """Split every image of ``img_dirs`` (labels from the matching ``ann_dirs`` entry, ``<stem>.txt``)
    into ``out_dir/images`` and ``out_dir/annfiles``.

    Resumable: images finished by an earlier run with the same settings are skipped; a different
    setting in an existing ``out_dir`` is an error (mixing two splits would be silent corruption).
    Returns a summary ``{"images", "patches", "skipped" (already done), "failed": [messages],
    "skipped_label_lines", "orphan_labels": [label files without an image]}``. A missing image or
    annotation folder is a FileNotFoundError.
    """
    from tqdm import tqdm

    cfg = cfg or SplitConfig()
    out_dir = Path(out_dir)
    ann_dirs = list(ann_dirs) if ann_dirs is not None else [None] * len(img_dirs)
    if len(ann_dirs) != len(img_dirs):
        raise ValueError("give one annotation directory per image directory")
    for folder, what in [*((d, "image") for d in img_dirs), *((d, "annotation") for d in ann_dirs)]:
        if folder is not None and not Path(folder).is_dir():  # a typo must not make labels vanish
            raise FileNotFoundError(f"{what} folder not found: {folder}")
    if cfg.save_ext not in (".png", ".jpg", ".bmp", ".tif"):
        raise ValueError(f"unsupported save_ext {cfg.save_ext!r}")
    if not 0 <= cfg.iof_thr <= 1:
        raise ValueError("iof_thr must be in [0, 1]")
    for sub in ("images", "annfiles", ".done"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    cfg_file = out_dir / "split_config.json"
    cfg_text = json.dumps(asdict(cfg), indent=2, sort_keys=True)
    if cfg_file.is_file() and json.loads(cfg_file.read_text()) != json.loads(cfg_text):
        raise ValueError(
            f"{out_dir} holds a split made with other settings ({cfg_file}); use a new directory"
        )
    atomic_write_bytes(cfg_file, cfg_text.encode())

    for sub in ("images", "annfiles", ".done"):
        remove_stale_temporaries(out_dir / sub)  # left by an interrupted run; their files are redone

    jobs, orphans = _split_jobs(img_dirs, ann_dirs, out_dir, cfg)
    results = []
    bar = tqdm(total=len(jobs), desc="split", unit="img", disable=not progress)
    if nproc > 1 and len(jobs) > 1:
        # fork on Linux: workers start in milliseconds (a spawned one re-imports numpy, OpenCV and
        # whatever the caller's main module imports, seconds each); the workers use no torch, so
        # fork's trouble with a threaded parent does not arise. spawn elsewhere (macOS, Windows).
        ctx = get_context("fork" if sys.platform.startswith("linux") else "spawn")
        with ctx.Pool(min(nproc, len(jobs))) as pool:
            for r in pool.imap_unordered(_split_job, jobs):
                results.append(r)
                bar.update()
    else:
        for job in jobs:
            results.append(_split_job(job))
            bar.update()
    bar.close()
    failed = [r["error"] for r in results if not r["ok"]]
    for msg in failed:
        logger.error("split failed: %s", msg)
    if orphans:
        logger.warning("%d label file(s) have no image and were not split: %s", len(orphans), _few(orphans))
    return {
        "orphan_labels": [str(p) for p in orphans],
        "images": len(results),
        "patches": sum(r["patches"] for r in results if r["ok"]),
        "skipped": sum(1 for r in results if r.get("skipped")),
        "failed": failed,
        "skipped_label_lines": sum(
            r.get("skipped_lines", 0) for r in results if r["ok"] and not r.get("skipped")
        ),
    }


def _few(paths: Sequence[Path], n: int = 5) -> str:
    names = ", ".join(p.name for p in paths[:n])
    return names + (f", ... ({len(paths)} in all)" if len(paths) > n else "")
