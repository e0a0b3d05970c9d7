"""cxrfast pretrain: a run folder, exact resume (also after kill -9 mid-step and mid-checkpoint), errors."""

import csv
import importlib.util
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from cxrfast.train import TrainConfig, pretrain
from cxrfast.train.checkpoint import checkpoint_files, load_checkpoint
from cxrfast.train.loop import synthetic_root


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "data"
    synthetic_root(TrainConfig(root=str(root), synth_n=48, synth_size=64, progress=False))
    return root


def _cfg(synth, out, **kw):
    base = dict(preset="globallocal", size="tiny", root=str(synth), synth_n=48, synth_size=64, out=str(out),
                steps=10, batch_size=8, workers=0, log_every=1, ckpt_every=4, progress=False, vocab_size=300,
                overrides={"image_size": 32})
    return TrainConfig(**{**base, **kw})


def _log(run):
    with open(run / "log.csv", newline="") as f:
        return {int(r["step"]): r for r in csv.DictReader(f)}


def test_a_run_writes_its_folder(synth, tmp_path):
    run = tmp_path / "run"
    result = pretrain(_cfg(synth, run))
    assert result.steps == 10
    for name in ("config.json", "train.json", "tokenizer/tokenizer.json", "log.csv"):
        assert (run / name).exists(), name
    assert (run / "loss.png").exists() or importlib.util.find_spec("matplotlib") is None  # (optional: [viz])
    assert [p.name for p in checkpoint_files(run / "checkpoints")] == ["step-000008.pt", "step-000010.pt"]  # keep=2
    log = _log(run)
    assert sorted(log) == list(range(1, 11)) and {"loss", "loss_global", "loss_local", "lr"} <= set(log[1])
    state = load_checkpoint(run / "checkpoints")
    assert state["step"] == 10 and state["train_config"]["steps"] == 10


def test_resume_replays_the_uninterrupted_run(synth, tmp_path):
    """Stopped after 6 steps (its last checkpoint is step 4): resumed, steps 5..10 equal the uninterrupted
    run's exactly (data position, augmentation, dropout and optimiser state all restored)."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    pretrain(_cfg(synth, whole))
    pretrain(_cfg(synth, cut), stop_after=6)
    assert load_checkpoint(cut / "checkpoints")["step"] == 4
    pretrain(_cfg(synth, cut), resume=True)
    a, b = _log(whole), _log(cut)
    assert sorted(b) == list(range(1, 11))
    for step in range(1, 11):
        assert a[step]["loss"] == b[step]["loss"], (step, a[step]["loss"], b[step]["loss"])


KILLER = """
import os, signal, sys
os.environ["CXRFAST_CACHE"] = sys.argv[3]
import cxrfast.train.checkpoint as ck
from cxrfast.train import TrainConfig, pretrain
import json
cfg = TrainConfig(**json.loads(open(sys.argv[1]).read()))
mode, at = sys.argv[2].split(":")
at = int(at)
if mode == "checkpoint":      # killed between a checkpoint's temporary file and its rename
    real = ck.os.replace
    def replace(src, dst):
        if str(dst).endswith(f"step-{at:06d}.pt"):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst)
    ck.os.replace = replace
