"""pytest-benchmark suites of the fused losses: options, the per-session state and the shared test
bodies (`BenchSession.run_case`, `BenchSession.run_rss_target`), the results files.

    .venv/bin/python -m pytest benchmarks --benchmark-only -q        # `make bench`, then report.py

Suites: each test module names its suite (module-level SUITE, default "losses") and the implementations
it compares (IMPLS, default all of cxrfast.bench.measure.IMPLS); a test taking the `bench_case` fixture is
parametrised over that suite's shapes (cxrfast.bench.shapes.for_suite) × IMPLS × phases. Rows and targets
are kept per suite and written to DIR/<device-slug>/<suite>.json: test_bench_losses.py -> losses.json,
test_bench_local.py -> local.json (a suite with no rows in this run leaves its file alone).

Options (all optional):
    --bench-device auto|cpu|cuda   default auto (CUDA when available)
    --bench-dtype bf16|fp16|fp32   default bf16 on CUDA, fp32 on CPU
    --bench-shapes NAMES           comma-separated shape sets (cxrfast/bench/shapes.py); default "auto":
                                   "gpu" on CUDA; "cpu,gpu" on CPU, where the GPU-only shapes skip with the
                                   reason. The local suite reads "local-<name>" (so "cpu" is "local-cpu")
    --bench-no-compile             skip the torch.compile baselines (slow to compile on CPU)
    --bench-no-rss-target          skip the CPU memory targets (InfoNCE B=32768, about 3 minutes on 2 cores;
                                   local B=256, about 3 minutes with the baseline)
    --bench-results DIR            default benchmarks/results; the run writes DIR/<device-slug>/<suite>.json
    --bench-merge                  keep the rows and targets of the existing results file that this run did
                                   not measure (a session split into several runs: the headline cases
                                   first, the rest after); without it a run replaces the suite's file
pytest-benchmark's own --benchmark-json PATH saves its raw statistics as well.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest
import torch

from cxrfast.bench import measure, shapes
from cxrfast.bench.fmt import fmt_bytes

RESULTS = Path(__file__).resolve().parent / "results"
# what each row also puts in pytest-benchmark's extra_info (and so in --benchmark-json)
EXTRA_KEYS = ("impl_detail", "dtype", "device", "median_s", "p20_s", "p80_s", "rounds", "peak_mem_bytes",
              "mem_method", "flops", "tflops", "peak_tflops", "pct_peak", "pct_roofline", "note")


def pytest_addoption(parser):
    group = parser.getgroup("cxrfast-bench", "cxrfast loss benchmarks")
    group.addoption("--bench-device", choices=("auto", "cpu", "cuda"), default="auto")
    group.addoption("--bench-dtype", choices=tuple(measure.DTYPES), default=None)
    group.addoption("--bench-shapes", default="auto",
                    help="comma-separated shape sets; auto: gpu on CUDA, cpu,gpu on CPU (GPU-only shapes skip)")
    group.addoption("--bench-no-compile", action="store_true", help="skip the torch.compile baselines")
    group.addoption("--bench-no-rss-target", action="store_true",
                    help="skip the CPU memory targets (InfoNCE B=32768, local B=256)")
    group.addoption("--bench-results", default=str(RESULTS), help="directory of results/<device>/<suite>.json")
    group.addoption("--bench-merge", action="store_true",
                    help="keep the rows/targets of the existing results file that this run did not measure")


class BenchSession:
    """Device, dtype, the inputs of the current shape (shared by its implementations), collected rows and
    targets per suite, and the test bodies the suites share."""

    def __init__(self, config):
        self.config = config
        try:
            self.device = measure.resolve_device(config.getoption("--bench-device"))
        except RuntimeError as exc:
            raise pytest.UsageError(str(exc)) from None
        self.dtype = measure.resolve_dtype(config.getoption("--bench-dtype"), self.device)
        self.compile = not config.getoption("--bench-no-compile")
        self.rows: dict[str, list[dict]] = {suite: [] for suite in shapes.SUITES}
        self.targets: dict[str, list[dict]] = {suite: [] for suite in shapes.SUITES}
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

    def record(self, suite: str, row: dict) -> dict:
        self.rows[suite].append(row)
        return row

    def find_row(self, suite: str, shape_id: str, impl: str, phase: str) -> dict | None:
        """The last row of (shape, impl, phase) recorded in this run, else None."""
        for row in reversed(self.rows[suite]):
            if (row["shape_id"], row["impl"], row["phase"]) == (shape_id, impl, phase):
                return row
        return None

    def target_entry(self, suite: str, shape: shapes.Shape, name: str, **fields) -> dict:
        """The target of `shape` named `name` in this run's results (made on first use, with `fields`)."""
        for t in self.targets[suite]:
            if t["shape_id"] == shape.id and t["name"] == name:
                return t
        entry = {"name": name, "shape_id": shape.id, "B": shape.B, "D": shape.D, **fields}
        entry.setdefault("passed", None)
        self.targets[suite].append(entry)
        return entry

    # the shared test bodies ----------------------------------------------------------------------
    def skip(self, suite, shape, impl, phase, status, reason, shape_set, keep_row=True):
        """Record the case as not run (unless `keep_row` is false) and skip the test."""
        if keep_row:
            self.record(suite, measure.make_row(shape, impl, phase, env=self.env, dtype=self.dtype, status=status,
                                                note=reason, shape_set=shape_set))
        pytest.skip(f"{status}: {reason}" if status == "OOM" else reason)

    def memory(self, case: measure.Case, phase: str) -> tuple[int | None, str | None, str]:
        """(peak extra bytes, method, note) of one call of the phase: CUDA every phase; CPU fwd+bwd in a
        fresh process."""
        if self.device.type == "cuda":  # the largest peak over the timed calls (Case.collect_peak)
            return case.collect_peak(), "cuda-max-allocated", ""
        if phase != "fwdbwd":
            return None, None, ""
        if case.impl == "compiled":
            return None, None, "memory not measured for torch.compile on CPU (a fresh process recompiles)"
        res = measure.rss_peak_subprocess(case.shape, case.impl, case.dtype)
        note = "" if res["status"] == "ok" else f"memory: {res['status']} {res.get('note', '')}".strip()
        return res.get("peak_extra_bytes") if res["status"] == "ok" else None, "rss-subprocess", note

    def run_case(self, benchmark, suite: str, bench_case) -> dict:
        """Time one (shape, impl, phase) with pytest-benchmark, measure its memory, record the row."""
        shape_set, shape, impl, phase = bench_case
        skip = self.skip_reason(shape, impl)
        if skip is not None:
            reason, keep = skip
            self.skip(suite, shape, impl, phase, "skipped", reason, shape_set, keep_row=keep and phase == "fwdbwd")
        benchmark.group = f"{shape.id} {phase} ({self.dtype})"
        case = None
        try:
            case = self.case(shape, impl)
            estimate = measure.warm_up(case, phase)
            setup, target = case.phase(phase)
            benchmark.pedantic(target, setup=setup, rounds=measure.plan_rounds(estimate, self.device),
                               warmup_rounds=0, iterations=1)
            mem, method, note = self.memory(case, phase)
        except measure.Skip as exc:
            self.skip(suite, shape, impl, phase, exc.status, exc.reason, shape_set)
        finally:
            if case is not None:
                case.reset()
        if benchmark.stats is None:  # --benchmark-disable: the target ran once, untimed
            pytest.skip("benchmarking disabled")
        row = self.record(suite, measure.make_row(
            case, impl, phase, env=self.env, dtype=self.dtype, samples=benchmark.stats.stats.data,
            detail=case.detail, peak_mem_bytes=mem, mem_method=method, note=note, shape_set=shape_set))
        benchmark.extra_info.update({k: row.get(k) for k in EXTRA_KEYS})
        return row

    def run_rss_target(self, benchmark, suite: str, impl: str, shape: shapes.Shape, limit: int, name: str,
                       group: str, *, fused_cap: int = 4 * 2**30, baseline_timeout_s: float = 900) -> dict:
        """A CPU memory target: peak RSS growth of one fp32 forward + backward of `shape` in a fresh
        process, at most `limit` for the fused implementation (asserted), the baseline's figure beside it.
        The benchmark time is that process's wall time (startup + one fwd+bwd); the fwd and bwd times
        measured inside it are in the row. The fused process's address space is capped at `fused_cap`
        (a regression that materialises the whole problem fails as OOM instead of swapping the machine);
        the baseline's at what is available, and it is not run where its estimated need does not fit."""
        if self.device.type != "cpu":
            pytest.skip("CPU memory target; run with --bench-device cpu")
        if self.config.getoption("--bench-no-rss-target"):
            pytest.skip("disabled (--bench-no-rss-target)")
        target = self.target_entry(suite, shape, name, limit_bytes=limit)
        timeout = None
        if impl == "fused":
            cap = fused_cap
        else:
            need, avail = measure.baseline_bytes_estimate(shape), measure.mem_available_bytes()
            if avail is not None and avail < need + 2**30:
                reason = f"not run: the baseline needs {measure.baseline_need(shape)}; {fmt_bytes(avail)} available"
                target["baseline"] = {"status": "skipped", "note": reason}
                self.skip(suite, shape, impl, "fwdbwd", "skipped", reason, "rss-target")
            cap = (avail - 2**30) if avail is not None else None
            timeout = baseline_timeout_s
        benchmark.group = group
        res = benchmark.pedantic(measure.rss_peak_subprocess, args=(shape, impl, "fp32"),
                                 kwargs={"limit_bytes": cap, **({"timeout_s": timeout} if timeout else {})},
                                 rounds=1, iterations=1)
        ok = res["status"] == "ok"
        row = self.record(suite, measure.make_row(
            shape, impl, "fwdbwd", env=self.env, dtype="fp32", samples=[res["fwdbwd_s"]] if ok else None,
            detail=res.get("impl_detail", ""), status=res["status"], note=res.get("note", ""),
            peak_mem_bytes=res.get("peak_extra_bytes"), mem_method="rss-subprocess", shape_set="rss-target"))
        row.update(fwd_s=res.get("fwd_s"), bwd_s=res.get("bwd_s"), mem_cap_bytes=cap)
        benchmark.extra_info.update({k: row.get(k) for k in EXTRA_KEYS + ("fwd_s", "bwd_s")})
        target[impl] = {k: res.get(k) for k in ("status", "note", "peak_extra_bytes", "fwd_s", "bwd_s", "impl_detail")}
        if impl == "fused":
            target["passed"] = ok and res["peak_extra_bytes"] <= limit
            assert ok, f"{name}: the fused implementation did not run: {res}"
            assert res["peak_extra_bytes"] <= limit, (
                f"peak RSS growth {fmt_bytes(res['peak_extra_bytes'])} exceeds the target {fmt_bytes(limit)}")
        return row


