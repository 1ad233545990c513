"""ToyDOTA: a deterministic synthetic dataset in DOTA format, the embedded default.

``make_toy_dota(out, n, flavour, seed)`` writes ``out/images/T0000.png`` and
``out/labelTxt/T0000.txt``; the same seed gives byte-identical files. Two flavours:

* ``small``: 256–512 px scenes for tests and the CPU demo (objects 8–160 px);
* ``large``: >= 3,000 px scenes that must be split (objects 8–400 px).

Six classes (DOTA v1.0 names, so the usual class lists apply) chosen for what makes aerial detection
hard, each with its own colour and shape so a tiny model can learn them quickly:

=============== ========================================================== ====================
class           look                                                       geometry
=============== ========================================================== ====================
small-vehicle   bright car body with a dark windscreen, in rows in lots    10–30 px, ~2:1, dense
large-vehicle   white/yellow trailer with a dark-blue cab                  30–90 px, 3:1 – 5:1
ship            white pointed hull with a deck line, on dark-blue water     24–300 px, 3:1 – 8:1
bridge          grey deck with white kerb lines and dark shadows            60–400 px, 4:1 – 8:1
storage-tank    white disc with a grey ring and a dark centre               8–120 px, round
roundabout      grey road ring round a green island                         40–200 px, round
=============== ========================================================== ====================

Angles are uniform; the round classes are rotation-ambiguous (their label box has a random angle,
as in DOTA). The background is low-frequency textured ground with noise and clutter (trees, paths,
roofs) in colours no class uses; objects may cross the image border; objects that are mostly cut
off, or tiny, are sometimes marked difficult (1).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from rotdet.data.classes import TOY_CLASSES
from rotdet.data.dota import DotaAnnotation, write_dota_txt
from rotdet.fileio import atomic_write_bytes

FLAVOURS = ("small", "large")


@dataclass
class _Obj:
    cls: str
    cx: float
    cy: float
    w: float  # along theta
    h: float
    theta: float  # radians, image coordinates (clockwise on screen)


def _rot(points: np.ndarray, cx: float, cy: float, theta: float) -> np.ndarray:
    """Points [K, 2] in an object's own frame -> image coordinates (for drawing)."""
    c, s = math.cos(theta), math.sin(theta)
    x, y = points[:, 0], points[:, 1]
    return np.stack([cx + x * c - y * s, cy + x * s + y * c], axis=1)


def _label_polygon(o: _Obj) -> np.ndarray:
    """The object's box as a DOTA polygon, corners clockwise on screen from the object's rear-left."""
    hw, hh = o.w / 2, o.h / 2
    return _rot(np.array([[-hw, -hh], [hw, -hh], [hw, hh], [-hw, hh]]), o.cx, o.cy, o.theta).reshape(8)


_SHIFT = 4  # sub-pixel bits for cv2 drawing: smooth edges at fractional positions
_SCALE = 1 << _SHIFT


def _fill(img: np.ndarray, pts: np.ndarray, color) -> None:
    cv2.fillPoly(img, [np.round(pts * _SCALE).astype(np.int32)], color, cv2.LINE_AA, _SHIFT)


def _circle(img: np.ndarray, cx: float, cy: float, r: float, color, thickness: int = -1) -> None:
    center = (int(round(cx * _SCALE)), int(round(cy * _SCALE)))
    cv2.circle(img, center, max(int(round(r * _SCALE)), 1), color, thickness, cv2.LINE_AA, _SHIFT)


def _rect(o: _Obj, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    """A sub-rectangle of the object in fractions of its (w, h), centred frame, image coordinates."""
    pts = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]) * np.array([o.w, o.h])
    return _rot(pts, o.cx, o.cy, o.theta)


def _jitter(rng: np.random.Generator, color, amount: int = 18) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in color)


