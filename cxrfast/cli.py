"""The `cxrfast` command.

    cxrfast --version
    cxrfast doctor                                  what is installed, and what each missing piece costs
    cxrfast bench losses|local|decode|radiograph    benchmarks against the baselines users run today
    cxrfast prepare SRC OUT [--size 512] [--workers N] [--voi ...] [--window C W] [--dtype uint8|uint16] ...
    cxrfast dicom info FILE                         the attributes read_dicom reads, the codec, the frames
    cxrfast dicom render FILE OUT.png [--size N]    load_radiograph's model input, as a PNG
    cxrfast explain OP [--batch B --dim D ...]      which implementation an op would run, and why

`bench losses` times cxrfast's InfoNCE and triplet losses (forward + backward) against open_clip's ClipLoss
pattern and VSE++'s ContrastiveLoss, `bench local` the word–region local loss against GLoRIA's looped one,
`bench decode` read_dicom against pydicom, `bench radiograph` load_radiograph against pydicom + OpenCV; each
table gives the median and its 20th–80th percentiles.

`prepare` loads every DICOM / PNG / JPEG of a folder, an index CSV or one file with
cxrfast.io.load_radiograph, writes them resized into memory-mappable shards plus a metadata table, skips and
reports bad files and files that are not images, and resumes after an interruption (cxrfast/data/prepare.py).

`python -m cxrfast ...` is the same command. Parsing imports neither torch nor the extension, so `cxrfast
--help` and `--version` are instant; a command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import sys
import time

# the suites of `cxrfast bench`: name -> what it runs (its --help)
SUITES = {
    "losses": "InfoNCE (CLIP / ConVIRT / LoVT) and triplet (VSE++ / JoImTeRNet) losses, forward + backward: "
              "cxrfast vs open_clip's ClipLoss pattern and VSE++'s ContrastiveLoss (eager, optionally compiled), "
              "time and peak memory; the CPU default set cpu-demo also runs two small word–region cases",
    "local": "the word–region local loss (GLoRIA / JoImTeRNet), forward + backward: cxrfast vs GLoRIA's looped "
             "local_loss; sets local-cpu (CPU default), local-gpu (CUDA default), local-smoke",
    "decode": "DICOM decoding alone: cxrfast.io.read_dicom vs pydicom (dcmread + pixel_array) on the same bytes, "
              "a synthetic 12-bit radiograph raw and as JPEG Lossless SV1",
    "radiograph": "decode + window + resize to a model input: cxrfast.io.load_radiograph vs pydicom + OpenCV, one "
                  "file at a time (raw and JPEG Lossless SV1), then load_radiographs over many files on 1 and all "
                  "cores (and CUDA)",
}
# the ops `cxrfast explain` knows (cxrfast.ops._dispatch.EXPLAINED; spelled here so that parsing imports no torch)
EXPLAIN_OPS = ("contrastive_loss", "triplet_loss", "word_region_similarity", "local_contrastive_loss",
               "local_triplet_loss", "lovt_local_loss")
VOIS = ("auto", "window", "lut", "minmax", "percentile", "none")


def build_parser() -> argparse.ArgumentParser:
    from cxrfast import __version__

    parser = argparse.ArgumentParser(prog="cxrfast", description="cxrfast: fused kernels for chest X-ray "
                                     "image-report pre-training.")
    parser.add_argument("--version", action="version", version=f"cxrfast {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    doctor = commands.add_parser("doctor", help="what is installed (torch, CUDA, Triton, the extension, DALI, "
                                 "codecs) and what each missing piece costs",
                                 description="Report torch, CUDA, Triton, the compiled extension and its CUDA "
                                             "part, zlib, DALI and the codec libraries: what is there, and what "
                                             "each missing piece costs.")
    doctor.set_defaults(func=doctor_command)
    _add_bench(commands)
    _add_prepare(commands)
    _add_dicom(commands)
    _add_explain(commands)
    _add_synth(commands)
    _add_tokenizer(commands)
    _add_pretrain(commands)
    _add_eval(commands)
    _add_models(commands)
    _add_demo(commands)
    return parser


def _add_bench(commands) -> None:
    bench = commands.add_parser("bench", help="benchmarks against the baselines users run today",
                                description="Benchmarks against the baselines users run today. Each table gives "
                                            "the median and the 20th-80th percentiles of the timed rounds.")
    suites = bench.add_subparsers(dest="suite", metavar="SUITE")
    for name in ("losses", "local"):
        p = suites.add_parser(name, help=SUITES[name], description=SUITES[name] + ".")
        p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                       help="where to run (default: cuda when available, else cpu)")
        p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default=None,
                       help="embedding dtype (default: bf16 on CUDA, fp32 on CPU)")
        default = "gpu on CUDA, cpu-demo on CPU" if name == "losses" else "local-gpu on CUDA, local-cpu on CPU"
        p.add_argument("--shapes", default=None, metavar="NAME", help=f"shape set (default: {default}; see "
                       "--list-shapes)")
        p.add_argument("--json", default=None, metavar="PATH", help="also save the rows and metadata as JSON")
        p.add_argument("--compile", action="store_true",
                       help="also time the baselines under torch.compile (slow to compile on CPU)")
        p.add_argument("--rounds", type=_int_at_least(1), default=None, metavar="N",
                       help="timed rounds per case (default: as many as fit about 1 s on CPU, 2 s on CUDA)")
        p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
        p.add_argument("--list-shapes", action="store_true", help="list the shape sets and exit")
        p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
        p.set_defaults(func=bench_losses)
    for name in ("decode", "radiograph"):
        p = suites.add_parser(name, help=SUITES[name], description=SUITES[name] + ". Needs pydicom (files, "
                              "baseline); imagecodecs for the JPEG file; OpenCV for the radiograph baseline.")
        p.add_argument("--shape", type=_shape, default=(2500, 2048), metavar="ROWSxCOLUMNS",
                       help="image size (default: 2500x2048, a chest radiograph)")
        p.add_argument("--rounds", type=_int_at_least(1), default=15, metavar="N",
                       help="timed rounds per case, interleaved between implementations (default: 15)")
        if name == "radiograph":
            p.add_argument("--size", type=_int_at_least(1), default=224, metavar="N",
                           help="side of the model input (default: 224)")
            p.add_argument("--files", type=_int_at_least(1), default=32, metavar="N",
                           help="files of the load_radiographs rows (default: 32)")
        p.add_argument("--json", default=None, metavar="PATH", help="also save the rows and metadata as JSON")
        p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
        p.set_defaults(func=bench_files)
    bench.set_defaults(func=lambda args: _usage(bench))


def _shape(text: str) -> tuple[int, int]:
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ROWSxCOLUMNS such as 2500x2048, got {text!r}") from None
    if rows < 2 or cols < 2:
        raise argparse.ArgumentTypeError(f"expected at least 2x2, got {text!r}")
    return rows, cols


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


def _frame(text: str):
    if text == "all":
        return "all"
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0 or 'all', got {text!r}")
    return value


def _add_pipeline_options(p, *, frame_all: bool) -> None:
    """load_radiograph's options, for `prepare` and `dicom render` (defaults spelled here: parsing imports
    nothing)."""
    p.add_argument("--fit", choices=("pad", "crop"), default="pad",
                   help="pad the long side's square (default) or centre-crop the short side's")
    p.add_argument("--voi", choices=VOIS, default="auto",
                   help="VOI: the file's VOI LUT, else its window, else min-max (auto, default); or force one")
    p.add_argument("--window", type=float, nargs=2, default=None, metavar=("C", "W"),
                   help="window center and width (with --voi auto or window: instead of the file's)")
    p.add_argument("--percentiles", type=float, nargs=2, default=(0.5, 99.5), metavar=("LO", "HI"),
                   help="the range of --voi percentile (default: 0.5 99.5)")
    p.add_argument("--invert", choices=("auto", "yes", "no"), default="auto",
                   help="invert (auto: MONOCHROME1 files, so bone is bright in every output)")
    p.add_argument("--resample", choices=("area", "bilinear"), default="area",
                   help="area average (OpenCV's INTER_AREA when shrinking; default) or antialiased bilinear")
    p.add_argument("--frame", type=_frame if frame_all else _int_at_least(0), default=0,
                   metavar="N|all" if frame_all else "N",
                   help="which frame of a multi-frame file (default: 0)" + ("; all: every frame" if frame_all else ""))


def _pipeline_kwargs(args) -> dict:
    invert = {"auto": "auto", "yes": True, "no": False}[args.invert]
    return {"fit": args.fit, "voi": args.voi, "window": tuple(args.window) if args.window else None,
            "percentiles": tuple(args.percentiles), "invert": invert, "resample": args.resample}


def _add_prepare(commands) -> None:
    # Defaults are spelled here rather than imported: parsing (and --help) must not import cxrfast.data.
    p = commands.add_parser(
        "prepare", help="radiographs (DICOM/PNG/JPEG) -> memory-mappable uint8 shards + metadata table",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Load every image of SRC with cxrfast.io.load_radiograph (window, MONOCHROME1 inversion, "
                    "aspect-preserving\narea resize, pad or crop to SIZE x SIZE, uint8) and write them to OUT:\n"
                    "  OUT/shards/shard-NNNNNN.npy   uint8 [n, SIZE, SIZE], np.load(..., mmap_mode='r')\n"
                    "  OUT/metadata.csv              index, shard, offset, path, frame, DICOM UIDs, patient id, "
                    "view, original size, ...\n"
                    "  OUT/bad_files.csv             skipped files and why\n"
                    "  OUT/not_images.csv            skipped DICOM files without pixel data (DICOMDIR, SR, RT "
                    "Plan, ...)\n"
                    "  OUT/manifest.json             size, counts, options, shard list\n"
                    "Read them back with cxrfast.data.ShardedImages(OUT). Bad files are skipped and the run "
                    "goes on.\nAn interrupted run (even kill -9) is resumed by the same command: no image is "
                    "lost or written twice.\nA rerun with other settings is refused; one reports the sources "
                    "gone or changed since they were prepared.",
        epilog="SRC is a folder (searched recursively for *.dcm, *.dicom, *.png, *.jpg, *.jpeg and files with "
               "a DICOM\npreamble), an index CSV with a `path` column (relative to the CSV's folder or "
               "absolute) whose\nother columns (subject_id, study_id, split, ...) are carried into "
               "metadata.csv, or one image file.\nRates are files (images and skipped files) per second of the "
               "whole run, start-up included.")
    p.add_argument("src", metavar="SRC", help="a folder of images, an index CSV, or one image file")
    p.add_argument("out", metavar="OUT", help="output folder (created; a rerun resumes it)")
    p.add_argument("--size", type=_int_at_least(1), default=512, metavar="N",
                   help="side of the square output images in pixels (default: 512)")
    p.add_argument("--workers", type=_int_at_least(0), default=None, metavar="N",
                   help="processes loading images (default: the CPUs this process may use; 0: in this process)")
    p.add_argument("--shard-size", type=_int_at_least(1), default=1024, metavar="N",
                   help="images per shard file (default: 1024, 256 MiB at 512 px)")
    _add_pipeline_options(p, frame_all=True)
    p.add_argument("--dtype", choices=("uint8", "uint16"), default="uint8", help="shard dtype (default: uint8)")
    p.add_argument("--include", action="append", default=None, metavar="PATTERN",
                   help="only the sources whose path (relative to SRC, or as in the index) matches this shell "
                        "pattern (repeatable: any of them)")
    p.add_argument("--exclude", action="append", default=None, metavar="PATTERN",
                   help="leave out the sources matching this pattern (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=prepare_command)


def _add_dicom(commands) -> None:
    d = commands.add_parser("dicom", help="look at one DICOM file: its attributes, or its model input as a PNG",
                            description="Look at one DICOM file.")
    sub = d.add_subparsers(dest="dicom_command", metavar="ACTION")
    info = sub.add_parser("info", help="the attributes cxrfast.io.read_dicom reads, the codec, the frames",
                          description="Print the attributes cxrfast.io.read_dicom reads (size, bits, photometric "
                                      "interpretation, rescale, windows, LUTs, UIDs), the transfer syntax and its "
                                      "codec, and the frames; without decoding the pixels.")
    info.add_argument("file", metavar="FILE")
    info.set_defaults(func=dicom_info)
    render = sub.add_parser("render", help="write cxrfast.io.load_radiograph's model input as a PNG",
                            description="Write what cxrfast.io.load_radiograph(FILE, SIZE, ...) returns (uint8) as "
                                        "a PNG: the model input prepare would store.")
    render.add_argument("file", metavar="FILE", help="a DICOM, PNG or JPEG file")
    render.add_argument("out", metavar="OUT.png")
    render.add_argument("--size", type=_int_at_least(1), default=512, metavar="N",
                        help="side of the square output in pixels (default: 512)")
    _add_pipeline_options(render, frame_all=False)
    render.set_defaults(func=dicom_render)
    d.set_defaults(func=lambda args: _usage(d))


def _add_explain(commands) -> None:
    e = commands.add_parser("explain", help="which implementation an op would run on given shapes, and why",
                            description="Which implementation cxrfast.<OP> would run on inputs of the given shapes, "
                                        "dtype and device, and why (cxrfast.explain). Runs no kernel.")
    e.add_argument("op", choices=EXPLAIN_OPS, metavar="OP", help=", ".join(EXPLAIN_OPS))
    e.add_argument("--batch", "-B", type=_int_at_least(1), default=256, metavar="B", help="batch (default: 256)")
    e.add_argument("--dim", "-D", type=_int_at_least(1), default=512, metavar="D",
                   help="embedding / feature dim (default: 512)")
    e.add_argument("--regions", "-R", type=_int_at_least(1), default=49, metavar="R",
                   help="local losses: regions per image (default: 49, a 7x7 map)")
    e.add_argument("--words", "-L", type=_int_at_least(1), default=20, metavar="L",
                   help="local losses: words (LoVT: sentences) per report (default: 20)")
    e.add_argument("--grid", type=_int_at_least(1), nargs=2, default=None, metavar=("H", "W"),
                   help="lovt_local_loss: the region grid (default: 7 7; sets --regions)")
    e.add_argument("--dtype", choices=("fp32", "bf16", "fp16", "fp64"), default="fp32", help="(default: fp32)")
    e.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="(default: cuda when available, else cpu)")
    e.add_argument("--impl", default="auto", help="what to ask for (default: auto)")
    e.set_defaults(func=explain_command)


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
                          dtype=args.dtype, frame=args.frame, include=args.include, exclude=args.exclude,
                          progress=not args.no_progress, **_pipeline_kwargs(args))
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
# doctor


def _version_of(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _doctor_rows() -> list[tuple[str, bool, str]]:
    """(name, present, text): what is there, and for what is missing what it costs."""
    import platform

    rows = [("python", True, platform.python_version())]
    import torch

    rows.append(("torch", True, torch.__version__))
    if torch.cuda.is_available():
        names = ", ".join(sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())}))
        rows.append(("CUDA", True, f"{torch.cuda.device_count()} device(s): {names}; CUDA {torch.version.cuda}"))
    else:
        why = "torch built without CUDA" if torch.version.cuda is None else "no CUDA device visible"
        rows.append(("CUDA", False, f"no ({why}): the losses run their chunked PyTorch path (no Triton kernels), "
                                    "load_radiographs(device='cuda') is unavailable"))
    triton = _version_of("triton")
    rows.append(("triton", triton is not None, triton or "not installed: impl='auto' runs the chunked PyTorch path "
                 "on CUDA too (a few times slower, same results); impl='triton' raises"))
    from cxrfast import _ext

    if _ext.load():
        from cxrfast import _C

        rows.append(("cxrfast._C", True, "built"))
        cuda_kernels = bool(_C.cuda_compiled())
        rows.append(("CUDA kernels of cxrfast._C", cuda_kernels, "built" if cuda_kernels else
                     "not built (no nvcc at build time): load_radiographs(device='cuda') and the CUDA group_counts "
                     "are unavailable; the CPU pipeline is unaffected"))
        zlib = bool(_C.zlib_compiled())
        rows.append(("zlib", zlib, "linked" if zlib else "not linked (no zlib.h at build time): DICOM files in the "
                     "deflated transfer syntax are refused"))
    else:
        rows.append(("cxrfast._C", False, f"{_ext.unavailable_reason()}; without it: no read_dicom, "
                     "load_radiograph(s) or prepare (the losses are unaffected)"))
    dali = _version_of("nvidia-dali-cuda120") or _version_of("nvidia-dali-cuda110") or _version_of("nvidia-dali")
    rows.append(("DALI", dali is not None, dali or "not installed: nothing in this release needs it; batches come "
                 "from torch's DataLoader over cxrfast.data.ShardedImages"))
    codecs = [("imagecodecs", "imagecodecs", "JPEG baseline / extended, JPEG-LS, JPEG 2000 and HTJ2K DICOM files are "
               "refused (raw, RLE, deflated and JPEG Lossless need nothing)"),
              ("pydicom", "pydicom", "only the tests, cxrfast.io.testing and the decode / radiograph baselines need "
               "it; reading does not"),
              ("pylibjpeg", "pylibjpeg", "pydicom's JPEG plugins: only the baselines of bench decode / radiograph"),
              ("opencv", "opencv-python-headless", "only the resize baseline of bench radiograph"),
              ("pillow", "pillow", "PNG / JPEG inputs are refused, dicom render cannot write its PNG"),
              ("matplotlib", "matplotlib", "cxrfast.viz and the benchmark plots are unavailable")]
    for name, dist, cost in codecs:
        version = _version_of(dist) or (_version_of("opencv-python") if name == "opencv" else None)
        rows.append((name, version is not None, version or f"not installed: {cost}"))
    return rows


def doctor_command(args) -> int:
    rows = _doctor_rows()
    width = max(len(name) for name, _, _ in rows)
    for name, present, text in rows:
        print(f"  {name:<{width}}  {'ok     ' if present else 'missing'}  {text}")
    missing = [name for name, present, _ in rows if not present]
    print(f"{len(rows) - len(missing)} of {len(rows)} present" + (f"; missing: {', '.join(missing)}" if missing else ""))
    return 0


# --------------------------------------------------------------------------------------------------
# dicom


def _dicom_fail(command: str, exc: Exception) -> int:
    print(f"cxrfast dicom {command}: {exc}", file=sys.stderr)
    return 2


def _info_lines(path: str, meta: dict) -> list[str]:
    from cxrfast.io import COMPRESSED, TRANSFER_SYNTAXES
    from cxrfast.io._dicom import what_it_is

    ts = meta["transfer_syntax"]
    name = TRANSFER_SYNTAXES.get(ts) or COMPRESSED.get(ts, ("unknown",))[0]
    codec = meta["codec"] if meta["codec"] != "external" else COMPRESSED[ts][1]
    if codec.startswith("imagecodecs."):
        codec += " (installed)" if _version_of("imagecodecs") else " (imagecodecs is not installed: refused)"
    signed = "signed" if meta["pixel_representation"] == 1 else "unsigned"
    fields = [("file", path), ("transfer syntax", f"{ts} ({name})"), ("codec", codec)]
    if meta["has_pixel_data"]:
        where = (f"encapsulated, {len(meta['fragments'])} fragment(s)" if meta["encapsulated"] else "native")
        fields += [("frames", meta["number_of_frames"]), ("rows × columns", f"{meta['rows']} × {meta['columns']}"),
                   ("samples", meta["samples_per_pixel"]),
                   ("bits stored", f"{meta['bits_stored']} (allocated {meta['bits_allocated']}, high bit "
                                   f"{meta['high_bit']}, {signed})"),
                   ("photometric", meta["photometric_interpretation"]), ("pixel data", where)]
    else:
        fields.append(("pixel data", f"none: not an image, {what_it_is(meta)}"))
    rescale = (f"slope {meta['rescale_slope']:g}, intercept {meta['rescale_intercept']:g}" if meta["has_rescale"]
               else "none")
    windows = ", ".join(f"center {c:g} width {w:g}" for c, w in zip(meta["window_center"], meta["window_width"]))
    luts = []
    if meta.get("modality_lut"):
        luts.append(f"Modality LUT of {len(meta['modality_lut']['data'])} entries")
    if meta.get("voi_luts"):
        luts.append(f"{len(meta['voi_luts'])} VOI LUT(s)")
    fields += [("rescale", rescale), ("window", windows or "none"),
               ("VOI LUT function", meta["voi_lut_function"] or "none (LINEAR)"), ("LUTs", ", ".join(luts) or "none"),
               ("modality", meta["modality"] or "-"), ("view position", meta["view_position"] or "-"),
               ("SOP class", meta.get("sop_class_uid") or "-"), ("SOP instance", meta["sop_instance_uid"] or "-"),
               ("study", meta["study_instance_uid"] or "-"), ("series", meta["series_instance_uid"] or "-"),
               ("patient", meta["patient_id"] or "-"), ("study date", meta["study_date"] or "-"),
               ("file format", ("preamble + " if meta["has_preamble"] else "no preamble, ")
                + ("explicit" if meta["explicit_vr"] else "implicit") + " VR, "
                + ("big" if meta["big_endian"] else "little") + " endian" + (", deflated" if meta["deflated"] else ""))]
    return [f"{label:<17} {value}" for label, value in fields]


def dicom_info(args) -> int:
    import cxrfast.io as cio

    try:
        meta = cio.read_dicom(args.file, pixels=False).meta
    except (cio.ReadError, TypeError) as exc:
        return _dicom_fail("info", exc)
    print("\n".join(_info_lines(args.file, meta)))
    return 0


def dicom_render(args) -> int:
    import cxrfast.io as cio

    try:
        from PIL import Image
    except ImportError:
        return _dicom_fail("render", ImportError("writing a PNG needs Pillow (pip install pillow)"))
    try:
        r = cio.load_radiograph(args.file, args.size, frame=args.frame, dtype="uint8", **_pipeline_kwargs(args))
    except (cio.ReadError, ValueError, TypeError) as exc:
        return _dicom_fail("render", exc)
    try:
        Image.fromarray(r.image).save(args.out, format="PNG")
    except (OSError, ValueError) as exc:
        return _dicom_fail("render", f"{args.out}: cannot write the PNG: {exc}")
    print(f"{args.out}: {args.size}x{args.size} uint8 ({r.meta.get('format', 'dicom')}, "
          f"{r.meta.get('rows')}x{r.meta.get('columns')} source)")
    return 0


# --------------------------------------------------------------------------------------------------
# explain


def _explain_inputs(args, device):
    """Zero tensors of the shapes asked for (explain reads shapes, dtypes and devices, never values)."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}[args.dtype]
    B, D = args.batch, args.dim

    def zeros(*shape):
        return torch.zeros(*shape, dtype=dtype, device=device)

    if args.op == "contrastive_loss":
        return (zeros(B, D), zeros(B, D), 10.0), {}
    if args.op == "triplet_loss":
        return (zeros(B, D), zeros(B, D)), {}
    lengths = torch.full((B,), args.words, dtype=torch.int64, device=device)
    if args.op == "lovt_local_loss":
        H, W = args.grid or (7, 7)
        return (zeros(B, H * W, D), zeros(B, args.words, D), lengths), {"grid": (H, W)}
    return (zeros(B, args.regions, D), zeros(B, args.words, D), lengths), {}


