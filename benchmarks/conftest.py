"""pytest-benchmark suite of the fused losses: options, the per-session state, the results file.

    .venv/bin/python -m pytest benchmarks --benchmark-only -q        # `make bench`, then report.py

Options (all optional):
    --bench-device auto|cpu|cuda   default auto (CUDA when available)
    --bench-dtype bf16|fp16|fp32   default bf16 on CUDA, fp32 on CPU
    --bench-shapes NAMES           comma-separated shape sets (cxrfast/bench/shapes.py); default "auto":
                                   "gpu" on CUDA; "cpu,gpu" on CPU, where the GPU-only shapes skip with the reason
    --bench-no-compile             skip the torch.compile baselines (slow to compile on CPU)
    --bench-no-rss-target          skip the CPU memory target (B=32768, about 3 minutes on 2 cores)
    --bench-results DIR            default benchmarks/results; the run writes DIR/<device-slug>/losses.json
pytest-benchmark's own --benchmark-json PATH saves its raw statistics as well.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest
import torch

from cxrfast.bench import measure, shapes

RESULTS = Path(__file__).resolve().parent / "results"
SUITE = "losses"


def pytest_addoption(parser):
    group = parser.getgroup("cxrfast-bench", "cxrfast loss benchmarks")
    group.addoption("--bench-device", choices=("auto", "cpu", "cuda"), default="auto")
    group.addoption("--bench-dtype", choices=tuple(measure.DTYPES), default=None)
    group.addoption("--bench-shapes", default="auto",
                    help="comma-separated shape sets; auto: gpu on CUDA, cpu,gpu on CPU (GPU-only shapes skip)")
    group.addoption("--bench-no-compile", action="store_true", help="skip the torch.compile baselines")
    group.addoption("--bench-no-rss-target", action="store_true", help="skip the CPU B=32768 memory target")
    group.addoption("--bench-results", default=str(RESULTS), help="directory of results/<device>/losses.json")


class BenchSession:
    """Device, dtype, the inputs of the current shape (shared by its implementations), collected rows."""

    def __init__(self, config):
        self.config = config
        try:
            self.device = measure.resolve_device(config.getoption("--bench-device"))
        except RuntimeError as exc:
            raise pytest.UsageError(str(exc)) from None
        self.dtype = measure.resolve_dtype(config.getoption("--bench-dtype"), self.device)
        self.compile = not config.getoption("--bench-no-compile")
        self.rows: list[dict] = []
        self.targets: list[dict] = []
        self._env = None
        self._shape = None
        self._inputs = None
        self._cases: dict = {}

    @property
    def env(self) -> dict:
        if self._env is None:
            self._env = measure.environment(self.device)
            self._env["dtype"] = self.dtype
        return self._env

    def skip_reason(self, shape: shapes.Shape, impl: str) -> tuple[str, bool] | None:
        """(why this case does not run here, whether that is a result worth a row) or None."""
        if shape.gpu_only and self.device.type != "cuda":
            return f"GPU-only shape (B={shape.B}, D={shape.D}); this run is on {self.device.type}", False
        if impl == "compiled" and not self.compile:
            return "torch.compile baseline disabled (--bench-no-compile)", False
        if impl != "fused" and shape.fused_only:
            return measure.cpu_baseline_reason(shape), True
        if impl != "fused" and self.device.type == "cpu":
            reason = measure.cpu_baseline_reason(shape)
            if reason:
                return reason, True
        return None

    def case(self, shape: shapes.Shape, impl: str) -> measure.Case:
        """The Case of (shape, impl); inputs are made once per shape and freed when the shape changes."""
        if shape != self._shape:
            self._cases.clear()
            self._inputs = None
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self._inputs = measure.make_inputs(shape, self.device, self.dtype)
            self._shape = shape
        if impl not in self._cases:
            self._cases[impl] = measure.Case(shape, impl, self.device, self.dtype, inputs=self._inputs)
        return self._cases[impl]

    def record(self, row: dict) -> dict:
        self.rows.append(row)
        return row


@pytest.fixture(scope="session")
def bench(request) -> BenchSession:
    return _session(request.config)


def _session(config) -> BenchSession:
    if not hasattr(config, "_cxrfast_bench"):
        config._cxrfast_bench = BenchSession(config)
    return config._cxrfast_bench


def pytest_generate_tests(metafunc):
    """bench_case = (shape, impl, phase) over the chosen sets, shape by shape (inputs are shared)."""
    if "bench_case" not in metafunc.fixturenames:
        return
    names = [s.strip() for s in metafunc.config.getoption("--bench-shapes").split(",") if s.strip()]
    if names == ["auto"]:
        names = ["gpu"] if _session(metafunc.config).device.type == "cuda" else ["cpu", "gpu"]
    seen, params, ids = set(), [], []
    for name in names:
        try:
            chosen = shapes.get(name)
        except KeyError as exc:
            raise pytest.UsageError(f"--bench-shapes: {exc.args[0]}") from None
        for shape in chosen:
            if shape.id in seen:  # the same case in two sets: the first set named wins
                continue
            seen.add(shape.id)
            for impl in measure.IMPLS:
                for phase in measure.PHASES:
                    params.append((name, shape, impl, phase))
                    ids.append(f"{shape.id}-{impl}-{phase}")
    metafunc.parametrize("bench_case", params, ids=ids)


def pytest_sessionfinish(session, exitstatus):
    state = getattr(session.config, "_cxrfast_bench", None)
    if state is None or not (state.rows or state.targets):
        return
    if hasattr(os, "getloadavg"):
        state.env["load_avg_1m_end"] = os.getloadavg()[0]
    out = Path(session.config.getoption("--bench-results")) / state.env["device_slug"] / f"{SUITE}.json"
    measure.write_json(out, measure.results_document(SUITE, state.rows, state.env, state.targets))
    state.written = out


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    state = getattr(config, "_cxrfast_bench", None)
    out = getattr(state, "written", None)
    if out is not None:
        terminalreporter.write_line(f"cxrfast bench: {len(state.rows)} rows written to {out} "
                                    "(render with: python benchmarks/report.py)")
