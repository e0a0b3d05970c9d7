"""A build without zlib (setup.py links zlib only when zlib.h is found): the parser, compiled here without
CXRFAST_WITH_ZLIB, refuses the deflated syntax with an error saying why, and still parses the others."""

import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

MAIN = r"""
#include <cstdio>
#include <fstream>
#include <iterator>
#include <vector>
#include "dicom.h"
int main(int argc, char** argv) {
  for (int k = 1; k < argc; ++k) {
    std::ifstream f(argv[k], std::ios::binary);
    std::vector<std::uint8_t> d((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    try {
      cxrfast::dicom::Parsed p = cxrfast::dicom::parse(d.data(), d.size());
      std::printf("parsed %dx%d\n", p.rows, p.columns);
    } catch (const cxrfast::dicom::ParseError& e) {
      std::printf("ParseError: %s\n", e.what());
    }
  }
}
"""


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_deflated_syntax_without_zlib_is_refused_saying_so(tmp_path):
    pydicom = pytest.importorskip("pydicom", reason="the inputs are pydicom's test files")
    (tmp_path / "main.cpp").write_text(MAIN)
    exe = tmp_path / "parse"
    build = subprocess.run(["g++", "-std=c++17", "-O0", "-I", str(ROOT / "csrc"), str(tmp_path / "main.cpp"),
                            str(ROOT / "csrc/cpu/dicom.cpp"), str(ROOT / "csrc/cpu/jpeg_lossless.cpp"), "-o", str(exe)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-4000:]
    files = [pydicom.data.get_testdata_file(n, download=False) for n in ("image_dfl.dcm", "MR_small.dcm")]
    run = subprocess.run([str(exe), *files], capture_output=True, text=True, timeout=60)
    assert run.stdout.splitlines() == [
        "ParseError: tag (0002,0010): transfer syntax 1.2.840.10008.1.2.1.99 (Deflated Explicit VR Little Endian) "
        "is not supported by this build (built without zlib)",
        "parsed 64x64",
    ], run.stdout + run.stderr
