"""Reports → token ids, with the word and sentence of every token.

    tok = train_tokenizer(report_texts, "OUT/tokenizer", vocab_size=8000)   # WordPiece, `tokenizers`
    tok = ReportTokenizer.from_pretrained("OUT/tokenizer")                 # ours, or any local HF directory
    enc = tok.encode(["No effusion. Heart size normal.", None], max_length=64)
    enc.input_ids, enc.attention_mask, enc.word_index, enc.sentence_index  # numpy [N, max_length]

A report is split into sentences (cxrfast.data.reports.split_sentences), each sentence tokenised on its
own (BERT normalisation: lower case, accents stripped; BERT pre-tokenisation: words and punctuation;
WordPiece), and the pieces concatenated as [CLS] s₁ s₂ … [SEP]. Every piece carries its word's index
(0-based over the report; a word split into pieces "card ##io ##mega ##ly" repeats one index) and its
sentence's index, so that a model merges pieces into words and pools sentences with a scatter over these
indices: no loop over tokens and no host sync per token (GLoRIA calls `.item()` per token). Special tokens
and padding have index -1. Reports longer than max_length are cut at a piece boundary (the words and
sentences past the cut are dropped whole or in part, as BERT's truncation does). A missing report (None)
encodes as all padding with an all-False attention mask (an image-only sample).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["SPECIAL_TOKENS", "ReportTokenizer", "TokenBatch", "train_tokenizer", "TokenizerError"]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


class TokenizerError(ValueError):
    """A tokenizer directory or corpus that cannot be used; the message names it and what was expected."""


@dataclass
class TokenBatch:
    """numpy arrays [N, T]: input_ids int64, attention_mask bool, word_index int64, sentence_index int64."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    word_index: np.ndarray
    sentence_index: np.ndarray

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def row(self, i: int) -> "TokenBatch":
        """Sample i as a batch of one."""
        return TokenBatch(*(a[i:i + 1] for a in (self.input_ids, self.attention_mask, self.word_index,
                                                    self.sentence_index)))


def _default_splitter() -> Callable[[str], list[str]]:
    from cxrfast.data.reports import split_sentences

    return split_sentences


