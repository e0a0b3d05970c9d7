"""Hunt flaky tests: run the suite (or some of it) under many fresh seeds and count each test's failures.

    .venv/bin/python tests/flakes.py --runs 30 tests/ops tests/reference     # 30 fresh seeds
    .venv/bin/python tests/flakes.py --seeds 1000:1040 tests/ops/test_word_region.py
    .venv/bin/python tests/flakes.py --runs 5 --table tests/FLAKES.md          # whole suite, update the table

Each run is one pytest process with CXRFAST_TEST_SEED set (tests/conftest.py), its results read from a
JUnit XML file. Raw results accumulate in --raw (JSON: seed → failing test ids and their first error line),
so separate invocations (the whole suite a few times, the seed-dependent files many times) add up; --table
renders the counts between the markers of tests/FLAKES.md, whose causes and fixes are written by hand.
This is the developers' tool, not part of CI (CI runs the fixed seed).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- flakes:begin -->", "<!-- flakes:end -->"


def run_once(seed: int, paths: list[str], timeout: float) -> dict:
    """One pytest run under `seed`: {"seed", "paths", "tests": n, "failed": {id: first line}, "seconds"}."""
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        env = dict(os.environ, CXRFAST_TEST_SEED=str(seed))
        t0 = time.monotonic()
        try:
            proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}",
                                   *paths], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
        seconds = time.monotonic() - t0
        failed, n = {}, 0
        if xml.exists():
            for case in ET.parse(xml).getroot().iter("testcase"):
                n += 1
                bad = case.find("failure") if case.find("failure") is not None else case.find("error")
                if bad is not None:
                    name = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
                    failed[name] = (bad.get("message") or "").splitlines()[0][:300] if bad.get("message") else ""
        return {"seed": seed, "paths": paths, "tests": n, "failed": failed, "exit": code, "seconds": round(seconds, 1)}


def render(raw: list[dict]) -> str:
    """The counts table: per test id that ever failed, failures / runs that included it, and its seeds."""
    runs_by_path = defaultdict(int)
    fails = defaultdict(list)
    for r in raw:
        runs_by_path[" ".join(r["paths"]) or "tests"] += 1
        for name, msg in r["failed"].items():
            fails[name].append((r["seed"], msg))
    total_tests = sum(r["tests"] for r in raw)
    lines = [f"{len(raw)} runs ({total_tests} test executions) under fresh seeds:",
             *[f"- `{p}`: {n} runs" for p, n in sorted(runs_by_path.items())], ""]
    if not fails:
        lines.append("No test failed in any of these runs.")
        return "\n".join(lines)
    lines += ["| test | failures | seeds | first error |", "|---|---|---|---|"]
    for name, items in sorted(fails.items(), key=lambda kv: -len(kv[1])):
        seeds = ", ".join(str(s) for s, _ in items[:6]) + (" …" if len(items) > 6 else "")
        lines.append(f"| `{name}` | {len(items)} | {seeds} | {items[0][1].replace('|', '/')[:160]} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*", help="test paths (default: the whole suite)")
    ap.add_argument("--runs", type=int, default=0, help="runs under freshly drawn seeds")
    ap.add_argument("--seeds", help="a range A:B of seeds to run instead (B excluded)")
    ap.add_argument("--raw", default=str(ROOT / "tests" / ".flakes.json"), help="accumulated raw results (JSON)")
    ap.add_argument("--table", help="a Markdown file whose flakes markers receive the counts table")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    args = ap.parse_args(argv)
    seeds = list(range(*map(int, args.seeds.split(":")))) if args.seeds else \
        [random.SystemRandom().randrange(2**31) for _ in range(args.runs)]
    raw_path = Path(args.raw)
    raw = json.loads(raw_path.read_text()) if raw_path.exists() else []
    for i, seed in enumerate(seeds, 1):
        r = run_once(seed, args.paths, args.timeout)
        raw.append(r)
        raw_path.write_text(json.dumps(raw, indent=1))
        status = "ok" if not r["failed"] and r["exit"] == 0 else f"{len(r['failed'])} failed (exit {r['exit']})"
        print(f"[{i}/{len(seeds)}] seed {seed}: {r['tests']} tests, {status}, {r['seconds']} s", flush=True)
        for name, msg in r["failed"].items():
            print(f"    {name}: {msg[:200]}", flush=True)
    if args.table:
        path = Path(args.table)
        text = path.read_text()
        if BEGIN not in text or END not in text:
            raise SystemExit(f"{path}: no {BEGIN} ... {END} markers")
        head, rest = text.split(BEGIN, 1)
        path.write_text(head + BEGIN + "\n" + render(raw) + "\n" + END + rest.split(END, 1)[1])
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
