"""cxrfast.data.prepare in this process (workers=0): sources, shards, metadata, bad files, index CSVs, and
the ShardedImages reader. Pixels are checked against cxrfast.io.load_radiograph of each file.
Worker processes, kills and resuming are in test_prepare_resume.py."""

import csv
import fcntl
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pydicom", reason="the tests write their DICOM files with pydicom")
pytest.importorskip("PIL", reason="the tests write their PNG/JPEG files with Pillow")
from cxrfast import _ext  # noqa: E402

if not _ext.load():
    pytest.skip(f"cxrfast._C is not built: {_ext.unavailable_reason()}", allow_module_level=True)

sys.path.insert(0, os.path.dirname(__file__))
import radiograph_files as rf  # noqa: E402

from cxrfast.data import ShardedImages, ShardFormatError  # noqa: E402
from cxrfast.data.prepare import PrepareError, find_sources, prepare  # noqa: E402
from cxrfast.data.shards import COLUMNS, scan  # noqa: E402


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("src")
    return root, rf.make_tree(root, n_dicom=12)


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_folder_sources_are_found_sorted_and_filtered(tree):
    root, made = tree
    found = find_sources(root)
    assert found.kind == "folder" and found.extra_columns == []
    keys = [s.key for s in found.items]
    assert keys == made["sources"]  # README and notes.txt left out; the extensionless DICOM found
    assert "study_a/1.2.840.3" in keys and "README" not in keys and "notes.txt" not in keys


