"""A JPEG Lossless (ITU T.81 process 14, Annex H) encoder in numpy: one component, any predictor 1–7,
precision 2–16, optional restart interval of whole lines, point transform 0.

    stream = encode(pixels, precision=12)               # selection value 1: DICOM's .70 (JPEG Lossless SV1)
    stream = encode(pixels, precision=12, predictor=4)  # DICOM's .57 (process 14, any predictor)

It writes the synthetic dataset's JPEG lossless DICOM files (cxrfast.io.write) and the tests' and fuzz
seeds' streams at 12 and 16 bits, which no installed library writes. The Huffman table is the optimal one
for the image (code lengths limited to 16, the all-ones code left free as T.81 C requires) unless
`code_lengths` gives one (a length per difference category).

Everything is vectorised: each sample's code and magnitude bits form one symbol of at most 32 bits, and
the symbols are OR-ed into 32-bit words at their bit offsets with two bincounts (the bits of different
symbols never overlap, so their sum is their OR, and every partial sum is an integer below 2^32, exact
in float64). A 512 × 512 12-bit image encodes in about 20 ms.
"""

from __future__ import annotations

import heapq

import numpy as np

__all__ = ["encode", "predict", "code_lengths_for"]


def predict(img: np.ndarray, predictor: int, precision: int, restart_lines: int = 0) -> np.ndarray:
    """The prediction of every sample (T.81 H.1.2.1), int32 [rows, cols]: the first line of the image and
    of each restart interval predicts from the left (its first sample from 2^(precision-1)), the first
    column from above, the rest with the predictor."""
    x = np.asarray(img).astype(np.int32)
    pred = np.empty_like(x)
    ra, rb, rc = x[1:, :-1], x[:-1, 1:], x[:-1, :-1]
    if predictor == 1:
        pred[1:, 1:] = ra
    elif predictor == 2:
        pred[1:, 1:] = rb
    elif predictor == 3:
        pred[1:, 1:] = rc
    elif predictor == 4:
        pred[1:, 1:] = ra + rb - rc
    elif predictor == 5:
        pred[1:, 1:] = ra + ((rb - rc) >> 1)
    elif predictor == 6:
        pred[1:, 1:] = rb + ((ra - rc) >> 1)
    else:
        pred[1:, 1:] = (ra + rb) >> 1
    pred[1:, 0] = x[:-1, 0]
    first = [0] + (list(range(restart_lines, x.shape[0], restart_lines)) if restart_lines else [])
    pred[first, 0] = 1 << (precision - 1)
    pred[first, 1:] = x[first, :-1]
    return pred


_BIT_LENGTH = np.frexp(np.arange(32769, dtype=np.float64))[1].astype(np.int64)  # 0 for 0, 16 for 32768
_MAGNITUDE_MASK = np.array([(1 << c) - 1 for c in range(16)] + [0], np.int32)  # by category


def _kraft_ok(lengths: dict[int, int]) -> bool:
    """Lengths 1..16 of a prefix code with room left (T.81 C: no code may be all 1-bits)."""
    return all(1 <= n <= 16 for n in lengths.values()) and sum(1 << (16 - n) for n in lengths.values()) < 1 << 16


def _huffman_lengths(freq: dict[int, int]) -> dict[int, int]:
    """Huffman code lengths for the categories, one pseudo-symbol of count 1 reserving the all-ones code.
    Ties break on the category, so the table depends on the counts only."""
    if len(freq) == 1:
        return {next(iter(freq)): 1}
    items = [(f, i, (s,)) for i, (s, f) in enumerate(sorted(freq.items()))] + [(1, -1, (-1,))]
    heapq.heapify(items)
    lengths = {s: 0 for s in list(freq) + [-1]}
    count = len(items)
    while len(items) > 1:
        f1, _, a = heapq.heappop(items)
        f2, _, b = heapq.heappop(items)
        for s in a + b:
            lengths[s] += 1
        count += 1
        heapq.heappush(items, (f1 + f2, count, a + b))
    del lengths[-1]
    return lengths


def code_lengths_for(freq: dict[int, int]) -> dict[int, int]:
    """Optimal code lengths for category counts `freq`, limited to 16 bits: where the Huffman code would
    be longer (very skewed counts), the rare counts are raised to a floor that doubles until it fits."""
    freq = {int(s): int(n) for s, n in freq.items() if n}
    floor = 0
    while True:
        lengths = _huffman_lengths({s: max(n, floor) for s, n in freq.items()})
        if max(lengths.values()) <= 16:
            return lengths
        floor = max(1, 2 * floor)


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