def explain_command(args) -> int:
    import cxrfast
    from cxrfast.bench import measure

    try:
        device = measure.resolve_device(args.device)
    except (RuntimeError, ValueError) as exc:
        print(f"cxrfast explain: {exc}", file=sys.stderr)
        return 2
    positional, kwargs = _explain_inputs(args, device)
    try:
        print(cxrfast.explain(args.op, *positional, impl=args.impl, **kwargs))
    except (ValueError, TypeError) as exc:
        print(f"cxrfast explain: {exc}", file=sys.stderr)
        return 2
    return 0


# --------------------------------------------------------------------------------------------------
# bench losses / local


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


def _spread(row) -> str:
    """The 20th-80th percentiles of a row's timed rounds: "23.2 ms–26 ms"."""
    from cxrfast.bench.fmt import fmt_time

    if row is None or row.get("p20_s") is None:
        return "-"
    return f"{fmt_time(row['p20_s'])}–{fmt_time(row['p80_s'])}"


def _align(head: list[str], body: list[list[str]], right: set) -> list[str]:
    widths = [max(len(row[i]) for row in [head] + body) for i in range(len(head))]

    def fmt(cells):
        return "  ".join(c.rjust(w) if h in right else c.ljust(w) for c, w, h in zip(cells, widths, head)).rstrip()

    return [fmt(head), fmt(["-" * w for w in widths]), *map(fmt, body)]


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
    head = ["loss", "paper", "B", "D", "impl", "cxrfast", "cxrfast p20–p80", "baseline", "baseline p20–p80", "ratio"]
    if compiled:
        head += ["compiled", "compiled p20–p80", "ratio"]
    head += ["mem cxrfast", "mem baseline"]
    body, notes = [], []
    for impls in by_case.values():
        f, b, c = impls.get("fused"), impls.get("baseline"), impls.get("compiled")
        ref = f or b
        ok = lambda r: r is not None and r["status"] == "ok"  # noqa: E731
        line = [ref["loss"], ref["paper"], str(ref["B"]), str(ref["D"]), f["impl_detail"] if f else "-",
                cell(f), _spread(f), cell(b), _spread(b),
                fmt_ratio(b["median_s"], f["median_s"]) if ok(f) and ok(b) else "-"]
        if compiled:
            line += [cell(c), _spread(c), fmt_ratio(c["median_s"], f["median_s"]) if ok(f) and ok(c) else "-"]
        line += [fmt_bytes(f and f["peak_mem_bytes"]), fmt_bytes(b and b["peak_mem_bytes"])]
        body.append(line)
        for r in (f, b, c):
            if r is not None and r["note"]:
                notes.append(f"  {ref['shape_id']} {r['impl']}: {r['note']}")
    right = {"B", "D", "cxrfast", "baseline", "ratio", "compiled", "mem cxrfast", "mem baseline", "cxrfast p20–p80",
             "baseline p20–p80", "compiled p20–p80"}
    return _align(head, body, right) + (["notes:"] + notes if notes else [])


