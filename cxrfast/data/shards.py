"""Image shards: the on-disk format `cxrfast prepare` writes, its crash-safe commit, and a reader.

Layout of an output folder OUT:

    OUT/manifest.json               format, size, dtype, options, source, counts, shard list, `complete`
    OUT/metadata.csv                one row per image, all shards (written when a run completes)
    OUT/bad_files.csv               path, reason: the sources skipped as broken (idem)
    OUT/not_images.csv              path, reason: the sources skipped as not images (DICOMDIR, SR, ...) (idem)
    OUT/stale_sources.csv           sources gone or changed since they were prepared (idem)
    OUT/shards/shard-000000.npy     uint8 or uint16 [n, size, size], n <= shard_size: np.load(mmap_mode="r") works
    OUT/shards/shard-000000.csv     the metadata rows of that shard's images  (the commit marker)
    OUT/shards/shard-000000.skipped.csv   the sources skipped while that shard was filled (kind: bad / not-image)

The metadata columns are `COLUMNS` (index = global row, shard, offset in the shard, the source path as
found in SRC, the frame of the file, format, DICOM UIDs, patient id, study date, view position, modality, the
original rows and columns, the source's size and mtime when it was read), then the extra columns of an
index CSV.

Commit protocol (why a kill -9 at any moment loses and duplicates nothing): a shard is written under
a temporary name (``.shard-K.npy.tmp``, its two CSV parts likewise), flushed and fsync'ed, then renamed
with os.replace in the order .npy, .skipped.csv, (directory fsync), .csv; the rename of ``shard-K.csv``
is the commit. A
source is done when it is a row of a committed ``shard-K.csv`` or ``shard-K.skipped.csv``. On restart
`scan(..., repair=True)` deletes the temporary files and any ``shard-K.npy`` / ``.skipped.csv`` whose
``shard-K.csv`` is missing (a commit torn between its renames), so the next run rewrites that shard
from its sources. Shards are committed in source order, one writer at a time (a lock file), so the
committed sources are always a prefix of the run's source list and a resumed run produces the same
shards as an uninterrupted one. metadata.csv, bad_files.csv and the manifest's counts are derived from
the parts at the end of a run; the parts are the truth.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["COLUMNS", "BAD_COLUMNS", "SKIPPED_COLUMNS", "STALE_COLUMNS", "FORMAT", "FORMAT_VERSION", "DTYPES", "Part",
           "ShardedImages", "ShardFormatError", "scan", "read_manifest"]

FORMAT = "cxrfast-shards"
FORMAT_VERSION = 2  # 2: frame, source size / mtime, skipped kinds, uint16 shards
READABLE_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
METADATA = "metadata.csv"
BAD_FILES = "bad_files.csv"
NOT_IMAGES = "not_images.csv"
STALE = "stale_sources.csv"
SHARD_DIR = "shards"
DTYPES = ("uint8", "uint16")
DTYPE = np.dtype(np.uint8)  # version 1's only dtype, and the default

COLUMNS = ("index", "shard", "offset", "path", "frame", "format", "sop_instance_uid", "study_instance_uid",
           "series_instance_uid", "patient_id", "study_date", "view_position", "modality", "rows", "columns",
           "source_bytes", "source_mtime_ns")
INT_COLUMNS = ("index", "shard", "offset", "frame", "rows", "columns", "source_bytes", "source_mtime_ns")
BAD_COLUMNS = ("path", "reason")  # bad_files.csv and not_images.csv
SKIPPED_COLUMNS = ("path", "kind", "reason", "source_bytes", "source_mtime_ns")  # shard-K.skipped.csv
SKIPPED_KINDS = ("bad", "not-image")
STALE_COLUMNS = ("path", "state", "prepared_bytes", "prepared_mtime_ns", "bytes", "mtime_ns")

_PART = re.compile(r"shard-(\d+)\.(npy|csv|skipped\.csv)$")


class ShardFormatError(ValueError):
    """An output folder that is not (or no longer) a consistent set of shards; the message says what."""


def shard_name(k: int) -> str:
    return f"shard-{k:06d}"


@dataclass
class Part:
    """One committed shard: its number, its image rows and the sources skipped with it (`skipped`, each with
    its kind: "bad" or "not-image")."""

    k: int
    rows: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.rows)

    @property
    def bad(self) -> list[dict]:
        return [s for s in self.skipped if s.get("kind", "bad") == "bad"]

    @property
    def not_images(self) -> list[dict]:
        return [s for s in self.skipped if s.get("kind") == "not-image"]


# --------------------------------------------------------------------------------------------------
# small atomic writers


def fsync_dir(path) -> None:
    """Make renames in `path` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# File names are bytes on POSIX: one that is not UTF-8 reaches Python as a str with surrogate escapes
