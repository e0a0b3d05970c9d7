"""Test-session setup.

Without a GPU the Triton kernels run under the Triton interpreter on CPU tensors. TRITON_INTERPRET must
be set before triton is first imported, so it is set here, at collection start. With CUDA present
the same tests run the compiled kernels on CUDA tensors instead.
"""

import os

import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

DEVICE = "cuda" if HAS_CUDA else "cpu"


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run on the GPU machine: see README, 'GPU checks')")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip)


@pytest.fixture
def device():
    """Where the Triton path runs: CUDA when present, else CPU under the interpreter."""
    return DEVICE


@pytest.fixture(autouse=True)
def _fresh_seed(request):
    # fresh random inputs in every test, reproducible from the test id when a failure must be replayed
    seed = abs(hash(request.node.nodeid)) % (2**31)
    torch.manual_seed(seed)
    yield
