"""Render the benchmark results into README tables and plots.

    python benchmarks/report.py [--results DIR] [--readme PATH ...] [--no-plots]

Reads only DIR/*/*.json (default benchmarks/results; written by the pytest-benchmark suites, one folder per
device, one file per suite: losses.json, local.json). Writes
  - markdown tables between the markers  <!-- bench:losses:start -->  and  <!-- bench:losses:end -->
    (InfoNCE and triplet) and  <!-- bench:local:start -->  and  <!-- bench:local:end -->  (the local
    word–region loss), and likewise bench:kernels, bench:lovt, bench:radiograph (decode + resize of
    radiographs, results/*/radiograph.json) and bench:decode (dicom_decode.json, prepare.json) of each README given with --readme (default: README.md at the repository root and
    benchmarks/README.md, each block only where the README has both of its markers; text outside the
    markers is kept as it is);
  - PNG plots to DIR/<device>/: time of forward+backward vs batch size, cxrfast vs baselines, per loss
    (<loss>_time_vs_B.png); for the local loss, forward+backward time and peak extra memory per shape
    (local_time_memory.png); images/s of the radiograph pipeline against its baselines (radiograph.png).
    Needs matplotlib; without it the plots are skipped with a message.
Needs neither torch nor a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from cxrfast.bench.fmt import fmt_bytes, fmt_rate, fmt_ratio, fmt_time

HERE = Path(__file__).resolve().parent
START, END = "<!-- bench:losses:start -->", "<!-- bench:losses:end -->"
LSTART, LEND = "<!-- bench:local:start -->", "<!-- bench:local:end -->"
KSTART, KEND = "<!-- bench:kernels:start -->", "<!-- bench:kernels:end -->"
VSTART, VEND = "<!-- bench:lovt:start -->", "<!-- bench:lovt:end -->"
RSTART, REND = "<!-- bench:radiograph:start -->", "<!-- bench:radiograph:end -->"
DSTART, DEND = "<!-- bench:decode:start -->", "<!-- bench:decode:end -->"
LDSTART, LDEND = "<!-- bench:loader:start -->", "<!-- bench:loader:end -->"
PSTART, PEND = "<!-- bench:presets:start -->", "<!-- bench:presets:end -->"
TSTART, TEND = "<!-- bench:pretrain:start -->", "<!-- bench:pretrain:end -->"
SUITES = ("losses", "local")  # the results files report.py renders (results/<device>/<suite>.json)
IMPLS = ("fused", "baseline", "compiled")
LOSS_TITLES = {"infonce": "InfoNCE (CLIP / ConVIRT / LoVT)", "triplet": "Triplet ranking (VSE++ / JoImTeRNet)"}
BASELINES = {"infonce": "open_clip ClipLoss pattern", "triplet-hardest": "VSE++ ContrastiveLoss, max_violation",
             "triplet-all": "VSE++ ContrastiveLoss, sum"}


def load(results: Path) -> list[dict]:
    """Every results document of a known suite under results/*/*.json, with its folder name as `slug`."""
    docs = []
    for path in sorted(results.glob("*/*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            print(f"report: skipping {path}: {exc}", file=sys.stderr)
            continue
        if not isinstance(doc, dict) or doc.get("suite") not in SUITES or "env" not in doc:
            if path.name not in ("ceilings.json", "lovt.json", "radiograph.json", "dicom_decode.json", "prepare.json",
                                 "loader.json", "presets.json", "pretrain.json") \
                    and path.parent.name != "sm90-aot":  # read elsewhere (or not tables: decode, prepare)
                print(f"report: {path.relative_to(results)} is not a benchmark results file; not rendered")
            continue
        doc["slug"], doc["path"] = path.parent.name, path
        docs.append(doc)
    return docs


def _index(rows):
    """{(shape_id, impl, phase): row}, and the shape ids in first-seen order with a representative row."""
    by_key, shapes = {}, {}
    for r in rows:
        by_key[(r["shape_id"], r["impl"], r["phase"])] = r
        shapes.setdefault(r["shape_id"], r)
    return by_key, shapes


def _time(row, spread: bool = False) -> str:
    """Median, with the 20th–80th percentiles when `spread`; the status where it did not run."""
    if row is None:
        return "-"
    if row.get("status") != "ok":
        return row.get("status", "-") if row.get("status") != "skipped" else "n/a"
    text = fmt_time(row["median_s"])
    if spread and row.get("rounds", 0) > 1:
        text += f" ({fmt_time(row['p20_s'])}–{fmt_time(row['p80_s'])})"
    return text


def _ok(row) -> bool:
    return row is not None and row.get("status") == "ok" and row.get("median_s")