# (os.fsdecode). The CSVs keep such a name's own bytes (surrogateescape both ways), so it round-trips to
# the same str, and a rerun recognises the source as done; valid UTF-8 is unaffected.
CSV_ERRORS = "surrogateescape"


def write_csv(path, header, rows, *, sync: bool = True) -> None:
    """rows (dicts keyed by header) to `path` as UTF-8 CSV (see CSV_ERRORS), flushed and optionally fsync'ed."""
    with open(path, "w", newline="", encoding="utf-8", errors=CSV_ERRORS) as f:
        w = csv.DictWriter(f, fieldnames=list(header), extrasaction="raise")
        w.writeheader()
        w.writerows(rows)
        f.flush()
        if sync:
            os.fsync(f.fileno())


def replace_csv(path, header, rows) -> None:
    """Write a whole CSV under a temporary name, then rename it over `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    write_csv(tmp, header, rows)
    os.replace(tmp, path)


def replace_json(path, doc: dict) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_csv(path) -> tuple[list[str], list[dict]]:
    with open(path, newline="", encoding="utf-8", errors=CSV_ERRORS) as f:
        r = csv.DictReader(f)
        rows = list(r)
        return list(r.fieldnames or []), rows


def read_manifest(root) -> dict:
    path = Path(root) / MANIFEST
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ShardFormatError(f"{path}: no manifest: not an output of `cxrfast prepare`") from None
    except (OSError, ValueError) as exc:
        raise ShardFormatError(f"{path}: cannot read the manifest: {exc}") from None
    if doc.get("format") != FORMAT:
        raise ShardFormatError(f"{path}: format {doc.get('format')!r}, expected {FORMAT!r}")
    if doc.get("format_version") not in READABLE_VERSIONS:
        raise ShardFormatError(f"{path}: format_version {doc.get('format_version')!r}; this cxrfast reads "
                               f"versions {', '.join(map(str, READABLE_VERSIONS))}")
    return doc


# --------------------------------------------------------------------------------------------------
# writing one shard


class ShardWriter:
    """Shard K of [n, size, size] images (uint8 or uint16), appended one at a time to ``.shard-K.npy.tmp``.

    The .npy header is written first for `capacity` images and rewritten with the final count on
    `finish`: numpy pads the header so its length does not depend on the first dimension, so the data
    never moves."""

    def __init__(self, root, k: int, size: int, capacity: int, dtype=DTYPE):
        self.dir, self.k, self.size, self.dtype = Path(root) / SHARD_DIR, k, size, np.dtype(dtype)
        self.tmp = self.dir / f".{shard_name(k)}.npy.tmp"
        self.f = open(self.tmp, "wb")
        self.header_len = self._header(capacity)
        self.n = 0

    def _header(self, n: int) -> int:
        self.f.seek(0)
        np.lib.format.write_array_header_1_0(
            self.f, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                     "shape": (n, self.size, self.size)})
        return self.f.tell()

    def append(self, image: np.ndarray) -> int:
        """Write one image; returns its offset in the shard."""
        if image.shape != (self.size, self.size) or image.dtype != self.dtype:
            raise ValueError(f"shard image: expected {self.dtype} [{self.size}, {self.size}], got {image.dtype} "
                             f"{list(image.shape)}")
        if image.dtype.byteorder == ">":
            image = image.astype(image.dtype.newbyteorder("<"))
        self.f.write(np.ascontiguousarray(image).data)
        self.n += 1
        return self.n - 1

    def finish(self) -> Path:
        end = self.f.tell()
        if self._header(self.n) != self.header_len:  # cannot happen with numpy's growth-axis padding
            raise RuntimeError("npy header length changed with the image count")
        self.f.seek(end)
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        return self.tmp

    def discard(self) -> None:
        if not self.f.closed:
            self.f.close()
        self.tmp.unlink(missing_ok=True)


def commit(root, k: int, writer: ShardWriter | None, rows: list[dict], skipped: list[dict], columns,
           crash_at=None) -> None:
    """Commit shard K: the images in `writer` (None when it has none), their metadata `rows` and the
    sources `skipped` since the previous commit (SKIPPED_COLUMNS). See the module docstring for the order of
    renames.
    `crash_at(stage, k)` is the test hook that simulates a kill between the steps."""
    d = Path(root) / SHARD_DIR
    name = shard_name(k)
    npy_tmp = writer.finish() if writer is not None else None
    bad_tmp, csv_tmp = d / f".{name}.skipped.csv.tmp", d / f".{name}.csv.tmp"
    write_csv(bad_tmp, SKIPPED_COLUMNS, skipped)
    write_csv(csv_tmp, columns, rows)
    if crash_at:
        crash_at("tmp", k)
    if npy_tmp is not None:
        os.replace(npy_tmp, d / f"{name}.npy")
    if crash_at:
        crash_at("npy", k)
    os.replace(bad_tmp, d / f"{name}.skipped.csv")
    fsync_dir(d)  # the parts' renames reach the disk before the marker's can (a power cut, not only kill -9)
    os.replace(csv_tmp, d / f"{name}.csv")  # the commit
    fsync_dir(d)


# --------------------------------------------------------------------------------------------------
# reading what is committed


def _npy_header(path: Path):
    """(shape, fortran_order, dtype) from a .npy header, without reading the data."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(f)
        if version == (2, 0):
            return np.lib.format.read_array_header_2_0(f)
    a = np.load(path, mmap_mode="r")
    return a.shape, bool(a.flags.f_contiguous and not a.flags.c_contiguous), a.dtype


