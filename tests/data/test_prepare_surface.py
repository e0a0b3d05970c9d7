"""`prepare` as a new user runs it: one file as SRC, reruns after sources were deleted or changed, files that
are not images (DICOMDIR, RT Plan, SR), the pipeline's options (recorded in the manifest), frames, include /
exclude patterns, and the progress bar's figures against the summary's."""

import csv
import io
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom", reason="the tests write their DICOM files with pydicom")
pytest.importorskip("PIL", reason="the tests write their PNG/JPEG files with Pillow")
from cxrfast import _ext  # noqa: E402

if not _ext.load():
    pytest.skip(f"cxrfast._C is not built: {_ext.unavailable_reason()}", allow_module_level=True)

sys.path.insert(0, os.path.dirname(__file__))
import radiograph_files as rf  # noqa: E402

from cxrfast.data import ShardedImages  # noqa: E402
from cxrfast.data.prepare import PrepareError, prepare  # noqa: E402
from cxrfast.io import load_radiograph  # noqa: E402


def _file(name):
    return pydicom.data.get_testdata_file(name, download=False)


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _dicom(path, seed, shape=(40, 50), **kw):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(rf.dicom_bytes(rf.radiograph(*shape, seed=seed), seed=seed, **kw))


# ------------------------------------------------------------------------------------------ one file as SRC

@pytest.mark.parametrize("kind", ["dicom", "png", "extensionless-dicom"])
def test_a_single_image_file_is_a_one_file_dataset(kind, tmp_path):
    if kind == "png":
        src = tmp_path / "one.png"
        rf.write_png(src, rf.radiograph(30, 40, 5, bits=8).astype(np.uint8))
    else:
        src = tmp_path / ("one.dcm" if kind == "dicom" else "IM0001")
        _dicom(src, 3)
    s = prepare(src, tmp_path / "out", size=16, workers=0, progress=False)
    assert (s.count, s.skipped) == (1, 0)
    ds = ShardedImages(tmp_path / "out")
    image, row = ds[0]
    assert row["path"] == src.name
    np.testing.assert_array_equal(image, load_radiograph(src, 16).image)
    assert ds.manifest["source"]["kind"] == "file"


