"""Named class lists (``data.classes`` in a config) and their resolution.

A config's ``data.classes`` is one of:

* a list name: ``dota1.0`` / ``dota1.5`` / ``dota2.0`` (also ``v1.0``, ``DOTA_v2`` ...), ``hrsc``
  (mmrotate's one-class ``ship`` setting), ``hrsc-classwise`` (its 31 classes), ``dior`` (DIOR-R's
  20), ``sar`` / ``ssdd`` / ``hrsid`` (``ship``), ``toy`` (ToyDOTA's six);
* an explicit list of names (label ``i`` is the ``i``-th name);
* ``yaml``: the ``names`` of the YOLO dataset YAML (``data.yaml``), see
  :func:`rotdet.data.formats.yolo_obb.read_data_yaml`.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "CLASS_LISTS",
    "DIOR_CLASSES",
    "DOTA_CLASSES",
    "DOTA_V1_CLASSES",
    "DOTA_V15_CLASSES",
    "DOTA_V2_CLASSES",
    "HRSC_CLASSES",
    "HRSC_CLASS_IDS",
    "SAR_CLASSES",
    "TOY_CLASSES",
    "get_classes",
]

# mmrotate 0.3.4 DOTADataset.CLASSES order: label i is this tuple's i-th name.
DOTA_V1_CLASSES: tuple[str, ...] = (
    "plane",
    "baseball-diamond",
    "bridge",
    "ground-track-field",
    "small-vehicle",
    "large-vehicle",
    "ship",
    "tennis-court",
    "basketball-court",
    "storage-tank",
    "soccer-ball-field",
    "roundabout",
    "harbor",
    "swimming-pool",
    "helicopter",
)
# DOTA v1.5 adds one class, v2.0 two more, appended in this order (mmrotate 1.x's DOTAv15/DOTAv2).
DOTA_V15_CLASSES: tuple[str, ...] = DOTA_V1_CLASSES + ("container-crane",)
DOTA_V2_CLASSES: tuple[str, ...] = DOTA_V15_CLASSES + ("airport", "helipad")
DOTA_CLASSES: dict[str, tuple[str, ...]] = {
    "v1.0": DOTA_V1_CLASSES,
    "v1.5": DOTA_V15_CLASSES,
    "v2.0": DOTA_V2_CLASSES,
}

# mmrotate 0.3.4 HRSCDataset: HRSC_CLASSES with their Class_ID suffixes (the XML holds '1000000' +
# the two digits, e.g. 100000001 for 'ship'); 21 and 23 are not in the list.
HRSC_CLASSES: tuple[str, ...] = (
    "ship", "aircraft carrier", "warcraft", "merchant ship", "Nimitz", "Enterprise",
    "Arleigh Burke", "WhidbeyIsland", "Perry", "Sanantonio", "Ticonderoga", "Kitty Hawk",
    "Kuznetsov", "Abukuma", "Austen", "Tarawa", "Blue Ridge", "Container", "OXo|--)",
    "Car carrier([]==[])", "Hovercraft", "yacht", "CntShip(_|.--.--|_]=", "Cruise", "submarine",
    "lute", "Medical", "Car carrier(======|", "Ford-class", "Midway-class", "Invincible-class",
)  # fmt: skip
HRSC_CLASS_IDS: tuple[str, ...] = (
    "01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12", "13", "14", "15", "16",
    "17", "18", "19", "20", "22", "24", "25", "26", "27", "28", "29", "30", "31", "32", "33",
)  # fmt: skip

# DIOR-R (mmrotate 1.x DIORDataset.METAINFO); names in the XML are compared lower-cased.
DIOR_CLASSES: tuple[str, ...] = (
    "airplane", "airport", "baseballfield", "basketballcourt", "bridge", "chimney",
    "expressway-service-area", "expressway-toll-station", "dam", "golffield", "groundtrackfield",
    "harbor", "overpass", "ship", "stadium", "storagetank", "tenniscourt", "trainstation", "vehicle",
    "windmill",
)  # fmt: skip

SAR_CLASSES: tuple[str, ...] = ("ship",)  # mmrotate 0.3.4 SARDataset (SSDD, HRSID)

TOY_CLASSES: tuple[str, ...] = (
    "small-vehicle",
    "large-vehicle",
    "ship",
    "bridge",
    "storage-tank",
    "roundabout",
)

CLASS_LISTS: dict[str, tuple[str, ...]] = {
    "dota1.0": DOTA_V1_CLASSES,
    "dota1.5": DOTA_V15_CLASSES,
    "dota2.0": DOTA_V2_CLASSES,
    "hrsc": ("ship",),
    "hrsc-classwise": HRSC_CLASSES,
    "dior": DIOR_CLASSES,
    "sar": SAR_CLASSES,
    "ssdd": SAR_CLASSES,
    "hrsid": SAR_CLASSES,
    "toy": TOY_CLASSES,
}


def _list_key(spec: str) -> str:
    """``v1.0``, ``dota1``, ``DOTA_v2``, ``dota-2.0`` -> ``dota1.0`` / ``dota2.0``; others lower-cased."""
    key = spec.strip().lower().replace("_", "-")
    dota = key.removeprefix("dota").lstrip("-")
    if key.startswith(("dota", "v")) and dota.removeprefix("v") in ("1", "1.0", "1.5", "2", "2.0"):
        version = dota.removeprefix("v")
        return "dota" + (version + ".0" if "." not in version else version)
    return key


def get_classes(spec: str | Sequence[str]) -> tuple[str, ...]:
    """A class list from a list name (see :data:`CLASS_LISTS`; DOTA also as ``v1.0`` / ``dota1``) or
    an explicit sequence of names (order = label ids; empty lists and duplicates rejected)."""
    if isinstance(spec, str):
        key = _list_key(spec)
        if key not in CLASS_LISTS:
            raise ValueError(
                f"unknown class list {spec!r}; expected one of {', '.join(CLASS_LISTS)} "
                "(or v1.0, v1.5, v2.0), or a list of names"
            )
        return CLASS_LISTS[key]
    names = tuple(str(c) for c in spec)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"a class list must be non-empty with unique names, got {names!r}")
    return names


def classes_from_text(spec: str) -> tuple[str, ...]:
    """A ``--classes`` word of the command line: a list name (:func:`get_classes`), comma-separated
    names, or the name of the one class."""
    if "," in spec:
        return get_classes([s.strip() for s in spec.split(",") if s.strip()])
    try:
        return get_classes(spec)
    except ValueError:
        return get_classes([spec])