def _header(doc: dict) -> list[str]:
    """The device heading and the line of versions, commit, date, threads, load and file."""
    env = doc["env"]
    device_type = env.get("device_type", "cpu")
    commit = (env.get("git_commit") or "?")[:10] + ("-dirty" if env.get("git_dirty") else "")
    threads = f" · {env['torch_threads']} threads" if device_type != "cuda" and env.get("torch_threads") else ""
    load_avg = ""
    if device_type != "cuda" and env.get("load_avg_1m") is not None:
        load_avg = f" · load average {env['load_avg_1m']:.1f}"
        if env.get("load_avg_1m_end") is not None:
            load_avg += f" at start, {env['load_avg_1m_end']:.1f} at end"
    return [f"### {env.get('device_name', doc['slug'])} — {env.get('dtype', '?')}", "",
            f"torch {env.get('torch')} · triton {env.get('triton')} · cxrfast {env.get('cxrfast')} · commit "
            f"`{commit}` · {(env.get('date_utc') or '')[:10]}{threads}{load_avg} · "
            f"`{doc['path'].relative_to(doc['path'].parents[2])}`", ""]


def device_section(doc: dict) -> list[str]:
    env = doc["env"]
    rows = [r for r in doc["rows"] if r.get("set") != "rss-target"]
    by_key, shapes = _index(rows)
    device_type = env.get("device_type", "cpu")
    out = _header(doc)
    fused_impls = sorted({r["impl_detail"] for r in rows if r["impl"] == "fused" and r.get("impl_detail")})
    mem = ("peak `torch.cuda.max_memory_allocated` above the inputs" if device_type == "cuda"
           else "peak RSS growth of one fwd+bwd in a fresh process")
    out += [f"cxrfast ran `{'`, `'.join(fused_impls) or '?'}`. Times: medians of forward, backward and "
            "forward+backward (with its 20th–80th percentiles); speed-up = baseline median / cxrfast median (> 1: cxrfast faster). "
            f"Memory: {mem}. Rate: nominal FLOPs (8·B²·D, or 2·B²·D for hardest-negative triplet) / time"
            + (", % of the dtype's dense peak." if device_type == "cuda" else "."), ""]
    for family in ("infonce", "triplet"):
        ids = [sid for sid, r in shapes.items() if r["loss"].split("-")[0] == family]
        if not ids:
            continue
        has_compiled = any(_ok(by_key.get((sid, "compiled", "fwdbwd"))) for sid in ids)
        head = ["loss", "paper", "B", "D", "cxrfast fwd", "cxrfast bwd", "cxrfast fwd+bwd", "baseline fwd+bwd",
                "speed-up"]
        if has_compiled:
            head += ["compiled fwd+bwd", "speed-up"]
        head += ["mem cxrfast", "mem baseline", "rate cxrfast"]
        out += [f"**{LOSS_TITLES[family]}** — baseline: "
                + "; ".join(f"{k}: {v}" for k, v in BASELINES.items() if k.split("-")[0] == family), "",
                "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        flagged = []
        for sid in ids:
            r = shapes[sid]
            phases = {impl: {p: by_key.get((sid, impl, p)) for p in ("fwd", "bwd", "fwdbwd")} for impl in IMPLS}
            f = phases["fused"]
            ff, b, c = f["fwdbwd"], phases["baseline"]["fwdbwd"], phases["compiled"]["fwdbwd"]
            mark = {impl: " †" if _inconsistent(phases[impl]) else "" for impl in IMPLS}
            flagged += [f"{impl} B={r['B']} D={r['D']}" for impl in IMPLS if mark[impl]]
            cells = [r["loss"], r["paper"], str(r["B"]), str(r["D"]), _time(f["fwd"]), _time(f["bwd"]),
                     _time(ff, True) + mark["fused"], _time(b, True) + mark["baseline"],
                     fmt_ratio(b["median_s"], ff["median_s"]) if _ok(b) and _ok(ff) else "-"]
            if has_compiled:
                cells += [_time(c, True) + mark["compiled"], fmt_ratio(c["median_s"], ff["median_s"]) if _ok(c) and _ok(ff) else "-"]
            cells += [fmt_bytes(ff and ff.get("peak_mem_bytes")), fmt_bytes(b and b.get("peak_mem_bytes")),
                      fmt_rate(ff.get("tflops"), device_type, ff.get("pct_peak")) if _ok(ff) else "-"]
            out.append("| " + " | ".join(cells) + " |")
        out += [""] + _notes([x for x in rows if x["shape_id"] in ids and x["phase"] == "fwdbwd"])
        out += _flag_note(flagged)
    out += _targets(doc)
    return out


def _inconsistent(phases: dict, tolerance: float = 0.4) -> bool:
    """Do the medians of fwd + bwd and of fwd+bwd (timed separately) disagree by more than `tolerance`?
    They measure the same work, so a large gap means interference (a busy shared machine)."""
    f, b, fb = (phases.get(p) for p in ("fwd", "bwd", "fwdbwd"))
    if not all(_ok(x) for x in (f, b, fb)):
        return False
    return abs(f["median_s"] + b["median_s"] - fb["median_s"]) > tolerance * fb["median_s"]


def _flag_note(flagged: list[str]) -> list[str]:
    """The footnote of the rows marked † by _inconsistent (none: no lines)."""
    if not flagged:
        return []
    return [f"† ({', '.join(flagged)}): the forward+backward median differs from forward + backward "
            "(timed separately) by more than 40%: the device was not quiet while this was measured; "
            "rerun before quoting it.", ""]


def _label(row) -> str:
    """The case in words: "B=4096 D=512", "B=48 R=361 L=97 D=768"."""
    dims = f" R={row['R']} L={row['L']}" if row.get("R") else ""
    return f"B={row['B']}{dims} D={row['D']}"


def _notes(rows) -> list[str]:
    """One bullet per distinct (implementation, note), naming the shapes unless it holds for all."""
    by_note = defaultdict(list)
    for r in rows:
        if r.get("note"):
            by_note[(r["impl"], r["note"])].append(_label(r))
    out = []
    for (impl, note), where in sorted(by_note.items()):
        every = len(where) == len({r["shape_id"] for r in rows if r["impl"] == impl})
        out.append(f"- {impl}{'' if every else ' (' + ', '.join(where) + ')'}: {note}")
    return out + ([""] if out else [])


def _targets(doc: dict) -> list[str]:
    out = []
    for t in doc.get("targets", []):
        f, b = t.get("fused") or {}, t.get("baseline") or {}
        verdict = {True: "**met**", False: "**missed**", None: "not checked"}[t.get("passed")]
        kind = t.get("kind", "rss")
        if kind == "speedup-memory":
            out += [f"**Target** — {t['name']}: speed-up {t['speedup']:.1f}x (target ≥ {t['speedup_target']:.0f}x: "
                    f"baseline {fmt_time(b.get('median_s'))}, cxrfast {fmt_time(f.get('median_s'))}); cxrfast "
                    f"{fmt_bytes(f.get('peak_mem_bytes'))} vs baseline {fmt_bytes(b.get('peak_mem_bytes'))}, "
                    f"1/{t['memory_ratio']:.1f} (target ≤ 1/{t['memory_ratio_target']:.0f}); {verdict}.", ""]
            continue
        if kind == "cuda-memory":
            out += [f"**Memory target** — {t['name']}: cxrfast {fmt_bytes(f.get('peak_mem_bytes'))} (limit "
                    f"{fmt_bytes(t.get('limit_bytes'))}, {verdict}; fwd+bwd {fmt_time(f.get('median_s'))}).", ""]
            continue
        line = (f"**Memory target** — {t['name']}: cxrfast {fmt_bytes(f.get('peak_extra_bytes'))} "
                f"(limit {fmt_bytes(t.get('limit_bytes'))}, {verdict}; one run: fwd {fmt_time(f.get('fwd_s'))}, "
                f"bwd {fmt_time(f.get('bwd_s'))}).")
        if b.get("status") == "ok":
            line += (f" Baseline in the same run: {fmt_bytes(b.get('peak_extra_bytes'))} (fwd {fmt_time(b.get('fwd_s'))}, "
                     f"bwd {fmt_time(b.get('bwd_s'))}).")
        elif b:
            line += f" Baseline: {b.get('status')}: {b.get('note')}."
        out += [line, ""]
    return out


def local_section(doc: dict) -> list[str]:
    """The local loss on one device: per shape fwd / bwd / fwd+bwd of cxrfast and the GLoRIA baseline,
    speed-ups, peak extra memory, rate (and % of the roofline on known GPUs); then notes and targets."""
    env = doc["env"]
    rows = [r for r in doc["rows"] if r.get("set") != "rss-target"]
    by_key, shapes = _index(rows)
    device_type = env.get("device_type", "cpu")
    dtype = env.get("dtype", "?")
    out = _header(doc)
    fused_impls = sorted({r["impl_detail"] for r in rows if r["impl"] == "fused" and r.get("impl_detail")})
    mem = ("peak `torch.cuda.max_memory_allocated` above the inputs" if device_type == "cuda"
           else "peak RSS growth of one fwd+bwd in a fresh process")
    amp = f", under `torch.autocast({dtype})`" if dtype in ("bf16", "fp16") else ""
    rate = "nominal FLOPs (16·B²·R·L·D at the padded length L, the backward recomputing the forward) / time"
    if device_type == "cuda":
        rate += (", and % of the roofline: the time the minimal FLOPs (12·B²·R·n̄·D: no recompute, real words "
                 "only) take at the dtype's dense peak, over the measured time")
    out += [f"cxrfast `local_contrastive_loss` ran `{'`, `'.join(fused_impls) or '?'}`; baseline: GLoRIA's "
            f"`local_loss`, looped over reports (`cxrfast/bench/baselines.py`), eager{amp}. Words: real report "
            "lengths min–L (their mean n̄). Times: medians of forward, backward and forward+backward (with its "
            "20th–80th percentiles); ×: baseline median / cxrfast median (> 1: cxrfast faster). Memory: "
            f"{mem}; mem ×: baseline / cxrfast. Rate: {rate}.", ""]
    head = ["paper", "B", "R", "words (n̄)", "D", "cxrfast fwd", "baseline fwd", "×", "cxrfast bwd", "baseline bwd",
            "×", "cxrfast fwd+bwd", "baseline fwd+bwd", "×", "mem cxrfast", "mem baseline", "mem ×", "rate cxrfast"]
    out += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    flagged = []

    def ratio(b, f):
        return fmt_ratio(b["median_s"], f["median_s"]) if _ok(b) and _ok(f) else "-"

    for sid, r in shapes.items():
        phases = {impl: {p: by_key.get((sid, impl, p)) for p in ("fwd", "bwd", "fwdbwd")} for impl in IMPLS}
        f, b = phases["fused"], phases["baseline"]
        mark = {impl: " †" if _inconsistent(phases[impl]) else "" for impl in IMPLS}
        flagged += [f"{impl} {_label(r)}" for impl in IMPLS if mark[impl]]
        ff, bb = f["fwdbwd"], b["fwdbwd"]
        fm, bm = ff and ff.get("peak_mem_bytes"), bb and bb.get("peak_mem_bytes")
        words = f"{r.get('min_words', '?')}–{r.get('L', '?')} ({r['mean_words']:.1f})" if r.get("mean_words") else "-"
        rate_cell = "-"
        if _ok(ff) and ff.get("tflops") is not None:
            rate_cell = fmt_rate(ff["tflops"], device_type)
            if ff.get("pct_roofline") is not None:
                rate_cell += f" ({ff['pct_roofline']:.0f}% of roofline)"
        cells = [r["paper"], str(r["B"]), str(r.get("R", "?")), words, str(r["D"]),
                 _time(f["fwd"]), _time(b["fwd"]), ratio(b["fwd"], f["fwd"]),
                 _time(f["bwd"]), _time(b["bwd"]), ratio(b["bwd"], f["bwd"]),
                 _time(ff, True) + mark["fused"], _time(bb, True) + mark["baseline"], ratio(bb, ff),
                 fmt_bytes(fm), fmt_bytes(bm), fmt_ratio(bm, fm), rate_cell]
        out.append("| " + " | ".join(cells) + " |")
    out += [""] + _notes([x for x in rows if x["phase"] == "fwdbwd"])
    out += _flag_note(flagged)
    out += _targets(doc)
    return out


def render(docs: list[dict], suite: str = "losses") -> str:
    """The markdown block of `suite` from the results documents (those of other suites are ignored)."""
    section = {"losses": device_section, "local": local_section}[suite]
    docs = [d for d in docs if d.get("suite", "losses") == suite]
    body = ["<!-- generated by benchmarks/report.py from benchmarks/results/*/*.json; edit those, not this -->", ""]
    if not docs:
        body += ["No results yet: run `make bench`.", ""]
    for doc in docs:
        body += section(doc)
    return "\n".join(body).rstrip() + "\n"


def _tile(row: dict) -> str:
    """The tile of a kernel config: BLOCK_M×BLOCK_N×BLOCK_K (pairwise), BLOCK_R×BLOCK_L (word–region)."""
    dims = [k for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "BLOCK_R", "BLOCK_L", "BLOCK_D") if k in row]
    return "×".join(str(row[k]) for k in dims) or "?"


