"""ReportTokenizer: training, saving, loading (ours, HF directories), word/sentence indices, the CLI."""

import json
import subprocess
import sys

import numpy as np
import pytest
from loader_fixtures import split

from cxrfast.data.text import ReportTokenizer, TokenizerError, corpus_texts, train_tokenizer

REPORTS = ["Heart size is normal. No pleural effusion or pneumothorax.",
           "Moderate cardiomegaly. Small left pleural effusion with bibasilar atelectasis.",
           "Patchy right lower lobe consolidation, likely pneumonia. Mild pulmonary edema."] * 5


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    train_tokenizer(REPORTS, out, vocab_size=60, min_frequency=1, split_sentences=split)
    return out


def test_saved_directory_loads_here_and_in_transformers(tok_dir):
    files = {p.name for p in tok_dir.iterdir()}
    assert {"tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"} <= files
    ours = ReportTokenizer.from_pretrained(tok_dir, split_sentences=split)
    assert ours.pad_id == 0 and ours.vocab_size <= 60
    transformers = pytest.importorskip("transformers")
    hf = transformers.BertTokenizerFast.from_pretrained(str(tok_dir))
    text = "Small left pleural effusion."
    enc = ours.encode([text], max_length=64)
    n = int(enc.attention_mask[0].sum())
    assert enc.input_ids[0, :n].tolist() == hf(text)["input_ids"]


def test_word_pieces_share_their_word_index(tok_dir):
    tok = ReportTokenizer.from_pretrained(tok_dir, split_sentences=split)
    enc = tok.encode(["Bibasilar atelectasis. Cardiomegaly."], max_length=32)
    ids, word, sent, mask = enc.input_ids[0], enc.word_index[0], enc.sentence_index[0], enc.attention_mask[0]
    pieces = [tok.tokenizer.id_to_token(int(i)) for i in ids[mask]]
    # every "##" piece continues the word of the piece before it
    for k in range(1, len(pieces)):
        if pieces[k].startswith("##"):
            assert word[k] == word[k - 1]
    # the test splitter eats the first sentence's period: bibasilar 0, atelectasis 1 | cardiomegaly 2, "." 3
    assert word[mask].max() == 3
    assert sent[mask & (word >= 0)].tolist()[0] == 0 and sent[mask & (word >= 0)].max() == 1


def test_truncation_keeps_cls_and_sep(tok_dir):
    tok = ReportTokenizer.from_pretrained(tok_dir, split_sentences=split)
    enc = tok.encode([" ".join(REPORTS)], max_length=8)
    assert enc.attention_mask[0].all()
    assert enc.input_ids[0, 0] == tok.cls_id and enc.input_ids[0, -1] == tok.sep_id
    assert (np.diff(enc.word_index[0, 1:-1]) >= 0).all()


def test_vocab_txt_only_directory(tok_dir, tmp_path):
    (tmp_path / "vocab.txt").write_text((tok_dir / "vocab.txt").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    a = ReportTokenizer.from_pretrained(tmp_path, split_sentences=split).encode(REPORTS[:2], max_length=24)
    b = ReportTokenizer.from_pretrained(tok_dir, split_sentences=split).encode(REPORTS[:2], max_length=24)
    assert np.array_equal(a.input_ids, b.input_ids) and np.array_equal(a.word_index, b.word_index)


def test_errors_name_what_is_wrong(tmp_path):
    with pytest.raises(TokenizerError, match="does not exist"):
        ReportTokenizer.from_pretrained(tmp_path / "nope")
    with pytest.raises(TokenizerError, match="expected tokenizer.json or vocab.txt"):
        ReportTokenizer.from_pretrained(tmp_path)
    with pytest.raises(TokenizerError, match="no text"):
        train_tokenizer(["", None], vocab_size=50)
    with pytest.raises(ValueError, match="max_length must be >= 2"):
        train_tokenizer(REPORTS, vocab_size=90, min_frequency=1, split_sentences=split).encode(["x"], max_length=1)
    with pytest.raises(ValueError, match="cannot hold the 5 special tokens and the 25 characters"):
        train_tokenizer(REPORTS, vocab_size=50)
    with pytest.raises(TokenizerError, match="no \\*.txt report files"):
        corpus_texts(tmp_path)


def test_cli_trains_from_a_folder_of_reports(tmp_path):
    folder = tmp_path / "files" / "p10" / "p1000"
    folder.mkdir(parents=True)
    for i, r in enumerate(REPORTS):
        (folder / f"s{i}.txt").write_text(r)
    out = tmp_path / "tok"
    proc = subprocess.run([sys.executable, "-m", "cxrfast", "tokenizer", "train", str(tmp_path / "files"), str(out),
                           "--vocab-size", "80", "--min-frequency", "1"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "15 reports" in proc.stdout and (out / "tokenizer.json").exists()
    bad = subprocess.run([sys.executable, "-m", "cxrfast", "tokenizer", "train", str(tmp_path / "missing"), str(out)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "does not exist" in bad.stderr


def test_training_is_deterministic():
    """The same reports give the same vocabulary, ids included (the tokenizers library's trainer did not: two
    pre-training runs of one seed differed from their first step)."""
    a = train_tokenizer(REPORTS * 3, vocab_size=80, min_frequency=1).tokenizer.get_vocab()
    b = train_tokenizer(list(reversed(REPORTS * 3)), vocab_size=80, min_frequency=1).tokenizer.get_vocab()
    assert a == b
