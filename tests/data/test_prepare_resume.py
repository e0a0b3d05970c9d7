"""`cxrfast prepare` interrupted for real, then resumed: no image lost, none written twice, pixels equal
cxrfast.io.load_radiograph of the file, and the shards byte-identical to an uninterrupted run.

  - SIGKILL of the running command (2 worker processes) once its first shard is committed;
  - the writing process dying after a shard's temporary files are written (before any rename), and
    after its .npy was renamed but before the commit (CXRFAST_PREPARE_TEST_HOOK=crash=...);
  - a worker process dying on a file (the file is reported bad, the run goes on);
  - the same input with 0, 1 and 2 workers gives identical shards.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time
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

from cxrfast.data import ShardedImages  # noqa: E402
from cxrfast.data.prepare import TEST_HOOK, prepare  # noqa: E402

SIZE, SHARD = 32, 4


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    root = tmp_path_factory.mktemp("src")
    made = rf.make_tree(root, n_dicom=40)
    return root, made


@pytest.fixture(scope="module")
def reference(src, tmp_path_factory):
    """The uninterrupted run, in this process."""
    out = tmp_path_factory.mktemp("ref") / "out"
    prepare(src[0], out, size=SIZE, workers=0, shard_size=SHARD, progress=False)
    return out


def _files(out: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted((out / "shards").iterdir())}


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _assert_complete_and_exact(out: Path, root: Path, made: dict, reference: Path):
    """Every source exactly once (as an image or a bad file), pixels = load_radiograph, same bytes as the
    uninterrupted run."""
    ds = ShardedImages(out)
    paths = [r["path"] for r in ds.metadata]
    assert paths == made["good"], "lost or duplicated images"
    assert sorted(b["path"] for b in ds.bad_files) == sorted(made["bad"])
    assert [r["path"] for r in _rows(out / "metadata.csv")] == paths
    assert sorted(r["path"] for r in _rows(out / "bad_files.csv")) == sorted(made["bad"])
    for image, row in ds:
        np.testing.assert_array_equal(image, rf.direct(root, row["path"], SIZE), err_msg=row["path"])
    assert _files(out) == _files(reference)
    assert (out / "metadata.csv").read_bytes() == (reference / "metadata.csv").read_bytes()
    assert not [p for p in (out / "shards").iterdir() if p.name.endswith(".tmp")]


def _cli(out, root, *extra, hook=None, workers=0):
    env = dict(os.environ)
    env.pop(TEST_HOOK, None)
    if hook:
        env[TEST_HOOK] = hook
    cmd = [sys.executable, "-m", "cxrfast", "prepare", str(root), str(out), "--size", str(SIZE),
           "--shard-size", str(SHARD), "--workers", str(workers), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


def _group_gone(pgid, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_sigkill_after_first_shard_then_rerun(src, reference, tmp_path):
    root, made = src
    out = tmp_path / "out"
    proc = _cli(out, root, workers=2, hook="delay=0.1")
    try:
        first = out / "shards" / "shard-000000.csv"
        deadline = time.monotonic() + 90
        while not first.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no shard committed in 90 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        # its workers notice and exit by themselves (no orphans left reading files)
        assert _group_gone(proc.pid, 20), "worker processes outlived the killed command"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not json.loads((out / "manifest.json").read_text())["complete"]
    committed = sorted(p.name for p in (out / "shards").glob("shard-*.csv") if not p.name.endswith(".skipped.csv"))
    n_shards = -(-len(made["good"]) // SHARD)
    assert 1 <= len(committed) < n_shards, f"the kill did not land mid-run: {committed}"

    again = _cli(out, root, workers=1)
    stdout, stderr = again.communicate(timeout=120)
    assert again.returncode == 0, stderr
    done_before = len(committed) * SHARD
    lines = stdout.splitlines()
    assert lines[0] == (f"{len(made['good'])} images written, {len(made['bad'])} bad files skipped (see "
                        f"{out / 'bad_files.csv'}), 1 file that is not an image skipped (see {out / 'not_images.csv'})")
    assert lines[1].startswith(f"this run: {len(made['good']) - done_before} images, 0 skipped; "
                               f"{done_before} images and {len(made['bad']) + 1} skipped were already done")
    assert "files/s" in lines[1] and "files/s" in stderr  # the summary and the bar, one rate
    _assert_complete_and_exact(out, root, made, reference)


def test_torn_commits(src, reference, tmp_path):
    """The writer dies between the steps of a commit; each rerun repairs and goes on."""
    root, made = src
    out = tmp_path / "out"
    shards = out / "shards"

    proc = _cli(out, root, hook="crash=tmp:1")  # temp files of shard 1 written, nothing renamed
    proc.communicate(timeout=120)
    assert proc.returncode == 137
    names = {p.name for p in shards.iterdir()}
    assert {".shard-000001.npy.tmp", ".shard-000001.csv.tmp", ".shard-000001.skipped.csv.tmp"} <= names
    assert "shard-000000.csv" in names and "shard-000001.npy" not in names and "shard-000001.csv" not in names
    tmp = np.load(shards / ".shard-000001.npy.tmp")  # a complete shard under its temporary name
    assert tmp.shape == (SHARD, SIZE, SIZE)

    proc = _cli(out, root, hook="crash=npy:2")  # shard 2's .npy renamed, its commit not made
    proc.communicate(timeout=120)
    assert proc.returncode == 137
    names = {p.name for p in shards.iterdir()}
    assert not {n for n in names if n.startswith(".shard-000001")}, "the first run's debris was not removed"
    assert "shard-000001.csv" in names and "shard-000002.npy" in names and "shard-000002.csv" not in names
    assert len(ShardedImages(out, allow_partial=True)) == 2 * SHARD  # the torn shard 2 is not read

    proc = _cli(out, root)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    _assert_complete_and_exact(out, root, made, reference)


def test_worker_counts_give_identical_shards_and_a_dying_worker_costs_one_file(src, reference, tmp_path,
                                                                               monkeypatch):
    root, made = src
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        s = prepare(root, out, size=SIZE, workers=workers, shard_size=SHARD, progress=False)
        assert s.workers == workers and s.count == len(made["good"])
        _assert_complete_and_exact(out, root, made, reference)

    victim = "img0009.dcm"
    monkeypatch.setenv(TEST_HOOK, f"die={victim}")
    out = tmp_path / "dying"
    s = prepare(root, out, size=SIZE, workers=2, shard_size=SHARD, progress=False)
    ds = ShardedImages(out)
    assert [r["path"] for r in ds.metadata] == [p for p in made["good"] if not p.endswith(victim)]
    bad = {b["path"]: b["reason"] for b in ds.bad_files}
    assert bad.pop(f"study_a/{victim}") == "the reading process died on this file (exit code 139)"
    assert sorted(bad) == sorted(made["bad"])
    for image, row in ds:
        np.testing.assert_array_equal(image, rf.direct(root, row["path"], SIZE), err_msg=row["path"])