def render_kernels(results: Path) -> str | None:
    """The ahead-of-time sm_90a compile table (benchmarks/aot_sm90.py): per kernel and dtype, each
    autotune candidate as tile/warps/stages (`_tile`) with registers and spill bytes."""
    path = results / "sm90-aot" / "kernels.json"
    if not path.exists():
        return None
    doc = json.loads(path.read_text())
    meta = doc["meta"]
    out = ["<!-- generated by benchmarks/report.py from benchmarks/results/sm90-aot/kernels.json -->", "",
           f"Compiled for {meta['target']} without a GPU: triton {meta['triton']}, {meta['ptxas']}, "
           f"commit `{meta['commit']}`, {meta['date']}. Each cell: tile/warps/stages → registers per thread, "
           "spill bytes (0 is what a fast config needs).", "",
           "| kernel | dtype | autotune candidates |", "|---|---|---|"]
    groups: dict = {}
    for r in doc["rows"]:
        groups.setdefault((r["kernel"], r["dtype"]), []).append(r)
    for (kernel, dtype), rows in groups.items():
        cells = [f"{_tile(r)}/{r['num_warps']}/{r['num_stages']} → "
                 f"{r['registers']}r, {'**' + str(r['spill_stores']) + ' B**' if r['spill_stores'] else '0'}"
                 for r in rows]
        out.append(f"| {kernel} | {dtype} | {'; '.join(cells)} |")
    return "\n".join(out) + "\n"


