"""The wheel is self-contained: kernels/ ships as cxrfast.kernels and cxrfast._C is inside it.

Builds a wheel from a clean copy of the working tree -- the files git would see: tracked plus
untracked-but-not-ignored -- so stale build/ or in-place artefacts of a checkout cannot leak in;
installs it into a fresh venv that borrows torch/triton from the running environment through a
.pth file; imports it from outside the repository.
"""

import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile

REPO = pathlib.Path(__file__).resolve().parents[2]


def copy_source_tree(dst):
    """Copy what a clone (+ the developer's new files) holds; without git, all but build output."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO, capture_output=True, check=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        shutil.copytree(REPO, dst, ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.so"))
        return
    for rel in filter(None, listed):
        if (REPO / rel).is_file():  # deleted-but-tracked files are listed too
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dst / rel)


def run(cmd, *, cwd, env, timeout=600):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, (
        f"`{' '.join(map(str, cmd))}` exited {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
    )
    return proc.stdout


def clean_env():
    env = dict(os.environ)
    for var in ("CXRFAST_NO_EXT", "PYTHONPATH", "PYTHONHOME", "PIP_REQUIRE_VIRTUALENV"):
        env.pop(var, None)
    env.update(PYTHONNOUSERSITE="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def expected_wheel_modules(tree):
    """Every .py of cxrfast/ and kernels/ in `tree`, as its path inside the wheel."""
    paths = {str(p.relative_to(tree)) for p in (tree / "cxrfast").rglob("*.py")}
    paths |= {"cxrfast/kernels/" + str(p.relative_to(tree / "kernels"))
              for p in (tree / "kernels").rglob("*.py")}
    return {p for p in paths if "__pycache__" not in p}


def test_wheel_installs_and_imports_outside_the_repo(tmp_path):
    env = clean_env()
    src, dist, venv = tmp_path / "src", tmp_path / "dist", tmp_path / "venv"
    copy_source_tree(src)

    run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-index",
         "-w", dist, src], cwd=tmp_path, env=env)
    (wheel,) = dist.glob("cxrfast-0.1.0-*.whl")

    names = set(zipfile.ZipFile(wheel).namelist())
    assert not {n for n in names if n.startswith("kernels/")}, "kernels/ must not be top-level"
    assert any(n.startswith("cxrfast/_C.") and n.endswith(".so") for n in names), sorted(names)
    missing = expected_wheel_modules(src) - names
    assert not missing, f"modules missing from the wheel (a package without __init__.py?): {missing}"
    meta = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert "cxrfast = cxrfast.cli:main" in meta

    run([sys.executable, "-m", "venv", venv], cwd=tmp_path, env=env)
    vpy = venv / "bin" / "python"
    venv_site = pathlib.Path(run([vpy, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 cwd=tmp_path, env=env).strip())
    # torch, triton, numpy come from the running environment, appended after the venv's own
    # site-packages (a path line in a .pth is not itself scanned for .pth files, so an editable
    # cxrfast installed there stays inert).
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (venv_site / "_cxrfast_test_parent_env.pth").write_text("\n".join(ours) + "\n")
    run([vpy, "-m", "pip", "install", "--no-deps", "--no-index", wheel], cwd=tmp_path, env=env)
    assert (venv / "bin" / "cxrfast").exists(), "console script `cxrfast` not installed"

    probe = textwrap.dedent("""
        import cxrfast.kernels.contrastive, cxrfast._C
        print(cxrfast.kernels.contrastive.__file__)
        print(cxrfast._C.__file__)
        import torch
        from cxrfast import _ext
        assert _ext.load(), _ext.unavailable_reason()
        print(_ext.group_counts(torch.tensor([5, -1, 5])).tolist())
    """)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    lines = run([vpy, "-c", probe], cwd=outside, env=env).split()
    kernel_file, ext_file = pathlib.Path(lines[0]).resolve(), pathlib.Path(lines[1]).resolve()
    site = venv_site.resolve()
    assert kernel_file == site / "cxrfast" / "kernels" / "contrastive.py", kernel_file
    assert ext_file.parent == site / "cxrfast", ext_file
    assert REPO not in kernel_file.parents and REPO not in ext_file.parents
    assert lines[2:] == ["[2,", "1,", "2]"]