class _NoBar:
    def step(self, label: str = "", n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def bench_losses(args) -> int:
    """`bench losses` and `bench local` (args.suite)."""
    if args.list_shapes:
        return _list_shapes()
    import torch

    from cxrfast.bench import measure, shapes

    command = f"cxrfast bench {args.suite}"
    try:
        device = measure.resolve_device(args.device)
    except RuntimeError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return 2
    dtype = measure.resolve_dtype(args.dtype, device)
    cuda = device.type == "cuda"
    if args.suite == "local":
        set_name = args.shapes or ("local-gpu" if cuda else "local-cpu")
    else:
        set_name = args.shapes or ("gpu" if cuda else "cpu-demo")
    try:
        chosen = shapes.get(set_name)
    except KeyError as exc:
        print(f"{command}: --shapes: {exc.args[0]}", file=sys.stderr)
        return 2
    if args.suite == "local":
        chosen = [s for s in chosen if s.loss == "local"]
        if not chosen:
            local_sets = ", ".join(n for n, ss in shapes.SETS.items() if any(s.loss == "local" for s in ss))
            print(f"{command}: --shapes: shape set {set_name!r} has no local-loss shapes; these have: {local_sets}",
                  file=sys.stderr)
            return 2
    runnable = [s for s in chosen if cuda or not s.gpu_only]
    if not runnable:
        cpu_sets = ", ".join(n for n, ss in shapes.SETS.items() if not any(s.gpu_only for s in ss))
        print(f"{command}: shape set {set_name!r} holds GPU-only shapes: it needs a GPU (running on "
              f"{device.type}); sets that run on a CPU: {cpu_sets}", file=sys.stderr)
        return 2
    left_out = len(chosen) - len(runnable)
    impls = ["fused", "baseline"] + (["compiled"] if args.compile else [])
    env = measure.environment(device)
    env["dtype"] = dtype

    t_start = time.perf_counter()
    rows: list[dict] = []
    bar = _NoBar() if args.no_progress else measure.progress(len(runnable) * len(impls), command)
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
              "times: median of the timed rounds, and their 20th–80th percentiles; "
              "ratio = baseline median / cxrfast median (> 1: cxrfast is faster)."]
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
        out = measure.write_json(args.json, measure.results_document(args.suite, rows, env))
        print(f"saved {out}")
    return 0


