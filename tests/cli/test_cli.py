"""The `cxrfast` command and benchmarks/report.py."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _env():
    env = dict(os.environ)
    for k in ("TRITON_INTERPRET", "CXRFAST_IMPL"):  # the command's own default dispatch, at full speed
        env.pop(k, None)
    return env


@pytest.mark.slow
def test_bench_losses_smoke_runs(tmp_path):
    out = tmp_path / "rows.json"
    proc = subprocess.run(
        [sys.executable, "-m", "cxrfast", "bench", "losses", "--shapes", "smoke", "--device", "cpu",
         "--rounds", "3", "--json", str(out)],
        capture_output=True, text=True, timeout=300, env=_env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    for needle in ("infonce", "triplet-hardest", "triplet-all", "ratio", "chunked", "the Triton kernels need CUDA"):
        assert needle in text, f"{needle!r} missing from:\n{text}"
    header = next(line for line in text.splitlines() if line.startswith("loss "))
    assert header.split()[:10] == ["loss", "paper", "B", "D", "impl", "cxrfast", "cxrfast", "p20–p80", "baseline",
                                   "baseline"]
    assert "ratio" in header.split()
    doc = json.loads(out.read_text())
    assert doc["env"]["device_type"] == "cpu" and doc["env"]["torch"]
    fused = [r for r in doc["rows"] if r["impl"] == "fused"]
    assert {r["loss"] for r in fused} == {"infonce", "triplet-hardest", "triplet-all"}
    assert all(r["status"] == "ok" and r["median_s"] > 0 and r["rounds"] == 3 for r in doc["rows"])
    assert all(r["peak_mem_bytes"] is not None for r in doc["rows"])


def test_cli_without_command_prints_usage():
    from cxrfast.cli import main

    assert main([]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["bench", "losses", "--shapes"])
    assert exc.value.code == 2


def test_unknown_shape_set_is_an_error(capsys):
    from cxrfast.cli import main

    assert main(["bench", "losses", "--device", "cpu", "--shapes", "nope"]) == 2
    assert "unknown shape set 'nope'" in capsys.readouterr().err


def test_import_cxrfast_does_not_import_the_bench_harness():
    code = "import sys, cxrfast; print([m for m in sys.modules if m.startswith('cxrfast.bench') or m == 'cxrfast.cli'])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def _row(shape_id, loss, impl, phase, median, B=1024, D=128, mem=None, status="ok"):
    return {"loss": loss, "paper": "CLIP/ConVIRT", "B": B, "D": D, "shape_id": shape_id, "set": "cpu",
            "impl": impl, "impl_detail": "chunked" if impl == "fused" else "eager", "phase": phase,
            "dtype": "fp32", "device": "cpu (Test CPU)", "status": status, "note": "",
            "median_s": median, "p20_s": median * 0.9 if median else None, "p80_s": median * 1.1 if median else None,
            "rounds": 5 if median else 0, "peak_mem_bytes": mem, "mem_method": "rss-subprocess",
            "flops": 8 * B * B * D, "tflops": 8 * B * B * D / median / 1e12 if median else None,
            "peak_tflops": None, "pct_peak": None, "pct_roofline": None}


def test_report_renders_tables_between_markers(tmp_path):
    results = tmp_path / "results" / "cpu-test"
    results.mkdir(parents=True)
    sid = "infonce-clip-convirt-b1024-d128"
    rows = [_row(sid, "infonce", "fused", p, m) for p, m in (("fwd", 0.010), ("bwd", 0.020))]
    rows += [_row(sid, "infonce", "fused", "fwdbwd", 0.030, mem=50 * 2**20),
             _row(sid, "infonce", "baseline", "fwdbwd", 0.060, mem=200 * 2**20),
             _row("infonce-clip-convirt-b1048576-d512", "infonce", "baseline", "fwdbwd", None, B=1 << 20,
                  D=512, status="skipped")]
    env = {"device_type": "cpu", "device_name": "cpu (Test CPU)", "dtype": "fp32", "torch": "2.13.0",
           "triton": "3.6.0", "cxrfast": "0.1.0", "git_commit": "0123456789abcdef", "git_dirty": False,
           "date_utc": "2026-01-02T03:04:05+00:00", "torch_threads": 2, "load_avg_1m": 0.5}
    targets = [{"name": "chunked InfoNCE target", "shape_id": "x", "B": 32768, "D": 128, "limit_bytes": 512 * 2**20,
                "passed": True, "fused": {"status": "ok", "peak_extra_bytes": 300 * 2**20, "fwd_s": 10.0, "bwd_s": 50.0},
                "baseline": {"status": "skipped", "note": "not run: needs 17 GB"}}]
    (results / "losses.json").write_text(json.dumps({"schema": 1, "suite": "losses", "env": env, "rows": rows,
                                                     "targets": targets}))
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\nbefore\n<!-- bench:losses:start -->\nstale\n<!-- bench:losses:end -->\nafter\n")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "report.py"), "--results",
                           str(tmp_path / "results"), "--readme", str(readme), "--no-plots"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = readme.read_text()
    assert text.startswith("# Title\n\nbefore\n<!-- bench:losses:start -->\n")
    assert text.endswith("<!-- bench:losses:end -->\nafter\n")
    assert "stale" not in text
    assert "### cpu (Test CPU) — fp32" in text
    table = [line for line in text.splitlines() if line.startswith("| infonce |")]
    assert len(table) == 2, text
    cells = [c.strip() for c in table[0].strip("|").split("|")]
    assert cells[:5] == ["infonce", "CLIP/ConVIRT", "1024", "128", "10 ms"]
    assert "2.00x" in cells and "50.0 MB" in cells and "200.0 MB" in cells
    assert "n/a" in table[1]
    assert "300.0 MB" in text and "**met**" in text and "not run: needs 17 GB" in text

    # without markers an explicit README is an error and stays untouched
    plain = tmp_path / "PLAIN.md"
    plain.write_text("no markers\n")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "report.py"), "--results",
                           str(tmp_path / "results"), "--readme", str(plain), "--no-plots"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and plain.read_text() == "no markers\n"


def test_report_plots(tmp_path):
    pytest.importorskip("matplotlib")
    results = tmp_path / "results" / "cpu-test"
    results.mkdir(parents=True)
    rows = [_row(f"infonce-clip-convirt-b{B}-d128", "infonce", impl, "fwdbwd", t * B / 1024, B=B)
            for B in (1024, 2048) for impl, t in (("fused", 0.03), ("baseline", 0.06))]
    env = {"device_type": "cpu", "device_name": "cpu (Test CPU)", "dtype": "fp32"}
    (results / "losses.json").write_text(json.dumps({"schema": 1, "suite": "losses", "env": env, "rows": rows}))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- bench:losses:start --><!-- bench:losses:end -->\n")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "report.py"), "--results",
                           str(tmp_path / "results"), "--readme", str(readme)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    png = results / "infonce_time_vs_B.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_local_shapes_flops_and_suite_sets():
    from cxrfast.bench import shapes

    s = next(x for x in shapes.get("local-gpu") if x.B == 48)
    assert (s.R, s.L, s.min_words, s.D) == (361, 97, 20, 768) and s.suite == "local"
    assert s.id == "local-gloria-b48-r361-l97-d768"
    lengths = s.word_lengths()
    assert lengths == s.word_lengths() and len(lengths) == 48 and min(lengths) >= 20 and max(lengths) <= 97
    assert s.flops("fwdbwd") == 16 * 48 * 48 * 361 * 97 * 768 == 4 * s.flops("fwd")
    assert s.min_flops("fwdbwd") == 12 * 48 * 48 * 361 * s.mean_words * 768
    # one --bench-shapes name serves both suites; each keeps to its own losses
    assert {x.loss for x in shapes.for_suite("local", "cpu")} == {"local"}
    assert shapes.suite_set_name("local", "cpu") == "local-cpu" and shapes.suite_set_name("losses", "cpu") == "cpu"
    assert {x.loss for x in shapes.for_suite("losses", "cpu")} <= {"infonce", "triplet"}
    assert shapes.for_suite("losses", "local-cpu") == []


def _local_row(shape_id, impl, phase, median, B=8, mem=None, status="ok", set_="local-cpu", note=""):
    R, L, D = 361, 97, 768
    return {"loss": "local", "paper": "GLoRIA", "B": B, "D": D, "shape_id": shape_id, "set": set_, "impl": impl,
            "impl_detail": "chunked" if impl == "fused" else "eager", "phase": phase, "dtype": "fp32",
            "device": "cpu (Test CPU)", "status": status, "note": note, "median_s": median,
            "p20_s": median and median * 0.9, "p80_s": median and median * 1.1, "rounds": 5 if median else 0,
            "peak_mem_bytes": mem, "mem_method": "rss-subprocess", "R": R, "L": L, "min_words": 20,
            "mean_words": 58.5, "flops": 16 * B * B * R * L * D,
            "tflops": 16 * B * B * R * L * D / median / 1e12 if median else None, "peak_tflops": None,
            "pct_peak": None, "pct_roofline": None, "min_flops": 12 * B * B * R * 58.5 * D}


def test_report_renders_the_local_block(tmp_path):
    results = tmp_path / "results" / "cpu-test"
    results.mkdir(parents=True)
    sid = "local-gloria-b8-r361-l97-d768"
    fwdbwd_mem = {"fused": 100 * 2**20, "baseline": 400 * 2**20}
    rows = [_local_row(sid, impl, p, m * (4 if impl == "baseline" else 1),
                       mem=fwdbwd_mem[impl] if p == "fwdbwd" else None)
            for impl in ("fused", "baseline") for p, m in (("fwd", 0.1), ("bwd", 0.2), ("fwdbwd", 0.3))]
    rows.append(_local_row("local-gloria-b1024-r361-l97-d768", "baseline", "fwdbwd", None, B=1024, status="skipped",
                           note="the baseline needs about 893 GB", set_="local-gpu"))
    env = {"device_type": "cpu", "device_name": "cpu (Test CPU)", "dtype": "fp32", "torch": "2.13.0",
           "triton": "3.6.0", "cxrfast": "0.1.0", "git_commit": "0123456789abcdef", "git_dirty": False,
           "date_utc": "2026-01-02T03:04:05+00:00", "torch_threads": 2, "load_avg_1m": 0.5}
    targets = [{"name": "chunked local loss target", "shape_id": "x", "B": 256, "D": 64, "limit_bytes": 2**30,
                "passed": True,
                "fused": {"status": "ok", "peak_extra_bytes": 300 * 2**20, "fwd_s": 10.0, "bwd_s": 20.0},
                "baseline": {"status": "error", "note": "timed out after 120 s"}},
               {"name": "speed target", "shape_id": "y", "B": 48, "D": 768, "kind": "speedup-memory",
                "passed": False, "speedup": 12.5, "speedup_target": 20.0, "memory_ratio": 25.0,
                "memory_ratio_target": 20.0, "fused": {"median_s": 0.004, "peak_mem_bytes": 2**26},
                "baseline": {"median_s": 0.05, "peak_mem_bytes": 25 * 2**26}}]
    (results / "local.json").write_text(json.dumps({"schema": 1, "suite": "local", "env": env, "rows": rows,
                                                    "targets": targets}))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- bench:losses:start -->\n<!-- bench:losses:end -->\nmid\n"
                      "<!-- bench:local:start -->\nstale\n<!-- bench:local:end -->\nafter\n")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "report.py"), "--results",
                           str(tmp_path / "results"), "--readme", str(readme), "--no-plots"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = readme.read_text()
    losses, local = text.split("mid\n")
    assert "No results yet" in losses  # no losses.json: that block says so
    assert "stale" not in local and local.endswith("<!-- bench:local:end -->\nafter\n")
    table = [line for line in local.splitlines() if line.startswith("| GLoRIA |")]
    assert len(table) == 2, local
    cells = [c.strip() for c in table[0].strip("|").split("|")]
    assert cells[:5] == ["GLoRIA", "8", "361", "20–97 (58.5)", "768"]
    assert cells[5:8] == ["100 ms", "400 ms", "4.00x"] and "100.0 MB" in cells and "400.0 MB" in cells
    assert "n/a" in table[1] and "the baseline needs about 893 GB" in local
    assert "**met**" in local and "timed out after 120 s" in local
    assert "speed-up 12.5x (target ≥ 20x" in local and "**missed**" in local


def test_report_renders_presets_and_pretrain(tmp_path):
    """The presets table says "≥ N" where the largest-batch search ran out of time (a lower bound), and both
    tables land between their markers."""
    results = tmp_path / "results" / "cuda-test"
    results.mkdir(parents=True)
    env = {"device_name": "Test GPU", "torch": "2.11", "git_commit": "0123456789", "date_utc": "2026-12-04"}

    def row(impl, median, largest, note):
        return {"preset": "globallocal", "size": "paper", "batch": 48, "impl": impl, "dtype": "bf16 autocast",
                "median_s": median, "samples_per_s": 48 / median, "peak_mem_bytes": 2**30 if impl == "fused" else 2**32,
                "mem_method": "cuda peak in the step above weights + optimiser state", "largest_batch": largest,
                "largest_batch_note": note}

    (results / "presets.json").write_text(json.dumps({"suite": "presets", "env": env, "rows": [
        row("fused", 0.1, 4096, "time budget spent: a lower bound"), row("original", 0.4, 256, "within 3%")]}))
    (results / "pretrain.json").write_text(json.dumps({"suite": "pretrain", "env": env, "case": "synthetic", "rows": [
        {"preset": "lovt", "size": "small", "batch": 48, "full_samples_per_s": 90.0, "data_samples_per_s": 60.0,
         "model_samples_per_s": 120.0, "data_wait": "yes: the data supplies 50% of the model's rate"}]}))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- bench:presets:start -->\n<!-- bench:presets:end -->\n"
                      "<!-- bench:pretrain:start -->\n<!-- bench:pretrain:end -->\n")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "report.py"), "--results",
                           str(tmp_path / "results"), "--readme", str(readme)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    if importlib.util.find_spec("matplotlib") is not None:
        assert (results / "presets.png").stat().st_size > 1000
    text = readme.read_text()
    line = next(x for x in text.splitlines() if x.startswith("| globallocal |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[4] == "4.00×" and cells[7] == "4.00×" and cells[8:] == ["≥ 4,096", "256", "≥ 16.0×"], cells
    assert "| lovt | small, 48 | 90.0/s | 60.0/s | 120.0/s | yes: the data supplies 50% of the model's rate |" in text