def _pack(values: np.ndarray, nbits: np.ndarray) -> bytes:
    """The bit string of `values` (uint64, each < 2^nbits, nbits 0..32) in order, MSB first, padded with
    1-bits to a byte and byte-stuffed (0x00 after every 0xFF)."""
    ends = np.cumsum(nbits)
    total = int(ends[-1])
    pad = -total % 8
    n_words = (total + pad) // 32 + 2
    starts = ends - nbits
    # place each symbol in the 64-bit window of words (start // 32, start // 32 + 1)
    shifted = values << (64 - (starts & 31) - nbits).astype(np.uint64)
    word = starts >> 5
    words = np.bincount(word, weights=(shifted >> np.uint64(32)).astype(np.float64), minlength=n_words)
    words[1:] += np.bincount(word, weights=(shifted & np.uint64(0xFFFFFFFF)).astype(np.float64),
                             minlength=n_words)[:-1]
    if pad:  # 1-bits up to the byte boundary
        at = total & 31
        words[total >> 5] += ((1 << pad) - 1) << (32 - at - pad)
    data = np.frombuffer(words.astype(">u4").tobytes()[: (total + pad) // 8], np.uint8)
    ff = np.flatnonzero(data == 0xFF)
    return np.insert(data, ff + 1, 0).tobytes() if ff.size else data.tobytes()


def encode(img: np.ndarray, *, precision: int, predictor: int = 1, restart_lines: int = 0,
           code_lengths: dict[int, int] | list[int] | None = None) -> bytes:
    """The JPEG Lossless stream of a 2-D image of values 0 .. 2^precision - 1. code_lengths: the Huffman
    code length of each difference category (a dict, or a list indexed by category) instead of the
    optimal table; it must give one to every category the image uses and leave room (no all-1 code),
    and may list unused ones. restart_lines: a restart marker every that many lines (0: none)."""
    img = np.asarray(img)
    if img.ndim != 2 or img.size == 0:
        raise ValueError(f"encode: `img` must be a non-empty 2-D array, got shape {img.shape}")
    if not 2 <= precision <= 16:
        raise ValueError(f"encode: `precision` must be in 2..16, got {precision}")
    if predictor not in range(1, 8):
        raise ValueError(f"encode: `predictor` must be in 1..7, got {predictor}")
    if restart_lines < 0:
        raise ValueError(f"encode: `restart_lines` must be >= 0, got {restart_lines}")
    x = img.astype(np.int32)
    if x.min() < 0 or x.max() >= 1 << precision:
        raise ValueError(f"encode: `img` values must lie in [0, {(1 << precision) - 1}] at precision {precision}, "
                         f"got [{x.min()}, {x.max()}]")
    rows, cols = x.shape
    diff = x - predict(x, predictor, precision, restart_lines)  # |diff| < 2^precision
    if precision == 16:  # modulo 2^16 into −32768 … 32767 (T.81 H.1.2.1)
        diff %= 65536
        diff[diff >= 32768] -= 65536
    cats = _BIT_LENGTH[np.abs(diff)]  # the category: bit length of |diff|, 16 for 32768 (no magnitude bits)
    counts = np.bincount(cats.ravel(), minlength=17)
    freq = {c: int(n) for c, n in enumerate(counts) if n}
    if code_lengths is None:
        lengths = code_lengths_for(freq)
    else:
        lengths = dict(enumerate(code_lengths)) if isinstance(code_lengths, list) else dict(code_lengths)
        if not set(freq) <= set(lengths):
            raise ValueError(f"encode: `code_lengths` has no code for categories {sorted(set(freq) - set(lengths))}")
        if not _kraft_ok(lengths):
            raise ValueError("encode: `code_lengths` must lie in 1..16 and leave room for the all-ones code")
    # canonical codes in order of (length, symbol)
    order = sorted(lengths.items(), key=lambda kv: (kv[1], kv[0]))
    head, n_bits = np.zeros(17, np.uint64), np.zeros(17, np.int64)  # per category: code << magnitude bits, bits
    code, prev = 0, 0
    for s, ln in order:
        code <<= ln - prev
        mag = s if s < 16 else 0  # category 16 (a difference of 32768) has no magnitude bits
        head[s], n_bits[s] = code << mag, ln + mag
        code += 1
        prev = ln
    bits_count = [0] * 16
    for _, ln in order:
        bits_count[ln - 1] += 1

    # one symbol per sample: the category's code, then its magnitude bits: diff for diff > 0, else
    # diff + 2^cat - 1, which is (diff - 1) in cat-bit two's complement
    extra = (diff - (diff < 0)) & _MAGNITUDE_MASK[cats]
    values = head[cats] | extra.astype(np.uint64)
    nbits = n_bits[cats]

    out = bytearray(b"\xFF\xD8")
    out += _segment(0xC4, bytes([0x00] + bits_count + [s for s, _ in order]))
    out += _segment(0xC3, bytes([precision]) + rows.to_bytes(2, "big") + cols.to_bytes(2, "big") + bytes([1, 1, 0x11, 0]))
    if restart_lines:
        out += _segment(0xDD, (restart_lines * cols).to_bytes(2, "big"))
    out += _segment(0xDA, bytes([1, 1, 0x00, predictor, 0, 0]))
    step = restart_lines or rows
    for k, y in enumerate(range(0, rows, step)):
        if y:
            out += bytes([0xFF, 0xD0 + ((k - 1) & 7)])
        out += _pack(values[y:y + step].ravel(), nbits[y:y + step].ravel())
    out += b"\xFF\xD9"
    return bytes(out)
