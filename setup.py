"""Build of cxrfast: Python packages + the compiled extension cxrfast._C (csrc/).

Metadata lives in pyproject.toml; this file declares what setuptools cannot express there:
- kernels/ (top level in the repository) is installed as ``cxrfast.kernels`` -- never as a
  top-level ``kernels``, which is a different PyPI package;
- cxrfast._C: C++ sources always; CUDA sources too when the installed torch is a CUDA build and
  nvcc is found (then CXRFAST_WITH_CUDA is defined); zlib when zlib.h is found (then
  CXRFAST_WITH_ZLIB is defined: the deflated DICOM transfer syntax).

Environment:
  CXRFAST_NO_EXT=1   skip the extension (pure-Python install; torch not needed to build).
  CXRFAST_DEBUG=1    build the extension with -O0 -g instead of -O3 -g0.

torch must be importable at build time: install with --no-build-isolation (see pyproject.toml).
This file never imports cxrfast.
"""

import glob
import os

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
KERNELS_DIR = "kernels"


def _packages():
    """cxrfast, its subpackages, and kernels/ (with any subpackages) remapped under cxrfast."""
    packages = find_packages(where=ROOT, include=["cxrfast", "cxrfast.*"])
    packages.append("cxrfast.kernels")
    packages += ["cxrfast.kernels." + p for p in find_packages(where=os.path.join(ROOT, KERNELS_DIR))]
    return packages


def _sources(pattern):
    """Sorted source paths relative to the project root (setuptools rejects absolute paths)."""
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def _zlib_include_dir():
    """The directory holding zlib.h (for the deflated DICOM transfer syntax), or None: the extension then
    builds without zlib and reads of deflated files raise a DicomError saying so."""
    import sysconfig

    candidates = [os.environ.get("ZLIB_ROOT") and os.path.join(os.environ["ZLIB_ROOT"], "include")]
    candidates += os.environ.get("CPATH", "").split(os.pathsep) + os.environ.get("C_INCLUDE_PATH", "").split(os.pathsep)
    candidates += [os.environ.get("CONDA_PREFIX") and os.path.join(os.environ["CONDA_PREFIX"], "include"),
                   sysconfig.get_paths().get("include"), "/usr/local/include", "/usr/include"]
    for d in candidates:
        if d and os.path.exists(os.path.join(d, "zlib.h")):
            return d
    return None


def _extensions():
    """([extension], cmdclass) for cxrfast._C, or ([], {}) when CXRFAST_NO_EXT=1."""
    if os.environ.get("CXRFAST_NO_EXT", "0") == "1":
        print("cxrfast: CXRFAST_NO_EXT=1, building without the C++ extension cxrfast._C")
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError as exc:
        raise RuntimeError(
            "cxrfast: building the extension cxrfast._C needs torch in the build environment "
            f"({exc}). Install with `pip install --no-build-isolation --no-deps ...` into an "
            "environment that has torch, or set CXRFAST_NO_EXT=1 for a pure-Python build."
        ) from exc

    cpp_sources = _sources("csrc/*.cpp") + _sources("csrc/cpu/*.cpp")
    cpp_sources.remove(os.path.join("csrc", "bindings_cuda.cpp"))
    cuda_home = cpp_extension.CUDA_HOME
    nvcc = os.path.join(cuda_home, "bin", "nvcc") if cuda_home else None
    with_cuda = bool(torch.version.cuda) and nvcc is not None and os.path.exists(nvcc)

    # C++20 for host code: torch>=2.10 headers are written for it (torch's own default); the .cu
    # files include no torch headers and stay C++17 so `nvcc -std=c++17` compile-checks them.
    # -g0 overrides the -g in Python's CFLAGS: a third less compile time, and a .so of ~0.2 MB
    # instead of ~12 MB.
    debug = os.environ.get("CXRFAST_DEBUG", "0") == "1"
    cxx_flags = (["-O0", "-g"] if debug else ["-O3", "-g0"]) + ["-std=c++20"]
    nvcc_flags = (["-O0", "-g", "-lineinfo"] if debug else ["-O3"]) + ["-std=c++17"]
    common = dict(
        name="cxrfast._C",
        include_dirs=[os.path.join(ROOT, "csrc")],
    )
    zlib_dir = _zlib_include_dir()
    macros = []
    if zlib_dir:
        if zlib_dir not in ("/usr/include", "/usr/local/include"):  # -I of a system dir breaks #include_next
            common["include_dirs"].append(zlib_dir)
            common["library_dirs"] = [os.path.join(os.path.dirname(zlib_dir), "lib")]
        common["libraries"] = ["z"]
        macros.append(("CXRFAST_WITH_ZLIB", None))
    else:
        print("cxrfast: zlib.h not found, building without the deflated DICOM transfer syntax")
    if with_cuda:
        print(f"cxrfast: building cxrfast._C with CUDA (torch CUDA {torch.version.cuda}, nvcc {nvcc})")
        ext = cpp_extension.CUDAExtension(
            sources=cpp_sources + ["csrc/bindings_cuda.cpp"] + _sources("csrc/cuda/*.cu"),
            define_macros=[("CXRFAST_WITH_CUDA", None)] + macros,
            extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
            **common,
        )
    else:
        why = "torch has no CUDA" if not torch.version.cuda else "nvcc not found (CUDA_HOME)"
        print(f"cxrfast: building cxrfast._C for CPU only ({why})")
        ext = cpp_extension.CppExtension(
            sources=cpp_sources,
            define_macros=macros,
            extra_compile_args={"cxx": cxx_flags},
            **common,
        )
    build_ext = cpp_extension.BuildExtension.with_options(use_ninja=True)
    return [ext], {"build_ext": build_ext}


ext_modules, cmdclass = _extensions()

setup(
    packages=_packages(),
    package_dir={"cxrfast.kernels": KERNELS_DIR},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
