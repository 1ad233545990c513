"""Reading VOC-style XML labels with errors that say where: ``file:line:column`` for XML that does
not parse, ``file:/root/object[3]/child`` (an element path, 1-based as XPath) for a missing or bad
value."""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

from rotdet.data.records import ParseLog, SkippedLine, decode_label_text

__all__ = ["BadElement", "child_float", "child_text", "parse_xml", "read_id_list", "xml_element", "xml_files"]


class BadElement(ValueError):
    """A missing or malformed element; ``element`` is its path, ``reason`` what is wrong."""

    def __init__(self, element: str, reason: str, text: str = ""):
        super().__init__(f"{element}: {reason}")
        self.element, self.reason, self.text = element, reason, text

    def skip(self, path: str, log: ParseLog, strict: bool) -> None:
        log.skip(SkippedLine(path, None, self.reason, self.text, element=self.element), strict)


def numbered_ids(path: str | os.PathLike) -> list[tuple[int, str]]:
    """``(line number, image id)`` of an ``ImageSets`` file (blank lines and surrounding spaces
    ignored, as the ids mmrotate's ``mmcv.list_from_file`` gives for a well-formed file)."""
    text = decode_label_text(Path(path).read_bytes(), path)
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]


def read_id_list(path: str | os.PathLike) -> list[str]:
    """The image ids of an ``ImageSets`` file."""
    return [i for _, i in numbered_ids(path)]


def xml_files(
    ann_dir: str | os.PathLike,
    ann_file: str | os.PathLike | Sequence[str | os.PathLike] | None,
    log: ParseLog,
    strict: bool,
) -> list[Path]:
    """The XML files of the ids listed in ``ann_file`` (one list or several, in order), or every
    ``.xml`` of ``ann_dir`` (sorted) when it is None. A listed id without its XML is skipped with
    ``list:line`` (raised in ``strict``)."""
    if ann_file is None:
        return sorted(Path(ann_dir).glob("*.xml"))
    lists = [ann_file] if isinstance(ann_file, (str, os.PathLike)) else list(ann_file)
    paths = []
    for lst in lists:
        for lineno, img_id in numbered_ids(lst):
            xml = Path(ann_dir) / f"{img_id}.xml"
            if not xml.is_file():
                log.skip(SkippedLine(os.fspath(lst), lineno, f"no annotation file {xml}", img_id), strict)
                continue
            paths.append(xml)
    return paths


def parse_xml(path: str | os.PathLike, log: ParseLog, strict: bool) -> ET.Element | None:
    """The root element of an XML file, or None (skipped with a warning, raised in ``strict``) when
    it is missing or does not parse."""
    path = os.fspath(path)
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as exc:
        line, col = exc.position
        message = str(exc).split(": line ")[0]
        log.skip(SkippedLine(path, line, f"malformed XML (column {col}: {message})", ""), strict)
    except OSError as exc:
        log.skip(SkippedLine(path, None, f"cannot read ({exc.strerror or exc})", ""), strict)
    return None


def child_text(parent: ET.Element, tag: str, where: str, required: bool = True) -> str | None:
    """The stripped text of ``parent``'s first ``tag`` child (``where`` is ``parent``'s path)."""
    node = parent.find(tag)
    if node is None or node.text is None or not node.text.strip():
        if required:
            raise BadElement(f"{where}/{tag}", "missing element" if node is None else "empty element")
        return None
    return node.text.strip()


def child_float(parent: ET.Element, tag: str, where: str) -> float:
    """A finite number from ``parent``'s ``tag`` child, or :class:`BadElement`."""
    text = child_text(parent, tag, where)
    try:
        value = float(text)
    except ValueError:
        raise BadElement(f"{where}/{tag}", "non-numeric value", text) from None
    if not math.isfinite(value):
        raise BadElement(f"{where}/{tag}", "non-finite value (NaN or inf)", text)
    return value


def xml_element(tag: str, children: dict | list, indent: int = 0) -> str:
    """A pretty-printed element: ``children`` maps tags to text, nested dicts, or lists of
    ``(tag, children)`` pairs (for repeated tags)."""
    pad = "    " * indent
    items = children.items() if isinstance(children, dict) else children
    lines = [f"{pad}<{tag}>"]
    for key, value in items:
        if isinstance(value, (dict, list)):
            lines.append(xml_element(key, value, indent + 1))
        else:
            lines.append(f"{pad}    <{key}>{escape(str(value))}</{key}>")
    lines.append(f"{pad}</{tag}>")
    return "\n".join(lines)
