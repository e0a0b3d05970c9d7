"""`cxrfast prepare`: radiographs (DICOM, PNG, JPEG) into memory-mappable uint8 / uint16 shards and a metadata table.

    from cxrfast.data import ShardedImages
    from cxrfast.data.prepare import prepare

    summary = prepare("mimic-cxr/files", "out/", size=512, workers=16)
    print("\\n".join(summary.lines()))
    image, row = ShardedImages("out/")[0]

Sources (`find_sources`): SRC is either
  - a folder, searched recursively: *.dcm, *.dicom, *.png, *.jpg, *.jpeg (any case), and any other file
    that carries the DICOM preamble ("DICM" at byte 128: extensionless or UID-named DICOM files). The
    list is sorted by path; the path relative to SRC is the image's `path` in the metadata. An OUT
    inside SRC is not searched.
  - an index CSV (a text file): a `path` column (relative to the CSV's folder, or absolute) and any other
    columns, which are carried into the metadata table (a name that clashes with a built-in column gets a
    `csv_` prefix). Rows are taken in file order; the same path twice is an error.
  - one image file (a DICOM, PNG or JPEG file, by suffix or content; any other file that is not text): a
    one-file dataset.
`include` / `exclude` (shell patterns, fnmatch, on the `path` relative to SRC or as written in the index)
keep the sources that match any include pattern (all when none is given) and none of the exclude ones.

Each image is `cxrfast.io.load_radiograph(file, size=SIZE, fit=..., voi=..., window=..., percentiles=...,
invert=..., resample=..., dtype=..., frame=...)` (dtype uint8 or uint16), so the shards hold exactly what
that function returns; the manifest records the options. frame="all" writes every frame of a multi-frame
file (the metadata's `frame` column says which). A file the loader refuses (DicomError / ImageError /
OSError: unreadable, not DICOM, unsupported syntax, truncated) is skipped and listed with the reason in
OUT/bad_files.csv; a DICOM file without pixel data (a DICOMDIR, an RT Plan, a Structured Report:
NotAnImageError) is skipped as "not an image" and listed in OUT/not_images.csv; the run goes on. A worker
process that dies on a file (a crash in a decoder) has
the same effect for that file, and is replaced, and so does any other exception the loader raises on
a file (the reason names its type: a loader bug, to report). MemoryError and a loader that returns
the wrong shape stop the run (what was committed stays; a rerun resumes).

Workers: `workers` processes (0 = load in this process), started by multiprocessing's "forkserver"
(torch is loaded here and fork is unsafe with its threads; the fork server is a fresh process that
imports the loader once, then forks the workers, so N workers cost one torch import, not N) or
"spawn" where there is no fork server. Each holds at most two files in flight; results are written in
source order, so the output does not depend on the worker count. A script that calls prepare() with
workers > 0 needs the usual ``if __name__ == "__main__":`` guard of these start methods.

Resuming: see cxrfast.data.shards for the commit protocol. A rerun with the same SRC and settings skips
every source already committed (as an image or as a skipped file) and continues; a rerun whose settings
differ from OUT's manifest (size, dtype, shard size, options, source, columns) is refused. A lock file
(OUT/.lock, flock) keeps two runs from writing one OUT. Each source's size and mtime are recorded when it is
read: a rerun reports the committed sources that are gone from SRC or changed since (by size or mtime), keeps
their images as they were prepared (shards are append-only; prepare into a new folder to redo them), lists
them in OUT/stale_sources.csv and counts them in the manifest ("stale").

Rates: the progress bar and the summary count files (sources: images, bad files and files that are not
images) per second of the whole run, from the call (source discovery and worker start-up included).

Test hook: CXRFAST_PREPARE_TEST_HOOK (comma-separated) is read by the tests only. ``delay=S`` makes each
load sleep S seconds; ``die=NAME`` makes a worker process exit when it is handed the file NAME (a decoder
crash); ``crash=tmp:K`` / ``crash=npy:K`` makes the writing process os._exit(137) when
shard K's temporary files are written / after its .npy was renamed but before its commit.
"""

from __future__ import annotations

import csv
import datetime
import fnmatch
import os
import sys
import time
import traceback
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cxrfast.data import shards

__all__ = ["prepare", "find_sources", "PrepareError", "Source", "Sources", "Summary", "DEFAULT_SHARD_SIZE",
           "DEFAULT_SIZE", "DEFAULT_OPTIONS"]

DEFAULT_SIZE = 512
DEFAULT_SHARD_SIZE = 1024
SUFFIXES = {".dcm": "dicom", ".dicom": "dicom", ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}
FITS = ("pad", "crop")
# load_radiograph's options that prepare passes on (and records in the manifest), with their defaults
DEFAULT_OPTIONS = {"fit": "pad", "voi": "auto", "window": None, "percentiles": [0.5, 99.5], "invert": "auto",
                   "resample": "area", "frame": 0, "include": [], "exclude": []}