else:                         # killed in the middle of step `at` (after its forward, before its update)
    import torch
    real_step = torch.optim.Adam.step
    calls = {"n": 0}
    def step(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_step(self, *a, **k)
    torch.optim.Adam.step = step
pretrain(cfg, resume=len(sys.argv) > 4)
"""


@pytest.mark.parametrize("where", ["step:7", "checkpoint:8"])
def test_kill_9_then_resume_equals_the_uninterrupted_run(synth, tmp_path, where):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    pretrain(_cfg(synth, whole))
    cfg = _cfg(synth, cut)
    spec = tmp_path / "cfg.json"
    spec.write_text(cfg.to_json())
    script = tmp_path / "killer.py"
    script.write_text(textwrap.dedent(KILLER))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, str(script), str(spec), where, str(tmp_path / "cache")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    state = load_checkpoint(cut / "checkpoints")
    assert state["step"] == 4  # the last complete checkpoint: killed before step 8's could replace it
    pretrain(cfg, resume=True)
    a, b = _log(whole), _log(cut)
    assert sorted(b) == list(range(1, 11))
    assert all(a[s]["loss"] == b[s]["loss"] for s in range(1, 11))
    assert not list((cut / "checkpoints").glob(".*.tmp")), "the killed writer's temporary file is cleaned up"


def test_errors_name_the_problem(synth, tmp_path):
    run = tmp_path / "run"
    pretrain(_cfg(synth, run, steps=4))
    with pytest.raises(ValueError, match="holds a run already"):
        pretrain(_cfg(synth, run, steps=4))
    with pytest.raises(ValueError, match="resuming with other settings"):
        pretrain(_cfg(synth, run, steps=4, lr=0.5), resume=True)
    with pytest.raises(ValueError, match="TrainConfig.amp must be"):
        _cfg(synth, run, amp="fp8")
    with pytest.raises(ValueError, match="needs --root"):
        pretrain(_cfg(synth, tmp_path / "other", data="mimic-cxr", root=None))


def test_cli_runs_and_resumes(synth, tmp_path):
    run = tmp_path / "cli"
    args = [sys.executable, "-m", "cxrfast", "pretrain", "--root", str(synth), "--synth-n", "48", "--synth-size", "64",
            "--out", str(run), "--steps", "3", "--batch-size", "8", "--workers", "0", "--vocab-size", "300",
            "--set", "image_size=32", "--no-progress"]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    first = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "3 steps in" in first.stdout
    again = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 2 and "holds a run already" in again.stderr
    finished = subprocess.run(args + ["--resume"], capture_output=True, text=True, env=env, timeout=600)
    assert finished.returncode == 0 and "is finished already (3 steps); nothing to do" in finished.stdout


def test_a_given_tokenizer_is_copied_into_the_run(synth, tmp_path):
    """`--tokenizer DIR`: the run uses DIR's tokenizer (here one of another vocabulary size than the run would
    train), and holds its own copy of DIR's files, so that `cxrfast eval` (which reads RUN/tokenizer/ only) loads
    the run after DIR is gone. A stale tokenizer left by a failed start is replaced."""
    import shutil

    from cxrfast.data.text import ReportTokenizer, train_tokenizer
    from cxrfast.eval.run import load_run

    given = tmp_path / "given"
    train_tokenizer(["left pleural effusion", "no acute findings", "mild cardiomegaly"] * 5, given, vocab_size=60,
                    min_frequency=1)
    size = ReportTokenizer.from_pretrained(given).vocab_size
    run = tmp_path / "run"
    (run / "tokenizer").mkdir(parents=True)
    shutil.copy2(given / "tokenizer.json", run / "tokenizer" / "tokenizer.json")
    (run / "tokenizer" / "tokenizer.json").write_text("stale")  # what a failed start may leave
    pretrain(_cfg(synth, run, steps=1, tokenizer=str(given)))
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json"):
        assert (run / "tokenizer" / name).read_bytes() == (given / name).read_bytes(), name
    shutil.rmtree(given)
    loaded = load_run(run)
    assert loaded.tokenizer.vocab_size == size != 300 and loaded.config.vocab_size == size


def test_resume_refuses_changed_results_and_allows_the_rest(synth, tmp_path):
    """A resume must replay the uninterrupted run: a changed step count (the cosine schedule's length), batch
    size, process count or what `auto` resolved to is refused by name; output cadence, workers, the progress bar
    and the data's location may change."""
    import torch

    run = tmp_path / "run"
    pretrain(_cfg(synth, run), stop_after=4)
    with pytest.raises(ValueError, match=r"steps 10 -> 20.*batch_size 8 -> 4"):
        pretrain(_cfg(synth, run, steps=20, batch_size=4), resume=True)
    latest = checkpoint_files(run / "checkpoints")[-1]
    original = latest.read_bytes()
    state = torch.load(latest, weights_only=True)
    assert state["world"] == 1 and state["resolved"] == {"amp": "none", "loader": "torch"}
    for key, value, message in (("world", 2, r"processes \(WORLD_SIZE\) 2 -> 1"),
                                ("resolved", {"amp": "bf16", "loader": "torch"}, r"amp \(auto\) 'bf16' -> 'none'")):
        torch.save({**state, key: value}, latest)
        with pytest.raises(ValueError, match=message):
            pretrain(_cfg(synth, run), resume=True)
    latest.write_bytes(original)
    moved = tmp_path / "moved"
    import shutil

    shutil.copytree(synth, moved)
    result = pretrain(_cfg(synth, run, root=str(moved), log_every=5, ckpt_every=3, workers=1, progress=True),
                      resume=True)
    assert result.steps == 10 and result.trained == 6
    again = pretrain(_cfg(synth, run), resume=True)
    assert again.trained == 0 and again.steps == 10  # finished: nothing to do


def test_pretraining_needs_reports(tmp_path, monkeypatch):
    """An image-only dataset (CheXpert) is refused with the reason; a dataset without an official split
    (OpenI) needs split=None (--split all); a dataset with fewer pairs than a batch is refused."""
    pytest.importorskip("pydicom")
    pytest.importorskip("PIL")
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parents[1] / "data"))
    from test_datasets import chexpert_replica, openi_replica

    chexpert = chexpert_replica(tmp_path)
    with pytest.raises(ValueError, match="has a report: pre-training needs image-report pairs"):
        pretrain(TrainConfig(data="chexpert", root=str(chexpert), out=str(tmp_path / "c"), steps=1, progress=False,
                             workers=0))
    assert not (tmp_path / "c" / "tokenizer").exists()  # refused before anything was written
    openi = openi_replica(tmp_path / "openi")
    with pytest.raises(ValueError, match=r"no official split.*--split all"):
        pretrain(TrainConfig(data="openi", root=str(openi), out=str(tmp_path / "o1"), steps=1, progress=False,
                             workers=0))
    # every study (split=None) opens; the replica's one image-report pair (the others lack an image or a
    # report: image-only / text-only studies are left out for globallocal) is less than a batch
    with pytest.raises(ValueError, match=r"1 training study in every split of openi \(image-report pairs\): fewer"):
        pretrain(TrainConfig(data="openi", root=str(openi), split=None, out=str(tmp_path / "o2"), steps=2,
                             batch_size=2, progress=False, workers=0, vocab_size=100))
