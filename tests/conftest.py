"""Test-session setup.

Without a GPU the Triton kernels run under the Triton interpreter on CPU tensors. TRITON_INTERPRET must
be set before triton is first imported, so it is set here, at collection start. With CUDA present
the same tests run the compiled kernels on CUDA tensors instead.
"""

import os
import random
import zlib

import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

DEVICE = "cuda" if HAS_CUDA else "cpu"
# The session seed. By default a fixed one: `make test` and CI never fail by chance. CXRFAST_TEST_SEED=<n>
# replays a seed; CXRFAST_TEST_SEED=random (`make test-fresh`) draws a fresh one and prints it — the
# developers' bug-finding tool (tests/flakes.py runs many). A failure under any seed is fixed at its cause.
DEFAULT_TEST_SEED = 0


def _session_seed(value: str | None) -> int:
    if value is None or value == "":
        return DEFAULT_TEST_SEED
    if value == "random":
        return random.SystemRandom().randrange(2**31)
    try:
        return int(value)
    except ValueError:
        raise pytest.UsageError(f"CXRFAST_TEST_SEED must be an integer or 'random', got {value!r}") from None


SESSION_SEED = _session_seed(os.environ.get("CXRFAST_TEST_SEED"))


def pytest_report_header(config):
    return f"cxrfast: device={DEVICE}, TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '0')}, " \
           f"CXRFAST_TEST_SEED={SESSION_SEED}"


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
    """Each test draws from its own stream: the session seed mixed with the test id."""
    torch.manual_seed(SESSION_SEED ^ zlib.crc32(request.node.nodeid.encode()))
    yield


def pytest_runtest_logreport(report):
    """With CXRFAST_FAILURE_LOG=<file>: append each failure (test id and the error's last lines) the moment
    it is reported, so that a run cut short by a time limit (a lent GPU's) still names what failed.
    Under xdist this runs in the controlling process, for every worker's reports."""
    path = os.environ.get("CXRFAST_FAILURE_LOG")
    if not path or not report.failed:
        return
    text = str(report.longrepr).splitlines()
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"FAILED ({report.when}) {report.nodeid}\n" + "\n".join("    " + line for line in text[-25:]) + "\n")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The report header is hidden under -q: repeat the seed when it was drawn fresh, and when something
    failed, so it can be replayed."""
    failed = terminalreporter.stats.get("failed") or terminalreporter.stats.get("error")
    if failed or os.environ.get("CXRFAST_TEST_SEED") == "random":
        terminalreporter.write_line(f"{'replay with' if failed else 'seed:'} CXRFAST_TEST_SEED={SESSION_SEED}")


PAIR_METHODS = [("fused", "atomic"), ("gemm", "gemm")]


@pytest.fixture(params=PAIR_METHODS, ids=lambda m: "-".join(m))
def pair_methods(request, monkeypatch):
    """The pair kernels' (forward, backward) methods (kernels.pairwise.forward_method / backward_method):
    every method at least once. For the score-panel methods the panels are made as small as they go, so
    that tiny test shapes still walk several panels."""
    fwd, bwd = request.param
    monkeypatch.setenv("CXRFAST_PAIRWISE_FWD", fwd)
    monkeypatch.setenv("CXRFAST_PAIRWISE_BWD", bwd)
    from cxrfast.kernels import panels

    monkeypatch.setattr(panels, "SCORE_PANEL_BYTES", 1)
    return request.param