@pytest.fixture(scope="session")
def bench(request) -> BenchSession:
    return _session(request.config)


def _session(config) -> BenchSession:
    if not hasattr(config, "_cxrfast_bench"):
        config._cxrfast_bench = BenchSession(config)
    return config._cxrfast_bench


def pytest_generate_tests(metafunc):
    """bench_case = (set, shape, impl, phase) over the chosen sets of the module's suite, shape by shape
    (inputs are shared)."""
    if "bench_case" not in metafunc.fixturenames:
        return
    suite = getattr(metafunc.module, "SUITE", "losses")
    impls = getattr(metafunc.module, "IMPLS", measure.IMPLS)
    names = [s.strip() for s in metafunc.config.getoption("--bench-shapes").split(",") if s.strip()]
    if names == ["auto"]:
        names = ["gpu"] if _session(metafunc.config).device.type == "cuda" else ["cpu", "gpu"]
    seen, params, ids = set(), [], []
    for name in names:
        try:
            chosen = shapes.for_suite(suite, name)
        except KeyError as exc:
            raise pytest.UsageError(f"--bench-shapes: {exc.args[0]}") from None
        name = shapes.suite_set_name(suite, name)  # the set the rows name: "local-cpu" for "cpu"
        for shape in chosen:
            if shape.id in seen:  # the same case in two sets: the first set named wins
                continue
            seen.add(shape.id)
            for impl in impls:
                for phase in measure.PHASES:
                    params.append((name, shape, impl, phase))
                    ids.append(f"{shape.id}-{impl}-{phase}")
    metafunc.parametrize("bench_case", params, ids=ids)


