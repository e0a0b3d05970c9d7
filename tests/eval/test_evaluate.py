"""evaluate() end to end on the tiny synthetic dataset: with a random globallocal model every metric computes
with the right keys, shapes and ranges and the files are written; with the oracle (planted features) every
metric finds what was planted; errors name the argument."""

import json
import math

import pytest
from conftest import TEST_SPLITS

from cxrfast.data.studies import COMPETITION_FINDINGS
from cxrfast.eval import ALL, evaluate, format_table

N_BOOT = 200


@pytest.fixture(scope="module")
def run(model, tokenizer, studies, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    return evaluate(model, tokenizer, studies, splits=TEST_SPLITS, out=out, n_boot=N_BOOT, n_prompts=6,
                    show_progress=False), out


def in_unit(x):
    return x is not None and 0.0 <= x <= 1.0


def test_every_metric_computes_with_the_right_shape_and_range(run, studies):
    m, _ = run
    assert m["which"] == list(ALL)
    n_test = sum(s.split in TEST_SPLITS["test"] for s in studies)
    assert m["meta"]["n_test"] == n_test and m["meta"]["n_train"] == sum(s.split == "train" for s in studies)
    for style in ("prompt_ensemble", "posneg"):
        z = m["zeroshot"][style]
        assert list(z["per_finding"]) == list(COMPETITION_FINDINGS) and z["n"] == n_test and z["n_boot"] == N_BOOT
        for d in list(z["per_finding"].values()) + [z["mean"]]:
            lo, hi = d["ci"]
            assert in_unit(d["auc"]) and lo <= d["auc"] <= hi and in_unit(lo) and in_unit(hi)
    assert all(len(p) == 6 for p in m["zeroshot"]["prompt_ensemble"]["prompts"].values())
    r = m["retrieval"]
    assert r["n"] == n_test
    for way in ("image_to_text", "text_to_image"):
        rec = [r[way][f"R@{k}"] for k in (1, 5, 10)]
        assert all(in_unit(x) for x in rec) and rec == sorted(rec)  # recall grows with k
        assert 1 <= r[way]["median_rank"] <= n_test
    for frac, n in (("1%", 1), ("10%", 6), ("100%", 61)):
        p = m["probe"][frac]
        assert p["n_train"] == n and set(p["per_finding"]) == set(COMPETITION_FINDINGS)
        assert all(math.isnan(v["auc"]) or in_unit(v["auc"]) for v in p["per_finding"].values())
    loc = m["localized"]
    assert loc["grid"] == [4, 4] and loc["mask_size"] == [64, 64] and loc["n_test"] == n_test
    assert all(math.isnan(v["dice"]) or in_unit(v["dice"]) for v in loc["per_finding"].values())
    assert m["pictures"]["attention"]["file"].endswith(".png")


def test_files_are_written(run):
    m, out = run

    def no_nan(token):
        raise AssertionError(f"metrics.json holds {token}")

    saved = json.loads((out / "metrics.json").read_text(), parse_constant=no_nan)  # strict JSON
    assert saved["zeroshot"]["posneg"]["mean"]["auc"] == pytest.approx(m["zeroshot"]["posneg"]["mean"]["auc"])
    assert (out / "metrics.md").read_text() == format_table(m) + "\n"
    assert sorted(p.name for p in out.glob("probe_split_*.json")) == [
        "probe_split_v1_100pct_seed0.json", "probe_split_v1_10pct_seed0.json", "probe_split_v1_1pct_seed0.json"]
    assert (out / "pictures" / m["pictures"]["attention"]["file"].split("/")[-1]).exists()
    table = format_table(m)
    for needle in ("Zero-shot classification", "prompt ensemble", "positive vs negative", "R@10", "100% of labels",
                   "Localized probe", "Pleural Effusion", "**mean**"):
        assert needle in table


def test_a_second_run_reuses_the_splits_and_repeats_the_figures(run, model, tokenizer, studies):
    first, out = run
    again = evaluate(model, tokenizer, studies, splits=TEST_SPLITS, out=out, n_boot=N_BOOT, n_prompts=6,
                     which=("zeroshot", "probe"), show_progress=False)
    assert all(again["probe"][k]["reused"] for k in ("1%", "10%", "100%"))
    assert not first["probe"]["100%"]["reused"]
    assert again["zeroshot"] == first["zeroshot"]
    assert again["probe"]["100%"]["per_finding"] == first["probe"]["100%"]["per_finding"]


def test_the_oracle_is_found_by_every_metric(oracle, tokenizer, studies, tmp_path):
    m = evaluate(oracle, tokenizer, studies, splits=TEST_SPLITS, out=tmp_path, n_boot=50, n_prompts=5,
                 show_progress=False)
    for style in ("prompt_ensemble", "posneg"):
        assert m["zeroshot"][style]["mean"]["auc"] == 1.0
    assert m["retrieval"]["image_to_text"]["R@1"] == m["retrieval"]["text_to_image"]["R@1"] == 1.0
    assert m["probe"]["100%"]["mean"] > 0.95
    assert m["localized"]["grid"] == [16, 16] and m["localized"]["mean"] > 0.6, m["localized"]
    assert "word features" in m["pictures"]["attention"]["skipped"]


def test_skipped_metrics_say_why(model, tokenizer, studies):
    m = evaluate(model, tokenizer, studies, splits=TEST_SPLITS, which="pictures", show_progress=False)
    assert m["pictures"] == {"skipped": "no output folder (out=None)"}
    assert m["which"] == ["pictures"] and "localized" not in m
    table = format_table({**m, "localized": {"skipped": "the preset has none"}})
    assert "### Localized probe\n\nskipped: the preset has none" in table and "skipped: no output folder" in table


def test_errors_name_the_argument(model, tokenizer, studies):
    with pytest.raises(ValueError, match=r"unknown metric\(s\) \['auc'\] in `which`"):
        evaluate(model, tokenizer, studies, which=("auc",))
    with pytest.raises(TypeError, match="`studies` must be a StudyDataset"):
        evaluate(model, tokenizer, list(studies))
    with pytest.raises(ValueError, match=r"`splits` takes the keys \['test', 'train'\], got \['val'\]"):
        evaluate(model, tokenizer, studies, splits={"val": "validate"})
    with pytest.raises(ValueError, match=r"splits\['test'\] = \('nope',\) selects no study; the dataset's splits"):
        evaluate(model, tokenizer, studies, splits={"test": "nope"})


def test_import_is_lazy():
    """`import cxrfast.eval` imports none of its modules (nor the models, transformers or matplotlib)."""
    import subprocess
    import sys

    code = ("import sys, cxrfast.eval as e; dir(e); "
            "bad = [m for m in sys.modules if m.startswith(('cxrfast.eval.', 'cxrfast.models', 'transformers', "
            "'matplotlib'))]; assert not bad, bad; e.roc_auc; assert 'cxrfast.eval.metrics' in sys.modules; "
            "print('lazy')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "lazy", out.stderr