def bench_files(args) -> int:
    """`bench decode` and `bench radiograph`: one table of median (p20–p80) per case and implementation."""
    import os

    command = f"cxrfast bench {args.suite}"
    from cxrfast import _ext

    if not _ext.load():
        print(f"{command}: needs the compiled extension: {_ext.unavailable_reason()}", file=sys.stderr)
        return 2
    import importlib.util

    if importlib.util.find_spec("pydicom") is None:
        print(f"{command}: needs pydicom to write its DICOM files (pip install pydicom)", file=sys.stderr)
        return 2
    import torch

    from cxrfast.bench import measure
    from cxrfast.bench import radiograph as rg
    from cxrfast.bench.fmt import fmt_time

    groups = 2 if args.suite == "decode" else 3
    bar = _NoBar() if args.no_progress else measure.progress(groups * args.rounds, command)
    t0 = time.perf_counter()
    try:
        if args.suite == "decode":
            rows = rg.decode_rows(args.shape, args.rounds, step=bar.step)
        else:
            rows = rg.radiograph_rows(args.shape, args.size, args.rounds, args.files, step=bar.step)
    finally:
        bar.close()
    env = measure.environment(torch.device("cpu"))
    head = ["case", "implementation", "median (p20–p80)", "images/s", "Mpx/s", "cxrfast ×"]
    body, ours = [], {}
    for r in rows:
        if r["impl"] in ("cxrfast", "workers=1") and r["median_s"]:
            ours[r["case"]] = r["median_s"]
    for r in rows:
        if r["median_s"] is None:
            body.append([r["case"], r["impl"], "skipped", "-", "-", r["note"]])
            continue
        mine = ours.get(r["case"])
        if r["impl"] in ("cxrfast", "workers=1") or not mine:
            ratio = "—"
        elif r["impl"].startswith(("workers=", "device=")):  # the same work, more cores or the GPU: its speed-up
            ratio = f"{mine / r['median_s']:.2f}× faster than 1 worker"
        else:
            ratio = f"{r['median_s'] / mine:.2f}×"
        body.append([r["case"], r["impl"], f"{fmt_time(r['median_s'])} ({_spread(r)})", f"{r['images_per_s']:.1f}",
                     f"{r['mpixels_per_s']:.0f}", ratio])
    where = f"cpu ({env['cpu_model']}, {os.cpu_count()} cores)"
    print(f"{command}: {where}; synthetic 12-bit radiographs of {args.shape[0]}x{args.shape[1]}, "
          f"{args.rounds} interleaved rounds")
    print("\n".join(_align(head, body, {"images/s", "Mpx/s", "cxrfast ×"})))
    print(f"times: median of the rounds and their 20th–80th percentiles; cxrfast × = that median / cxrfast's "
          f"(> 1: cxrfast is faster). {time.perf_counter() - t0:.0f} s.")
    if args.json:
        out = measure.write_json(args.json, measure.results_document(args.suite, rows, env))
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