def _draw(img: np.ndarray, o: _Obj, rng: np.random.Generator) -> None:
    """Draw one object (BGR colours)."""
    if o.cls == "small-vehicle":
        body = [(235, 235, 235), (40, 40, 210), (200, 90, 30), (40, 200, 230), (30, 30, 30)][rng.integers(5)]
        _fill(img, _rect(o, -0.5, 0.5, -0.5, 0.5), _jitter(rng, body))
        _fill(img, _rect(o, 0.12, 0.3, -0.38, 0.38), (60, 50, 40))  # windscreen at the front
    elif o.cls == "large-vehicle":
        body = [(225, 230, 230), (40, 210, 235)][rng.integers(2)]
        _fill(img, _rect(o, -0.5, 0.3, -0.5, 0.5), _jitter(rng, body))
        _fill(img, _rect(o, 0.33, 0.5, -0.45, 0.45), _jitter(rng, (120, 40, 20)))  # cab
    elif o.cls == "ship":
        wake = np.array([[-0.75, -0.75], [0.5, -0.55], [0.5, 0.55], [-0.75, 0.75]]) * np.array(
            [o.w, o.h * 1.6]
        )
        _fill(img, _rot(wake, o.cx, o.cy, o.theta), (110, 60, 25))  # dark water around the hull
        hull = np.array([[-0.5, -0.5], [0.25, -0.5], [0.5, 0.0], [0.25, 0.5], [-0.5, 0.5]]) * np.array(
            [o.w, o.h]
        )
        _fill(img, _rot(hull, o.cx, o.cy, o.theta), _jitter(rng, (240, 240, 245), 10))
        _fill(img, _rect(o, -0.4, 0.2, -0.08, 0.08), (150, 150, 160))  # deck line
    elif o.cls == "bridge":
        _fill(img, _rect(o, -0.5, 0.5, -0.62, 0.62), (40, 40, 40))  # shadows on both sides
        _fill(img, _rect(o, -0.5, 0.5, -0.5, 0.5), _jitter(rng, (150, 150, 150), 10))
        _fill(img, _rect(o, -0.5, 0.5, -0.45, -0.35), (245, 245, 245))
        _fill(img, _rect(o, -0.5, 0.5, 0.35, 0.45), (245, 245, 245))
    elif o.cls == "storage-tank":
        r = o.w / 2
        _circle(img, o.cx, o.cy, r, _jitter(rng, (235, 235, 240), 10))
        _circle(img, o.cx, o.cy, r * 0.75, (150, 150, 150), max(1, int(r * 0.12)))
        _circle(img, o.cx, o.cy, r * 0.2, (70, 70, 70))
    elif o.cls == "roundabout":
        r = o.w / 2
        _circle(img, o.cx, o.cy, r, (95, 95, 100))
        _circle(img, o.cx, o.cy, r * 0.55, _jitter(rng, (40, 150, 50)))
        _circle(img, o.cx, o.cy, r * 0.8, (225, 225, 225), 1)
    else:  # pragma: no cover - every class above is drawn
        raise ValueError(o.cls)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Textured ground: low-frequency colour field + clutter + pixel noise (BGR uint8)."""
    base = np.array([80, 110, 125], np.float32) + rng.normal(0, 8, 3).astype(np.float32)  # earthy
    cells = rng.normal(0, 18, (max(h // 64, 2), max(w // 64, 2), 3)).astype(np.float32)
    field = cv2.resize(cells, (w, h), interpolation=cv2.INTER_CUBIC)
    img = np.clip(base + field, 0, 255).astype(np.uint8)
    area = h * w
    for _ in range(int(area / 6000)):  # trees: dark green blobs
        _circle(img, rng.uniform(0, w), rng.uniform(0, h), rng.uniform(2, 7), _jitter(rng, (35, 75, 45), 10))
    for _ in range(int(area / 60000)):  # paths and roof-like patches, unlabelled clutter
        o = _Obj(
            "",
            rng.uniform(0, w),
            rng.uniform(0, h),
            rng.uniform(20, 120),
            rng.uniform(2, 20),
            rng.uniform(0, math.pi),
        )
        _fill(img, _rect(o, -0.5, 0.5, -0.5, 0.5), _jitter(rng, (105, 135, 160), 12))
    noise = rng.normal(0, 6, (h, w, 3)).astype(np.float32)
    return np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)


class _Occupancy:
    """A coarse mask of drawn objects, so new objects do not overlap earlier ones."""

    def __init__(self, h: int, w: int, cell: int = 2):
        self.cell = cell
        self.mask = np.zeros((h // cell + 2, w // cell + 2), np.uint8)

    def _poly(self, o: _Obj, margin: float) -> np.ndarray:
        grown = _Obj(o.cls, o.cx, o.cy, o.w + 2 * margin, o.h + 2 * margin, o.theta)
        return np.round(_label_polygon(grown).reshape(4, 2) / self.cell).astype(np.int32)

    def free(self, o: _Obj, margin: float = 2.0) -> bool:
        pts = self._poly(o, margin)
        x0, y0 = np.clip(pts.min(0), 0, None)
        x1 = min(int(pts[:, 0].max()) + 1, self.mask.shape[1])
        y1 = min(int(pts[:, 1].max()) + 1, self.mask.shape[0])
        if x1 <= x0 or y1 <= y0:
            return True
        roi = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(roi, [(pts - [x0, y0]).astype(np.int32)], 1)  # parts outside the ROI are clipped
        return not np.any(roi & self.mask[y0:y1, x0:x1])

    def add(self, o: _Obj, margin: float = 1.0) -> None:
        cv2.fillPoly(self.mask, [self._poly(o, margin)], 1)


def _inside_fraction(poly: np.ndarray, w: int, h: int) -> float:
    from rotdet.data.split import poly_window_iof

    return float(poly_window_iof(poly[None].astype(np.float32), np.array([[0, 0, w, h]]))[0, 0])


def _sample_objects(rng: np.random.Generator, h: int, w: int, flavour: str, img: np.ndarray) -> list[_Obj]:
    large = flavour == "large"
    occ = _Occupancy(h, w)
    objs: list[_Obj] = []
    area = h * w
    max_big = 400 if large else 160

    def place(o: _Obj) -> bool:
        if not occ.free(o):
            return False
        occ.add(o)
        objs.append(o)
        return True

    # Parking lots first: dense rows of small vehicles on asphalt, one angle per lot.
    n_lots = rng.integers(1, 3) if not large else int(rng.integers(6, 12))
    for _ in range(n_lots):
        car_l = rng.uniform(10, 30)
        car_w = car_l / rng.uniform(1.8, 2.4)
        rows, cols = int(rng.integers(2, 5)), int(rng.integers(3, 9))
        lot_w, lot_h = car_w * 1.5 * cols + 6, car_l * 1.25 * rows + 6
        lot = _Obj("", rng.uniform(0, w), rng.uniform(0, h), lot_w, lot_h, rng.uniform(0, 2 * math.pi))
        if not occ.free(lot):
            continue
        _fill(img, _rect(lot, -0.5, 0.5, -0.5, 0.5), _jitter(rng, (70, 70, 72), 6))
        occ.add(lot)
        for r in range(rows):
            for c in range(cols):
                if rng.random() < 0.2:
                    continue  # empty bay
                u = (c + 0.5) / cols - 0.5
                v = (r + 0.5) / rows - 0.5
                p = _rot(np.array([[u * (lot_w - 6), v * (lot_h - 6)]]), lot.cx, lot.cy, lot.theta)[0]
                # cars stand across the lot's long axis, nose up or down the row
                theta = lot.theta + math.pi / 2 + (math.pi if rng.random() < 0.5 else 0.0)
                objs.append(_Obj("small-vehicle", p[0], p[1], car_l, car_w, theta))

    n_free = int(rng.integers(3, 12)) if not large else int(area / 40000)
    for _ in range(n_free * 4):
        if len([o for o in objs if o.cls != "small-vehicle"]) >= n_free:
            break
        cls = TOY_CLASSES[int(rng.integers(len(TOY_CLASSES)))]
        theta = rng.uniform(0, 2 * math.pi)  # uniform angles
        if cls == "small-vehicle":
            length = rng.uniform(10, 30)
            size = (length, length / rng.uniform(1.8, 2.4))
        elif cls == "large-vehicle":
            length = rng.uniform(30, 90)
            size = (length, length / rng.uniform(3, 5))
        elif cls == "ship":
            length = rng.uniform(24, min(300, max_big))
            size = (length, length / rng.uniform(3, 8))
        elif cls == "bridge":
            length = rng.uniform(60, max_big)
            size = (length, length / rng.uniform(4, 8))
        elif cls == "storage-tank":
            d = float(np.exp(rng.uniform(math.log(8), math.log(120))))
            size = (d, d)
        else:  # roundabout
            d = rng.uniform(40, min(200, max_big))
            size = (d, d)
        # Centres anywhere in the image: some objects cross its border.
        place(_Obj(cls, rng.uniform(0, w), rng.uniform(0, h), float(size[0]), float(size[1]), theta))
    return objs


def make_toy_image(
    seed: int, flavour: str = "small", size: tuple[int, int] | None = None
) -> tuple[np.ndarray, DotaAnnotation]:
    """One ToyDOTA scene: ``(BGR uint8 [H, W, 3], DotaAnnotation)``; ``size`` = (w, h) overrides the
    flavour's random size. Deterministic in ``seed``."""
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown ToyDOTA flavour {flavour!r}; expected one of {FLAVOURS}")
    rng = np.random.default_rng(seed)
    if size is None:
        lo, hi = (256, 512) if flavour == "small" else (3000, 3600)
        size = (
            int(rng.integers(lo // 32, hi // 32 + 1)) * 32,
            int(rng.integers(lo // 32, hi // 32 + 1)) * 32,
        )
    w, h = size
    img = _background(rng, h, w)
    objs = _sample_objects(rng, h, w, flavour, img)
    polys, names, diffs = [], [], []
    for o in objs:
        _draw(img, o, rng)
        poly = _label_polygon(o)
        inside = _inside_fraction(poly, w, h)
        if inside < 0.3:
            continue  # almost wholly outside: not an object of this image
        # DOTA marks objects hard to recognise: mostly cut off, or tiny (sometimes).
        difficult = inside < 0.6 or (max(o.w, o.h) < 12 and rng.random() < 0.5)
        # Labels are stored to 0.1 px, like sub-pixel annotation tools.
        polys.append(np.round(poly, 1))
        names.append(o.cls)
        diffs.append(int(difficult))
    ann = DotaAnnotation(
        np.array(polys, np.float32).reshape(-1, 8),
        names,
        np.array(diffs, np.int64),
        imagesource="ToyDOTA",
        gsd=None,
    )
    return img, ann


def make_toy_dota(
    out_dir: str | os.PathLike,
    num_images: int = 8,
    flavour: str = "small",
    seed: int = 0,
    size: tuple[int, int] | None = None,
) -> list[str]:
    """Write ``num_images`` ToyDOTA scenes to ``out_dir/images`` and ``out_dir/labelTxt``.

    Image ``i`` is made from seed ``seed * 100003 + i`` alone, so a set is byte-identical for a seed
    and a larger set extends a smaller one. Returns the image ids.
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labelTxt").mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(num_images):
        img, ann = make_toy_image(seed * 100003 + i, flavour, size)
        img_id = f"T{i:04d}"
        ok, buf = cv2.imencode(".png", img)
        if not ok:  # pragma: no cover - PNG encoding of uint8 BGR does not fail
            raise OSError(f"cannot encode {img_id}.png")
        atomic_write_bytes(out / "images" / f"{img_id}.png", buf.tobytes())
        write_dota_txt(out / "labelTxt" / f"{img_id}.txt", ann)
        ids.append(img_id)
    return ids


def ensure_toy_dota(
    out_dir: str | os.PathLike,
    num_images: int = 8,
    flavour: str = "small",
    seed: int = 0,
    size: tuple[int, int] | None = None,
) -> list[str]:
    """ToyDOTA on demand: generate into ``out_dir`` unless a complete set with the same settings is
    already there (recorded in ``out_dir/toydota.json``, written last). Returns the image ids."""
    import json

    out = Path(out_dir)
    manifest = out / "toydota.json"
    settings = {
        "num_images": num_images,
        "flavour": flavour,
        "seed": seed,
        "size": list(size) if size else None,
    }
    if manifest.is_file():
        try:
            done = json.loads(manifest.read_text())
        except ValueError:
            done = {}
        ids = done.get("ids", [])
        if done.get("settings") == settings and all(
            (out / "images" / f"{i}.png").is_file() and (out / "labelTxt" / f"{i}.txt").is_file() for i in ids
        ):
            return ids
    ids = make_toy_dota(out, num_images, flavour, seed, size)
    atomic_write_bytes(manifest, json.dumps({"settings": settings, "ids": ids}).encode())
    return ids


TOY_LAYOUTS = {
    "dota": ("images", "labelTxt"),
    "yolo-obb": ("images", "labels"),
    "hrsc": ("FullDataSet/AllImages", "FullDataSet/Annotations"),
    "dior": ("JPEGImages-trainval", "Annotations/Oriented Bounding Boxes"),
}
_IMAGE_EXT = {"dota": ".png", "yolo-obb": ".png", "hrsc": ".bmp", "dior": ".jpg"}


def make_toy(
    out_dir: str | os.PathLike,
    fmt: str = "dota",
    num_images: int = 8,
    flavour: str = "small",
    seed: int = 0,
    size: tuple[int, int] | None = None,
) -> list[str]:
    """ToyDOTA's scenes (the same as :func:`make_toy_dota` for a seed) in another label format:

    * ``dota``: ``images/*.png``, ``labelTxt/*.txt``;
    * ``yolo-obb``: ``images/*.png``, ``labels/*.txt`` and ``data.yaml`` (``train`` and ``val`` both
      ``images``, ``names`` the six classes);
    * ``hrsc``: ``FullDataSet/AllImages/*.bmp``, ``FullDataSet/Annotations/*.xml`` (each polygon's
      le90 box as ``mbox``; ``Class_ID`` 1000000NN for the NN-th toy class) and
      ``ImageSets/trainval.txt``;
    * ``dior``: ``JPEGImages-trainval/*.jpg`` (lossy, as DIOR's), ``Annotations/Oriented Bounding
      Boxes/*.xml`` and ``ImageSets/Main/trainval.txt``.

    Read with the same classes (``toy``) and angle version, the DOTA, YOLO-OBB and HRSC2016 sets give
    the same images and the same boxes. Returns the image ids.
    """
    from rotdet.data.convert import write_records
    from rotdet.data.formats import check_format
    from rotdet.data.formats.yolo_obb import write_data_yaml
    from rotdet.data.records import ImageRecord

    fmt = check_format(fmt)
    if fmt == "sar":
        fmt = "dota"
    if fmt == "dota":
        return make_toy_dota(out_dir, num_images, flavour, seed, size)
    out = Path(out_dir)
    img_sub, ann_sub = TOY_LAYOUTS[fmt]
    ext = _IMAGE_EXT[fmt]
    ids, records = [], []
    for i in range(num_images):
        img, ann = make_toy_image(seed * 100003 + i, flavour, size)
        img_id = f"T{i:04d}"
        params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext == ".jpg" else []
        ok, buf = cv2.imencode(ext, img, params)
        if not ok:  # pragma: no cover
            raise OSError(f"cannot encode {img_id}{ext}")
        atomic_write_bytes(out / img_sub / f"{img_id}{ext}", buf.tobytes())
        h, w = img.shape[:2]
        records.append(
            ImageRecord(
                img_id,
                str(out / img_sub / f"{img_id}{ext}"),
                ann.polygons,
                ann.labels(TOY_CLASSES),
                ann.difficulties,
                w,
                h,
            )  # fmt: skip
        )
        ids.append(img_id)
    write_records(records, out / ann_sub, fmt, TOY_CLASSES)
    listing = "".join(f"{i}\n" for i in ids)
    if fmt == "yolo-obb":
        write_data_yaml(out / "data.yaml", TOY_CLASSES, root=out, train="images", val="images")
    elif fmt == "hrsc":
        atomic_write_bytes(out / "ImageSets" / "trainval.txt", listing.encode())
    else:
        atomic_write_bytes(out / "ImageSets" / "Main" / "trainval.txt", listing.encode())
    return ids
