"""Vectorised reading of whitespace-separated ASCII text (Task1 and labelTxt files) with numpy.

Only a fast path (and :func:`decode_text`, the one decoding of those files): it either returns
exactly what the line-by-line readers of :mod:`rotdet.evaluation.io` return for the same text, or
``None`` (the caller then runs the line-by-line reader, which gives the same values or the error
naming ``file:line``). It declines whatever it does not cover: non-ASCII text (the line-by-line
reader decodes it with replacement characters), the separators ``str.split`` / ``str.splitlines``
know besides space, tab, LF and CR (``\\v \\f \\x1c-\\x1f``) and NUL, and any line of an unexpected
shape. UTF-16 text is read as the same text in UTF-8.

Numbers: a token ``[+-]?digits[.digits]`` (``1.``, ``.5`` included) of at most 17 digits whose
digits form an integer ``M < 2**53`` with ``f <= 22`` digits after the point is ``M / 10**f``: both
operands are exact doubles and IEEE division rounds correctly, so this is the correctly rounded
value of the decimal, which is what Python's ``float`` returns (Clinger's fast path of strtod).
Every other token (exponents, more digits, ``inf``, ``1_0``, garbage) goes through ``float`` /
``int`` one by one; those that fail or are not finite make the whole read decline.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from rotdet.evaluation.results import EvalInputError

# Bytes per vectorised step of the number parser: its temporaries (a few int64 per byte) stay small.
_BYTES_PER_STEP = 1 << 18
_WIDTH = 24  # bytes of a number parsed here
_COLS = np.arange(_WIDTH, dtype=np.uint8)
_AFTER = (_WIDTH - 1 - _COLS).astype(np.uint8)  # bytes after each column of a row
_ONES = np.uint64(0x0101010101010101)
_SHIFT56 = np.uint64(56)
_MUL1 = np.uint64(100 + (1000000 << 32))
_MUL2 = np.uint64(1 + (10000 << 32))
_POW10_UINT = np.array([10**k for k in range(20)], np.uint64)
_POW10_FLOAT = np.array([float(10**k) for k in range(23)])  # exact doubles (10**22 is the last)
_TWO53 = 1 << 53
_HEADERS = ("imagesource", "gsd")


class Tokens(NamedTuple):
    """The tokens of a buffer: byte ranges ``[starts, ends)`` and whether each begins a line."""

    buf: np.ndarray  # uint8
    starts: np.ndarray  # int64
    ends: np.ndarray  # int64
    first: np.ndarray  # bool: the first token of its line


def decode_text(raw: bytes, path: object = "<bytes>") -> str:
    """The text of a Task1 or labelTxt file as the line-by-line readers take it: UTF-16 / UTF-32
    (with a BOM, or ASCII text whose every other byte is NUL) decoded as such, anything else as
    UTF-8 (a BOM dropped, undecodable bytes replaced). UTF-16 bytes that do not decode are an
    :class:`EvalInputError` naming ``path``."""
    from rotdet.data.records import LabelFormatError, decode_utf16

    try:
        wide = decode_utf16(raw, str(path))
    except LabelFormatError as exc:
        raise EvalInputError(str(exc)) from None
    return wide if wide is not None else raw.decode("utf-8-sig", errors="replace")


def strip_bom(raw: bytes) -> bytes:
    """``raw`` without a UTF-8 BOM, and UTF-16 / UTF-32 text as UTF-8 (bytes that do not decode
    are left for the line-by-line reader to name)."""
    from rotdet.data.records import LabelFormatError, decode_utf16

    try:
        wide = decode_utf16(raw)
    except LabelFormatError:
        return raw  # not ASCII: declined, and the line reader names the file
    if wide is not None:
        return wide.encode("utf-8")
    return raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw


def is_header(first_token: str) -> bool:
    """Whether a line of fewer than 9 tokens that starts with ``first_token`` is an ``imagesource:``
    / ``gsd:`` header (keys quoted in places, as DOTA v1.5's ``'gsd':0.13``); DOTA_devkit skips
    every such short line."""
    return first_token.split(":")[0].strip("'\"").lower() in _HEADERS


def tokenize(raw: bytes) -> Tokens | None:
    """Tokens of ASCII ``raw`` split at spaces, tabs, LF and CR (lines end at LF, CR or CRLF), or
    ``None`` for text this fast path does not cover (see the module docstring)."""
    if not raw.isascii():
        return None
    buf = np.frombuffer(raw, np.uint8)
    if len(buf) == 0:
        z = np.zeros(0, np.int64)
        return Tokens(buf, z, z, np.zeros(0, bool))
    control = np.flatnonzero(buf < 32)
    cc = buf[control]
    if not ((cc == 9) | (cc == 10) | (cc == 13)).all():
        return None
    # Now the whitespace bytes are exactly those <= 32 (tab, LF, CR, space).
    solid = np.empty(len(buf) + 2, np.int8)
    solid[0] = solid[-1] = 0
    np.greater(buf, 32, out=solid[1:-1])
    edges = np.diff(solid)
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    # A token begins a line when a line break lies between it and the previous token. For a gap of
    # one byte that byte says it (a CR alone there is a lone CR: a CRLF gap has two bytes).
    first = np.ones(len(starts), bool)
    if len(starts) > 1:
        gap = starts[1:] - ends[:-1]
        last_gap_byte = buf[starts[1:] - 1]
        first[1:] = (last_gap_byte == 10) | (last_gap_byte == 13)
        long_gap = np.flatnonzero(gap > 1)
        if len(long_gap):
            breaks = cc_positions(buf, control, cc)
            lo = np.searchsorted(breaks, ends[:-1][long_gap])
            hi = np.searchsorted(breaks, starts[1:][long_gap])
            first[1:][long_gap] = hi > lo
    return Tokens(buf, starts, ends, first)


def cc_positions(buf: np.ndarray, control: np.ndarray, cc: np.ndarray) -> np.ndarray:
    """Positions of the line breaks: every LF, and every CR not followed by an LF."""
    nxt = np.full(len(control), -1, np.int64)
    inside = control + 1 < len(buf)
    nxt[inside] = buf[control[inside] + 1]
    return control[(cc == 10) | ((cc == 13) & (nxt != 10))]


def token_text(tok: Tokens, i: int) -> str:
    return tok.buf[tok.starts[i] : tok.ends[i]].tobytes().decode("ascii")


def token_strings(tok: Tokens, sel: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The distinct strings of tokens ``sel`` and, per token, the index of its string.

    Tokens are compared as zero-padded rows of 8-byte words (no NUL in the text: :func:`tokenize`
    declines it), keyed by one word or a hash of the words; rows are then checked equal to their
    key's first row, so a hash collision only costs the slower exact way.
    """
    if len(sel) == 0:
        return [], np.zeros(0, np.int64)
    s, e = tok.starts[sel], tok.ends[sel]
    lens = e - s
    width = -(-int(lens.max()) // 8) * 8
    padded = np.concatenate([tok.buf, np.zeros(width, np.uint8)])
    mat = np.lib.stride_tricks.sliding_window_view(padded, width)[s]
    mat[np.arange(width) >= lens[:, None]] = 0
    words = mat.view("<u8")
    key = words[:, 0].copy()
    for j in range(1, words.shape[1]):
        key = key * np.uint64(0x9E3779B97F4A7C15) + (words[:, j] ^ (key >> np.uint64(29)))
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    if words.shape[1] > 1 and not np.array_equal(words, words[first[inverse]]):
        fixed = mat.view(f"S{width}").reshape(-1)
        _, first, inverse = np.unique(fixed, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
    return [token_text(tok, int(sel[i])) for i in first.tolist()], inverse


_LONG_DOUBLE_OK = np.finfo(np.longdouble).nmant >= 63


def _byte_sums(words: np.ndarray) -> np.ndarray:
    """Per row, the sum of the bytes of ``[k, w]`` little-endian uint64 words (each word's bytes
    summing to at most 255): one multiplication per word moves its byte sum to the top byte."""
    total = (words[:, 0] * _ONES) >> _SHIFT56
    for j in range(1, words.shape[1]):
        total += (words[:, j] * _ONES) >> _SHIFT56
    return total


def _eight_digits(word: np.ndarray) -> np.ndarray:
    """The number written by the eight digit values (0..9) of each little-endian uint64 word, most
    significant first (Lemire's SWAR parse of eight digits; arithmetic wraps as in C)."""
    word = word * np.uint64(10) + (word >> np.uint64(8))
    mask = np.uint64(0x000000FF000000FF)
    return ((word & mask) * _MUL1 + ((word >> np.uint64(16)) & mask) * _MUL2) >> np.uint64(32)


def _decimal_rows(tok: Tokens, rows_of: np.ndarray, t: np.ndarray, nw: int):
    """:func:`_decimals` for tokens ``t`` of at most ``8 nw`` bytes (``rows_of``: 24-byte windows of
    the buffer with 24 zero bytes on both sides)."""
    width = 8 * nw
    s, e = tok.starts[t], tok.ends[t]
    lens = e - s
    mat = rows_of[e + (_WIDTH - width), :width]  # buf[e - width : e]
    cols = _COLS[:width]
    inside = cols >= (width - lens).astype(np.uint8)[:, None]
    dig = mat - np.uint8(48)
    is_dig = (dig < 10) & inside
    is_dot = (mat == 46) & inside
    other = inside & ~is_dig & ~is_dot
    ndig = _byte_sums(is_dig.view("<u8"))
    ndot = _byte_sums(is_dot.view("<u8"))
    nother = _byte_sums(other.view("<u8"))
    f = _byte_sums((is_dot * _AFTER[_WIDTH - width :]).view("<u8")).astype(np.int64)
    words = (dig * is_dig).view("<u8")
    value = _eight_digits(words[:, 0])
    ok = (ndig >= 1) & (ndot <= 1)
    if nw == 3:
        ok &= value < 1000  # then V < 10**19 < 2**64
    for j in range(1, nw):
        value = value * np.uint64(10**8) + _eight_digits(words[:, j])
    first = tok.buf[s]
    sign = (first == 43) | (first == 45)
    ok &= nother == sign
    has_point = ndot == 1
    low = value % _POW10_UINT[np.minimum(f, 19)]  # V < 10**19: V % 10**f = V beyond
    mant = np.where(has_point, (value - low) // np.uint64(10) + low, value)
    return mant, f, first == 45, has_point, ok


def _decimals(tok: Tokens, sel: np.ndarray):
    """For tokens ``sel``: ``(mantissa uint64, fraction digits, negative, point, simple)``:
    ``simple`` marks the tokens ``[+-]?digits[.digits]`` of at most 24 bytes whose digits form an
    integer below ``10**19`` (the mantissa), ``point`` those with a decimal point.

    Each token is copied right-aligned into a row of 8, 16 or 24 bytes (little-endian words); the
    bytes before it, its point and its sign become the digit 0, so the row's words, parsed eight
    digits at a time, give ``V`` = the digits with the point read as a 0; with ``f`` digits after
    the point the mantissa is ``(V - V % 10**f) / 10 + V % 10**f``.
    """
    n = len(sel)
    mant = np.zeros(n, np.uint64)
    frac = np.zeros(n, np.int64)
    neg = np.zeros(n, bool)
    point = np.zeros(n, bool)
    simple = np.zeros(n, bool)
    if n == 0:
        return mant, frac, neg, point, simple
    # 24 zero bytes on both sides, so that every token's rows lie inside the buffer.
    zeros = np.zeros(_WIDTH, np.uint8)
    rows_of = np.lib.stride_tricks.sliding_window_view(np.concatenate([zeros, tok.buf, zeros]), _WIDTH)
    words_needed = (tok.ends[sel] - tok.starts[sel] + 7) // 8
    for nw in (1, 2, 3):
        which = np.flatnonzero(words_needed == nw)
        step = _BYTES_PER_STEP // (8 * nw)
        for a in range(0, len(which), step):
            i = which[a : a + step]
            mant[i], frac[i], neg[i], point[i], simple[i] = _decimal_rows(tok, rows_of, sel[i], nw)
    return mant, frac, neg, point, simple


def _to_double(mant: np.ndarray, frac: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``mant / 10**frac`` correctly rounded, and where that is certain (``frac <= 22``): exact
    operands for ``mant < 2**53``; beyond, the division in 64-bit long double rounded again to
    double, which is the correct rounding unless the long double lands on a midpoint of doubles."""
    p = _POW10_FLOAT[np.minimum(frac, 22)]
    out = mant.astype(np.float64) / p
    sure = (mant < np.uint64(_TWO53)) & (frac <= 22)
    big = np.flatnonzero(~sure & (frac <= 22))
    if len(big) and _LONG_DOUBLE_OK:
        q = mant[big].astype(np.longdouble) / p[big].astype(np.longdouble)
        d = q.astype(np.float64)
        r = q - d.astype(np.longdouble)
        up = np.nextafter(d, np.inf).astype(np.longdouble) - d.astype(np.longdouble)
        down = d.astype(np.longdouble) - np.nextafter(d, -np.inf).astype(np.longdouble)
        midpoint = ((r > 0) & (2 * r == up)) | ((r < 0) & (-2 * r == down))
        out[big] = d
        sure[big] = ~midpoint
    return out, sure


def parse_floats(tok: Tokens, sel: np.ndarray) -> np.ndarray | None:
    """float64 values of tokens ``sel``, equal to Python's ``float``; ``None`` if one is not a finite
    number."""
    mant, frac, neg, _, simple = _decimals(tok, sel)
    out, sure = _to_double(mant, frac)
    np.negative(out, out=out, where=neg)
    for i in np.flatnonzero(~(simple & sure)).tolist():
        try:
            v = float(token_text(tok, int(sel[i])))
        except ValueError:
            return None
        if not math.isfinite(v):
            return None
        out[i] = v
    return out


def parse_ints(tok: Tokens, sel: np.ndarray) -> np.ndarray | None:
    """int64 values of tokens ``sel``, equal to Python's ``int``; ``None`` if one is not an int64."""
    mant, _, neg, point, simple = _decimals(tok, sel)
    # A token with a point ("1.0", "1.") goes to int(), which rejects it.
    fast = simple & ~point
    fast &= mant < np.uint64(1 << 63)
    out = mant.astype(np.int64)
    np.negative(out, out=out, where=neg)
    for i in np.flatnonzero(~fast).tolist():
        try:
            v = int(token_text(tok, int(sel[i])))
        except ValueError:
            return None
        if not -(1 << 63) <= v < 1 << 63:
            return None
        out[i] = v
    return out


# ----------------------------------------------------------------------------------- the formats
def read_task1(raw: bytes):
    """``(image ids, scores [K], polygons [K, 8])`` of a Task1 file's bytes, or ``None``."""
    tok = tokenize(strip_bom(raw))
    if tok is None:
        return None
    t = len(tok.starts)
    if t % 10:
        return None
    k = np.arange(t)
    if not np.array_equal(tok.first, k % 10 == 0):
        return None
    names, inverse = token_strings(tok, k[0::10])
    numeric = k.reshape(-1, 10)[:, 1:].reshape(-1)
    values = parse_floats(tok, numeric)
    if values is None:
        return None
    values = values.reshape(-1, 9)
    ids = np.array(names, dtype=object)[inverse].tolist() if names else []
    return ids, values[:, 0].copy(), values[:, 1:].copy()


def read_labeltxt_many(raws: list[bytes]):
    """labelTxt files' bytes read together: per file ``(polygons [K, 8] float64, names, difficult
    [K] int64)``, or ``None``. Lines: 9 or 10 tokens (objects), ``imagesource:`` / ``gsd:`` headers
    of fewer than 9 tokens (skipped), blank lines."""
    parts = [strip_bom(r) for r in raws]
    # A newline between files so that no line spans two of them.
    joined = b"\n".join(parts)
    tok = tokenize(joined)
    if tok is None:
        return None
    line_first = np.flatnonzero(tok.first)
    counts = np.diff(np.r_[line_first, len(tok.starts)])
    odd = np.flatnonzero((counts != 9) & (counts != 10))
    keep_line = np.ones(len(line_first), bool)
    for li in odd.tolist():
        head = token_text(tok, int(line_first[li]))
        if counts[li] < 9 and is_header(head):
            keep_line[li] = False
        else:
            return None
    obj_first = line_first[keep_line]
    obj_count = counts[keep_line]
    num = len(obj_first)
    coords = (obj_first[:, None] + np.arange(8)).reshape(-1)
    polys = parse_floats(tok, coords)
    if polys is None:
        return None
    polys = polys.reshape(num, 8)
    names, name_idx = token_strings(tok, obj_first + 8)
    diff = np.zeros(num, np.int64)
    has = np.flatnonzero(obj_count == 10)
    if len(has):
        d = parse_ints(tok, obj_first[has] + 9)
        if d is None:
            return None
        diff[has] = d
    # Objects per file, by the byte offset of their first token.
    offsets = np.cumsum([0] + [len(p) + 1 for p in parts])
    file_of = np.searchsorted(offsets, tok.starts[obj_first], side="right") - 1
    bounds = np.searchsorted(file_of, np.arange(len(parts) + 1))
    name_obj = np.array(names, dtype=object)
    out = []
    for f in range(len(parts)):
        a, b = int(bounds[f]), int(bounds[f + 1])
        out.append((polys[a:b].copy(), name_obj[name_idx[a:b]].tolist(), diff[a:b].copy()))
    return out
