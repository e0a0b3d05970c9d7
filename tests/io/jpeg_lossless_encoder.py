"""The tests' JPEG Lossless (process 14) helpers. The encoder itself moved into the library
(cxrfast/io/jpeg_lossless.py, vectorised, used by the synthetic dataset); `encode` here is
that one, re-exported for the tests and csrc/fuzz/make_seeds.py. `encode_reference` (with `_predict`, line
by line) is the original bit-by-bit encoder, kept as the oracle the library's must equal byte for byte
(tests/io/test_jpeg_lossless_encoder.py).

LONG_CODE_LENGTHS holds tables with codes of 13 to 16 bits, longer than the decoder's 12-bit lookup, and
image_with_categories() makes an image whose differences fall in chosen categories, so that a stream uses
those long codes (and magnitudes of up to 15 bits, category 16 at 16 bits)."""

from __future__ import annotations

import heapq

import numpy as np

from cxrfast.io.jpeg_lossless import encode  # noqa: F401  (re-exported)


def _predict(img: np.ndarray, predictor: int, precision: int, restart_lines: int) -> np.ndarray:
    """The prediction of every sample (T.81 H.1.2.1), int64, line by line."""
    x = img.astype(np.int64)
    rows, cols = x.shape
    pred = np.zeros_like(x)
    for y in range(rows):
        first = y == 0 or (restart_lines and y % restart_lines == 0)
        if first:
            pred[y, 0] = 1 << (precision - 1)
            pred[y, 1:] = x[y, :-1]
            continue
        pred[y, 0] = x[y - 1, 0]
        ra, rb, rc = x[y, :-1], x[y - 1, 1:], x[y - 1, :-1]
        pred[y, 1:] = {1: ra, 2: rb, 3: rc, 4: ra + rb - rc, 5: ra + ((rb - rc) >> 1),
                       6: rb + ((ra - rc) >> 1), 7: (ra + rb) >> 1}[predictor]
    return pred


def _kraft_ok(lengths: dict[int, int]) -> bool:
    """Lengths 1..16 of a prefix code with room left (T.81 C: no code may be all 1-bits)."""
    return all(1 <= n <= 16 for n in lengths.values()) and sum(1 << (16 - n) for n in lengths.values()) < 1 << 16


# Code lengths per difference category (index = category). "tail": the large categories get codes of 13–16
# bits (and magnitudes push mid categories past 12 bits in all); "head": the reverse, small categories (0 too)
# get the long codes, category 16 / the top category a 2-bit code; "all16": every code 16 bits, so no code
# is in the decoder's lookup at all.
LONG_CODE_LENGTHS = {
    8: {"tail": [1, 2, 3, 4, 5, 6, 13, 14, 16],
        "head": [16, 15, 14, 13, 5, 4, 3, 2, 2],
        "all16": [16] * 9},
    12: {"tail": [1, 2, 3, 4, 5, 6, 7, 8, 12, 13, 14, 15, 16],
         "head": [16, 14, 13, 10, 9, 8, 7, 6, 5, 4, 3, 2, 2],
         "all16": [16] * 13},
    16: {"tail": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 13, 14, 15, 16, 16],
         "head": [16, 15, 14, 13, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 2],
         "all16": [16] * 17},
}
for _tables in LONG_CODE_LENGTHS.values():
    for _t in _tables.values():
        assert _kraft_ok(dict(enumerate(_t))) and max(_t) > 12


def _code_lengths(freq: dict[int, int]) -> dict[int, int]:
    """Huffman code lengths (≤ 16) for the categories, one pseudo-symbol reserving the all-ones code."""
    items = [(f, i, (s,)) for i, (s, f) in enumerate(sorted(freq.items()))] + [(1, -1, (-1,))]
    heapq.heapify(items)
    lengths = {s: 0 for s in list(freq) + [-1]}
    if len(items) == 1:
        return {next(iter(freq)): 1}
    count = len(items)
    while len(items) > 1:
        f1, _, a = heapq.heappop(items)
        f2, _, b = heapq.heappop(items)
        for s in a + b:
            lengths[s] += 1
        count += 1
        heapq.heappush(items, (f1 + f2, count, a + b))
    del lengths[-1]
    assert max(lengths.values()) <= 16, "code longer than 16 bits (test data too skewed)"
    return lengths


class _Bits:
    def __init__(self):
        self.out = bytearray()
        self.acc = 0
        self.n = 0

    def put(self, value: int, n: int):
        for i in range(n - 1, -1, -1):
            self.acc = (self.acc << 1) | ((value >> i) & 1)
            self.n += 1
            if self.n == 8:
                self.out.append(self.acc)
                if self.acc == 0xFF:
                    self.out.append(0x00)  # byte stuffing
                self.acc = self.n = 0

    def flush(self):
        if self.n:
            self.put((1 << (8 - self.n)) - 1, 8 - self.n)  # pad with 1-bits