def _provenance(env: dict, path: Path) -> str:
    """The line under a table that says where its figures come from."""
    return (f"{env.get('device_name', path.parent.name)} · torch {env.get('torch', '?')} · commit "
            f"`{str(env.get('git_commit', '?'))[:10]}` · {str(env.get('date_utc', '?'))[:10]} · load average "
            f"{env.get('load_avg_1m') or 0:.1f} · `results/{path.parent.name}/{path.name}`")


def _suite_docs(results: Path, name: str) -> list[tuple[Path, dict]]:
    """(path, document) of every results/<device>/<name>, by device."""
    return [(path, json.loads(path.read_text())) for path in sorted(results.glob(f"*/{name}"))]


def render_radiograph(results: Path) -> str | None:
    """Decode + window + resize (benchmarks/test_bench_radiograph.py), per device: images/s, ratios of medians
    against the baselines from the same run, and the targets."""
    docs = _suite_docs(results, "radiograph.json")
    if not docs:
        return None
    out = ["<!-- generated by benchmarks/report.py from benchmarks/results/*/radiograph.json -->", ""]
    for path, doc in docs:
        out += [_provenance(doc["env"], path), "",
                "| case | implementation | median (p20–p80) | images/s | cxrfast × | target |",
                "|---|---|---|---|---|---|"]
        for row in doc["rows"]:
            targets = row.get("targets", {})
            target = "; ".join(f"{'✅' if ok else '❌'} {name}" for name, ok in targets.items()) or "—"
            for impl, st in row["impls"].items():
                rate = st.get("images_per_s") or st.get("images", 1) / st["median_s"]
                speedup = row.get("speedup", {}).get(impl)
                out.append(f"| {row['case']} | {impl} | {fmt_time(st['median_s'])} "
                           f"({fmt_time(st['p20_s'])}–{fmt_time(st['p80_s'])}) | {rate:,.1f} | "
                           f"{f'{speedup:.1f}×' if speedup else '—'} | {target if impl == 'cxrfast' else ''} |")
            if "scaling" in row:
                out.append(f"| {row['case']} | scaling, all workers vs 1 | | | {row['scaling']:.2f}× | |")
            if "h2d_pinned_gb_per_s" in row:
                out.append(f"| {row['case']} | pinned host→device copy of the same bytes (the bound) | | "
                           f"{row['h2d_bound_images_per_s']:,.0f} | {row['h2d_pinned_gb_per_s']:.1f} GB/s | |")
        out.append("")
    return "\n".join(out)


