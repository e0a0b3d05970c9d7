"""The README's examples run as written, and its quick start is the two make commands."""

import os
import pathlib
import re
import subprocess
import sys

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_python_examples_run(tmp_path):
    """Each example runs as a user on a CPU machine runs it: in a fresh interpreter without
    TRITON_INTERPRET (in-process, unsetting it would leave compiled-mode kernels imported for later tests)."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    losses = next(i for i, b in enumerate(blocks) if "cxrfast.contrastive_loss(img" in b)
    blocks[losses] += "\nassert img.grad is not None and loss.ndim == 0\n"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    for n, code in enumerate(blocks):
        script = tmp_path / f"example_{n}.py"
        script.write_text(code)
        # torch's warning about a scalar read from a tensor that requires grad was printed by the README's
        # ContrastiveLoss example (its repr): an example that warns is an error
        run = subprocess.run([sys.executable, "-W", "error:Converting a tensor with requires_grad=True",
                              str(script)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
        assert run.returncode == 0, f"README example {n} failed:\n{run.stderr[-3000:]}"


def test_quick_start_is_make_demo_and_make_test():
    text = README.read_text()
    quick = text.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = re.findall(r"^make \w+", quick, flags=re.M)
    assert commands == ["make demo", "make test"]