def image_with_categories(categories: np.ndarray, *, precision: int, predictor: int = 1, restart_lines: int = 0,
                          seed: int = 0) -> np.ndarray:
    """An image (int64, values 0 .. 2^precision − 1) whose difference from the prediction of `encode` with
    the same predictor and restart_lines falls in category categories[y, x] (0 .. 16) wherever a value in
    range allows it (always with predictors 1–3 and 7, and always at precision 16, where values wrap modulo
    2^16); elsewhere the value in range nearest the prediction (a difference of category ≤ precision). The
    magnitude within a category and the sign are random."""
    rng = np.random.default_rng(seed)
    rows, cols = categories.shape
    top = (1 << precision) - 1
    img = np.zeros((rows, cols), np.int64)
    for y in range(rows):
        first = y == 0 or (restart_lines and y % restart_lines == 0)
        for x in range(cols):
            if first:
                pred = (1 << (precision - 1)) if x == 0 else img[y, x - 1]
            elif x == 0:
                pred = img[y - 1, 0]
            else:
                ra, rb, rc = int(img[y, x - 1]), int(img[y - 1, x]), int(img[y - 1, x - 1])
                pred = {1: ra, 2: rb, 3: rc, 4: ra + rb - rc, 5: ra + ((rb - rc) >> 1),
                        6: rb + ((ra - rc) >> 1), 7: (ra + rb) >> 1}[predictor]
            pred = int(pred)
            c = int(categories[y, x])
            if c == 0:
                lo = hi = 0
            elif c == 16:
                lo = hi = 32768
            else:
                lo, hi = 1 << (c - 1), (1 << c) - 1
            if precision == 16:
                d = int(rng.integers(lo, hi + 1)) * (1 if c == 16 or rng.integers(2) else -1)
                img[y, x] = (pred + d) & 0xFFFF
                continue
            # values pred + d and pred − d, |d| in [lo, hi], that stay in 0 .. top
            ranges = [(max(pred + lo, 0), min(pred + hi, top)), (max(pred - hi, 0), min(pred - lo, top))]
            ranges = [(a, b) for a, b in ranges if a <= b]
            if ranges:
                a, b = ranges[int(rng.integers(len(ranges)))]
                img[y, x] = int(rng.integers(a, b + 1))
            else:  # the prediction lies far outside the range (predictors 4–6): the nearest value
                img[y, x] = min(max(pred, 0), top)
    return img


def encode_reference(img: np.ndarray, *, precision: int, predictor: int = 1, restart_lines: int = 0,
                     code_lengths: dict[int, int] | list[int] | None = None) -> bytes:
    """The original bit-by-bit encoder: the JPEG Lossless stream of a 2-D image. code_lengths: the Huffman code length of each difference
    category (a dict, or a list indexed by category) instead of the optimal table; it must give one to every
    category the image uses and leave room (no all-1 code), and may list unused ones."""
    rows, cols = img.shape
    diff = (img.astype(np.int64) - _predict(img, predictor, precision, restart_lines)) % 65536
    diff = np.where(diff >= 32768, diff - 65536, diff)  # −32767 … 32768
    cats = np.where(diff == 0, 0, np.floor(np.log2(np.maximum(np.abs(diff), 1))).astype(np.int64) + 1)
    cats = np.where(diff == 32768, 16, cats)
    freq = {int(c): int(n) for c, n in zip(*np.unique(cats, return_counts=True))}
    if code_lengths is None:
        lengths = _code_lengths(freq)
    else:
        lengths = dict(enumerate(code_lengths)) if isinstance(code_lengths, list) else dict(code_lengths)
        assert set(freq) <= set(lengths), f"no code for categories {sorted(set(freq) - set(lengths))}"
        assert _kraft_ok(lengths), "code lengths must lie in 1..16 and leave room"
    # canonical codes in order of (length, symbol)
    codes, code, prev_len = {}, 0, 0
    for s, ln in sorted(lengths.items(), key=lambda kv: (kv[1], kv[0])):
        code <<= ln - prev_len
        codes[s] = (code, ln)
        code += 1
        prev_len = ln
    bits_count = [0] * 16
    for s, ln in lengths.items():
        bits_count[ln - 1] += 1
    huffval = [s for s, _ in sorted(lengths.items(), key=lambda kv: (kv[1], kv[0]))]

    def segment(marker: int, payload: bytes) -> bytes:
        return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload

    out = bytearray(b"\xFF\xD8")
    out += segment(0xC4, bytes([0x00] + bits_count + huffval))
    out += segment(0xC3, bytes([precision]) + rows.to_bytes(2, "big") + cols.to_bytes(2, "big") + bytes([1, 1, 0x11, 0]))
    if restart_lines:
        out += segment(0xDD, (restart_lines * cols).to_bytes(2, "big"))
    out += segment(0xDA, bytes([1, 1, 0x00, predictor, 0, 0]))
    bits = _Bits()
    for y in range(rows):
        if restart_lines and y and y % restart_lines == 0:
            bits.flush()
            out += bits.out
            out += bytes([0xFF, 0xD0 + ((y // restart_lines - 1) & 7)])
            bits = _Bits()
        for d, c in zip(diff[y].tolist(), cats[y].tolist()):
            code, ln = codes[c]
            bits.put(code, ln)
            if 0 < c < 16:
                bits.put(d if d > 0 else d + (1 << c) - 1, c)
    bits.flush()
    out += bits.out
    out += b"\xFF\xD9"
    return bytes(out)