def render_decode(results: Path) -> str | None:
    """Decode only (benchmarks/dicom_decode.py) and `cxrfast prepare` throughput (benchmarks/prepare_bench.py),
    per device."""
    out = ["<!-- generated by benchmarks/report.py from benchmarks/results/*/dicom_decode.json and prepare.json -->",
           ""]
    for path, doc in _suite_docs(results, "dicom_decode.json"):
        out += [_provenance(doc["env"], path), "", "| decode only, one core | cxrfast | Mpx/s | pydicom | × | "
                "libjpeg-turbo (jpeg8) | × | liblj92 (ljpeg) | × |", "|---|---|---|---|---|---|---|---|---|"]
        for row in doc["rows"]:
            cells = [row["case"], fmt_time(row["cxrfast"]["median_s"]), f"{row['cxrfast']['mpixels_per_s']:.0f}"]
            for impl in ("pydicom", "jpeg8", "ljpeg"):
                cells += ([fmt_time(row[impl]["median_s"]), f"{row['speedup'][impl]:.2f}×"] if impl in row
                          else ["—", ""])
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    for path, doc in _suite_docs(results, "prepare.json"):
        f = doc["files"]
        out += [_provenance(doc["env"], path), "",
                f"`cxrfast prepare`, {f['count']} raw {f['bits_stored']}-bit {f['rows']}×{f['columns']} files "
                f"({f['where']}) → {doc['size']}:", "",
                "| run | images/s (whole run) | images/s once started |", "|---|---|---|"]
        for row in doc["rows"]:
            steady = row.get("steady_images_per_s")
            out.append(f"| {row['case']} | {row['images_per_s']:.1f} | {f'{steady:.0f}' if steady else '—'} |")
        out.append("")
    return "\n".join(out) if len(out) > 2 else None


def render_loader(results: Path) -> str | None:
    """Loader throughput (benchmarks/test_bench_loader.py), per device: images/s of DALI, the torch fallback
    and the per-file baseline, from the same run."""
    docs = _suite_docs(results, "loader.json")
    if not docs:
        return None
    out = ["<!-- generated by benchmarks/report.py from benchmarks/results/*/loader.json -->", ""]
    for path, doc in docs:
        out += [_provenance(doc["env"], path), "", f"{doc['case']}:", "",
                "| loader | epoch, median (p20–p80) | images/s | × per-file |", "|---|---|---|---|"]
        for name, row in doc["rows"].items():
            ratio = row.get("vs_per_file")
            out.append(f"| {name} | {fmt_time(row['median_s'])} ({fmt_time(row['p20_s'])}–{fmt_time(row['p80_s'])}) "
                       f"| {row['images_per_s']:,.0f} | {f'{ratio:.2f}×' if ratio else '—'} |")
        out.append("")
    return "\n".join(out)


