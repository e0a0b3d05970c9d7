"""The `cxrfast` command as a new user meets it: --version, doctor, dicom info / render, explain, prepare's
pipeline options, the bench suites (named, explained in --help, refusing GPU shape sets on a CPU, spread
beside the median), --no-progress, and a --help that imports nothing heavy."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "CXRFAST_IMPL", "PYTHONPATH")}
    return env


def _run(*argv, timeout=300):
    return subprocess.run([sys.executable, "-m", "cxrfast", *argv], capture_output=True, text=True, timeout=timeout,
                          env=_env(), cwd=ROOT)


def _testfile(name):
    pydicom = pytest.importorskip("pydicom")
    return pydicom.data.get_testdata_file(name, download=False)


def _needs_ext():
    from cxrfast import _ext

    if not _ext.load():
        pytest.skip(f"cxrfast._C is not built: {_ext.unavailable_reason()}")


# ------------------------------------------------------------------------------------------ fast paths

@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["bench", "--help"], ["dicom", "--help"],
                                  ["explain", "--help"], ["doctor", "--help"]])
def test_help_and_version_import_nothing_heavy(argv):
    code = ("import sys\nfrom cxrfast.cli import main\ntry:\n    code = main(%r)\nexcept SystemExit as e:\n"
            "    code = e.code\nheavy = [m for m in ('torch', 'cxrfast.io', 'cxrfast._C', 'triton', 'pydicom', 'cv2') "
            "if m in sys.modules]\nprint('EXIT', code, 'HEAVY', heavy)\n" % (argv,))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=_env(),
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "EXIT 0 HEAVY []" in proc.stdout, proc.stdout[-2000:]


def test_version():
    import cxrfast

    proc = _run("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"cxrfast {cxrfast.__version__}"


def test_bench_help_names_and_explains_every_suite():
    proc = _run("bench", "--help")
    assert proc.returncode == 0
    for suite, words in (("losses", "InfoNCE"), ("local", "word–region"), ("decode", "read_dicom"),
                         ("radiograph", "load_radiograph")):
        line = next((ln for ln in proc.stdout.splitlines() if ln.strip().startswith(suite)), "")
        assert words in proc.stdout and line, (suite, proc.stdout)


# ------------------------------------------------------------------------------------------ doctor

def test_doctor_says_what_is_there_and_what_each_missing_piece_costs():
    proc = _run("doctor")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for name in ("python", "torch", "CUDA", "triton", "cxrfast._C", "CUDA kernels of cxrfast._C", "zlib", "DALI",
                 "imagecodecs", "pydicom", "opencv", "pillow"):
        assert re.search(rf"^\s*{re.escape(name)}\s", text, flags=re.M), (name, text)
    import torch

    if not torch.cuda.is_available():
        cuda_line = next(ln for ln in text.splitlines() if ln.strip().startswith("CUDA "))
        assert "no" in cuda_line and "chunked" in cuda_line  # what it costs: the CPU paths
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        dali = next(ln for ln in text.splitlines() if ln.strip().startswith("DALI"))
        assert "not installed" in dali and "DataLoader" in dali


# ------------------------------------------------------------------------------------------ dicom

def test_dicom_info_shows_the_attributes_read_dicom_reads():
    _needs_ext()
    proc = _run("dicom", "info", _testfile("CT_small.dcm"))
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for needle in ("transfer syntax   1.2.840.10008.1.2.1 (Explicit VR Little Endian)", "codec             native",
                   "frames            1", "rows × columns    128 × 128", "bits stored       16",
                   "photometric       MONOCHROME2", "rescale           slope 1, intercept -1024"):
        assert needle in text, (needle, text)


def test_dicom_info_on_a_file_without_pixels_and_on_a_file_that_is_not_dicom(tmp_path):
    _needs_ext()
    proc = _run("dicom", "info", _testfile("rtplan.dcm"))
    assert proc.returncode == 0, proc.stderr
    assert "pixel data        none: not an image" in proc.stdout and "RT Plan" in proc.stdout
    text = tmp_path / "notes.txt"
    text.write_text("hello\n" * 30)
    proc = _run("dicom", "info", str(text))
    assert proc.returncode == 2 and "not a DICOM file" in proc.stderr and "looks like text" in proc.stderr


def test_dicom_render_writes_what_load_radiograph_returns(tmp_path):
    _needs_ext()
    from PIL import Image

    import cxrfast.io

    out = tmp_path / "ct.png"
    proc = _run("dicom", "render", _testfile("CT_small.dcm"), str(out), "--size", "64", "--voi", "percentile")
    assert proc.returncode == 0, proc.stderr
    got = np.asarray(Image.open(out))
    want = cxrfast.io.load_radiograph(_testfile("CT_small.dcm"), 64, voi="percentile").image
    np.testing.assert_array_equal(got, want)
    assert str(out) in proc.stdout
    bad = _run("dicom", "render", _testfile("CT_small.dcm"), str(tmp_path / "x.png"), "--size", "0")
    assert bad.returncode == 2 and "--size" in bad.stderr


# ------------------------------------------------------------------------------------------ explain

def test_explain_on_the_command_line():
    proc = _run("explain", "contrastive_loss", "--batch", "64", "--dim", "32", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("contrastive_loss: chunked (auto; ") and "on cpu" in proc.stdout
    proc = _run("explain", "lovt_local_loss", "--grid", "7", "7", "--device", "cpu")
    assert proc.returncode == 0 and proc.stdout.startswith("lovt_local_loss: batched"), proc.stderr
    proc = _run("explain", "local_contrastive_loss", "--regions", "49", "--words", "20", "--dtype", "bf16",
                "--impl", "reference", "--device", "cpu")
    assert proc.returncode == 0 and proc.stdout.startswith("local_contrastive_loss: reference (reference; ")
    proc = _run("explain", "nope")
    assert proc.returncode == 2 and "invalid choice: 'nope'" in proc.stderr


def test_explain_asked_for_cuda_without_a_gpu_says_so():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = _run("explain", "triplet_loss", "--device", "cuda")
    assert proc.returncode == 2
    assert re.search(r"--device cuda: (torch was built without CUDA|no CUDA device is visible)", proc.stderr)


# ------------------------------------------------------------------------------------------ prepare

def test_prepare_takes_the_pipeline_options(tmp_path, capsys):
    _needs_ext()
    pytest.importorskip("pydicom")
    sys.path.insert(0, str(ROOT / "tests" / "data"))
    import radiograph_files as rf

    from cxrfast.cli import main
    from cxrfast.data import ShardedImages
    from cxrfast.io import load_radiograph

    src = tmp_path / "src"
    (src / "PA").mkdir(parents=True)
    (src / "LAT").mkdir()
    for i, sub in enumerate(("PA", "PA", "LAT")):
        (src / sub / f"{i}.dcm").write_bytes(rf.dicom_bytes(rf.radiograph(30, 40, seed=i), seed=i))
    argv = ["prepare", str(src), str(tmp_path / "out"), "--size", "16", "--workers", "0", "--no-progress",
            "--voi", "window", "--window", "1500", "800", "--invert", "yes", "--resample", "bilinear",
            "--dtype", "uint16", "--frame", "0", "--include", "PA/*", "--exclude", "*/1.dcm"]
    assert main(argv) == 0, capsys.readouterr().err
    ds = ShardedImages(tmp_path / "out")
    assert [r["path"] for r in ds.metadata] == ["PA/0.dcm"]
    want = load_radiograph(src / "PA" / "0.dcm", 16, voi="window", window=(1500, 800), invert=True,
                           resample="bilinear", dtype="uint16").image
    np.testing.assert_array_equal(ds[0][0], want)
    opts = json.loads((tmp_path / "out" / "manifest.json").read_text())["options"]
    assert (opts["voi"], opts["window"], opts["invert"], opts["resample"], opts["include"], opts["exclude"]) == \
        ("window", [1500.0, 800.0], True, "bilinear", ["PA/*"], ["*/1.dcm"])
    assert main(["prepare", str(src), str(tmp_path / "o2"), "--percentiles", "5", "2"]) == 2
    assert "percentiles must satisfy 0 <= low < high <= 100" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["prepare", str(src), str(tmp_path / "o3"), "--frame", "first"])
    assert "--frame: expected an integer >= 0 or 'all'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ bench

def test_gpu_shapes_on_a_cpu_say_they_need_a_gpu():
    from cxrfast.cli import main

    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = _run("bench", "losses", "--shapes", "gpu", "--device", "cpu", "--no-progress")
    assert proc.returncode == 2
    assert "shape set 'gpu' holds GPU-only shapes: it needs a GPU" in proc.stderr
    assert main is not None


def test_bench_losses_shows_the_spread_and_takes_no_progress():
    proc = _run("bench", "losses", "--shapes", "smoke", "--device", "cpu", "--rounds", "3", "--no-memory",
                "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.strip() == "", proc.stderr  # no bar
    header = next(ln for ln in proc.stdout.splitlines() if ln.startswith("loss "))
    assert "cxrfast p20–p80" in header and "baseline p20–p80" in header
    row = next(ln for ln in proc.stdout.splitlines() if ln.startswith("infonce"))
    assert re.search(r"\d[\d.]* [mu]?s–\d[\d.]* [mu]?s", row), row


def test_bench_local_runs_the_word_region_suite():
    proc = _run("bench", "local", "--shapes", "local-smoke", "--device", "cpu", "--rounds", "2", "--no-memory",
                "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(r"^local\s+smoke\s+8\s", proc.stdout, flags=re.M), proc.stdout
    assert "infonce" not in proc.stdout


@pytest.mark.parametrize("suite", ["decode", "radiograph"])
def test_bench_decode_and_radiograph(suite):
    _needs_ext()
    pytest.importorskip("pydicom")
    size = ["--size", "64", "--files", "4"] if suite == "radiograph" else []
    proc = _run("bench", suite, "--shape", "200x160", "--rounds", "3", "--no-progress", *size)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    assert "raw 12-bit 200x160" in text and "cxrfast" in text and "pydicom" in text, text
    assert "median (p20–p80)" in text
    assert re.search(r"\d[\d.]* [mu]?s \(\d[\d.]* [mu]?s–\d[\d.]* [mu]?s\)", text), text


def test_the_commands_op_list_is_explains():
    """cli.EXPLAIN_OPS is spelled out so that parsing imports no torch; it must stay explain's list."""
    from cxrfast import cli
    from cxrfast.ops._dispatch import EXPLAINED

    assert set(cli.EXPLAIN_OPS) == set(EXPLAINED)
