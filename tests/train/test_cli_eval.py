"""`cxrfast eval` and `cxrfast demo` end to end on a small synthetic dataset (the real demo's settings are
measured by `make demo`; here the dataset, the images and the step count are small)."""

import importlib.util
import json

import pytest

from cxrfast.cli import main
from cxrfast.train import TrainConfig
from cxrfast.train.loop import synthetic_root

SMALL = dict(synth_n=60, synth_size=64, vocab_size=300, workers=0, overrides={"image_size": 32})


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "data"
    synthetic_root(TrainConfig(root=str(root), synth_n=SMALL["synth_n"], synth_size=SMALL["synth_size"], progress=False))
    return root


def test_eval_reads_the_runs_data_and_writes_its_tables(synth, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", "--root", str(synth), "--synth-n", "60", "--synth-size", "64", "--out", str(run),
                 "--steps", "3", "--batch-size", "8", "--workers", "0", "--vocab-size", "300", "--set",
                 "image_size=32", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run), "--which", "zeroshot,retrieval", "--n-boot", "20",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "Zero-shot classification" in out and "Retrieval" in out and "Linear probe" not in out
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["which"] == ["zeroshot", "retrieval"] and metrics["meta"]["step"] == 3
    assert metrics["meta"]["root"] == str(synth)  # the run's own data, from train.json
    n_test = metrics["meta"]["n_test"]
    assert 0 < n_test < 60 and metrics["retrieval"]["n"] == n_test
    for finding, row in metrics["zeroshot"]["posneg"]["per_finding"].items():
        assert row["auc"] is None or 0.0 <= row["auc"] <= 1.0, finding


def test_eval_splits_are_chosen_on_the_command_line(synth, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", "--root", str(synth), "--synth-n", "60", "--synth-size", "64", "--out", str(run),
                 "--steps", "1", "--batch-size", "8", "--workers", "0", "--vocab-size", "300", "--set",
                 "image_size=32", "--no-progress"]) == 0
    assert main(["eval", "--checkpoint", str(run), "--which", "retrieval", "--test-split", "validate,test",
                 "--no-progress"]) == 0
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["meta"]["splits"]["test"] == ["validate", "test"]
    both = metrics["meta"]["n_test"]
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run), "--which", "retrieval", "--no-progress"]) == 0
    assert 0 < json.loads((run / "eval" / "metrics.json").read_text())["meta"]["n_test"] < both
    assert main(["eval", "--checkpoint", str(run), "--which", "retrieval", "--test-split", "valid"]) == 2
    err = capsys.readouterr().err
    assert "selects no study" in err and "'validate'" in err and "--test-split" in err


def test_eval_errors_name_the_problem(tmp_path, capsys):
    assert main(["eval", "--checkpoint", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "--checkpoint", str(tmp_path), "--which", "zeroshot,accuracy"])
    assert "unknown metric" in capsys.readouterr().err


@pytest.mark.parametrize("bar, rc", [(0.0, 0), (1.01, 1)])
def test_demo_prints_the_bar_and_fails_below_it(synth, tmp_path, capsys, monkeypatch, bar, rc):
    from cxrfast.train import demo

    monkeypatch.setitem(demo.DEMO, "root", str(synth))
    for key, value in SMALL.items():
        monkeypatch.setitem(demo.DEMO, key, value)
    monkeypatch.setitem(demo.DEMO, "batch_size", 8)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "2", "--bar", str(bar), "--no-progress"]) == rc
    text = capsys.readouterr().out
    assert "mean zero-shot AUC" in text and f"bar ≥ {bar:.2f}: {'met' if rc == 0 else 'NOT met'}" in text
    assert (out / "eval" / "metrics.md").exists()
    assert (out / "loss.png").exists() or importlib.util.find_spec("matplotlib") is None  # (optional: [viz])
    # a second call finds the finished run and evaluates it again (no error, no retraining)
    before = {p.name: p.stat().st_mtime_ns for p in (out / "checkpoints").iterdir()}
    assert main(["demo", "--out", str(out), "--steps", "2", "--bar", str(bar), "--no-progress"]) == rc
    assert "finished already (2 steps): not trained again" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in (out / "checkpoints").iterdir()} == before
    # other settings are refused by name, not silently continued
    assert main(["demo", "--out", str(out), "--steps", "3", "--bar", str(bar), "--no-progress"]) == 2
    assert "steps 2 -> 3" in capsys.readouterr().err