class ReportTokenizer:
    """A WordPiece tokenizer (the `tokenizers` library) with the special tokens BERT uses."""

    def __init__(self, tokenizer, name: str = "", split_sentences: Callable[[str], list[str]] | None = None):
        self.tokenizer = tokenizer
        self.name = name
        ids = {t: tokenizer.token_to_id(t) for t in SPECIAL_TOKENS}
        missing = [t for t, i in ids.items() if i is None and t != "[MASK]"]
        if missing:
            raise TokenizerError(f"tokenizer {name or '(in memory)'}: the vocabulary lacks {missing}")
        self.pad_id, self.unk_id, self.cls_id, self.sep_id = (ids[t] for t in SPECIAL_TOKENS[:4])
        self.mask_id = ids["[MASK]"] if ids["[MASK]"] is not None else self.unk_id
        self._split = split_sentences

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @classmethod
    def from_pretrained(cls, path, **kwargs) -> "ReportTokenizer":
        """Load a directory holding tokenizer.json (ours, or a fast Hugging Face tokenizer) or only vocab.txt
        (e.g. a downloaded Bio_ClinicalBERT); lower-casing follows tokenizer_config.json's do_lower_case
        (default True) for vocab.txt-only directories. Nothing is downloaded."""
        from tokenizers import Tokenizer

        path = Path(path)
        if not path.is_dir():
            raise TokenizerError(f"tokenizer directory {path} does not exist (or is not a directory)")
        if (path / "tokenizer.json").exists():
            return cls(Tokenizer.from_file(str(path / "tokenizer.json")), str(path), **kwargs)
        if (path / "vocab.txt").exists():
            from tokenizers.implementations import BertWordPieceTokenizer

            config = path / "tokenizer_config.json"
            lower = json.loads(config.read_text()).get("do_lower_case", True) if config.exists() else True
            wp = BertWordPieceTokenizer(str(path / "vocab.txt"), lowercase=lower)
            return cls(wp._tokenizer, str(path), **kwargs)
        raise TokenizerError(f"tokenizer directory {path}: expected tokenizer.json or vocab.txt in it, found "
                             f"{sorted(p.name for p in path.iterdir())[:10]}")

    def save(self, path) -> Path:
        """Write tokenizer.json, vocab.txt, tokenizer_config.json and special_tokens_map.json: a directory
        that this class and transformers' BertTokenizerFast.from_pretrained both load."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(path / "tokenizer.json"))
        vocab = self.tokenizer.get_vocab()
        (path / "vocab.txt").write_text("".join(t + "\n" for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])))
        (path / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512,
            "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
            "mask_token": "[MASK]"}, indent=1))
        (path / "special_tokens_map.json").write_text(json.dumps({
            "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
            "mask_token": "[MASK]"}, indent=1))
        return path

    def encode(self, texts: Iterable[str | None], max_length: int = 128) -> TokenBatch:
        """Token ids with word and sentence indices, [N, max_length] each (see the module docstring)."""
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 (room for [CLS] and [SEP]), got {max_length}")
        texts = list(texts)
        split = self._split or _default_splitter()
        sentences = [split(t) if t else [] for t in texts]
        flat = [s for ss in sentences for s in ss]
        encoded = self.tokenizer.encode_batch(flat, add_special_tokens=False) if flat else []
        n = len(texts)
        ids = np.full((n, max_length), self.pad_id, np.int64)
        mask = np.zeros((n, max_length), bool)
        word = np.full((n, max_length), -1, np.int64)
        sent = np.full((n, max_length), -1, np.int64)
        k = 0
        for i, ss in enumerate(sentences):
            if texts[i] is None:
                k += len(ss)
                continue
            parts = encoded[k:k + len(ss)]
            k += len(ss)
            pid, pw, ps, words = [], [], [], 0
            for j, e in enumerate(parts):
                w = np.asarray([-1 if x is None else x for x in e.word_ids], np.int64)
                pid.append(np.asarray(e.ids, np.int64))
                pw.append(np.where(w >= 0, w + words, -1))
                ps.append(np.full(len(w), j, np.int64))
                words += int(w.max()) + 1 if len(w) else 0
            body = max_length - 2
            cat = (np.concatenate(x)[:body] if x else np.zeros(0, np.int64) for x in (pid, pw, ps))
            t_ids, t_word, t_sent = cat
            m = len(t_ids)
            ids[i, 0], ids[i, 1:m + 1], ids[i, m + 1] = self.cls_id, t_ids, self.sep_id
            mask[i, :m + 2] = True
            word[i, 1:m + 1], sent[i, 1:m + 1] = t_word, t_sent
        return TokenBatch(ids, mask, word, sent)

    def decode(self, ids) -> str:
        """Text of a row of ids (special tokens and padding dropped)."""
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)


def train_tokenizer(texts: Iterable[str], out=None, *, vocab_size: int = 8000, min_frequency: int = 2,
                    split_sentences: Callable[[str], list[str]] | None = None) -> ReportTokenizer:
    """A WordPiece vocabulary from `texts` (BERT normalisation and pre-tokenisation, lower case), saved to `out`
    when given. Deterministic: the same texts give the same vocabulary, ids included (the `tokenizers`
    library's trainer breaks ties between equally frequent merges differently from run to run, which made two
    runs of one seed differ). The vocabulary: SPECIAL_TOKENS ([PAD] is id 0), every character seen, alone and
    as a "##" continuation (so any word can be spelled), then whole words by frequency (ties alphabetical)
    while they occur at least `min_frequency` times and the size allows. Radiology reports draw on a small
    vocabulary, so whole words cover nearly all of them; a rarer word is spelled from its characters."""
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    texts = [t for t in texts if t]
    if not texts:
        raise TokenizerError("train_tokenizer: the corpus holds no text")
    if vocab_size < len(SPECIAL_TOKENS) + 1:
        raise ValueError(f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got {vocab_size}")
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre = pre_tokenizers.BertPreTokenizer()
    words: Counter = Counter()
    for text in texts:
        words.update(w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = sorted({c for w in words for c in w})
    vocab = list(SPECIAL_TOKENS) + chars + [f"##{c}" for c in chars]
    known = set(vocab)
    for word, count in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= vocab_size or count < min_frequency:
            break
        if word not in known:
            vocab.append(word)
            known.add(word)
    if len(vocab) > vocab_size:
        raise ValueError(f"vocab_size {vocab_size} cannot hold the {len(SPECIAL_TOKENS)} special tokens and the "
                         f"{len(chars)} characters of the corpus (alone and as continuations): at least {len(vocab)}")
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]",
                                     max_input_chars_per_word=100))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece()
    out_tok = ReportTokenizer(tok, str(out) if out else "", split_sentences=split_sentences)
    if out is not None:
        out_tok.save(out)
    return out_tok


def corpus_texts(source) -> list[str]:
    """Report texts from `source`: a folder (every *.txt below it, one report per file: MIMIC-CXR's and the
    synthetic dataset's layout) or a text file (one report per line)."""
    source = Path(source)
    if source.is_dir():
        files = sorted(source.rglob("*.txt"))
        if not files:
            raise TokenizerError(f"corpus folder {source}: no *.txt report files below it")
        return [f.read_text(encoding="utf-8", errors="replace") for f in files]
    if source.is_file():
        return [line for line in source.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    raise TokenizerError(f"corpus {source} does not exist")
