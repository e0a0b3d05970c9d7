"""Shared by tests/eval: a tiny synthetic dataset on disk, its tokenizer, a tiny random globallocal model,
and an oracle model whose features are planted (oracle.py). Session-scoped: made once, read by every test."""

import pytest
import torch

from cxrfast.data.datasets import open_dataset
from cxrfast.data.synth import write_synthetic
from cxrfast.data.text import train_tokenizer

# 80 studies split by subject: 61 train, 19 validate + test (every competition finding has positives and
# negatives among those 19); 64-px images, so one pass over them takes about a second
N_STUDIES = 80
TEST_SPLITS = {"test": ("validate", "test")}


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    write_synthetic(root, n=N_STUDIES, size=64, workers=0)
    return root


@pytest.fixture(scope="session")
def studies(synth_root):
    return open_dataset("mimic-cxr", synth_root)


@pytest.fixture(scope="session")
def tokenizer(studies):
    return train_tokenizer([s.text for s in studies], vocab_size=1000)


@pytest.fixture(scope="session")
def model(tokenizer):
    from cxrfast.models import create_model

    torch.manual_seed(0)
    return create_model("globallocal", size="tiny", vocab_size=1000).eval()


@pytest.fixture(scope="session")
def oracle(studies, tokenizer):
    from oracle import OracleModel

    return OracleModel(studies, tokenizer).eval()