def scan(root, size: int, *, repair: bool = False, dtype=DTYPE) -> list[Part]:
    """The committed shards of `root`, in order. With repair=True (the writer, holding the lock) the
    debris of an interrupted commit is deleted; without, it is ignored. Raises ShardFormatError when
    committed files contradict each other (a missing or mis-shaped .npy, a gap in the numbering)."""
    d = Path(root) / SHARD_DIR
    want = np.dtype(dtype)
    if not d.is_dir():
        return []
    markers, others = {}, []
    for entry in os.scandir(d):
        if entry.name.startswith(".") and entry.name.endswith(".tmp"):
            if repair:
                os.unlink(entry.path)
            continue
        m = _PART.fullmatch(entry.name)
        if m is None:
            continue
        if m.group(2) == "csv":
            markers[int(m.group(1))] = entry.path
        else:
            others.append((int(m.group(1)), entry.path))
    for k, path in others:
        if k not in markers and repair:  # torn commit: renamed before its marker was
            os.unlink(path)
    if sorted(markers) != list(range(len(markers))):
        missing = sorted(set(range(max(markers) + 1)) - set(markers))
        raise ShardFormatError(f"{d}: committed shards are not numbered 0..{max(markers)}: missing "
                               f"{', '.join(map(shard_name, missing[:5]))}")
    parts = []
    for k in range(len(markers)):
        name = shard_name(k)
        _, rows = read_csv(markers[k])
        bad_path = d / f"{name}.skipped.csv"
        if not bad_path.exists():
            raise ShardFormatError(f"{bad_path}: missing, but {name}.csv is committed")
        _, bad = read_csv(bad_path)
        if rows:
            npy = d / f"{name}.npy"
            try:
                shape, fortran, stored = _npy_header(npy)
            except (OSError, ValueError) as exc:
                raise ShardFormatError(f"{npy}: committed but unreadable: {exc}") from None
            expected = (len(rows), size, size)
            if tuple(shape) != expected or fortran or stored != want:
                raise ShardFormatError(f"{npy}: holds {stored} {list(shape)}, its {name}.csv lists "
                                       f"{len(rows)} images of {size}x{size} {want}")
            if npy.stat().st_size < 128 + len(rows) * size * size * want.itemsize:
                raise ShardFormatError(f"{npy}: shorter than its {len(rows)} images")
        parts.append(Part(k, rows, bad))
    return parts


