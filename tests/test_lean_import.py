"""`import cxrfast` stays lean: no triton, no compiled extension, no CUDA initialisation.

Resolving the ops (first use of cxrfast.contrastive_loss) registers them with torch.library.triton_op,
which imports triton where it is installed; the CPU path still never compiles or launches a kernel,
loads the extension or touches CUDA."""

import subprocess
import sys

CHECK = """
import sys, torch
import cxrfast
assert "triton" not in sys.modules, "import cxrfast imported triton"
assert "cxrfast._C" not in sys.modules, "import cxrfast loaded the compiled extension"
assert "cxrfast.ops" not in sys.modules, "import cxrfast imported cxrfast.ops eagerly"
assert not torch.cuda.is_initialized()
dir(cxrfast)
assert "triton" not in sys.modules and "cxrfast.ops" not in sys.modules, "dir(cxrfast) imported the ops"
f = cxrfast.contrastive_loss          # resolving the API registers the ops
import cxrfast.nn
x = torch.randn(4, 3)
f(x, x, 2.0)                          # the CPU path: chunked PyTorch
cxrfast.triplet_loss(x, x)
assert not any(m.startswith("cxrfast.kernels") for m in sys.modules), "the CPU path imported the kernels"
assert "cxrfast._C" not in sys.modules
assert not torch.cuda.is_initialized()
print("lean")
"""


def test_import_is_lean():
    env = {"PATH": "/usr/bin:/bin", "CXRFAST_IMPL": ""}
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "lean"