# --------------------------------------------------------------------------------------------------
# pretrain


PRESET_NAMES = ("globallocal", "joimternet", "lovt", "mixed", "refers")  # (cxrfast.models.factory.PRESETS)


def _add_pretrain(commands) -> None:
    # Defaults spelled here (cxrfast.train.config.TrainConfig's): parsing must not import torch.
    p = commands.add_parser(
        "pretrain", help="pre-train a preset on one GPU, a CPU, or torchrun's many processes",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Pre-train an image-report model (cxrfast.train): the synthetic dataset by default "
                    "(generated once into a cache folder), the preset's tiny size, whatever device is present.\n"
                    "Writes RUN/ (config.json, train.json, tokenizer/, checkpoints/, log.csv, loss.png). "
                    "Under torchrun:\n  torchrun --nproc-per-node N -m cxrfast pretrain ...\n"
                    "every rank takes its share of each global batch; the global losses gather across ranks.",
        epilog="--resume continues RUN exactly where its last checkpoint left it (the same settings are "
               "required).")
    p.add_argument("--preset", choices=PRESET_NAMES, default="globallocal", help="(default: globallocal)")
    p.add_argument("--size", choices=("paper", "small", "tiny"), default="tiny", help="(default: tiny)")
    p.add_argument("--data", default="synthetic",
                   help="synthetic (default) or a paired open_dataset name: mimic-cxr, openi (chexpert and "
                        "nih14 have no reports: they serve `cxrfast eval`)")
    p.add_argument("--split", default="train", metavar="NAMES", help="comma-separated splits trained on "
                   "(default: train); `all`: every study (openi has no official split)")
    p.add_argument("--root", default=None, help="the dataset's folder (synthetic: where to write it; default: a "
                   "cache folder, $CXRFAST_CACHE or ~/.cache/cxrfast)")
    p.add_argument("--images", default=None, help="read the images from `cxrfast prepare` shards in this folder")
    p.add_argument("--out", default=None, metavar="RUN", help="run folder (default: runs/PRESET-SIZE)")
    p.add_argument("--steps", type=_int_at_least(1), default=None, help="optimiser steps (default: --epochs)")
    p.add_argument("--epochs", type=float, default=1.0, help="epochs over the training split (default: 1)")
    p.add_argument("--batch-size", type=_int_at_least(1), default=32, help="per process (default: 32)")
    p.add_argument("--accum", type=_int_at_least(1), default=1, help="micro-batches per step (default: 1)")
    p.add_argument("--optimizer", choices=("adamw", "adam", "sgd"), default=None, help="(default: the paper's)")
    p.add_argument("--lr", type=float, default=None, help="(default: the paper's; 1e-3 at small/tiny)")
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--warmup", type=float, default=0.05, help="fraction of the steps, or steps if >= 1")
    p.add_argument("--clip", type=float, default=1.0, help="gradient norm clip (0: none; default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda")
    p.add_argument("--amp", choices=("auto", "bf16", "fp16", "none"), default="auto",
                   help="autocast (default auto: bf16 on CUDA)")
    p.add_argument("--loader", choices=("auto", "torch", "dali"), default="auto",
                   help="auto (default): DALI on CUDA where installed, else torch's DataLoader")
    p.add_argument("--workers", type=_int_at_least(0), default=2, help="loader workers / DALI threads")
    p.add_argument("--tokenizer", default=None, help="a tokenizer directory (default: trained on the reports)")
    p.add_argument("--vocab-size", type=_int_at_least(6), default=4000, help="a trained tokenizer's size")
    p.add_argument("--synth-n", type=_int_at_least(1), default=2000, help="synthetic studies (default 2000)")
    p.add_argument("--synth-size", type=_int_at_least(64), default=256, help="synthetic image side (default 256)")
    p.add_argument("--log-every", type=_int_at_least(1), default=10)
    p.add_argument("--ckpt-every", type=_int_at_least(1), default=100)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="a preset config field (repeatable), e.g. --set image_size=128; values are JSON")
    p.add_argument("--resume", action="store_true", help="continue RUN from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=pretrain_command)


def _overrides(items) -> dict:
    import json

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects FIELD=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def pretrain_command(args) -> int:
    from cxrfast.train import TrainConfig, pretrain

    try:
        cfg = TrainConfig(preset=args.preset, size=args.size, data=args.data, root=args.root, images=args.images,
                          split=None if args.split == "all" else args.split,
                          out=args.out, steps=args.steps, epochs=args.epochs, batch_size=args.batch_size,
                          accum=args.accum, optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay,
                          warmup=args.warmup, clip=args.clip or None, seed=args.seed, device=args.device, amp=args.amp,
                          loader=args.loader, workers=args.workers, tokenizer=args.tokenizer,
                          vocab_size=args.vocab_size, synth_n=args.synth_n, synth_size=args.synth_size,
                          log_every=args.log_every, ckpt_every=args.ckpt_every, progress=not args.no_progress,
                          overrides=_overrides(args.set))
        result = pretrain(cfg, resume=args.resume)
    except (ValueError, TypeError, RuntimeError, FileNotFoundError) as exc:
        print(f"cxrfast pretrain: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ncxrfast pretrain: interrupted; resume with the same command and --resume", file=sys.stderr)
        return 130
    if result.trained == 0:
        print(f"cxrfast pretrain: {result.run} is finished already ({result.steps} steps); nothing to do")
        return 0
    losses = ", ".join(f"{k} {v:.4f}" for k, v in result.last.items())
    print(f"cxrfast pretrain: {result.trained} steps in {result.seconds:.0f} s ({result.samples_per_s:.1f} samples/s); "
          f"last {losses}; run folder {result.run}")
    return 0


# --------------------------------------------------------------------------------------------------
# eval, demo

EVAL_METRICS = ("zeroshot", "retrieval", "probe", "localized", "pictures")  # (cxrfast.eval.report.ALL)


def _metric_list(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in EVAL_METRICS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown metric(s) {bad or text!r}; choose from {', '.join(EVAL_METRICS)}")
    return names


def _add_eval(commands) -> None:
    p = commands.add_parser(
        "eval", help="evaluate a pre-trained run: zero-shot, retrieval, linear and localized probes, pictures",
        description="Evaluate a run of `cxrfast pretrain` (cxrfast.eval): zero-shot classification of the 5 "
                    "competition findings (prompt ensembles and positive-vs-negative prompts, ROC AUC with "
                    "bootstrap intervals), image-report retrieval R@1/5/10, linear probes at 1/10/100% of the "
                    "labels, the localized probe's Dice on the synthetic masks, attention / reconstruction PNGs. "
                    "Writes RUN/eval/ (metrics.json, metrics.md, pictures/) and prints the tables.")
    p.add_argument("--checkpoint", required=True, metavar="RUN",
                   help="the run folder (its newest checkpoint) or one checkpoint file")
    p.add_argument("--data", default=None, help="synthetic or an open_dataset name (default: the run's, "
                   "from RUN/train.json)")
    p.add_argument("--root", default=None, help="the dataset's folder (default: the run's)")
    p.add_argument("--images", default=None, help="`cxrfast prepare` shards to read the images from")
    p.add_argument("--test-split", default="test", metavar="NAMES",
                   help="comma-separated splits evaluated (default: test; CheXpert's labelled one: validate; "
                        "`all`: every study, for data without splits such as openi)")
    p.add_argument("--train-split", default="train", metavar="NAMES",
                   help="comma-separated splits the linear and localized probes train on (default: train)")
    p.add_argument("--out", default=None, help="output folder (default: RUN/eval)")
    p.add_argument("--which", type=_metric_list, default=EVAL_METRICS,
                   help="comma-separated subset of " + ",".join(EVAL_METRICS) + " (default: all)")
    p.add_argument("--device", default=None, help="cpu, cuda (default: CUDA where present)")
    p.add_argument("--batch-size", type=_int_at_least(1), default=32)
    p.add_argument("--seed", type=int, default=0, help="prompt draws, bootstrap, probe splits (default 0)")
    p.add_argument("--n-boot", type=_int_at_least(0), default=1000, help="bootstrap replicates (default 1000)")
    p.add_argument("--n-prompts", type=_int_at_least(1), default=10, help="prompts per finding (default 10)")
    p.add_argument("--trusted", action="store_true", help="the checkpoint may hold pickled code (files you made)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    p.set_defaults(func=eval_command)


def _eval_data(args, run_folder):
    """The studies to evaluate on, every split (evaluate picks its own): the arguments' dataset, else the run's
    (RUN/train.json), opened as the trainer opens it (cxrfast.train.loop.open_training_data)."""
    import dataclasses
    from pathlib import Path

    from cxrfast.train import TrainConfig
    from cxrfast.train.loop import open_training_data

    path = Path(run_folder) / "train.json"
    cfg = TrainConfig.from_json(path) if path.exists() else None
    data = args.data or (cfg.data if cfg else None)
    if data is None:
        raise ValueError(f"{run_folder} has no train.json: pass --data (and --root)")
    same = cfg is not None and cfg.data == data  # the run's own dataset: its root and shards unless overridden
    base = cfg if same else TrainConfig(data=data)
    base = dataclasses.replace(base, root=args.root or (base.root if same else None),
                               images=args.images or (base.images if same else None), progress=not args.no_progress)
    studies, _ = open_training_data(base, split=None)
    return studies


def eval_command(args) -> int:
    from cxrfast.eval.report import format_table
    from cxrfast.eval.run import find_weights, run_eval

    try:
        run_folder, _ = find_weights(args.checkpoint)
        studies = _eval_data(args, run_folder)
        splits = {role: tuple(n.strip() for n in names.split(",") if n.strip())
                  for role, names in (("test", args.test_split), ("train", args.train_split))}
        metrics = run_eval(args.checkpoint, data=studies, out=args.out, device=args.device, splits=splits,
                           batch_size=args.batch_size, seed=args.seed, which=args.which, trusted=args.trusted,
                           show_progress=not args.no_progress, n_boot=args.n_boot, n_prompts=args.n_prompts)
    except (ValueError, TypeError, RuntimeError, FileNotFoundError) as exc:
        print(f"cxrfast eval: {exc}", file=sys.stderr)
        return 2
    print(format_table(metrics))
    out = args.out or (run_folder / "eval")
    print(f"cxrfast eval: wrote {out}/metrics.json and metrics.md")
    return 0


def _add_demo(commands) -> None:
    p = commands.add_parser(
        "demo", help="pre-train globallocal (tiny) on the synthetic data, evaluate, print the zero-shot table",
        description="What `make demo` runs (cxrfast.train.demo): the synthetic dataset (generated once), "
                    "`globallocal` at the tiny size pre-trained on it, evaluated; prints the tables and the "
                    "mean zero-shot AUC beside the bar. Exits 1 when the bar is not met.")
    p.add_argument("--out", default="runs/demo", metavar="RUN", help="run folder (default: runs/demo; a finished "
                   "run there with the same settings is evaluated again)")
    p.add_argument("--steps", type=_int_at_least(1), default=None, help="optimiser steps (default: the demo's, "
                   "cxrfast.train.demo.DEMO: 600)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda")
    p.add_argument("--bar", type=float, default=None, help="the mean zero-shot AUC to clear (default: "
                   "cxrfast.train.demo.BAR, 0.70)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    p.set_defaults(func=demo_command)


def demo_command(args) -> int:
    from cxrfast.eval.report import format_table
    from cxrfast.train.demo import BAR, BAR_SCORE, run_demo

    try:
        d = run_demo(args.out, steps=args.steps, device=args.device, progress=not args.no_progress,
                     bar=BAR if args.bar is None else args.bar)
    except (ValueError, TypeError, RuntimeError, FileNotFoundError) as exc:
        print(f"cxrfast demo: {exc}", file=sys.stderr)
        return 2
    r = d["train"]
    if r.trained:
        trained = f"pre-trained {r.trained} steps in {d['seconds']['train']:.0f} s ({r.samples_per_s:.1f} samples/s)"
    else:
        trained = f"the run in {r.run} is finished already ({r.steps} steps): not trained again"
    print(f"cxrfast demo: {trained}, evaluated in {d['seconds']['eval']:.0f} s; run folder {r.run}\n")
    print(format_table(d["metrics"]))
    mean = d["mean_auc"]
    verdict = "met" if d["met"] else "NOT met"
    ci = d["metrics"]["zeroshot"][BAR_SCORE]["mean"].get("ci") if mean is not None else None
    interval = f" [95% interval {ci[0]:.3f}, {ci[1]:.3f}]" if ci and None not in ci else ""
    print(f"mean zero-shot AUC (positive vs negative prompts, 5 findings, synthetic test split): "
          f"{'–' if mean is None else f'{mean:.3f}'}{interval}   bar ≥ {d['bar']:.2f}: {verdict}")
    print(f"loss curve: {r.run}/loss.png   metrics: {r.run}/eval/metrics.md   pictures: {r.run}/eval/pictures/")
    return 0 if d["met"] else 1


# --------------------------------------------------------------------------------------------------
# models

def _add_models(commands) -> None:
    p = commands.add_parser("models", help="the presets, their sizes and parameter counts",
                            description="The presets (cxrfast.models) with their parameter counts per part, "
                                        "built on torch's meta device (no memory, no weights).")
    p.add_argument("--size", choices=("paper", "small", "tiny", "all"), default="paper", help="(default: paper)")
    p.add_argument("--preset", choices=PRESET_NAMES, action="append", default=None,
                   help="only this preset (repeatable; default: all)")
    p.add_argument("--json", action="store_true", help="one JSON document instead of the table")
    p.set_defaults(func=models_command)


def model_rows(presets, sizes) -> list[dict]:
    """Per (preset, size): the description, total parameters, parameters per top-level part, image size and
    joint embedding width, from a model built on the meta device."""
    import torch

    from cxrfast.models import create_model
    from cxrfast.models.factory import list_presets

    described = list_presets()
    rows = []
    for preset in presets:
        for size in sizes:
            with torch.device("meta"):
                model = create_model(preset, size=size)
            c = model.config
            rows.append({"preset": preset, "size": size, "description": described[preset],
                         "parameters": model.num_parameters(),
                         "parts": {k: v for k, v in model.parameter_summary().items() if v},
                         "image_size": getattr(c, "image_size", None),
                         "embed_dim": next((getattr(c, f) for f in ("embed_dim", "proj_dim", "hidden_size")
                                            if getattr(c, f, None)), None)})
    return rows


def models_command(args) -> int:
    import json

    presets = args.preset or list(PRESET_NAMES)
    sizes = ["paper", "small", "tiny"] if args.size == "all" else [args.size]
    rows = model_rows(presets, sizes)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0

    def millions(n: int) -> str:
        return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n:,}"

    for preset in presets:
        print(f"{preset}: {rows[[r['preset'] for r in rows].index(preset)]['description']}")
        for r in (r for r in rows if r["preset"] == preset):
            parts = ", ".join(f"{k} {millions(v)}" for k, v in r["parts"].items())
            embed = f", width {r['embed_dim']}" if r["embed_dim"] else ""
            print(f"  {r['size']:<6} {millions(r['parameters']):>10}  image {r['image_size']} px{embed}  ({parts})")
    return 0