def test_folder_to_shards(tree, tmp_path):
    root, made = tree
    out = tmp_path / "out"
    s = prepare(root, out, size=40, workers=0, shard_size=4, progress=False)
    good = made["good"]
    assert (s.count, s.skipped, s.written, s.skipped_now) == (len(good), 3, len(good), 3)
    assert (s.not_images, s.not_images_now) == (1, 1)
    assert s.shards == -(-len(good) // 4)
    assert s.lines()[0] == (f"{len(good)} images written, 3 bad files skipped (see {out / 'bad_files.csv'}), 1 file "
                            f"that is not an image skipped (see {out / 'not_images.csv'})")
    assert "files/s" in s.lines()[1]

    # bad files: each with a reason, the run went on
    bad = {r["path"]: r["reason"] for r in _read_csv(out / "bad_files.csv")}
    assert set(bad) == set(made["bad"])
    assert all(reason.strip() for reason in bad.values()), bad
    assert "truncated" in bad["bad/truncated.dcm"] and "not a DICOM file" in bad["bad/text.dcm"]
    not_images = {r["path"]: r["reason"] for r in _read_csv(out / "not_images.csv")}
    assert list(not_images) == ["bad/nopixels.dcm"] and "not an image: no Pixel Data" in not_images["bad/nopixels.dcm"]

    # metadata table: one row per good source in order, DICOM attributes from the files
    meta = _read_csv(out / "metadata.csv")
    assert [r["path"] for r in meta] == good
    assert list(meta[0]) == list(COLUMNS)
    assert [int(r["index"]) for r in meta] == list(range(len(good)))
    assert [(int(r["shard"]), int(r["offset"])) for r in meta] == [(i // 4, i % 4) for i in range(len(good))]
    by_path = {r["path"]: r for r in meta}
    i = 7  # study_a/img0007.dcm
    row = by_path["study_a/img0007.dcm"]
    assert row["format"] == "dicom" and row["modality"] == "DX"
    assert row["sop_instance_uid"] == f"1.2.826.0.1.3680043.99.{i}.3"
    assert row["study_instance_uid"] == f"1.2.826.0.1.3680043.99.{i // 2}.1"
    assert row["series_instance_uid"] == f"1.2.826.0.1.3680043.99.{i}.2"
    assert row["patient_id"] == "p0001" and row["view_position"] == "AP" and row["study_date"] == "20200808"
    assert (int(row["rows"]), int(row["columns"])) == (64 + i % 3, 80 - i % 4)
    assert by_path["png/sixteen.PNG"]["format"] == "png" and by_path["png/photo.jpg"]["format"] == "jpeg"
    assert (by_path["png/eight.png"]["rows"], by_path["png/eight.png"]["columns"]) == ("50", "70")

    # shards: plain .npy, memory-mappable, pixels = load_radiograph of the file
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["count"] == len(good) and manifest["skipped"] == 3
    assert manifest["not_images"] == 1
    assert (manifest["size"], manifest["dtype"], manifest["shard_size"]) == (40, "uint8", 4)
    assert manifest["cxrfast"] and manifest["options"]["fit"] == "pad"
    assert [(r["images"], r["skipped"], r["workers"]) for r in manifest["runs"]] == [(len(good), 3, 0)]
    assert [sh["count"] for sh in manifest["shards"]] == [4] * (len(good) // 4) + [len(good) % 4] * bool(len(good) % 4)
    for sh in manifest["shards"]:
        arr = np.load(out / sh["file"], mmap_mode="r")
        assert isinstance(arr, np.memmap) and arr.dtype == np.uint8 and arr.shape == (sh["count"], 40, 40)
        for off in range(sh["count"]):
            path = meta[sh["first_index"] + off]["path"]
            np.testing.assert_array_equal(arr[off], rf.direct(root, path, 40), err_msg=path)

    # the reader gives the same
    ds = ShardedImages(out)
    assert len(ds) == len(good) and ds.size == 40
    assert [b["path"] for b in ds.bad_files] == sorted(made["bad"])
    for i in (0, 5, len(good) - 1, -1):
        image, row = ds[i]
        assert row["index"] == i % len(good) and isinstance(row["shard"], int)
        np.testing.assert_array_equal(image, rf.direct(root, row["path"], 40))
    with pytest.raises(IndexError):
        ds[len(good)]
    assert sum(1 for _ in ds) == len(good)

    # a rerun has nothing to do and changes nothing
    before = {p.name: p.read_bytes() for p in (out / "shards").iterdir()}
    again = prepare(root, out, size=40, workers=0, shard_size=4, progress=False)
    assert (again.count, again.written, again.skipped, again.skipped_now) == (len(good), 0, 3, 0)
    assert {p.name: p.read_bytes() for p in (out / "shards").iterdir()} == before
    runs = json.loads((out / "manifest.json").read_text())["runs"]
    assert [(r["images"], r["skipped"]) for r in runs] == [(len(good), 3), (0, 0)]


def test_crop_fit_and_new_files_are_appended(tmp_path):
    src = tmp_path / "src"
    rf.make_tree(src, n_dicom=3, bad=False, extras=False)
    out = tmp_path / "out"
    prepare(src, out, size=24, workers=0, shard_size=2, fit="crop", progress=False)
    (src / "later.dcm").write_bytes(rf.dicom_bytes(rf.radiograph(30, 90, 77), 77))
    (src / "later_bad.dcm").write_bytes(b"\0" * 50)
    s = prepare(src, out, size=24, workers=0, shard_size=2, fit="crop", progress=False)
    assert (s.count, s.written, s.skipped) == (4, 1, 1)
    ds = ShardedImages(out)
    assert [r["path"] for r in ds.metadata] == ["study_a/img0001.dcm", "study_b/img0000.dcm",
                                                "study_b/img0002.dcm", "later.dcm"]
    assert (ds.metadata[-1]["shard"], ds.metadata[-1]["offset"]) == (2, 0)
    for image, row in ds:
        np.testing.assert_array_equal(image, rf.direct(src, row["path"], 24, fit="crop"))


def test_index_csv(tree, tmp_path):
    root, made = tree
    index = tmp_path / "lists" / "index.csv"
    index.parent.mkdir()
    rel = os.path.relpath(root, index.parent)
    rows = [("p10/s1.dcm", f"{rel}/study_b/img0004.dcm", "10", "train", "x"),
            ("abs", str(root / "png" / "photo.jpg"), "11", "test", "y"),
            ("missing", f"{rel}/nope/missing.dcm", "12", "train", "z"),
            ("b", f"{rel}/study_a/img0001.dcm", "13", "validate", "w,with comma")]
    with open(index, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dicom_id", "path", "subject_id", "split", "rows"])
        for r in rows:
            w.writerow(r)
    found = find_sources(index)
    assert found.kind == "index" and found.extra_columns == ["dicom_id", "subject_id", "split", "csv_rows"]
    out = tmp_path / "out"
    s = prepare(index, out, size=32, workers=0, shard_size=2, progress=False)
    assert (s.count, s.skipped) == (3, 1)
    ds = ShardedImages(out)
    assert ds.columns == list(COLUMNS) + ["dicom_id", "subject_id", "split", "csv_rows"]
    assert [r["path"] for r in ds.metadata] == [rows[0][1], rows[1][1], rows[3][1]]
    assert [r["subject_id"] for r in ds.metadata] == ["10", "11", "13"]
    assert [r["split"] for r in ds.metadata] == ["train", "test", "validate"]
    assert ds.metadata[2]["csv_rows"] == "w,with comma" and ds.metadata[0]["rows"] == 65
    assert [b["path"] for b in ds.bad_files] == [rows[2][1]]
    np.testing.assert_array_equal(ds[0][0], rf.direct(root, "study_b/img0004.dcm", 32))
    np.testing.assert_array_equal(ds[1][0], rf.direct(root, "png/photo.jpg", 32))


@pytest.mark.parametrize("text, message", [
    ("file,x\na.dcm,1\n", "no `path` column"),
    ("path,x\na.dcm,1\nb.dcm,2\na.dcm,3\n", "a.dcm is listed twice"),
    ("path,x\na.dcm,1\n./sub/../a.dcm,2\n", r"\./sub/\.\./a.dcm is listed twice \(first on line 2\)"),
    ("path\na.dcm\n\"\"\n", "empty `path`"),
])
def test_bad_index_csv_is_refused(tmp_path, text, message):
    index = tmp_path / "index.csv"
    index.write_text(text)
    with pytest.raises(PrepareError, match=message):
        prepare(index, tmp_path / "out", size=16, workers=0, progress=False)
    assert not (tmp_path / "out").exists()


def test_refusals(tree, tmp_path):
    root, _ = tree
    with pytest.raises(PrepareError, match="no such folder, index CSV or image file"):
        prepare(tmp_path / "nope", tmp_path / "out", workers=0, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(PrepareError, match="no DICOM, PNG or JPEG files found"):
        prepare(tmp_path / "empty", tmp_path / "out", workers=0, progress=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / "thesis.tex").write_text("mine")
    with pytest.raises(PrepareError, match="not empty and has no manifest.json"):
        prepare(root, other, size=16, workers=0, progress=False)
    assert sorted(p.name for p in other.iterdir()) == ["thesis.tex"]
    for kw, message in ((dict(size=0), "size must be an int >= 1"), (dict(workers=-1), "workers must be"),
                        (dict(shard_size=0), "shard_size must be"), (dict(fit="stretch"), "fit must be one of")):
        with pytest.raises(PrepareError, match=message):
            prepare(root, tmp_path / "out2", **{"size": 16, "workers": 0, **kw})

    out = tmp_path / "out"
    prepare(root, out, size=16, workers=0, shard_size=8, progress=False)
    for kw, what in ((dict(size=32), "size: .* has 16, this run asks for 32"),
                     (dict(shard_size=4), "shard_size: .* has 8, this run asks for 4"),
                     (dict(fit="crop"), "options:")):
        with pytest.raises(PrepareError, match=f"prepared with other settings(.|\n)*{what}"):
            prepare(root, out, **{"size": 16, "workers": 0, "shard_size": 8, "progress": False, **kw})
    with pytest.raises(PrepareError, match="source:"):
        prepare(root / "png", out, size=16, workers=0, shard_size=8, progress=False)
    assert ShardedImages(out).size == 16  # untouched

    # one writer at a time
    fd = os.open(out / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(PrepareError, match="another `cxrfast prepare` is writing it"):
            prepare(root, out, size=16, workers=0, shard_size=8, progress=False)
    finally:
        os.close(fd)


def test_out_inside_src_is_not_read(tmp_path):
    src = tmp_path / "src"
    rf.make_tree(src, n_dicom=2, bad=False, extras=False)
    out = src / "prepared"
    prepare(src, out, size=16, workers=0, progress=False)
    (out / "shards" / "stray.png").write_bytes(b"")  # would be a bad source if OUT were searched
    s = prepare(src, out, size=16, workers=0, progress=False)
    assert (s.count, s.skipped, s.written) == (2, 0, 0)


def test_reader_refuses_unfinished_and_inconsistent_outputs(tmp_path):
    src = tmp_path / "src"
    rf.make_tree(src, n_dicom=5, bad=False, extras=False)
    out = tmp_path / "out"
    prepare(src, out, size=16, workers=0, shard_size=2, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["complete"] = False
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ShardFormatError, match="has not finished"):
        ShardedImages(out)
    assert len(ShardedImages(out, allow_partial=True)) == 5

    # debris of an interrupted commit: ignored by readers, deleted by the next writer
    shards_dir = out / "shards"
    debris = [shards_dir / name for name in ("shard-000003.npy", "shard-000003.skipped.csv", ".shard-000003.npy.tmp")]
    for p in debris:
        p.write_bytes(b"x")
    assert [p.count for p in scan(out, 16)] == [2, 2, 1] and all(p.exists() for p in debris)
    assert [p.count for p in scan(out, 16, repair=True)] == [2, 2, 1] and not any(p.exists() for p in debris)

    npy = out / "shards" / "shard-000001.npy"
    data = npy.read_bytes()
    npy.write_bytes(data[:-100])
    with pytest.raises(ShardFormatError, match="shorter than its 2 images"):
        ShardedImages(out, allow_partial=True)
    npy.unlink()
    with pytest.raises(ShardFormatError, match="shard-000001.npy: committed but unreadable"):
        prepare(src, out, size=16, workers=0, shard_size=2, progress=False)
    (out / "shards" / "shard-000001.csv").unlink()
    with pytest.raises(ShardFormatError, match="missing shard-000001"):
        ShardedImages(out, allow_partial=True)
    with pytest.raises(ShardFormatError, match="no manifest"):
        ShardedImages(tmp_path)


# ---------------------------------------------------------------------------------------------------
# review findings: each test failed before its fix


def test_odd_and_non_utf8_file_names_round_trip(tmp_path):
    """A POSIX file name is bytes: one that is not UTF-8 (or holds a newline, a comma, a quote) must not
    abort the commit (it did: UnicodeEncodeError writing the shard CSV, on every rerun), and a rerun must
    recognise it as done (the CSVs keep the name's bytes)."""
    src = os.fsencode(tmp_path / "src")
    os.makedirs(src)
    names = [b"caf\xe9.dcm", b"new\nline,comma\"quote.dcm", "ok \u00e9t\u00e9.dcm".encode()]
    for i, name in enumerate(names):
        with open(os.path.join(src, name), "wb") as f:
            f.write(rf.dicom_bytes(rf.radiograph(40, 40, i), i))
    with open(os.path.join(src, b"bad\xff.dcm"), "wb") as f:
        f.write(b"not a DICOM file")
    out = tmp_path / "out"
    s = prepare(os.fsdecode(src), out, size=16, workers=0, shard_size=2, progress=False)
    assert (s.count, s.skipped) == (3, 1)
    ds = ShardedImages(out)
    assert sorted(os.fsencode(r["path"]) for r in ds.metadata) == sorted(names)
    assert [os.fsencode(b["path"]) for b in ds.bad_files] == [b"bad\xff.dcm"]
    assert b"caf\xe9.dcm" in (out / "metadata.csv").read_bytes()  # the name's own bytes
    for image, row in ds:
        np.testing.assert_array_equal(image, rf.direct(os.fsdecode(src), row["path"], 16))
    again = prepare(os.fsdecode(src), out, size=16, workers=0, shard_size=2, progress=False)
    assert (again.count, again.written, again.skipped, again.skipped_now) == (3, 0, 1, 0)


def test_index_csv_in_another_encoding_keeps_the_path_bytes(tmp_path):
    """An index CSV written in Latin-1 naming Latin-1 file names: the paths open (no UnicodeDecodeError
    traceback without the CSV's name)."""
    d = tmp_path / "data"
    d.mkdir()
    with open(os.path.join(os.fsencode(d), b"M\xfcller.dcm"), "wb") as f:
        f.write(rf.dicom_bytes(rf.radiograph(40, 40, 5), 5))
    index = tmp_path / "index.csv"
    index.write_bytes(b"path,name\ndata/M\xfcller.dcm,J\xfcrgen\n")
    s = prepare(index, tmp_path / "out", size=16, workers=0, progress=False)
    assert (s.count, s.skipped) == (1, 0)
    row = ShardedImages(tmp_path / "out").metadata[0]
    assert os.fsencode(row["path"]) == b"data/M\xfcller.dcm" and os.fsencode(row["name"]) == b"J\xfcrgen"


def test_an_unexpected_exception_on_one_file_skips_that_file(tmp_path, monkeypatch):
    """The issue: bad files are skipped with the reason and the run goes on. An exception type the loader
    was not expected to raise used to stop the run, and every rerun stopped on the same file."""
    import cxrfast.io

    src = tmp_path / "src"
    rf.make_tree(src, n_dicom=4, bad=False, extras=False)
    real = cxrfast.io.load_radiograph

    def flaky(file, **kw):
        if file.endswith("img0002.dcm"):
            raise RuntimeError("decoder bug: negative stride")
        return real(file, **kw)

    monkeypatch.setattr(cxrfast.io, "load_radiograph", flaky)
    s = prepare(src, tmp_path / "out", size=16, workers=0, shard_size=2, progress=False)
    assert (s.count, s.skipped) == (3, 1)
    bad = ShardedImages(tmp_path / "out").bad_files
    assert [b["path"] for b in bad] == ["study_b/img0002.dcm"]
    assert "RuntimeError" in bad[0]["reason"] and "negative stride" in bad[0]["reason"]


def test_a_folder_that_cannot_be_listed_is_not_silently_left_out(tmp_path, monkeypatch):
    """os.walk drops folders it cannot list unless told otherwise: their images vanished without a word."""
    src = tmp_path / "src"
    rf.make_tree(src, n_dicom=4, bad=False, extras=False)
    locked = str(src / "study_a")
    real = os.scandir

    def scandir(path="."):
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(PrepareError, match="study_a.*cannot list the folder.*Permission denied"):
        find_sources(src)
    with pytest.raises(PrepareError, match="study_a"):
        prepare(src, tmp_path / "out", size=16, workers=0, progress=False)


def test_a_kill_while_the_first_manifest_is_written_does_not_lock_out_reruns(tree, tmp_path):
    """kill -9 between the first manifest's temporary write and its rename leaves OUT holding `.lock` and
    `.manifest.json.tmp`: that used to be refused forever as 'not an output of cxrfast prepare'."""
    root, made = tree
    out = tmp_path / "out"
    out.mkdir()
    (out / ".lock").write_bytes(b"")
    (out / ".manifest.json.tmp").write_text('{"format": "cxrfast-sha')  # half written
    s = prepare(root, out, size=16, workers=0, shard_size=8, progress=False)
    assert s.count == len(made["good"]) and not (out / ".manifest.json.tmp").exists()


def test_commit_makes_its_parts_durable_before_the_marker(tmp_path, monkeypatch):
    """For a power cut (not only kill -9): the renames of .npy and .skipped.csv must reach the disk (a
    directory fsync) before the marker's rename can, else a committed marker may name a missing .npy."""
    from cxrfast.data import shards as sh

    (tmp_path / "shards").mkdir()
    events = []
    real_replace = os.replace
    monkeypatch.setattr(sh.os, "replace", lambda a, b: (events.append(("rename", Path(b).name)), real_replace(a, b)))
    monkeypatch.setattr(sh, "fsync_dir", lambda d: events.append(("fsync_dir", Path(d).name)))
    w = sh.ShardWriter(tmp_path, 0, 4, 2)
    w.append(np.zeros((4, 4), np.uint8))
    sh.commit(tmp_path, 0, w, [{c: 0 for c in COLUMNS}], [], COLUMNS)
    marker = events.index(("rename", "shard-000000.csv"))
    assert events.index(("rename", "shard-000000.npy")) < marker
    assert events.index(("rename", "shard-000000.skipped.csv")) < marker
    assert ("fsync_dir", "shards") in events[marker - 1:marker], events  # right before the commit
    assert events[-1] == ("fsync_dir", "shards"), events