def pytest_sessionfinish(session, exitstatus):
    state = getattr(session.config, "_cxrfast_bench", None)
    if state is None:
        return
    suites = [suite for suite in shapes.SUITES if state.rows[suite] or state.targets[suite]]
    if suites and hasattr(os, "getloadavg"):
        state.env["load_avg_1m_end"] = os.getloadavg()[0]
    state.written = []
    for suite in suites:
        out = Path(session.config.getoption("--bench-results")) / state.env["device_slug"] / f"{suite}.json"
        rows, targets = state.rows[suite], state.targets[suite]
        if session.config.getoption("--bench-merge"):
            rows, targets = merged(out, rows, targets)
        measure.write_json(out, measure.results_document(suite, rows, state.env, targets))
        state.written.append((len(rows), out))


def merged(path: Path, rows: list, targets: list) -> tuple[list, list]:
    """This run's rows and targets, plus those of the results file at `path` that this run did not measure
    (rows by shape, implementation and phase; targets by shape and name), earlier ones first."""
    if not path.exists():
        return rows, targets
    import json

    old = json.loads(path.read_text())
    new_rows = {(r["shape_id"], r["impl"], r["phase"]) for r in rows}
    new_targets = {(t["shape_id"], t["name"]) for t in targets}
    kept_rows = [r for r in old.get("rows", []) if (r["shape_id"], r["impl"], r["phase"]) not in new_rows]
    kept_targets = [t for t in old.get("targets", []) if (t["shape_id"], t["name"]) not in new_targets]
    return kept_rows + rows, kept_targets + targets


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    state = getattr(config, "_cxrfast_bench", None)
    for n, out in getattr(state, "written", None) or []:
        terminalreporter.write_line(f"cxrfast bench: {n} rows written to {out} "
                                    "(render with: python benchmarks/report.py)")
