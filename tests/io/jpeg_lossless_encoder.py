"""A small JPEG Lossless (process 14) encoder for the tests: one component, any predictor 1–7, precision
2–16, optional restart interval of whole lines, point transform 0. It exists so that the tests can make
lossless streams at 12 and 16 bits that no installed library writes (T.81 Annex H)."""

from __future__ import annotations

import heapq

import numpy as np


def _predict(img: np.ndarray, predictor: int, precision: int, restart_lines: int) -> np.ndarray:
    """The prediction of every sample (T.81 H.1.2.1), int64."""
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


def encode(img: np.ndarray, *, precision: int, predictor: int = 1, restart_lines: int = 0) -> bytes:
    rows, cols = img.shape
    diff = (img.astype(np.int64) - _predict(img, predictor, precision, restart_lines)) % 65536
    diff = np.where(diff >= 32768, diff - 65536, diff)  # −32767 … 32768
    cats = np.where(diff == 0, 0, np.floor(np.log2(np.maximum(np.abs(diff), 1))).astype(np.int64) + 1)
    cats = np.where(diff == 32768, 16, cats)
    freq = {int(c): int(n) for c, n in zip(*np.unique(cats, return_counts=True))}
    lengths = _code_lengths(freq)
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
