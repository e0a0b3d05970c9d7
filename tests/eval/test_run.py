"""load_run round-trips a run folder (config.json, tokenizer/, model.pt or checkpoints/), and run_eval evaluates
one into RUN/eval."""

import json
import shutil
from fractions import Fraction

import pytest
import torch
from conftest import TEST_SPLITS

from cxrfast.eval import load_run, run_eval
from cxrfast.models import random_batch


@pytest.fixture
def run_dir(model, tokenizer, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    model.config.to_json(run / "config.json")
    tokenizer.save(run / "tokenizer")
    torch.save(model.state_dict(), run / "model.pt")
    return run


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip(run_dir, model, tokenizer):
    r = load_run(run_dir)
    assert r.path == run_dir and r.weights == run_dir / "model.pt" and r.step is None
    assert r.config == model.config and not r.model.training
    assert same_weights(r.model, model)
    batch = random_batch(model, 3, seed=4)
    with torch.no_grad():
        torch.testing.assert_close(r.model.encode_image(batch)["global"], model.encode_image(batch)["global"])
    text = "Small left pleural effusion."
    assert (r.tokenizer.encode([text], 48).input_ids == tokenizer.encode([text], 48).input_ids).all()


def test_checkpoints_folder_latest_step_and_wrapped_keys(run_dir, model):
    (run_dir / "model.pt").unlink()
    ckpts = run_dir / "checkpoints"
    ckpts.mkdir()
    states = {}
    for step in (5, 100, 20):  # written out of order: the step in the name decides, not the time
        sd = {k: v + step if v.is_floating_point() else v for k, v in model.state_dict().items()}
        states[step] = sd
        wrapped = {"module." + k: v for k, v in sd.items()}  # saved through DDP
        torch.save({"model": wrapped, "optimizer": {"state": {}, "param_groups": []}, "step": step},
                   ckpts / f"step_{step:06d}.pt")
    r = load_run(run_dir)
    assert r.weights == ckpts / "step_000100.pt" and r.step == 100
    assert all(torch.equal(r.model.state_dict()[k], v) for k, v in states[100].items())
    # a checkpoint file names itself; its run folder is the one above checkpoints/
    r = load_run(ckpts / "step_000020.pt")
    assert r.path == run_dir and r.step == 20
    assert all(torch.equal(r.model.state_dict()[k], v) for k, v in states[20].items())
    # model.pt wins over checkpoints/
    torch.save({"model": model.state_dict()}, run_dir / "model.pt")
    assert same_weights(load_run(run_dir).model, model)


def test_errors_name_the_file(run_dir, model, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_run(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="neither model.pt nor checkpoints"):
        load_run(empty)
    sd = model.state_dict()
    torch.save({k: v for k, v in sd.items() if not k.startswith("global_embed")}, run_dir / "model.pt")
    with pytest.raises(ValueError, match=r"does not fit the globallocal model.*missing \['global_embed"):
        load_run(run_dir)
    torch.save({"model": sd, "extra": Fraction(1, 3)}, run_dir / "model.pt")  # a pickled object
    with pytest.raises(ValueError, match="pass trusted=True"):
        load_run(run_dir)
    assert same_weights(load_run(run_dir, trusted=True).model, model)
    shutil.rmtree(run_dir / "tokenizer")
    with pytest.raises(FileNotFoundError, match="has no tokenizer"):
        load_run(run_dir)


def test_run_eval_writes_into_the_run_folder(run_dir, synth_root, studies):
    m = run_eval(run_dir, data=synth_root, which=("retrieval",), splits=TEST_SPLITS, device="cpu",
                 show_progress=False)
    assert m["meta"]["run"] == str(run_dir) and m["meta"]["weights"] == str(run_dir / "model.pt")
    saved = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert saved["retrieval"]["n"] == m["retrieval"]["n"] == sum(s.split in TEST_SPLITS["test"] for s in studies)
    assert set(saved) >= {"format", "meta", "retrieval"} and "zeroshot" not in saved
    with pytest.raises(TypeError, match="`data` must be a StudyDataset or a dataset root"):
        run_eval(run_dir, data=3)
