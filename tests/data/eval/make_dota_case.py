"""Regenerate ``dota_case/``: random labelTxt and Task1 files, and DOTA_devkit's own AP on them.

Needs DOTA_devkit's ``dota_evaluation_task1.py`` and its compiled ``polyiou`` importable (e.g.
``PYTHONPATH=/path/to/DOTA_devkit``; on numpy >= 1.24 its ``np.bool`` must read ``bool``). The test
suite only reads the committed files::

    PYTHONPATH=/path/to/DOTA_devkit python tests/data/eval/make_dota_case.py
"""

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "dota_case"
CLASSES = ["plane", "ship", "harbor", "small-vehicle"]


def fmt(v: float) -> str:
    return f"{v:.1f}" if v != int(v) else str(int(v))


def rect(rng, cx, cy):
    w, h, t = rng.uniform(6, 60), rng.uniform(4, 30), rng.uniform(0, np.pi)
    c, s = np.cos(t), np.sin(t)
    pts = np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) / 2
    return (np.stack([cx + pts[:, 0] * c - pts[:, 1] * s, cy + pts[:, 0] * s + pts[:, 1] * c], 1)).reshape(8)


def make(seed: int = 0, num_imgs: int = 5):
    rng = np.random.default_rng(seed)
    labels, dets = {}, {c: [] for c in CLASSES}
    for i in range(num_imgs):
        img = f"P{9000 + i}"
        lines = ["imagesource:GoogleEarth", "gsd:0.146343590398"]
        n = 0 if i == num_imgs - 1 else int(rng.integers(12, 24))  # the last image has no object
        for _ in range(n):
            poly = rect(rng, *rng.uniform(40, 900, 2))
            if rng.random() < 0.25:  # a non-convex (dart) quadrilateral
                poly = poly.reshape(4, 2)
                poly[2] = poly[2] + (poly[0] - poly[2]) * rng.uniform(0.5, 0.8)
                poly = poly.reshape(8)
            poly = np.round(poly, 1 if rng.random() < 0.5 else 0)
            name = CLASSES[int(rng.integers(0, len(CLASSES) - 1))]  # the last class has no object
            diff = int(rng.random() < 0.2)
            lines.append(" ".join([*(fmt(v) for v in poly), name, str(diff)]))
            for _ in range(int(rng.integers(0, 4))):  # 0..3 detections of it
                d = poly + rng.normal(0, rng.choice([0.5, 3, 8]), 8)
                if rng.random() < 0.05:  # self-intersecting: two vertices swapped
                    d = d.reshape(4, 2)[[0, 2, 1, 3]].reshape(8)
                score = round(float(rng.integers(1, 30)) / 30, 2)  # few distinct values: ties
                dets[name if rng.random() < 0.9 else CLASSES[int(rng.integers(0, len(CLASSES)))]].append(
                    (img, score, d)
                )
            if rng.random() < 0.1:  # an exact copy
                dets[name].append((img, 0.5, poly.copy()))
        for _ in range(int(rng.integers(0, 6))):  # false positives
            dets[CLASSES[int(rng.integers(0, len(CLASSES)))]].append(
                (img, round(float(rng.random()), 2), rect(rng, *rng.uniform(40, 900, 2)))
            )
        labels[img] = lines
    return labels, dets


def main() -> None:
    import dota_evaluation_task1 as devkit  # DOTA_devkit (see the docstring)

    labels, dets = make()
    if OUT.exists():
        shutil.rmtree(OUT)
    (OUT / "labelTxt").mkdir(parents=True)
    (OUT / "task1").mkdir()
    for img, lines in labels.items():
        (OUT / "labelTxt" / f"{img}.txt").write_text("".join(x + "\n" for x in lines))
    for c, rows in dets.items():
        if c == "small-vehicle":
            continue  # no file at all for this class: rotdet counts no detections
        text = "".join(f"{img} {s} " + " ".join(f"{v:.2f}" for v in d) + "\n" for img, s, d in rows)
        (OUT / "task1" / f"Task1_{c}.txt").write_text(text)
    imageset = OUT / "imageset.txt"
    imageset.write_text("".join(f"{img}\n" for img in labels))
    expected = {}
    for tag, thr, use07 in (("07_0.5", 0.5, True), ("07_0.7", 0.7, True), ("area_0.5", 0.5, False)):
        aps = []
        for c in CLASSES[:-1]:
            with contextlib.redirect_stdout(io.StringIO()):
                _, _, ap = devkit.voc_eval(
                    str(OUT / "task1" / "Task1_{:s}.txt"),
                    str(OUT / "labelTxt" / "{:s}.txt"),
                    str(imageset),
                    c,
                    ovthresh=thr,
                    use_07_metric=use07,
                )
            aps.append(float(ap))
        aps.append(0.0)  # small-vehicle: the devkit crashes on a missing file; no GT and no detection: AP 0
        expected[tag] = {"ap": aps, "map": sum(aps) / len(aps)}
    imageset.unlink()
    (OUT / "expected.json").write_text(
        json.dumps({"classes": CLASSES, "numpy": np.__version__, **expected}, indent=1)
    )
    print(json.dumps(expected, indent=1))


if __name__ == "__main__":
    main()