def _typed(row: dict) -> dict:
    out = dict(row)
    for c in INT_COLUMNS:
        v = out.get(c)
        if v not in (None, ""):
            out[c] = int(v)
    return out


class ShardedImages:
    """The images and metadata of a `cxrfast prepare` output, read through memory maps.

        ds = ShardedImages("out/")
        len(ds)                    # images
        image, row = ds[i]         # uint8 (or uint16) [size, size] (a read-only memmap view), metadata dict
        ds.metadata[i]["sop_instance_uid"]
        ds.shard(0)                # the whole shard as a read-only memmap [n, size, size]

    Rows are in the order `prepare` wrote them (row i has ``index == i``); integer columns (index,
    shard, offset, frame, rows, columns, source_bytes, source_mtime_ns) are ints, the others strings.
    `bad_files` and `not_images` list the skipped sources (path, reason). An output whose run has not finished
    raises ShardFormatError unless allow_partial=True (then the committed shards are read). Memory maps
    are opened on first use in each process, so the object can be handed to DataLoader workers."""

    def __init__(self, root, *, allow_partial: bool = False):
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        if not self.manifest.get("complete") and not allow_partial:
            raise ShardFormatError(f"{self.root}: `cxrfast prepare` has not finished writing it (rerun the "
                                   "same command to resume it), or pass allow_partial=True")
        self.size = int(self.manifest["size"])
        self.dtype = np.dtype(self.manifest.get("dtype", "uint8"))
        parts = scan(self.root, self.size, dtype=self.dtype)
        self.parts = [p for p in parts if p.count]
        self.metadata = [_typed(r) for p in self.parts for r in p.rows]
        self.columns = list(self.metadata[0]) if self.metadata else list(self.manifest.get("columns", COLUMNS))
        self.bad_files = [{"path": b["path"], "reason": b["reason"]} for p in parts for b in p.bad]
        self.not_images = [{"path": b["path"], "reason": b["reason"]} for p in parts for b in p.not_images]
        for i, row in enumerate(self.metadata):
            if row["index"] != i:
                raise ShardFormatError(f"{self.root}: row {i} has index {row['index']}")
        self._maps: dict = {}

    def __len__(self) -> int:
        return len(self.metadata)

    def shard(self, k: int) -> np.ndarray:
        m = self._maps.get(k)
        if m is None:
            m = self._maps[k] = np.load(self.root / SHARD_DIR / f"{shard_name(k)}.npy", mmap_mode="r")
        return m

    def __getitem__(self, i: int):
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
            raise TypeError(f"ShardedImages index must be an int, got {type(i).__name__}")
        n = len(self.metadata)
        if not -n <= i < n:
            raise IndexError(f"image {i} out of range for {n} images")
        row = self.metadata[i]
        return self.shard(row["shard"])[row["offset"]], row

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_maps"] = {}
        return state

    def __repr__(self) -> str:
        return (f"ShardedImages({str(self.root)!r}: {len(self)} images of {self.size}x{self.size} {self.dtype} in "
                f"{len(self.parts)} shards)")
