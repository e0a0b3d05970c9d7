"""The `cxrfast prepare` command (arguments, exit status, summary, progress bar) and the shared progress bar
(cxrfast._progress, also behind cxrfast.bench.measure.progress). What prepare writes is tested in
tests/data/test_prepare_shards.py and test_prepare_resume.py."""

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_prepare_help_imports_nothing_heavy():
    code = (
        "import sys\n"
        "from cxrfast.cli import main\n"
        "try:\n"
        "    main(['prepare', '--help'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "heavy = [m for m in ('cxrfast.data', 'cxrfast.io', 'cxrfast._C', 'cv2', 'pydicom', 'PIL', 'triton')\n"
        "         if m in sys.modules]\n"
        "print('HEAVY', heavy)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing preloaded by a sitecustomize
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout
    for needle in ("SRC", "OUT", "--size", "--workers", "--shard-size", "--fit", "bad_files.csv",
                   "manifest.json", "ShardedImages", "resumed", "index CSV with a `path` column"):
        assert needle in proc.stdout, needle


@pytest.mark.parametrize("argv, message", [
    (["--size", "0"], "--size: must be >= 1, got 0"),
    (["--workers", "-2"], "--workers: must be >= 0, got -2"),
    (["--shard-size", "many"], "--shard-size: expected an integer, got 'many'"),
    (["--fit", "stretch"], "invalid choice: 'stretch'"),
])
def test_bad_arguments(argv, message, capsys, tmp_path):
    from cxrfast.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["prepare", str(tmp_path), str(tmp_path / "out"), *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_prepare_command(tmp_path, capsys):
    pytest.importorskip("pydicom", reason="the test writes its DICOM files with pydicom")
    pytest.importorskip("PIL", reason="the test writes its PNG/JPEG files with Pillow")
    from cxrfast import _ext

    if not _ext.load():
        pytest.skip(f"cxrfast._C is not built: {_ext.unavailable_reason()}")
    sys.path.insert(0, str(ROOT / "tests" / "data"))
    import radiograph_files as rf

    from cxrfast.cli import main
    from cxrfast.data import ShardedImages

    src, out = tmp_path / "src", tmp_path / "out"
    made = rf.make_tree(src, n_dicom=5)
    good, bad = len(made["good"]), len(made["bad"])
    argv = ["prepare", str(src), str(out), "--size", "24", "--workers", "0", "--shard-size", "3"]
    assert main(argv) == 0
    cap = capsys.readouterr()
    lines = cap.out.splitlines()
    assert lines[0] == (f"{good} images written, {bad} bad files skipped (see {out / 'bad_files.csv'}), 1 file that is "
                        f"not an image skipped (see {out / 'not_images.csv'})")
    assert re.fullmatch(r"this run -- [0-9.]+ s \(first result after [0-9.]+ s\), [0-9.]+ files/s, in this process",
                        lines[1]), lines[1]
    assert lines[2].startswith(f"{out}: {-(-good // 3)} shards of 24x24 uint8")
    bar = cap.err.strip().splitlines()[-1]  # not a terminal: a line per draw, the last one always drawn
    assert bar.startswith(f"prepare [{'#' * 24}] {good + bad + 1}/{good + bad + 1} ") and " files/s ETA 0:00" in bar
    assert len(ShardedImages(out)) == good

    assert main(argv + ["--no-progress"]) == 0  # resumed: nothing left
    cap = capsys.readouterr()
    assert cap.out.splitlines()[1] == f"nothing left to do: {good} images and {bad + 1} skipped were already done"
    assert cap.err == ""

    assert main(argv[:4] + ["48"] + argv[5:]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cxrfast prepare: {out} was prepared with other settings, refusing to mix them")
    assert f"size: {out} has 24, this run asks for 48" in err

    assert main(["prepare", str(tmp_path / "missing"), str(tmp_path / "o2")]) == 2
    assert "missing: no such folder, index CSV or image file" in capsys.readouterr().err


def test_progress_bar_units_rate_eta_and_throttle(monkeypatch):
    from cxrfast import _progress

    f = io.StringIO()
    bar = _progress.Bar(5, "prepare", unit="images", min_interval=3600, file=f)
    for i in range(5):
        bar.step(f"label {i}")
    bar.close()
    lines = f.getvalue().splitlines()
    assert len(lines) == 2, lines  # the first draw, then throttled until the last step
    assert lines[0].startswith("prepare [####....................] 1/5 ") and lines[0].endswith("label 0")
    assert lines[1].startswith(f"prepare [{'#' * 24}] 5/5 ") and " images/s ETA 0:00 label 4" in lines[1]

    f = io.StringIO()
    bar = _progress.Bar(3, "x", file=f)
    bar.step()
    assert " it/s ETA " in f.getvalue() and len(f.getvalue().splitlines()) == 1
    assert _progress._clock(3725) == "1:02:05" and _progress._clock(65) == "1:05"

    # bench's bar is the same one, counting cases (tqdm when it is installed)
    monkeypatch.setitem(sys.modules, "tqdm", None)
    from cxrfast.bench import measure

    bar = measure.progress(4, "bench losses")
    assert isinstance(bar, _progress.Bar) and bar.unit == "case" and bar.min_interval == 0
    assert os.path.basename(_progress.__file__) == "_progress.py"
