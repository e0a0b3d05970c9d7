"""Every csrc/cuda/*.cu compiles stand-alone with nvcc (no torch headers, no GPU needed)."""

import pathlib
import shutil
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
CU_FILES = sorted((REPO / "csrc" / "cuda").glob("*.cu"))


def test_cuda_sources_exist():
    assert CU_FILES, "no csrc/cuda/*.cu found"


@pytest.mark.parametrize("source", CU_FILES, ids=lambda p: p.name)
def test_nvcc_compiles(source, tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not on PATH")
    cmd = [nvcc, "-c", "-std=c++17", "-gencode=arch=compute_90,code=sm_90", f"-I{REPO / 'csrc'}", str(source),
           "-o", str(tmp_path / (source.stem + ".o"))]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    assert (tmp_path / (source.stem + ".o")).stat().st_size > 0
