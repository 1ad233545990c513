"""Drawing rotated boxes on images with OpenCV: detections (``rotdet predict``) and ground truth
(``rotdet browse``) share one routine, :func:`draw_polygons`.

Each class gets a fixed colour (:func:`class_colour`: hues spaced by the golden angle, so the colour
of class ``i`` never depends on how many classes there are). Captions sit on a filled box of the
class colour with black or white text, whichever contrasts more, so they stay legible on any
background. Line width and font size grow slowly with the image (a 4000 px scene needs thicker
strokes than a 512 px patch), but a caption is never much larger than its object: aerial scenes are
full of 20 px vehicles, whose captions would otherwise cover the scene.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["class_colour", "draw_detections", "draw_polygons", "drawing_scale"]

_GOLDEN_HUE_STEP = 0.6180339887498949  # fraction of the hue circle between consecutive classes
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def class_colour(label: int) -> tuple[int, int, int]:
    """The BGR colour of class ``label``: bright, saturated, deterministic."""
    hue = int((int(label) * _GOLDEN_HUE_STEP % 1.0) * 180)  # OpenCV's 8-bit hue range is [0, 180)
    hsv = np.array([[[hue, 220, 255]]], dtype=np.uint8)
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def drawing_scale(image_shape: Sequence[int]) -> tuple[int, float]:
    """``(line thickness in px, largest font scale)`` for an image of ``image_shape`` (H, W, ...):
    2 px and 0.45 up to 1000 px on the long side, then growing with its square root (4 px and 0.9
    at most)."""
    long_side = max(int(image_shape[0]), int(image_shape[1]))
    grow = max(1.0, (long_side / 1000) ** 0.5)
    return min(4, round(2 * grow)), min(0.9, 0.45 * grow)


def _caption_scale(polygon: np.ndarray, largest: float) -> float:
    """Font scale for the caption of one object: ``largest``, or less for a small object (a text
    height of about a third of the object's longer side, but never below legible 0.35)."""
    extent = float(max(np.ptp(polygon[:, 0]), np.ptp(polygon[:, 1])))
    return min(largest, max(0.35, extent / 75))


def _text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    b, g, r = background
    luma = 0.114 * b + 0.587 * g + 0.299 * r  # ITU-R BT.601 weights
    return (0, 0, 0) if luma > 140 else (255, 255, 255)


def _draw_caption(
    image: np.ndarray, text: str, anchor: tuple[int, int], colour: tuple[int, int, int], font_scale: float
) -> None:
    """``text`` on a filled box whose bottom-left corner is ``anchor`` (moved inside the image)."""
    font_thickness = max(1, round(font_scale * 2))
    (tw, th), baseline = cv2.getTextSize(text, _FONT, font_scale, font_thickness)
    pad = max(1, round(th * 0.25))
    box_w, box_h = tw + 2 * pad, th + baseline + 2 * pad
    height, width = image.shape[:2]
    x0 = min(max(anchor[0], 0), max(width - box_w, 0))
    y1 = anchor[1]
    if y1 - box_h < 0:  # no room above the box: put the caption just below the top edge
        y1 = box_h
    y1 = min(y1, height)
    y0 = y1 - box_h
    cv2.rectangle(image, (x0, y0), (x0 + box_w, y1), colour, thickness=-1)
    cv2.putText(
        image,
        text,
        (x0 + pad, y1 - pad - baseline),
        _FONT,
        font_scale,
        _text_colour(colour),
        font_thickness,
        cv2.LINE_AA,
    )


def draw_polygons(
    image_bgr: np.ndarray,
    polygons: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    captions: Sequence[str] | None = None,
    thickness: int | None = None,
    thin: Sequence[bool] | np.ndarray | None = None,
    mark_first_corner: bool = False,
) -> np.ndarray:
    """A copy of ``image_bgr`` (uint8 [H, W, 3]) with quadrilaterals drawn in their class colours.

    Args:
        polygons: [N, 8] corners ``x1 y1 ... x4 y4`` in image pixels.
        labels: [N] class ids (they pick the colours).
        captions: N texts drawn above each polygon's top-left; None draws none.
        thickness: line width in px; None scales it with the image (:func:`drawing_scale`).
        thin: [N] booleans; True draws that polygon at half width (e.g. difficult objects).
        mark_first_corner: a dot on each polygon's first corner (shows the vertex order).
    """
    out = np.ascontiguousarray(image_bgr).copy()
    polys = np.asarray(polygons, dtype=np.float64).reshape(-1, 4, 2)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(labels) != len(polys):
        raise ValueError(f"{len(polys)} polygons but {len(labels)} labels")
    if captions is not None and len(captions) != len(polys):
        raise ValueError(f"{len(polys)} polygons but {len(captions)} captions")
    auto_thickness, font_scale = drawing_scale(out.shape)
    base = int(thickness) if thickness is not None else auto_thickness
    corners = np.round(polys).astype(np.int32)
    # Outlines first, captions on top: a later box must not hide an earlier box's caption text.
    for k, (pts, label) in enumerate(zip(corners, labels, strict=True)):
        width = max(1, base // 2) if thin is not None and thin[k] else base
        colour = class_colour(int(label))
        cv2.polylines(out, [pts], True, colour, width, cv2.LINE_AA)
        if mark_first_corner:
            cv2.circle(out, (int(pts[0, 0]), int(pts[0, 1])), width + 2, colour, -1, cv2.LINE_AA)
    if captions is not None:
        for pts, label, text in zip(corners, labels, captions, strict=True):
            anchor = (int(pts[:, 0].min()), int(pts[:, 1].min()) - 2)
            _draw_caption(out, text, anchor, class_colour(int(label)), _caption_scale(pts, font_scale))
    return out


def draw_detections(
    image_bgr: np.ndarray,
    polygons: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    score_thr: float = 0.0,
    thickness: int | None = None,
) -> np.ndarray:
    """A copy of ``image_bgr`` (uint8 [H, W, 3]) with detections drawn and captioned ``"name 0.87"``.

    Args:
        polygons: [N, 8] corners in image pixels (e.g. :attr:`Detections.polygons
            <rotdet.engine.inference.Detections.polygons>`).
        labels: [N] class ids; scores: [N] or None (then captions carry the name only).
        class_names: label ``i`` is ``class_names[i]``; None captions with the class id.
        score_thr: detections with a lower score are not drawn.
        thickness: line width in px; None scales it with the image.
    """
    polys = np.asarray(polygons, dtype=np.float64).reshape(-1, 8)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        keep = scores >= score_thr
        polys, labels, scores = polys[keep], labels[keep], scores[keep]
    names = [class_names[int(c)] if class_names is not None else str(int(c)) for c in labels]
    captions = names if scores is None else [f"{n} {s:.2f}" for n, s in zip(names, scores, strict=True)]
    return draw_polygons(image_bgr, polys, labels, captions, thickness=thickness)
