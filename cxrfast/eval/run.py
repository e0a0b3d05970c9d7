"""A trained run back in memory, and the evaluation the `cxrfast eval` command runs on it.

The run folder (what cxrfast's trainer writes; load_run reads nothing else):

    RUN/config.json       the preset's config (PresetConfig.to_json; cxrfast.models.load_config reads it)
    RUN/tokenizer/        the report tokenizer (ReportTokenizer.save; ReportTokenizer.from_pretrained reads it)
    RUN/model.pt          the weights: a state_dict, or a dict whose "model" entry is the state_dict
    RUN/checkpoints/*.pt  or training checkpoints, each a dict whose "model" entry is the state_dict (other
                          entries: optimiser, scheduler, ... are not read); the one whose file name holds
                          the largest number (the step) is taken, the newest file among names without one

`path` may be the run folder or one checkpoint file in it (RUN/model.pt, RUN/checkpoints/step_100.pt, ...).
model.pt wins over checkpoints/ when both exist. State-dict keys written through DDP ("module.") or
torch.compile ("_orig_mod.") are accepted. Files are read with torch.load(weights_only=True) (tensors and
plain containers only); a checkpoint holding other pickled objects needs trusted=True, for files you made.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from cxrfast.eval.report import ALL, evaluate

__all__ = ["Run", "load_run", "find_weights", "run_eval"]

_WRAPPERS = ("module.", "_orig_mod.")


@dataclass
class Run:
    """A loaded run: the model (eval mode, on `device`), its tokenizer and config, the run folder, the
    weights file read and the step its name gives (None without a number)."""

    model: torch.nn.Module
    tokenizer: object
    config: object
    path: Path
    weights: Path
    step: int | None


def _step(path: Path) -> int | None:
    numbers = re.findall(r"\d+", path.stem)
    return int(numbers[-1]) if numbers else None


def find_weights(path) -> tuple[Path, Path]:
    """(run folder, weights file) of a run folder or a checkpoint file (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"load_run: {path} does not exist (expected a run folder or a checkpoint file)")
    if path.is_file():
        run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        return run, path
    if (path / "model.pt").is_file():
        return path, path / "model.pt"
    folder = path / "checkpoints"
    ckpts = sorted(p for p in folder.glob("*.pt") if p.is_file()) if folder.is_dir() else []
    if not ckpts:
        raise FileNotFoundError(f"load_run: {path} holds neither model.pt nor checkpoints/*.pt; found "
                                f"{sorted(p.name for p in path.iterdir())[:10]}")
    numbered = [p for p in ckpts if _step(p) is not None]
    best = max(numbered, key=lambda p: (_step(p), p.stat().st_mtime)) if numbered else \
        max(ckpts, key=lambda p: p.stat().st_mtime)
    return path, best


def _state_dict(path: Path, trusted: bool) -> dict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as e:
        raise ValueError(f"load_run: {path} holds objects other than tensors and plain containers; if you made "
                         f"this file, pass trusted=True (torch.load then runs its pickled code): {e}") from None
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"load_run: {path} is not a state_dict nor a dict with a 'model' state_dict (found "
                         f"{type(obj).__name__} with keys {sorted(obj)[:8] if isinstance(obj, dict) else '-'})")
    return {_unwrap(k): v for k, v in state.items()}


def _unwrap(key: str) -> str:
    """A state-dict key without the wrappers' prefixes: DDP's and torch.compile's around the whole model
    (leading), torch.compile's around a submodule (a "_orig_mod" segment inside)."""
    while key.startswith(_WRAPPERS):
        key = key.split(".", 1)[1]
    return key.replace("._orig_mod.", ".")


def load_run(path, *, device="cpu", trusted: bool = False) -> Run:
    """The model (eval mode), tokenizer and config of a run folder or checkpoint (module docstring)."""
    from cxrfast.data.text import ReportTokenizer
    from cxrfast.models import create_model, load_config

    run, weights = find_weights(path)
    for need in ("config.json", "tokenizer"):
        if not (run / need).exists():
            raise FileNotFoundError(f"load_run: the run folder {run} has no {need}")
    config = load_config(run / "config.json")
    tokenizer = ReportTokenizer.from_pretrained(run / "tokenizer")
    if tokenizer.vocab_size > config.vocab_size:
        raise ValueError(f"load_run: the tokenizer in {run / 'tokenizer'} has {tokenizer.vocab_size} ids, the "
                         f"model's config.vocab_size is {config.vocab_size}")
    model = create_model(config.preset, config=config)
    state = _state_dict(weights, trusted)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"load_run: {weights} does not fit the {config.preset} model of {run / 'config.json'}: "
                         f"missing {missing[:5]}{'…' if len(missing) > 5 else ''}, unexpected "
                         f"{unexpected[:5]}{'…' if len(unexpected) > 5 else ''}")
    return Run(model.to(device).eval(), tokenizer, config, run, weights, _step(weights))


def run_eval(path, *, data, dataset: str = "mimic-cxr", out=None, device=None, batch_size: int = 32,
             seed: int = 0, which=ALL, splits=None, trusted: bool = False, show_progress: bool = True,
             **options) -> dict:
    """Evaluate a run (folder or checkpoint): load_run, open the data, evaluate, write RUN/eval/ (or `out`).

    data: a StudyDataset, or a dataset root opened with open_dataset(`dataset`, data) (the synthetic data is
    the "mimic-cxr" layout); device: default CUDA where present, else CPU; other keyword arguments go to
    evaluate (n_boot, n_prompts, fractions, picture_study, ...). Returns evaluate's metrics, with the run's
    folder, weights file and step in metrics["meta"]."""
    from cxrfast.data.datasets import open_dataset
    from cxrfast.data.studies import StudyDataset

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    run = load_run(path, device=device, trusted=trusted)
    if isinstance(data, StudyDataset):
        studies = data
    elif isinstance(data, (str, Path)):
        studies = open_dataset(dataset, data)
    else:
        raise TypeError(f"run_eval: `data` must be a StudyDataset or a dataset root folder, got {type(data).__name__}")
    out = Path(out) if out is not None else run.path / "eval"
    meta = {"run": str(run.path), "weights": str(run.weights), "step": run.step}
    return evaluate(run.model, run.tokenizer, studies, splits=splits, device=device, batch_size=batch_size, seed=seed,
                    out=out, which=which, show_progress=show_progress, meta=meta, **options)
