"""`cxrfast models`: the presets' parameter counts (built on the meta device) match the papers' encoders."""

import json

from cxrfast.cli import main


def test_paper_parameter_counts(capsys):
    assert main(["models", "--json"]) == 0
    rows = {r["preset"]: r for r in json.loads(capsys.readouterr().out)}
    assert sorted(rows) == ["globallocal", "joimternet", "lovt", "mixed", "refers"]
    m = lambda preset, part: rows[preset]["parts"][part] / 1e6  # noqa: E731
    # transformers' ResNet-50 trunk (25.6 M with ImageNet's classifier head), BERT-base without the pooler
    for preset in ("globallocal", "lovt"):
        assert abs(m(preset, "image_encoder") - 23.5) < 0.1 and abs(m(preset, "text_encoder") - 108.9) < 0.1
    assert abs(m("refers", "image_encoder") - 85.41) < 0.02      # ViT-B/16, one input channel (85.8 M with three)
    assert abs(m("refers", "text_encoder") - 109.5) < 0.5        # BERT-base with its pooler
    assert abs(m("mixed", "transformer") - 85.1) < 0.1           # 12 layers × 768, a BERT-base/ViT-B stack
    assert abs(m("joimternet", "image_encoder") - 11.2) < 0.1    # ResNet-18 trunk
    for row in rows.values():
        assert row["size"] == "paper" and row["parameters"] == sum(row["parts"].values())


def test_table_per_size(capsys):
    assert main(["models", "--preset", "globallocal", "--size", "all"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("globallocal:") and [line.split()[0] for line in out[1:]] == ["paper", "small", "tiny"]
    assert "134.75 M" in out[1]
