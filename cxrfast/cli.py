"""The `cxrfast` command.

    cxrfast bench losses [--device auto|cpu|cuda] [--dtype bf16|fp16|fp32] [--shapes NAME] [--json PATH]
                         [--compile] [--rounds N] [--no-memory] [--list-shapes]
    cxrfast prepare SRC OUT [--size 512] [--workers N] [--shard-size 1024] [--fit pad|crop] [--no-progress]

`bench losses` times cxrfast's InfoNCE, triplet and local (word–region) losses (forward + backward)
against the baselines users run today (open_clip's ClipLoss pattern, VSE++'s ContrastiveLoss, GLoRIA's
looped local loss) on the same inputs, and prints
the times, their ratio and the peak extra memory of each.

`prepare` loads every DICOM / PNG / JPEG of a folder or an index CSV with cxrfast.io.load_radiograph,
writes them resized into memory-mappable uint8 shards plus a metadata table, skips and reports bad
files, and resumes after an interruption (cxrfast/data/prepare.py).

`python -m cxrfast ...` is the same command. torch is imported only when a command runs, so `cxrfast --help` is instant.
"""

from __future__ import annotations

import argparse
import sys
import time


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cxrfast", description="cxrfast: fused kernels for chest X-ray "
                                     "image-report pre-training.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    bench = commands.add_parser("bench", help="benchmarks against the baselines users run today",
                                description="Benchmarks against the baselines users run today.")
    suites = bench.add_subparsers(dest="suite", metavar="SUITE")
    losses = suites.add_parser(
        "losses", help="InfoNCE and triplet losses: cxrfast vs open_clip / VSE++ (forward + backward)",
        description="Time cxrfast's InfoNCE and triplet losses (forward + backward) against the baselines "
                    "(open_clip's ClipLoss pattern, VSE++'s ContrastiveLoss) and compare peak memory.")
    losses.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to run (default: cuda when available, else cpu)")
    losses.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default=None,
                        help="embedding dtype (default: bf16 on CUDA, fp32 on CPU)")
    losses.add_argument("--shapes", default=None, metavar="NAME",
                        help="shape set (default: gpu on CUDA, cpu-demo on CPU; see --list-shapes)")
    losses.add_argument("--json", default=None, metavar="PATH", help="also save the rows and metadata as JSON")
    losses.add_argument("--compile", action="store_true",
                        help="also time the baselines under torch.compile (slow to compile on CPU)")
    losses.add_argument("--rounds", type=int, default=None, metavar="N",
                        help="timed rounds per case (default: as many as fit about 1 s on CPU, 2 s on CUDA)")
    losses.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    losses.add_argument("--list-shapes", action="store_true", help="list the shape sets and exit")
    losses.set_defaults(func=bench_losses)
    bench.set_defaults(func=lambda args: _usage(bench))
    _add_prepare(commands)
    _add_synth(commands)
    _add_tokenizer(commands)
    return parser


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def _add_prepare(commands) -> None:
    # Defaults are spelled here rather than imported: parsing (and --help) must not import cxrfast.data.
    p = commands.add_parser(
        "prepare", help="radiographs (DICOM/PNG/JPEG) -> memory-mappable uint8 shards + metadata table",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Load every image of SRC with cxrfast.io.load_radiograph (window, MONOCHROME1 inversion, "
                    "aspect-preserving\narea resize, pad or crop to SIZE x SIZE, uint8) and write them to OUT:\n"
                    "  OUT/shards/shard-NNNNNN.npy   uint8 [n, SIZE, SIZE], np.load(..., mmap_mode='r')\n"
                    "  OUT/metadata.csv              index, shard, offset, path, DICOM UIDs, patient id, view, "
                    "original size, ...\n"
                    "  OUT/bad_files.csv             skipped files and why\n"
                    "  OUT/manifest.json             size, counts, options, shard list\n"
                    "Read them back with cxrfast.data.ShardedImages(OUT). Bad files are skipped and the run "
                    "goes on.\nAn interrupted run (even kill -9) is resumed by the same command: no image is "
                    "lost or written twice.\nA rerun with other settings is refused.",
        epilog="SRC is a folder (searched recursively for *.dcm, *.dicom, *.png, *.jpg, *.jpeg and files with "
               "a DICOM\npreamble) or an index CSV with a `path` column (relative to the CSV's folder or "
               "absolute) whose\nother columns (subject_id, study_id, split, ...) are carried into "
               "metadata.csv.")
    p.add_argument("src", metavar="SRC", help="a folder of images or an index CSV")
    p.add_argument("out", metavar="OUT", help="output folder (created; a rerun resumes it)")
    p.add_argument("--size", type=_int_at_least(1), default=512, metavar="N",
                   help="side of the square output images in pixels (default: 512)")
    p.add_argument("--workers", type=_int_at_least(0), default=None, metavar="N",
                   help="processes loading images (default: the CPUs this process may use; 0: in this process)")
    p.add_argument("--shard-size", type=_int_at_least(1), default=1024, metavar="N",
                   help="images per shard file (default: 1024, 256 MiB at 512 px)")
    p.add_argument("--fit", choices=("pad", "crop"), default="pad",
                   help="pad the long side's square (default) or centre-crop the short side's")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=prepare_command)


