"""InfoNCE and triplet losses: cxrfast (impl="auto") vs the baselines users run today.

For every shape (cxrfast/bench/shapes.py), implementation and phase:
    implementations  fused     cxrfast.contrastive_loss / triplet_loss, impl="auto" (Triton on CUDA,
                               chunked PyTorch on CPU)
                     baseline  open_clip's ClipLoss pattern / VSE++'s ContrastiveLoss (cxrfast/bench/baselines.py)
                     compiled  the baseline under torch.compile
    phases           fwd, bwd (forward done in the untimed setup), fwdbwd
Timed calls synchronise on CUDA. Each row also carries the peak extra memory (CUDA: max_memory_allocated
after reset, every phase; CPU: peak RSS growth of one fwd+bwd in a fresh process) and the roofline
(nominal FLOPs 2·B²·D forward, 8·B²·D forward+backward; % of the device's peak on known GPUs), in
`benchmark.extra_info` and in results/<device>/losses.json.

Last, the issue's CPU memory target: chunked InfoNCE at B=32768, D=128, forward + backward, peak RSS
growth ≤ 512 MB, measured in a fresh process, with the baseline's figure from the same run.

The test bodies are shared with the other suites: BenchSession.run_case / run_rss_target (conftest.py).
"""

from __future__ import annotations

import pytest

from cxrfast.bench import measure, shapes

SUITE = "losses"  # results/<device>/losses.json
IMPLS = measure.IMPLS  # fused, baseline, compiled


def test_loss(benchmark, bench, bench_case):
    bench.run_case(benchmark, SUITE, bench_case)


@pytest.mark.parametrize("impl", ["fused", "baseline"])
def test_rss_target(benchmark, bench, impl):
    """Peak RSS growth of one fp32 forward + backward at B=32768, D=128, each in a fresh process.
    The benchmark time of this test is that process's wall time (startup + one fwd+bwd); the fwd and
    bwd times measured inside it are in the row."""
    shape = shapes.RSS_TARGET
    bench.run_rss_target(
        benchmark, SUITE, impl, shape, shapes.RSS_TARGET_LIMIT_BYTES,
        name=f"chunked InfoNCE fwd+bwd peak RSS growth at B={shape.B}, D={shape.D} (fp32, CPU)",
        group=f"rss-target: InfoNCE B={shape.B} D={shape.D} fp32, fresh process (startup + one fwd+bwd)")
