"""Checkpoints written so that a kill at any instant loses at most the steps since the last one.

    RUN/checkpoints/step-000120.pt    {"model", "optimizer", "scheduler", "scaler", "step", "epoch", "batch",
                                       "rng", "preset_config", "train_config"}
    RUN/checkpoints/latest            the name of the newest complete checkpoint

A checkpoint is written to a temporary file, flushed and fsync'ed, renamed into place (atomic on POSIX),
and the folder fsync'ed; only then is `latest` replaced the same way. A kill while writing leaves the
previous checkpoint and `latest` untouched (the temporary file is removed by the next writer). Loading
follows `latest`, and falls back to the newest readable checkpoint if `latest` is missing or points at a
file that cannot be read.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

__all__ = ["save_checkpoint", "load_checkpoint", "checkpoint_files", "latest_checkpoint"]

_NAME = re.compile(r"step-(\d+)\.pt$")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # (not every platform opens folders)
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def checkpoint_files(folder) -> list[Path]:
    """The complete checkpoints of a folder, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(folder, step: int, state: dict, keep: int = 2) -> Path:
    """Write `state` as step-<step>.pt atomically, point `latest` at it, keep the newest `keep` checkpoints."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".*.tmp"):  # a writer killed mid-write
        stale.unlink(missing_ok=True)
    path = folder / f"step-{step:06d}.pt"
    _atomic_write(path, lambda f: torch.save(state, f))
    _atomic_write(folder / "latest", lambda f: f.write(path.name.encode()))
    for old in checkpoint_files(folder)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def latest_checkpoint(folder) -> Path | None:
    """The checkpoint `latest` names, else the newest on disk, else None."""
    folder = Path(folder)
    pointer = folder / "latest"
    if pointer.exists():
        named = folder / pointer.read_text().strip()
        if named.exists():
            return named
    files = checkpoint_files(folder)
    return files[-1] if files else None


def load_checkpoint(folder, map_location="cpu") -> dict | None:
    """The newest readable checkpoint's state (see the module docstring), or None when there is none."""
    folder = Path(folder)
    first = latest_checkpoint(folder)
    candidates = ([first] if first else []) + [p for p in reversed(checkpoint_files(folder)) if p != first]
    errors = []
    for path in candidates:
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - an unreadable file: try the next one, report if none works
            errors.append(f"{path.name}: {type(exc).__name__}: {exc}")
            continue
        state["path"] = str(path)
        return state
    if errors:
        raise RuntimeError(f"no readable checkpoint in {folder}: " + "; ".join(errors))
    return None