TEST_HOOK = "CXRFAST_PREPARE_TEST_HOOK"
IN_FLIGHT = 2  # files per worker: the next one is queued while a result travels back
META_COLUMNS = ("format", "sop_instance_uid", "study_instance_uid", "series_instance_uid", "patient_id",
                "study_date", "view_position", "modality", "rows", "columns")


class PrepareError(ValueError):
    """A run that cannot start: bad arguments, no sources, an OUT prepared with other settings, a lock."""


# --------------------------------------------------------------------------------------------------
# sources


@dataclass(frozen=True)
class Source:
    key: str  # the `path` in the metadata: relative to SRC (folder), or as written in the index CSV
    file: str  # what is opened
    extra: tuple = ()  # the index CSV's other columns
    first_frame: int = 0  # frame="all", resumed: the frames before this one are committed


@dataclass
class Sources:
    kind: str  # "folder" | "index" | "file"
    root: str  # absolute path of the folder or of the CSV
    items: list = field(default_factory=list)
    extra_columns: list = field(default_factory=list)


def has_dicom_preamble(path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _unlistable(exc: OSError):
    # os.walk skips a folder it cannot list unless told: its images would vanish without a word.
    raise PrepareError(f"{exc.filename}: cannot list the folder: {exc.strerror or exc}; no image under it would "
                       "be read (fix its permissions, or list the wanted files in an index CSV)")


def _walk(root: Path, exclude: Path | None) -> list[Source]:
    items = []
    excluded = os.path.realpath(exclude) if exclude is not None else None
    for dirpath, dirnames, filenames in os.walk(root, onerror=_unlistable):
        if excluded is not None:
            dirnames[:] = [d for d in dirnames if os.path.realpath(os.path.join(dirpath, d)) != excluded]
        for name in filenames:
            full = os.path.join(dirpath, name)
            if os.path.splitext(name)[1].lower() in SUFFIXES or has_dicom_preamble(full):
                items.append(Source(Path(os.path.relpath(full, root)).as_posix(), full))
    items.sort(key=lambda s: s.key)
    return items


def _read_index(path: Path) -> tuple[list[Source], list[str]]:
    try:
        # paths that are not UTF-8 keep their bytes (surrogate escapes), so they open as written
        f = open(path, newline="", encoding="utf-8-sig", errors=shards.CSV_ERRORS)
    except OSError as exc:
        raise PrepareError(f"{path}: cannot read the index CSV: {exc.strerror or exc}") from None
    with f:
        try:
            return _index_rows(path, csv.DictReader(f))
        except csv.Error as exc:
            raise PrepareError(f"{path}: not a readable CSV: {exc}") from None


def _index_rows(path: Path, reader) -> tuple[list[Source], list[str]]:
    fields = reader.fieldnames or []
    if "path" not in fields:
        raise PrepareError(f"{path}: the index CSV has no `path` column (columns: {', '.join(fields) or 'none'})")
    extras = [c for c in fields if c != "path"]
    base = path.parent
    items, seen = [], {}
    for row in reader:
        p = (row.get("path") or "").strip()
        if not p:
            raise PrepareError(f"{path}: line {reader.line_num}: empty `path`")
        resolved = p if os.path.isabs(p) else str(base / p)
        key = os.path.normpath(resolved)  # `a.dcm` and `./a.dcm` are one file: it would be written twice
        if key in seen:
            raise PrepareError(f"{path}: line {reader.line_num}: {p} is listed twice (first on line {seen[key]})")
        seen[key] = reader.line_num
        items.append(Source(p, resolved, tuple(row.get(c) or "" for c in extras)))
    names = []
    for c in extras:  # carried columns, renamed where they would shadow a built-in one
        name = c if c not in shards.COLUMNS else f"csv_{c}"
        while name in shards.COLUMNS or name in names:
            name = f"csv_{name}"
        names.append(name)
    return items, names


_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")


def _is_text(path: Path) -> bool:
    """A file whose first 64 KiB hold no NUL byte (text in any 8-bit encoding: the names in an index CSV
    need not be UTF-8)."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    return b"\0" not in head


def _image_file(path: Path) -> bool:
    """A DICOM, PNG or JPEG file by suffix or by content (DICOM preamble, PNG / JPEG signature)."""
    if path.suffix.lower() in SUFFIXES or has_dicom_preamble(path):
        return True
    with open(path, "rb") as f:
        head = f.read(8)
    return head.startswith(_IMAGE_MAGIC) or head[:4] == b"DICM"


def _filtered(items: list, include, exclude) -> list:
    def match(key, patterns):
        return any(fnmatch.fnmatchcase(key, p) for p in patterns)

    return [s for s in items if (not include or match(s.key, include)) and not match(s.key, exclude)]


def find_sources(src, *, exclude=None, include_patterns=(), exclude_patterns=()) -> Sources:
    """The images `prepare` would read from `src` (a folder, an index CSV or one image file), in order.
    exclude: a folder not to search (OUT); include_patterns / exclude_patterns: see the module docstring."""
    src = Path(src)
    if src.is_dir():
        found = Sources("folder", os.path.abspath(src), _walk(src, Path(exclude) if exclude else None))
    elif src.is_file():
        try:
            image, text = _image_file(src), _is_text(src)
        except OSError as exc:
            raise PrepareError(f"{src}: cannot read it: {exc.strerror or exc}") from None
        if image or not text:
            if not image and src.suffix.lower() in (".csv", ".tsv", ".txt"):
                raise PrepareError(f"{src}: not a text file, so not an index CSV")
            if not image and not _looks_like_dicom(src):
                raise PrepareError(f"{src}: neither a folder, an index CSV (text) nor a DICOM, PNG or JPEG file")
            found = Sources("file", os.path.abspath(src), [Source(src.name, str(src))])
        else:
            items, extras = _read_index(src)
            found = Sources("index", os.path.abspath(src), items, extras)
    else:
        raise PrepareError(f"{src}: no such folder, index CSV or image file")
    found.items = _filtered(found.items, include_patterns, exclude_patterns)
    return found


def _looks_like_dicom(path: Path) -> bool:
    """A binary file without preamble or suffix that the DICOM parser takes for a dataset (a bare dataset)."""
    from cxrfast import _ext

    if not _ext.load():
        return False
    from cxrfast import _C

    with open(path, "rb") as f:
        head = f.read(1 << 16)
    try:
        _C.dicom_read(head, -1, decode=False)
    except ValueError as exc:  # DicomParseError: "not a DICOM file" only when the start is implausible
        return not str(exc).startswith("not a DICOM file")
    except Exception:
        return True
    return True


# --------------------------------------------------------------------------------------------------
# loading one image (in a worker or in this process)


def _hook() -> dict:
    spec = os.environ.get(TEST_HOOK, "")
    return dict(item.partition("=")[::2] for item in spec.split(",") if item)


def _reason(exc: BaseException, file: str) -> str:
    msg = str(exc) if not isinstance(exc, OSError) or not exc.strerror else exc.strerror
    for prefix in (f"{file}: ", f"{os.path.abspath(file)}: "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    return msg or type(exc).__name__


def _loader_kwargs(opts: dict) -> dict:
    """load_radiograph's keyword arguments for the options of a run."""
    window = opts.get("window")
    return {"size": opts["size"], "fit": opts["fit"], "voi": opts["voi"],
            "window": tuple(window) if window is not None else None, "percentiles": tuple(opts["percentiles"]),
            "invert": opts["invert"], "resample": opts["resample"], "dtype": opts["dtype"]}


def _load(file: str, opts: dict, delay: float = 0.0, first_frame: int = 0):
    """("ok", [image, ...], [meta, ...]) (one per frame written) | ("bad", None, reason) |
    ("not-image", None, reason) | ("error", None, traceback)."""
    from cxrfast.io import NotAnImageError, load_radiograph

    if delay:
        time.sleep(delay)
    kwargs = _loader_kwargs(opts)
    every = opts["frame"] == "all"
    try:
        first = load_radiograph(file, frame=0 if every else opts["frame"], **kwargs)
        loaded = [(0 if every else opts["frame"], first)]
        if every:
            n = int(first.meta.get("number_of_frames") or 1)
            loaded += [(f, load_radiograph(file, frame=f, **kwargs)) for f in range(max(first_frame, 1), n)]
            loaded = [(f, r) for f, r in loaded if f >= first_frame]
    except NotAnImageError as exc:
        return "not-image", None, _reason(exc, file)
    except (ValueError, OSError) as exc:  # DicomError and ImageError are ValueErrors
        return "bad", None, _reason(exc, file)
    except MemoryError:  # the machine, not the file: stop (a rerun resumes)
        return "error", None, traceback.format_exc()
    except Exception as exc:  # a loader bug met on one file: skip it (as a decoder crash), say what it was
        return "bad", None, f"unexpected {type(exc).__name__} in cxrfast.io.load_radiograph: {_reason(exc, file)}"
    images, metas = [], []
    size, dtype = opts["size"], opts["dtype"]
    for frame, res in loaded:
        image = res.image
        if getattr(image, "shape", None) != (size, size) or str(getattr(image, "dtype", "")) != dtype:
            return "error", None, (f"load_radiograph returned {getattr(image, 'dtype', type(image).__name__)} "
                                   f"{list(getattr(image, 'shape', []))}, expected {dtype} [{size}, {size}]")
        images.append(image)
        metas.append({"frame": frame, **{k: res.meta.get(k, "") for k in META_COLUMNS}})
    return "ok", images, metas


def _worker_main(conn, opts: dict) -> None:
    """A worker: (i, file) in, (i, result) out, in order, until the pipe closes or None arrives."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    import torch

    torch.set_num_threads(1)  # one image per process: no nested thread pools
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass
    from cxrfast import _ext
    from cxrfast.io import load_radiograph  # fail here, before "ready", if the loader cannot be imported

    del load_radiograph
    if not _ext.load():  # else every file would be reported bad
        raise RuntimeError(f"cxrfast prepare needs the compiled extension: {_ext.unavailable_reason()}")

    hook = opts.get("hook", {})
    delay = float(hook.get("delay") or 0)
    try:
        conn.send(("ready", None))
        while True:
            msg = conn.recv()
            if msg is None:
                return
            i, file, first_frame = msg
            if hook.get("die") and os.path.basename(file) == hook["die"]:
                os._exit(139)  # test hook: a decoder crash on this file
            conn.send((i, _load(file, opts, delay, first_frame)))
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # the parent is gone


class _Workers:
    """`n` worker processes (forkserver, else spawn) and an ordered map of `_load` over files."""

    def __init__(self, n: int, opts: dict):
        import multiprocessing

        if "forkserver" in multiprocessing.get_all_start_methods():
            self.ctx = multiprocessing.get_context("forkserver")
            self.ctx.set_forkserver_preload(["cxrfast.data.prepare", "cxrfast.io"])
        else:
            self.ctx = multiprocessing.get_context("spawn")
        self.opts = opts
        self.workers = []
        for _ in range(n):
            self._start()

    def _start(self):
        parent, child = self.ctx.Pipe(duplex=True)
        proc = self.ctx.Process(target=_worker_main, args=(child, self.opts), daemon=True,
                                name="cxrfast-prepare-worker")
        proc.start()
        child.close()  # only the worker holds its end: its death reads as EOF here
        w = {"proc": proc, "conn": parent, "tasks": deque(), "ready": False}
        self.workers.append(w)
        return w

    def map(self, files: list):
        """files: (file, first_frame) pairs. Yields (i, result) for i = 0, 1, ... in order."""
        from multiprocessing.connection import wait

        retry: deque = deque()
        next_task, next_out, results = 0, 0, {}
        window = IN_FLIGHT * len(self.workers) + 8  # results held back for order, at most
        while next_out < len(files):
            for w in self.workers:
                while len(w["tasks"]) < IN_FLIGHT and (retry or (next_task < len(files)
                                                               and next_task - next_out < window)):
                    if retry:
                        i = retry.popleft()
                    else:
                        i, next_task = next_task, next_task + 1
                    w["tasks"].append(i)
                    try:
                        w["conn"].send((i, *files[i]))
                    except OSError:  # it died: wait() reports its end of the pipe closed, see _died
                        break
            busy = [w["conn"] for w in self.workers if w["tasks"] or not w["ready"]]
            assert busy, "nothing in flight but results missing"  # cannot happen: see the window
            for conn in wait(busy):
                w = next(w for w in self.workers if w["conn"] is conn)
                try:
                    i, res = conn.recv()
                except (EOFError, OSError):
                    self._died(w, results, retry)
                    continue
                if i == "ready":
                    w["ready"] = True
                    continue
                w["tasks"].popleft()
                results[i] = res
            while next_out in results:
                yield next_out, results.pop(next_out)
                next_out += 1

    def _died(self, w, results, retry):
        """A worker is gone: the file it was reading is bad, the ones queued behind it go to another."""
        w["proc"].join(timeout=5)
        code = w["proc"].exitcode
        w["conn"].close()
        self.workers.remove(w)
        if not w["ready"]:
            self.close()
            raise RuntimeError(f"a cxrfast prepare worker process failed to start (exit code {code}); "
                               "its error is printed above")
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        if w["tasks"]:
            culprit = w["tasks"].popleft()
            results[culprit] = ("bad", None, f"the reading process died on this file ({how})")
            retry.extend(w["tasks"])
        self._start()

    def close(self):
        for w in self.workers:
            try:
                w["conn"].send(None)
            except OSError:
                pass
        for w in self.workers:
            w["proc"].join(timeout=2)
            if w["proc"].is_alive():
                w["proc"].kill()
                w["proc"].join()
            w["conn"].close()
        self.workers = []


def _ordered_results(todo: list[Source], workers: int, opts: dict):
    """(source, result) in source order, loaded by `workers` processes (0: here)."""
    if workers == 0:
        delay = float(opts.get("hook", {}).get("delay") or 0)
        for s in todo:
            yield s, _load(s.file, opts, delay, s.first_frame)
        return
    pool = _Workers(min(workers, len(todo)), opts)
    try:
        for i, res in pool.map([(s.file, s.first_frame) for s in todo]):
            yield todo[i], res
    finally:
        pool.close()


# --------------------------------------------------------------------------------------------------
# the run


@dataclass
class Summary:
    out: Path
    size: int
    count: int  # images in OUT
    skipped: int  # bad files listed in OUT/bad_files.csv
    shards: int
    written: int  # images written by this run
    skipped_now: int  # bad files met by this run
    seconds: float  # this run, from the call to the summary
    workers: int
    first_s: float | None = None  # when the first file's result arrived (worker start-up before it)
    last_s: float | None = None  # when the last one did
    not_images: int = 0  # files that are not images (no pixel data), listed in OUT/not_images.csv
    not_images_now: int = 0
    files_now: int = 0  # sources read by this run (written, bad or not images)
    gone: list = field(default_factory=list)  # committed sources no longer in SRC
    changed: list = field(default_factory=list)  # committed sources whose size or mtime changed since
    dtype: str = "uint8"

    @property
    def files_per_s(self) -> float:
        """The rate: sources read by this run (images, bad files, files that are not images) per second of
        the whole run, start-up included. The progress bar shows the same figure."""
        return self.files_now / self.seconds if self.seconds > 0 else 0.0

    @property
    def steady_images_per_s(self) -> float | None:
        """Files per second between the first result and the last: the rate once started."""
        n = self.files_now
        if n < 2 or self.first_s is None or self.last_s <= self.first_s:
            return None
        return (n - 1) / (self.last_s - self.first_s)

    @property
    def images_per_s(self) -> float:
        """Images written per second of the whole run (≠ files_per_s with bad files or frame="all")."""
        return self.written / self.seconds if self.seconds > 0 else 0.0

    @property
    def resumed(self) -> int:
        return self.count - self.written

    def lines(self) -> list[str]:
        first = f"{self.count} images written"
        if self.skipped:
            first += f", {_count(self.skipped, 'bad file')} skipped (see {self.out / shards.BAD_FILES})"
        if self.not_images:
            what = "files that are not images" if self.not_images != 1 else "file that is not an image"
            first += f", {self.not_images} {what} skipped (see {self.out / shards.NOT_IMAGES})"
        before_bad, before_not = self.skipped - self.skipped_now, self.not_images - self.not_images_now
        earlier = f"{self.resumed} images and {before_bad + before_not} skipped were already done"
        if not self.files_now:
            run = f"nothing left to do: {earlier}"
        else:
            run = f"this run: {self.written} images, {self.skipped_now + self.not_images_now} skipped; {earlier}" \
                if self.resumed or before_bad or before_not else "this run"
            how = f"{self.workers} worker{'s' if self.workers != 1 else ''}" if self.workers else "in this process"
            start = f" (first result after {self.first_s:.1f} s)" if self.first_s is not None else ""
            run += f" -- {self.seconds:.1f} s{start}, {self.files_per_s:.1f} files/s, {how}"
        return [first, *self.stale_lines(), run,
                f"{self.out}: {_count(self.shards, 'shard')} of {self.size}x{self.size} {self.dtype} in "
                f"{shards.SHARD_DIR}/, metadata in {shards.METADATA}, manifest.json"]

    def stale_lines(self) -> list[str]:
        """What a rerun found gone from SRC or changed, and what it does about them."""
        out = []
        for paths, what in ((self.gone, "gone"), (self.changed, "changed")):
            if not paths:
                continue
            shown = ", ".join(paths[:3]) + (", ..." if len(paths) > 3 else "")
            verb = "is" if len(paths) == 1 and what == "gone" else ("are" if what == "gone" else "")
            since = "it was" if len(paths) == 1 else "they were"
            out.append(f"{_count(len(paths), 'source')} {verb + ' ' if verb else ''}{what} since {since} prepared "
                       f"({shown})")
        if out:
            out.append(f"  their images are kept as prepared (sources are matched by path; prepare into a new folder "
                       f"to redo them); listed in {self.out / shards.STALE}")
        return out


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


IDENTITY = ("size", "dtype", "shard_size", "options", "source", "columns")


def _open_manifest(out: Path, identity: dict) -> dict:
    """OUT's manifest, created for a new OUT; refused when OUT was prepared with other settings."""
    if (out / shards.MANIFEST).exists():
        doc = shards.read_manifest(out)
        if doc.get("format_version") != shards.FORMAT_VERSION:
            raise PrepareError(f"{out} was written by an older cxrfast (shard format version "
                               f"{doc.get('format_version')}): ShardedImages reads it, but a run cannot resume it; "
                               "write to another folder")
        diffs = [f"{k}: {out} has {doc.get(k)!r}, this run asks for {identity[k]!r}"
                 for k in IDENTITY if doc.get(k) != identity[k]]
        if diffs:
            raise PrepareError(f"{out} was prepared with other settings, refusing to mix them:\n  "
                               + "\n  ".join(diffs) + "\nrerun with the same arguments to resume it, or "
                               "write to another (or an emptied) folder")
        return doc
    doc = {"format": shards.FORMAT, "format_version": shards.FORMAT_VERSION, "cxrfast": _version(), **identity,
           "complete": False, "count": 0, "skipped": 0, "not_images": 0, "shards": [],
           "metadata": shards.METADATA, "bad_files": shards.BAD_FILES, "not_image_files": shards.NOT_IMAGES,
           "stale_sources": shards.STALE, "created_utc": _now()}
    shards.replace_json(out / shards.MANIFEST, doc)
    shards.fsync_dir(out)  # before any shard: committed shards without a manifest would be refused
    return doc


@contextmanager
def _locked(out: Path):
    try:
        import fcntl
    except ImportError:  # no flock (Windows): one writer is the user's business
        yield
        return
    fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PrepareError(f"{out}: another `cxrfast prepare` is writing it (it holds {out / '.lock'})") from None
        yield
    finally:
        os.close(fd)  # releases the lock; a killed process releases it too


def _crash_hook():
    target = _hook().get("crash")
    if not target:
        return None
    stage, _, k = target.partition(":")

    def crash_at(at: str, shard: int):
        if at == stage and shard == int(k):
            os._exit(137)

    return crash_at


def default_workers() -> int:
    """The CPUs this process may run on (os.cpu_count() where affinity is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _stat(file: str) -> tuple[int | str, int | str]:
    """(size, mtime_ns) of a source as it is read; ("", "") when it cannot be stat'ed."""
    try:
        st = os.stat(file)
    except OSError:
        return "", ""
    return st.st_size, st.st_mtime_ns


def check_options(size, shard_size, workers, fit, voi, window, percentiles, invert, resample, dtype, frame, include,
                  exclude) -> dict:
    """The run's options, validated (PrepareError naming the argument) and in the manifest's JSON form."""
    for name, value, low in (("size", size, 1), ("shard_size", shard_size, 1), ("workers", workers, 0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise PrepareError(f"{name} must be an int >= {low}, got {value!r}")
    if fit not in FITS:
        raise PrepareError(f"fit must be one of {', '.join(FITS)}, got {fit!r}")
    if dtype not in shards.DTYPES:
        raise PrepareError(f"dtype must be 'uint8' or 'uint16' (the shard formats), got {dtype!r}")
    if frame != "all" and (isinstance(frame, bool) or not isinstance(frame, int) or frame < 0):
        raise PrepareError(f"frame must be an int >= 0 or 'all', got {frame!r}")
    patterns = {}
    for name, value in (("include", include), ("exclude", exclude)):
        value = [] if value is None else value
        if isinstance(value, (str, bytes)) or not all(isinstance(p, str) for p in value):
            raise PrepareError(f"{name} must be a list of patterns (strings), got {value!r}")
        patterns[name] = list(value)
    from cxrfast.io.radiograph import _options

    try:  # load_radiograph's own checks, with its messages
        _options(size, fit, voi, window, None, 0, "minmax", percentiles, invert, resample, dtype, None, None, 0.0)
    except ValueError as exc:
        raise PrepareError(str(exc)) from None
    return {"fit": fit, "voi": voi, "window": None if window is None else [float(w) for w in window],
            "percentiles": [float(p) for p in percentiles], "invert": invert, "resample": resample, "frame": frame,
            **patterns}


def prepare(src, out, size: int = DEFAULT_SIZE, *, workers: int | None = None,
            shard_size: int = DEFAULT_SHARD_SIZE, fit: str = "pad", voi: str = "auto", window=None,
            percentiles=(0.5, 99.5), invert="auto", resample: str = "area", dtype: str = "uint8", frame=0,
            include=None, exclude=None, progress: bool = True) -> Summary:
    """Load every image of `src` (a folder, an index CSV or one image file) with cxrfast.io.load_radiograph at
    `size`, write them to shards in `out` with a metadata table, skip and report bad files and files that are
    not images. Resumes an interrupted run of the same settings. Returns a Summary; raises PrepareError when it
    cannot start.

    workers: processes that load the images (default: `default_workers()`; 0: load in this process).
    shard_size: images per shard (the last one has fewer). fit, voi, window, percentiles, invert, resample:
    load_radiograph's (recorded in the manifest). dtype: "uint8" or "uint16". frame: which frame of each file
    (an int), or "all". include / exclude: shell patterns on the source paths. progress: a bar on stderr with
    files/s and ETA."""
    t0 = time.perf_counter()
    options = check_options(size, shard_size, workers, fit, voi, window, percentiles, invert, resample, dtype, frame,
                            include, exclude)
    workers = default_workers() if workers is None else workers
    out = Path(os.path.abspath(out))
    if out.exists() and not out.is_dir():
        raise PrepareError(f"{out}: exists and is not a folder")
    src_path = Path(src)
    if src_path.exists() and os.path.realpath(src_path) == os.path.realpath(out):
        raise PrepareError(f"{out}: OUT must not be SRC")
    sources = find_sources(src_path, exclude=out, include_patterns=options["include"],
                           exclude_patterns=options["exclude"])
    if not sources.items:
        hint = " matching --include / --exclude" if options["include"] or options["exclude"] else ""
        raise PrepareError(f"{src}: no DICOM, PNG or JPEG files found{hint}")
    columns = list(shards.COLUMNS) + sources.extra_columns
    identity = {"size": size, "dtype": dtype, "shard_size": shard_size, "options": options,
                "source": {"kind": sources.kind, "path": sources.root}, "columns": columns}
    from cxrfast import _ext

    if not _ext.load():  # else every file would be reported bad (and never retried)
        raise PrepareError(f"cxrfast prepare needs the compiled extension: {_ext.unavailable_reason()}")
    out.mkdir(parents=True, exist_ok=True)
    ours = (".lock", f".{shards.MANIFEST}.tmp")  # what a run killed before its first manifest leaves
    if not (out / shards.MANIFEST).exists() and any(e.name not in ours for e in os.scandir(out)):
        raise PrepareError(f"{out}: not empty and has no {shards.MANIFEST}: not an output of `cxrfast prepare`, "
                           "refusing to write into it")

    with _locked(out):
        manifest = _open_manifest(out, identity)
        (out / shards.SHARD_DIR).mkdir(exist_ok=True)
        parts = shards.scan(out, size, repair=True, dtype=dtype)
        todo, gone, changed, stale = _plan(sources, parts, frame == "all")
        if todo and manifest.get("complete"):  # new sources: metadata.csv is stale until this run ends
            manifest.update(complete=False, updated_utc=_now())
            shards.replace_json(out / shards.MANIFEST, manifest)
        k, index = len(parts), sum(p.count for p in parts)
        written = skipped = not_images = files = 0
        opts = {"size": size, "dtype": dtype, **options, "hook": _hook()}  # read here: workers may be forked
        crash_at = _crash_hook()
        bar = None
        if progress and todo:
            from cxrfast._progress import progress as make_bar

            bar = make_bar(len(todo), "prepare", unit="files", min_interval=0.2 if sys.stderr.isatty() else 2.0,
                           start=t0)
        writer, rows, skips = None, [], []
        first_s = last_s = None
        results = _ordered_results(todo, workers, opts)
        try:
            for src_item, (status, images, info) in results:
                last_s = time.perf_counter() - t0
                first_s = last_s if first_s is None else first_s
                files += 1
                source_bytes, source_mtime = _stat(src_item.file)
                provenance = {"source_bytes": source_bytes, "source_mtime_ns": source_mtime}
                if status == "ok":
                    extra = dict(zip(sources.extra_columns, src_item.extra))
                    for image, meta in zip(images, info):
                        if writer is None:
                            writer = shards.ShardWriter(out, k, size, shard_size, dtype)
                        offset = writer.append(image)
                        rows.append({"index": index, "shard": k, "offset": offset, "path": src_item.key, **meta,
                                     **provenance, **extra})
                        index += 1
                        written += 1
                        if writer.n == shard_size:
                            shards.commit(out, k, writer, rows, skips, columns, crash_at)
                            k, writer, rows, skips = k + 1, None, [], []
                elif status in ("bad", "not-image"):
                    kind = "bad" if status == "bad" else "not-image"
                    skips.append({"path": src_item.key, "kind": kind, "reason": info, **provenance})
                    if kind == "bad":
                        skipped += 1
                    else:
                        not_images += 1
                else:
                    raise RuntimeError(f"{src_item.file}: unexpected error in cxrfast.io.load_radiograph "
                                       f"(the shards committed so far are kept; a rerun resumes):\n{info}")
                if bar is not None:
                    filled = k + (writer is not None and writer.n > 0)
                    bar.step(f"{_count(filled, 'shard')}, {skipped + not_images} skipped")
            if writer is not None or skips:
                shards.commit(out, k, writer, rows, skips, columns, crash_at)
                writer = None
        finally:
            results.close()  # stops the workers now, not when the generator is collected
            if writer is not None:
                writer.discard()
            if bar is not None:
                bar.close()

        parts = shards.scan(out, size, dtype=dtype)
        all_rows = [r for p in parts for r in p.rows]
        all_bad = [{"path": b["path"], "reason": b["reason"]} for p in parts for b in p.bad]
        all_not = [{"path": b["path"], "reason": b["reason"]} for p in parts for b in p.not_images]
        shards.replace_csv(out / shards.METADATA, columns, all_rows)
        shards.replace_csv(out / shards.BAD_FILES, shards.BAD_COLUMNS, all_bad)
        shards.replace_csv(out / shards.NOT_IMAGES, shards.BAD_COLUMNS, all_not)
        shards.replace_csv(out / shards.STALE, shards.STALE_COLUMNS, stale)
        first, listed = 0, []
        for p in parts:
            if p.count:
                listed.append({"file": f"{shards.SHARD_DIR}/{shards.shard_name(p.k)}.npy", "count": p.count,
                               "first_index": first})
                first += p.count
        summary = Summary(out=out, size=size, count=len(all_rows), skipped=len(all_bad), shards=len(listed),
                          written=written, skipped_now=skipped, seconds=time.perf_counter() - t0,
                          workers=min(workers, len(todo)), first_s=first_s, last_s=last_s,
                          not_images=len(all_not), not_images_now=not_images, files_now=files, gone=gone,
                          changed=changed, dtype=dtype)
        steady = summary.steady_images_per_s
        runs = manifest.get("runs", []) + [{  # the finished runs (an interrupted one finishes in the next)
            "finished_utc": _now(), "seconds": round(summary.seconds, 3), "images": written, "skipped": skipped,
            "not_images": not_images, "files": files, "workers": summary.workers,
            "files_per_s": round(summary.files_per_s, 2),
            "first_result_s": None if first_s is None else round(first_s, 3),
            "last_result_s": None if last_s is None else round(last_s, 3),
            "steady_files_per_s": None if steady is None else round(steady, 2)}]
        manifest.update(cxrfast=_version(), complete=True, count=len(all_rows), skipped=len(all_bad),
                        not_images=len(all_not), stale={"gone": len(gone), "changed": len(changed)},
                        shards=listed, runs=runs, updated_utc=_now())
        shards.replace_json(out / shards.MANIFEST, manifest)
        shards.fsync_dir(out)
    return summary


def _plan(sources: Sources, parts: list, every_frame: bool):
    """(sources still to read, gone paths, changed paths, stale_sources.csv rows) against what is committed.

    A source is done when it is committed as an image or as a skipped file. With every frame, the last
    committed image source may have had only its first frames committed (a shard boundary between its
    frames): it is read again from the first frame not committed (none left: it writes nothing)."""
    recorded: dict = {}
    frames_done: dict = {}
    last_image = None
    for p in parts:
        for r in p.rows:
            recorded.setdefault(r["path"], r)
            frames_done[r["path"]] = frames_done.get(r["path"], 0) + 1
            last_image = r["path"]
        for b in p.skipped:
            recorded.setdefault(b["path"], b)
    todo, current = [], set()
    changed, stale = [], []
    for s in sources.items:
        current.add(s.key)
        if s.key not in recorded:
            todo.append(s)
            continue
        if every_frame and s.key == last_image:
            todo.append(Source(s.key, s.file, s.extra, first_frame=frames_done[s.key]))
        then = recorded[s.key]
        now = _stat(s.file)
        was = (_int_or_blank(then.get("source_bytes")), _int_or_blank(then.get("source_mtime_ns")))
        if "" not in was and now != was:
            changed.append(s.key)
            stale.append({"path": s.key, "state": "changed", "prepared_bytes": was[0], "prepared_mtime_ns": was[1],
                          "bytes": now[0], "mtime_ns": now[1]})
    gone = [key for key in recorded if key not in current]
    for key in gone:
        then = recorded[key]
        stale.append({"path": key, "state": "gone", "prepared_bytes": then.get("source_bytes", ""),
                      "prepared_mtime_ns": then.get("source_mtime_ns", ""), "bytes": "", "mtime_ns": ""})
    return todo, gone, changed, stale


def _int_or_blank(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return ""


def _version() -> str:
    from cxrfast import __version__

    return __version__