def _add_synth(commands) -> None:
    # Defaults are spelled here rather than imported: parsing (and --help) must not import cxrfast.data.
    p = commands.add_parser(
        "synth", help="write the synthetic paired dataset (radiographs, reports, labels) in the MIMIC-CXR layout",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Draw N synthetic chest X-ray studies (1-3 views each; cardiomegaly, pleural effusion, "
                    "consolidation,\natelectasis, edema and support devices drawn where present) with reports that "
                    "describe exactly\nwhat is drawn, and write them to OUT in the MIMIC-CXR layout:\n"
                    "  OUT/files/pXX/p<subject>/s<study>/<dicom_id>.dcm   DICOM: mixed transfer syntaxes, "
                    "MONOCHROME1/2, 12 bits\n"
                    "  OUT/files/pXX/p<subject>/s<study>.txt              the report (FINDINGS / IMPRESSION)\n"
                    "  OUT/mimic-cxr-2.0.0-{metadata,chexpert,negbio,split}.csv\n"
                    "  OUT/masks/<dicom_id>.npz                           frontal views: a mask per drawn finding\n"
                    "The same N, SEED and SIZE give byte-identical files. Read them with the mimic-cxr adapter or\n"
                    "`cxrfast prepare OUT/files ...`.")
    p.add_argument("out", metavar="OUT", help="output folder (new or empty)")
    p.add_argument("--n", type=_int_at_least(1), default=2000, metavar="N", help="number of studies (default: 2000)")
    p.add_argument("--seed", type=_int_at_least(0), default=0, metavar="S", help="random seed (default: 0)")
    p.add_argument("--size", type=_int_at_least(64), default=512, metavar="N",
                   help="side of the square images in pixels (default: 512)")
    p.add_argument("--workers", type=_int_at_least(0), default=None, metavar="N",
                   help="processes drawing studies (default: the CPUs this process may use; 0: in this process)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=synth_command)


def synth_command(args) -> int:
    from cxrfast.data.synth import SynthError, write_synthetic

    try:
        summary = write_synthetic(args.out, n=args.n, seed=args.seed, size=args.size, workers=args.workers,
                                  progress=not args.no_progress)
    except SynthError as exc:
        print(f"cxrfast synth: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ncxrfast synth: interrupted; {args.out} is incomplete: delete it before running again", file=sys.stderr)
        return 130
    print("\n".join(summary.lines()), flush=True)
    return 0


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        return _usage(parser)
    return args.func(args)


# --------------------------------------------------------------------------------------------------
# prepare


def prepare_command(args) -> int:
    from cxrfast.data.prepare import PrepareError, prepare
    from cxrfast.data.shards import ShardFormatError

    try:
        summary = prepare(args.src, args.out, size=args.size, workers=args.workers, shard_size=args.shard_size,
                          fit=args.fit, progress=not args.no_progress)
    except (PrepareError, ShardFormatError) as exc:
        print(f"cxrfast prepare: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ncxrfast prepare: interrupted; the committed shards are kept: run the same command again to "
              "resume", file=sys.stderr)
        return 130
    print("\n".join(summary.lines()), flush=True)
    return 0


# --------------------------------------------------------------------------------------------------
# bench losses


def _list_shapes() -> int:
    from cxrfast.bench import shapes

    for name, chosen in shapes.SETS.items():
        print(f"{name}:")
        for s in chosen:
            flags = ", ".join(f for f, on in (("GPU only", s.gpu_only), ("fused only", s.fused_only)) if on)
            print(f"  {s.kind:16s} {s.paper:14s} B={s.B:<8d} D={s.D:<5d} {flags}")
    return 0


def _describe(device, dtype: str, set_name: str, n_cases: int, env: dict, fused_impls: set) -> list[str]:
    """The header: which device and which implementations ran, and how things are measured."""
    import os

    if device.type == "cuda":
        where = f"cuda ({env['device_name']}, {env['sm_count']} SMs)"
    else:
        where = f"cpu ({env['cpu_model']}, {env['torch_threads']} threads)"
    impls = ", ".join(sorted(fused_impls)) or "-"
    if device.type == "cuda":
        fused = f'impl="auto" -> {impls}'
        if fused_impls != {"triton"}:
            fused += " (the Triton kernels did not take these inputs; see cxrfast.explain)"
    else:
        fused = f'impl="auto" -> {impls} PyTorch path (the Triton kernels need CUDA)'
    if os.environ.get("CXRFAST_IMPL"):
        fused += f"; CXRFAST_IMPL={os.environ['CXRFAST_IMPL']} is set"
    amp = f", under torch.autocast({dtype})" if dtype in ("bf16", "fp16") else ""
    if device.type == "cuda":
        memory = "peak torch.cuda.max_memory_allocated above the inputs, one fwd+bwd"
    else:
        memory = "peak RSS growth of one fwd+bwd in a fresh process"
    return [
        f"cxrfast bench losses: {where}, dtype {dtype}, shape set '{set_name}' ({n_cases} cases)",
        f"  cxrfast  = {fused}",
        f"  baseline = eager PyTorch{amp}: InfoNCE = open_clip ClipLoss pattern, "
        "triplet = VSE++ ContrastiveLoss",
        "  time     = forward+backward, median over rounds after warm-up"
        + (" (synchronised)" if device.type == "cuda" else ""),
        f"  memory   = {memory}",
    ]


def _table(rows: list[dict], compiled: bool) -> list[str]:
    from cxrfast.bench.fmt import fmt_bytes, fmt_ratio, fmt_time

    def cell(row):
        if row is None:
            return "-"
        if row["status"] != "ok":
            return row["status"]
        return fmt_time(row["median_s"])

    by_case: dict = {}
    for r in rows:
        by_case.setdefault(r["shape_id"], {})[r["impl"]] = r
    head = ["loss", "paper", "B", "D", "impl", "cxrfast", "baseline", "ratio"]
    if compiled:
        head += ["compiled", "ratio"]
    head += ["mem cxrfast", "mem baseline"]
    body, notes = [], []
    for impls in by_case.values():
        f, b, c = impls.get("fused"), impls.get("baseline"), impls.get("compiled")
        ref = f or b
        ok = lambda r: r is not None and r["status"] == "ok"  # noqa: E731
        line = [ref["loss"], ref["paper"], str(ref["B"]), str(ref["D"]), f["impl_detail"] if f else "-",
                cell(f), cell(b), fmt_ratio(b["median_s"], f["median_s"]) if ok(f) and ok(b) else "-"]
        if compiled:
            line += [cell(c), fmt_ratio(c["median_s"], f["median_s"]) if ok(f) and ok(c) else "-"]
        line += [fmt_bytes(f and f["peak_mem_bytes"]), fmt_bytes(b and b["peak_mem_bytes"])]
        body.append(line)
        for r in (f, b, c):
            if r is not None and r["note"]:
                notes.append(f"  {ref['shape_id']} {r['impl']}: {r['note']}")
    widths = [max(len(row[i]) for row in [head] + body) for i in range(len(head))]
    right = {"B", "D", "cxrfast", "baseline", "ratio", "compiled", "mem cxrfast", "mem baseline"}
    fmt = lambda cells: "  ".join(  # noqa: E731
        c.rjust(w) if h in right else c.ljust(w) for c, w, h in zip(cells, widths, head))
    return [fmt(head), fmt(["-" * w for w in widths]), *map(fmt, body)] + (["notes:"] + notes if notes else [])


def bench_losses(args) -> int:
    if args.list_shapes:
        return _list_shapes()
    import torch

    from cxrfast.bench import measure, shapes

    try:
        device = measure.resolve_device(args.device)
    except RuntimeError as exc:
        print(f"cxrfast bench losses: {exc}", file=sys.stderr)
        return 2
    dtype = measure.resolve_dtype(args.dtype, device)
    set_name = args.shapes or ("gpu" if device.type == "cuda" else "cpu-demo")
    try:
        chosen = shapes.get(set_name)
    except KeyError as exc:
        print(f"cxrfast bench losses: --shapes: {exc.args[0]}", file=sys.stderr)
        return 2
    runnable = [s for s in chosen if device.type == "cuda" or not s.gpu_only]
    left_out = len(chosen) - len(runnable)
    impls = ["fused", "baseline"] + (["compiled"] if args.compile else [])
    env = measure.environment(device)
    env["dtype"] = dtype

    t_start = time.perf_counter()
    rows: list[dict] = []
    bar = measure.progress(len(runnable) * len(impls), "bench losses")
    try:
        for shape in runnable:
            inputs = measure.make_inputs(shape, device, dtype)
            for impl in impls:
                rows.append(_run_case(shape, impl, device, dtype, inputs, env, args, set_name))
                bar.step(f"{shape.id} {impl}")
            del inputs
            if device.type == "cuda":
                torch.cuda.empty_cache()
    finally:
        bar.close()
    elapsed = time.perf_counter() - t_start

    fused_impls = {r["impl_detail"] for r in rows if r["impl"] == "fused" and r["impl_detail"]}
    lines = _describe(device, dtype, set_name, len(runnable), env, fused_impls)
    if left_out:
        lines.append(f"  ({left_out} GPU-only shapes of '{set_name}' left out on {device.type})")
    lines += ["", *_table(rows, args.compile), "",
              "ratio = baseline time / cxrfast time (> 1: cxrfast is faster)."]
    if device.type != "cuda":
        lines.append("On CPU cxrfast runs its chunked PyTorch fallback: a few 16 MB blocks of rows plus "
                     "O(B*D) memory,\nwhere the baselines hold B x B matrices (InfoNCE: about four fp32 "
                     "ones, 1 GB at B=8192, 16 GB at B=32768).\nThe Triton kernels, and their speed-ups, "
                     "need CUDA: run with --device cuda on a GPU machine.")
        if any(r["loss"] == "local" for r in rows):
            lines.append("The local loss walks the image x report grid in 16 MB chunks, reports bucketed by "
                         "length;\nthe looped GLoRIA baseline keeps every report's [B, words, R] and "
                         "[B, words, D] tensors for autograd.")
    lines.append(f"{len(rows)} measurements in {elapsed:.0f} s.")
    print("\n".join(lines), flush=True)
    if args.json:
        out = measure.write_json(args.json, measure.results_document("losses", rows, env))
        print(f"saved {out}")
    return 0


def _run_case(shape, impl, device, dtype, inputs, env, args, set_name) -> dict:
    """One (shape, impl): fwd+bwd timing and peak memory, as a result row; OOM and skips become rows."""
    from cxrfast.bench import measure

    def row(**kw):
        return measure.make_row(shape, impl, "fwdbwd", env=env, dtype=dtype, shape_set=set_name, **kw)

    if impl != "fused":
        reason = measure.cpu_baseline_reason(shape) if (shape.fused_only or device.type == "cpu") else None
        if reason:
            return row(status="skipped", note=reason)
    case = None
    try:
        case = measure.Case(shape, impl, device, dtype, inputs=inputs)
        samples = measure.time_phase(case, "fwdbwd", rounds=args.rounds)
        mem, method, note = None, None, ""
        if not args.no_memory:
            if device.type == "cuda":
                mem, method = case.cuda_peak_bytes("fwdbwd"), "cuda-max-allocated"
            elif impl == "compiled":
                note = "memory not measured for torch.compile on CPU (a fresh process recompiles)"
            else:
                res = measure.rss_peak_subprocess(shape, impl, dtype)
                mem, method = res.get("peak_extra_bytes"), "rss-subprocess"
                if res["status"] != "ok":
                    mem, note = None, f"memory: {res['status']} {res.get('note') or ''}".strip()
        return row(samples=samples, detail=case.detail, peak_mem_bytes=mem, mem_method=method, note=note)
    except measure.Skip as exc:
        return row(status=exc.status, note=exc.reason, detail=case.detail if case else "")
    finally:
        if case is not None:
            case.reset()


# --------------------------------------------------------------------------------------------------
# tokenizer


def _add_tokenizer(commands) -> None:
    p = commands.add_parser("tokenizer", help="train a WordPiece vocabulary on radiology reports",
                            description="Tokenizers for radiology reports (cxrfast.data.text).")
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    train = sub.add_parser(
        "train", help="learn a WordPiece vocabulary from reports",
        description="Learn a WordPiece vocabulary (BERT normalisation: lower case, words and punctuation) from "
                    "the reports in CORPUS and write OUT/ (tokenizer.json, vocab.txt, tokenizer_config.json): a "
                    "directory that cxrfast.data.text.ReportTokenizer.from_pretrained and transformers' "
                    "BertTokenizerFast.from_pretrained both load.",
        epilog="CORPUS is a folder (every *.txt below it is one report: the MIMIC-CXR and `cxrfast synth` "
               "layouts) or a text file with one report per line.")
    train.add_argument("corpus", metavar="CORPUS", help="a folder of *.txt reports or a file of one report per line")
    train.add_argument("out", metavar="OUT", help="output directory")
    train.add_argument("--vocab-size", type=_int_at_least(6), default=8000, metavar="N",
                       help="vocabulary size, special tokens included (default: 8000)")
    train.add_argument("--min-frequency", type=_int_at_least(1), default=2, metavar="N",
                       help="a piece must occur this often to enter the vocabulary (default: 2)")
    train.set_defaults(func=tokenizer_train_command)
    p.set_defaults(func=lambda args: _usage(p))


def tokenizer_train_command(args) -> int:
    from cxrfast.data.text import TokenizerError, corpus_texts, train_tokenizer

    try:
        texts = corpus_texts(args.corpus)
        tok = train_tokenizer(texts, args.out, vocab_size=args.vocab_size, min_frequency=args.min_frequency)
    except TokenizerError as exc:
        print(f"cxrfast tokenizer train: {exc}", file=sys.stderr)
        return 2
    print(f"cxrfast tokenizer train: {len(texts)} reports -> {tok.vocab_size} tokens in {args.out}")
    return 0