def test_the_cli_prepares_one_dicom_file(tmp_path, capsys):
    from cxrfast.cli import main

    src = tmp_path / "one.dcm"
    _dicom(src, 4)
    assert main(["prepare", str(src), str(tmp_path / "out"), "--size", "16", "--workers", "0", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("1 images written") and "columns" not in out


def test_a_binary_file_that_is_no_image_is_not_read_as_an_index_csv(tmp_path):
    src = tmp_path / "data.bin"
    src.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(PrepareError, match=r"data\.bin: neither a folder, an index CSV \(text\) nor a DICOM, PNG or "
                                           r"JPEG file"):
        prepare(src, tmp_path / "out", size=16, workers=0, progress=False)


# ------------------------------------------------------------------------------------------ reruns

def test_a_rerun_notices_sources_that_are_gone_or_changed(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    for i in range(4):
        _dicom(src / f"img{i}.dcm", i)
    prepare(src, out, size=16, workers=0, progress=False)
    os.unlink(src / "img1.dcm")
    _dicom(src / "img2.dcm", 22, shape=(41, 50))  # another image, another size
    s = prepare(src, out, size=16, workers=0, progress=False)
    lines = s.lines()
    assert not any(line.startswith("nothing left to do") and "gone" not in line for line in lines[:2])
    text = "\n".join(lines)
    assert "1 source is gone since it was prepared (img1.dcm)" in text, text
    assert "1 source changed since it was prepared (img2.dcm)" in text, text
    assert "their images are kept as prepared" in text and "stale_sources.csv" in text
    stale = {r["path"]: r for r in _rows(out / "stale_sources.csv")}
    assert stale["img1.dcm"]["state"] == "gone" and stale["img2.dcm"]["state"] == "changed"
    assert int(stale["img2.dcm"]["bytes"]) != int(stale["img2.dcm"]["prepared_bytes"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stale"] == {"gone": 1, "changed": 1}
    # restored: nothing is stale any more
    _dicom(src / "img1.dcm", 1)
    os.utime(src / "img1.dcm", ns=(int(stale["img1.dcm"]["prepared_mtime_ns"]),) * 2)
    again = prepare(src, out, size=16, workers=0, progress=False)
    assert "img1.dcm" not in "\n".join(again.lines()) and "img2.dcm" in "\n".join(again.lines())


def test_metadata_records_each_sources_size_and_mtime(tmp_path):
    src = tmp_path / "src"
    _dicom(src / "a.dcm", 1)
    prepare(src, tmp_path / "out", size=16, workers=0, progress=False)
    row = _rows(tmp_path / "out" / "metadata.csv")[0]
    st = os.stat(src / "a.dcm")
    assert int(row["source_bytes"]) == st.st_size and int(row["source_mtime_ns"]) == st.st_mtime_ns


# ------------------------------------------------------------------------------------------ not images

def test_files_without_pixel_data_are_not_images_not_bad_files(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    _dicom(src / "img.dcm", 1)
    for name in ("DICOMDIR", "rtplan.dcm", "test-SR.dcm"):
        (src / (name if name.endswith(".dcm") else "DICOMDIR.dcm")).write_bytes(Path(_file(name)).read_bytes())
    (src / "broken.dcm").write_text("not DICOM at all\n" * 5)
    s = prepare(src, out, size=16, workers=0, progress=False)
    assert (s.count, s.skipped, s.not_images) == (1, 1, 3)
    assert [r["path"] for r in _rows(out / "bad_files.csv")] == ["broken.dcm"]
    not_images = {r["path"]: r["reason"] for r in _rows(out / "not_images.csv")}
    assert set(not_images) == {"DICOMDIR.dcm", "rtplan.dcm", "test-SR.dcm"}
    assert "Media Storage Directory" in not_images["DICOMDIR.dcm"] and "RT Plan" in not_images["rtplan.dcm"]
    assert s.lines()[0] == (f"1 images written, 1 bad file skipped (see {out / 'bad_files.csv'}), 3 files that are "
                            f"not images skipped (see {out / 'not_images.csv'})")
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["count"], manifest["skipped"], manifest["not_images"]) == (1, 1, 3)
    ds = ShardedImages(out)
    assert [b["path"] for b in ds.bad_files] == ["broken.dcm"] and len(ds.not_images) == 3


# ------------------------------------------------------------------------------------------ options

def test_pipeline_options_are_applied_and_recorded(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    for i in range(3):
        _dicom(src / f"img{i}.dcm", i)
    opts = dict(voi="percentile", percentiles=(2.0, 98.0), invert=True, resample="bilinear", dtype="uint16")
    prepare(src, out, size=20, workers=0, progress=False, **opts)
    ds = ShardedImages(out)
    assert ds.dtype == np.uint16 and ds[0][0].dtype == np.uint16
    for image, row in ds:
        want = load_radiograph(src / row["path"], 20, **opts).image
        np.testing.assert_array_equal(image, want)
    recorded = ds.manifest["options"]
    assert recorded["voi"] == "percentile" and recorded["percentiles"] == [2.0, 98.0]
    assert recorded["invert"] is True and recorded["resample"] == "bilinear" and ds.manifest["dtype"] == "uint16"
    with pytest.raises(PrepareError, match=r"options: .* has .*'percentile'.*this run asks for .*'auto'"):
        prepare(src, out, size=20, workers=0, progress=False, dtype="uint16")


def test_window_option(tmp_path):
    src = tmp_path / "src"
    _dicom(src / "a.dcm", 1)
    prepare(src, tmp_path / "out", size=16, workers=0, progress=False, window=(1000.0, 500.0))
    image, _ = ShardedImages(tmp_path / "out")[0]
    np.testing.assert_array_equal(image, load_radiograph(src / "a.dcm", 16, window=(1000.0, 500.0)).image)


def _multiframe(path, frames=3):
    from cxrfast.io.testing import grayscale_dataset, to_bytes

    stack = np.stack([rf.radiograph(30, 36, seed=10 + k) for k in range(frames)])
    ds = grayscale_dataset((30, 36), frames=frames, sop_instance_uid="1.2.3.77")
    ds.PixelData = stack.astype("<u2").tobytes()
    path.write_bytes(to_bytes(ds))


def test_every_frame_or_one_frame(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _multiframe(src / "multi.dcm")
    _dicom(src / "single.dcm", 2)
    prepare(src, tmp_path / "all", size=16, workers=0, shard_size=2, progress=False, frame="all")
    ds = ShardedImages(tmp_path / "all")
    assert [(r["path"], r["frame"]) for r in ds.metadata] == [("multi.dcm", 0), ("multi.dcm", 1), ("multi.dcm", 2),
                                                              ("single.dcm", 0)]
    for image, row in ds:
        np.testing.assert_array_equal(image, load_radiograph(src / row["path"], 16, frame=row["frame"]).image)
    # frame 2: the single-frame file has none, and is a bad file saying so
    s = prepare(src, tmp_path / "two", size=16, workers=0, progress=False, frame=2)
    assert (s.count, s.skipped) == (1, 1)
    assert "frame 2 out of range" in _rows(tmp_path / "two" / "bad_files.csv")[0]["reason"]


def test_frames_of_one_file_across_a_resume_are_neither_lost_nor_repeated(tmp_path):
    """A kill after the first shard, which holds two of the three frames: the rerun writes the third only."""
    import subprocess

    src = tmp_path / "src"
    src.mkdir()
    _multiframe(src / "multi.dcm")
    out = tmp_path / "out"
    code = ("import sys; from cxrfast.data.prepare import prepare; "
            f"prepare({str(src)!r}, {str(out)!r}, size=16, workers=0, shard_size=2, progress=False, frame='all')")
    env = dict(os.environ, CXRFAST_PREPARE_TEST_HOOK="crash=tmp:1")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=120)
    assert proc.returncode == 137, proc.stderr.decode()[-2000:]
    s = prepare(src, out, size=16, workers=0, shard_size=2, progress=False, frame="all")
    assert s.written == 1
    assert [(r["path"], r["frame"]) for r in ShardedImages(out).metadata] == [("multi.dcm", k) for k in range(3)]


def test_include_and_exclude_patterns(tmp_path):
    src = tmp_path / "src"
    for name in ("PA/a.dcm", "PA/b.dcm", "LAT/c.dcm", "PA/skip_d.dcm"):
        _dicom(src / name, len(name))
    s = prepare(src, tmp_path / "out", size=16, workers=0, progress=False, include=["PA/*"], exclude=["*/skip_*"])
    assert [r["path"] for r in ShardedImages(tmp_path / "out").metadata] == ["PA/a.dcm", "PA/b.dcm"]
    assert s.count == 2
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["options"]["include"] == ["PA/*"] and manifest["options"]["exclude"] == ["*/skip_*"]
    with pytest.raises(PrepareError, match="no DICOM, PNG or JPEG files found .*--include"):
        prepare(src, tmp_path / "none", size=16, workers=0, progress=False, include=["*.png"])


@pytest.mark.parametrize("kw,match", [
    (dict(voi="bright"), r"voi must be one of"),
    (dict(dtype="float32"), r"dtype must be 'uint8' or 'uint16'"),
    (dict(frame=-1), r"frame must be an int >= 0 or 'all'"),
    (dict(window=(1.0,)), r"window must be \(center, width\)"),
    (dict(include="PA/*"), r"include must be a list of patterns"),
])
def test_bad_options_are_refused_before_anything_is_written(kw, match, tmp_path):
    src = tmp_path / "src"
    _dicom(src / "a.dcm", 1)
    with pytest.raises(PrepareError, match=match):
        prepare(src, tmp_path / "out", size=16, workers=0, progress=False, **kw)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ progress

def test_the_bar_and_the_summary_report_one_rate(tmp_path, monkeypatch):
    """The bar counts files from the start of the run, as the summary does (worker start-up included)."""
    from cxrfast import _progress

    monkeypatch.setitem(sys.modules, "tqdm", None)  # the fallback bar, whose text is checked here
    src = tmp_path / "src"
    for i in range(6):
        _dicom(src / f"img{i}.dcm", i)
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setenv("CXRFAST_PREPARE_TEST_HOOK", "delay=0.15")
    t0 = time.perf_counter()
    s = prepare(src, tmp_path / "out", size=16, workers=1, shard_size=4, progress=True)
    assert time.perf_counter() - t0 >= 0.9
    last = err.getvalue().strip().splitlines()[-1]
    m = re.search(r"6/6 ([0-9.]+) files/s ETA 0:00 2 shards, 0 skipped$", last)
    assert m, last
    summary_rate = float(re.search(r"([0-9.]+) files/s", s.lines()[1]).group(1))
    assert 0.75 < float(m.group(1)) / summary_rate < 1.34, (last, s.lines()[1])
    assert isinstance(_progress.progress(1, "x"), _progress.Bar)
