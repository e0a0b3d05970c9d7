"""The DICOM parser under AddressSanitizer + UBSan: csrc/fuzz/run.sh builds the fuzz target with g++ and
runs 20,000 mutants of pydicom's test files (csrc/fuzz/RESULTS.md records the long runs)."""

import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ with AddressSanitizer")
def test_parser_survives_20000_mutants_under_asan():
    pytest.importorskip("pydicom", reason="the seeds are pydicom's test files")
    run = subprocess.run(["bash", str(ROOT / "csrc" / "fuzz" / "run.sh"), "20000"], capture_output=True, text=True,
                         cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert "20000 iterations, no crash" in run.stdout