def render_presets(results: Path) -> str | None:
    """One training step per preset (benchmarks/test_bench_presets.py), per device: cxrfast's step against the
    paper's original-style step on the same weights and batch, samples/s, memory, the largest batch (GPU)."""
    docs = _suite_docs(results, "presets.json")
    if not docs:
        return None
    out = ["<!-- generated by benchmarks/report.py from benchmarks/results/*/presets.json -->", ""]
    for path, doc in docs:
        rows = doc["rows"]
        by = {(r["preset"], r["size"], r["dtype"], r["impl"]): r for r in rows}
        mem = rows[0].get("mem_method", "memory") if rows else "memory"
        big = any("largest_batch" in r for r in rows)
        head = ["preset", "size, batch, dtype", "cxrfast step", "original step", "× samples/s",
                f"{mem}: cxrfast", "original", "mem ×"] + (["largest batch: cxrfast", "original", "×"] if big else [])
        out += [_provenance(doc["env"], path), "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for key in dict.fromkeys((r["preset"], r["size"], r["dtype"]) for r in rows):
            f, o = by.get((*key, "fused")), by.get((*key, "original"))
            ref = f or o

            def cell(r):
                return f"{fmt_time(r['median_s'])} ({r['samples_per_s']:,.1f}/s)" if r else "-"

            speed = f"{o['median_s'] / f['median_s']:.2f}×" if f and o else "-"
            mf = fmt_bytes(f["peak_mem_bytes"]) if f else "-"
            mo = fmt_bytes(o["peak_mem_bytes"]) if o else "-"
            mr = f"{o['peak_mem_bytes'] / max(f['peak_mem_bytes'], 1):.2f}×" if f and o else "-"
            line = [key[0], f"{key[1]}, {ref['batch']}, {key[2]}", cell(f), cell(o), speed, mf, mo, mr]
            if big:
                def bound(r):  # the search ran out of time: a lower bound, shown "≥ N"
                    return "≥ " if "lower bound" in (r or {}).get("largest_batch_note", "") else ""

                def largest(r):
                    n = (r or {}).get("largest_batch")
                    return f"{bound(r)}{n:,}" if n else "-"

                lf, lo = (f or {}).get("largest_batch"), (o or {}).get("largest_batch")
                # a lower bound over an exact figure bounds the ratio from below, and the converse from above;
                # two lower bounds bound nothing
                kinds = {(True, False): "≥ ", (False, True): "≤ ", (False, False): ""}
                kind = kinds.get((bool(bound(f)), bool(bound(o))))
                ratio = ("-" if not (lf and lo) else "? (both lower bounds)" if kind is None else
                         f"{kind}{lf / lo:.1f}×")
                line += [largest(f), largest(o), ratio]
            out.append("| " + " | ".join(line) + " |")
        for name, target in (doc.get("targets") or {}).items():
            out += ["", f"Target ({name}): {target}."]
        if path.with_suffix(".png").exists():
            out += ["", f"![one training step per preset, {doc['env'].get('device_name', '')}]"
                        f"(benchmarks/results/{path.parent.name}/{path.with_suffix('.png').name})"]
        out.append("")
    return "\n".join(out)


def render_pretrain(results: Path) -> str | None:
    """Pre-training throughput (benchmarks/test_bench_pretrain.py), per device: the whole training step
    (data + model), the data alone and the model alone, samples/s."""
    docs = _suite_docs(results, "pretrain.json")
    if not docs:
        return None
    out = ["<!-- generated by benchmarks/report.py from benchmarks/results/*/pretrain.json -->", ""]
    for path, doc in docs:
        out += [_provenance(doc["env"], path), "", f"{doc['case']}:", "",
                "| preset | size, batch | full step | data only | model only | waits on data |", "|---|---|---|---|---|---|"]
        for r in doc["rows"]:
            def rate(key):
                return f"{r[key]:,.1f}/s" if r.get(key) else "-"

            out.append(f"| {r['preset']} | {r['size']}, {r['batch']} | {rate('full_samples_per_s')} | "
                       f"{rate('data_samples_per_s')} | {rate('model_samples_per_s')} | {r.get('data_wait', '-')} |")
        out.append("")
    return "\n".join(out)


def plot_radiograph(path: Path) -> Path:
    """results/<device>/radiograph.png: images/s per implementation for each one-core case (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    doc = json.loads(path.read_text())
    rows = [r for r in doc["rows"] if "one core" in r["case"]]
    fig, axes = plt.subplots(1, max(1, len(rows)), figsize=(5.5 * max(1, len(rows)), 3.6), squeeze=False)
    for ax, row in zip(axes[0], rows):
        names = list(row["impls"])
        rates = [1.0 / row["impls"][n]["median_s"] for n in names]
        ax.barh(names, rates, color=["tab:green" if n == "cxrfast" else "tab:gray" for n in names])
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlim(min(rates) / 1.5, max(rates) * 2.5)  # room for the value labels
        ax.set_xlabel("images/s, one core (higher is better)")
        ax.set_title(row["case"].replace(", one core", ""), fontsize=9)
        for y, r in enumerate(rates):
            ax.text(r, y, f" {r:.1f}", va="center", fontsize=8)
    fig.suptitle(f"decode + window + resize to {doc.get('size', 224)} · {doc['env'].get('device_name', '')}",
                 fontsize=10)
    fig.tight_layout()
    out = path.with_suffix(".png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_presets(path: Path) -> Path:
    """results/<device>/presets.png: samples/s of one training step per preset, cxrfast's step beside the
    original-style one (benchmarks/test_bench_presets.py)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    doc = json.loads(path.read_text())
    by = {(r["preset"], r["size"], r["dtype"], r["impl"]): r for r in doc["rows"]}
    cases = list(dict.fromkeys((r["preset"], r["size"], r["dtype"]) for r in doc["rows"]))
    fig, ax = plt.subplots(figsize=(7.5, 0.55 * len(cases) + 1.4))
    height = 0.38
    for k, (impl, color) in enumerate((("fused", "tab:green"), ("original", "tab:gray"))):
        ys = [i + (k - 0.5) * height for i in range(len(cases))]
        rates = [by.get((*c, impl), {}).get("samples_per_s") or 0.0 for c in cases]
        ax.barh(ys, rates, height, color=color, label="cxrfast step" if impl == "fused" else "original-style step")
        for y, r in zip(ys, rates):
            if r:
                ax.text(r, y, f" {r:,.1f}", va="center", fontsize=8)
    labels = []
    for case in cases:
        row = by.get((*case, "fused")) or by[(*case, "original")]
        labels.append(f"{case[0]} ({case[1]}, {case[2]}, B={row['batch']})")
    ax.set_yticks(range(len(cases)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("samples/s, forward + backward + optimiser step (higher is better)")
    ax.set_xlim(0, max((r.get("samples_per_s") or 0) for r in doc["rows"]) * 1.2)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"one training step per preset · {doc['env'].get('device_name', '')}", fontsize=10)
    fig.tight_layout()
    out = path.with_suffix(".png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def render_lovt(results: Path) -> str | None:
    """LoVT's local losses, batched vs the literal definition (benchmarks/lovt_local.py), per device."""
    docs = _suite_docs(results, "lovt.json")
    if not docs:
        return None
    out = ["<!-- generated by benchmarks/report.py from benchmarks/results/*/lovt.json -->", ""]
    for path, doc in docs:
        env = doc["env"]
        out += [_provenance(env, path), "",
                "| shape | B | grid | sentences | D | batched fwd+bwd | reference fwd+bwd | × | saved for backward: "
                "batched | reference | mem × |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        by = {(r["shape"], r["impl"]): r for r in doc["rows"]}
        for shape in dict.fromkeys(r["shape"] for r in doc["rows"]):
            b, ref = by[(shape, "batched")], by[(shape, "reference")]
            out.append(f"| {shape} | {b['B']} | {b['grid'][0]}×{b['grid'][1]} | ≤ {b['M']} | {b['D']} | "
                       f"{fmt_time(b['median_s'])} | {fmt_time(ref['median_s'])} | "
                       f"{fmt_ratio(ref['median_s'], b['median_s'])} | {fmt_bytes(b['saved_bytes'])} | "
                       f"{fmt_bytes(ref['saved_bytes'])} | {fmt_ratio(ref['saved_bytes'], b['saved_bytes'])} |")
        out.append("")
    return "\n".join(out)


def write_between_markers(readme: Path, text: str, start_mark: str = START, end_mark: str = END) -> bool:
    """Replace what lies between the markers of `readme`; False (and nothing written) without them."""
    content = readme.read_text()
    start, end = content.find(start_mark), content.find(end_mark)
    if start < 0 or end < start:
        return False
    new = content[: start + len(start_mark)] + "\n" + text + content[end:]
    if new != content:
        readme.write_text(new)
    return True


def plot_local(doc: dict, out_dir: Path) -> list[Path]:
    """The local loss: forward+backward time (median, 20th–80th percentile bars) and peak extra memory per
    shape, cxrfast beside the baseline; the memory panel includes the CPU memory target's shape."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    env = doc["env"]
    rows = [r for r in doc["rows"] if r["phase"] == "fwdbwd"]
    by_key, shapes = _index(rows)
    if not shapes:
        return []
    fused_impls = ", ".join(sorted({r["impl_detail"] for r in rows if r["impl"] == "fused" and r.get("impl_detail")}))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    width = 0.38
    labels = [f"{r['paper']}\nB={r['B']} R={r['R']}\nL={r['L']} D={r['D']}" + ("\n(memory target, one run)" if
              r.get("set") == "rss-target" else "") for r in shapes.values()]
    for ax, what in zip(axes, ("time", "memory")):
        for k, impl in enumerate(("fused", "baseline")):
            xs, ys, lo, hi, skipped = [], [], [], [], []
            for i, sid in enumerate(shapes):
                r = by_key.get((sid, impl, "fwdbwd"))
                x = i + (k - 0.5) * width
                if what == "time" and _ok(r):
                    xs.append(x)
                    ys.append(r["median_s"] * 1e3)
                    lo.append((r["median_s"] - (r.get("p20_s") or r["median_s"])) * 1e3)
                    hi.append(((r.get("p80_s") or r["median_s"]) - r["median_s"]) * 1e3)
                elif what == "memory" and r is not None and r.get("peak_mem_bytes"):
                    xs.append(x)
                    ys.append(r["peak_mem_bytes"] / 2**20)
                else:
                    skipped.append(x)
            colour = "C0" if impl == "fused" else "C1"
            label = f"cxrfast ({fused_impls})" if impl == "fused" else "GLoRIA baseline"
            ax.bar(xs, ys, width, color=colour, label=label,
                   yerr=[lo, hi] if what == "time" else None, capsize=2)
            for x in skipped:
                ax.text(x, 0.02, "n/a", ha="center", va="bottom", fontsize=7, rotation=90, color=colour,
                        transform=ax.get_xaxis_transform())  # x in data, y in axes coordinates
        ax.set_yscale("log")
        ax.set_xticks(range(len(shapes)))
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_ylabel("forward+backward time (ms)" if what == "time" else "peak extra memory (MiB)")
        ax.grid(True, axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"local (word–region) loss — {env.get('device_name')} — {env.get('dtype')}", fontsize=9)
    fig.tight_layout()
    path = out_dir / "local_time_memory.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def plot(doc: dict, out_dir: Path) -> list[Path]:
    """time of forward+backward vs B per loss, one line per (implementation, paper/D)."""
    if doc.get("suite") == "local":
        return plot_local(doc, out_dir)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    env = doc["env"]
    lines = defaultdict(list)
    for r in doc["rows"]:
        if r["phase"] == "fwdbwd" and _ok(r) and r.get("set") != "rss-target":
            lines[(r["loss"], r["impl"], r["paper"], r["D"])].append(r)
    written = []
    for loss in sorted({k[0] for k in lines}):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        # colour: the paper's setting (paper, D); line style and marker: the implementation
        settings = sorted({(k[2], k[3]) for k in lines if k[0] == loss})
        colours = {st: f"C{i}" for i, st in enumerate(settings)}
        for (lo, impl, paper, D), pts in sorted(lines.items()):
            if lo != loss:
                continue
            pts.sort(key=lambda r: r["B"])
            xs = [r["B"] for r in pts]
            ys = [r["median_s"] * 1e3 for r in pts]
            err = [[(r["median_s"] - r["p20_s"]) * 1e3 for r in pts], [(r["p80_s"] - r["median_s"]) * 1e3 for r in pts]]
            label = {"fused": f"cxrfast ({pts[0].get('impl_detail')})", "baseline": "baseline",
                     "compiled": "baseline + torch.compile"}[impl]
            style = {"fused": "-o", "baseline": "--s", "compiled": ":^"}[impl]
            ax.errorbar(xs, ys, yerr=err, fmt=style, color=colours[(paper, D)], capsize=2,
                        label=f"{label}, {paper} D={D}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size B")
        ax.set_ylabel("forward+backward time (ms)")
        ax.set_title(f"{loss} — {env.get('device_name')} — {env.get('dtype')}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / f"{loss}_time_vs_B.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=HERE / "results", help="results directory")
    parser.add_argument("--readme", type=Path, action="append", default=None,
                        help="README to update between the markers (repeatable); default README.md and "
                             "benchmarks/README.md where they have the markers")
    parser.add_argument("--no-plots", action="store_true", help="do not write PNG plots")
    args = parser.parse_args(argv)

    docs = load(args.results)
    print(f"report: {len(docs)} results file(s) under {args.results}")
    blocks = [(render(docs, "losses"), START, END, "tables"),
              (render(docs, "local"), LSTART, LEND, "local-loss tables")]
    explicit = args.readme is not None
    targets = args.readme if explicit else [HERE.parent / "README.md", HERE / "README.md"]
    status = 0
    for readme in targets:
        if not readme.exists():
            if explicit:
                print(f"report: {readme} does not exist", file=sys.stderr)
                status = 1
            continue
        written = False
        for text, start_mark, end_mark, what in [
                (render_kernels(args.results), KSTART, KEND, "kernel resource table"),
                (render_lovt(args.results), VSTART, VEND, "LoVT table"),
                (render_radiograph(args.results), RSTART, REND, "radiograph table"),
                (render_decode(args.results), DSTART, DEND, "decode / prepare tables"),
                (render_loader(args.results), LDSTART, LDEND, "loader table"),
                (render_presets(args.results), PSTART, PEND, "presets table"),
                (render_pretrain(args.results), TSTART, TEND, "pre-training throughput table"),
                *blocks]:
            if text and write_between_markers(readme, text, start_mark, end_mark):
                print(f"report: {what} written to {readme}")
                written = True
        if written:
            continue
        if explicit:
            print(f"report: {readme} has no bench markers (<!-- bench:NAME:start --> ... <!-- bench:NAME:end -->)",
                  file=sys.stderr)
            status = 1
        else:
            print(f"report: {readme} has no bench markers; left unchanged")
    plots_from = [*args.results.glob("*/radiograph.json"), *args.results.glob("*/presets.json")]
    if not args.no_plots and (docs or plots_from):
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("report: matplotlib is not installed; plots skipped (pip install matplotlib)")
        else:
            for doc in docs:
                for path in plot(doc, doc["path"].parent):
                    print(f"report: plot {path}")
            for path in sorted(args.results.glob("*/radiograph.json")):
                print(f"report: plot {plot_radiograph(path)}")
            for path in sorted(args.results.glob("*/presets.json")):
                print(f"report: plot {plot_presets(path)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
