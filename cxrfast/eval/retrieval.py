"""Image ↔ report retrieval on the test studies: Recall@1/5/10 both ways.

Each paired test study is a query; its own report (or image) is the one match among all the test
studies' reports (images). Similarity: the model's (PresetModel.similarity, cosine of the global
features). A candidate scored equal to the match ranks above it (pessimistic ties, metrics.retrieval_ranks),
so a collapsed model that gives every pair the same score gets Recall@K = K/N at best, not 1.
"""

from __future__ import annotations

from collections.abc import Sequence

from cxrfast.eval.features import Features
from cxrfast.eval.metrics import recall_at_k
from cxrfast.models.base import PresetModel

__all__ = ["retrieval"]


def retrieval(test: Features, *, ks: Sequence[int] = (1, 5, 10), similarity=PresetModel.similarity) -> dict:
    """{"image_to_text": {"R@k", "median_rank"}, "text_to_image": {...}, "n": paired studies, "ties":
    "pessimistic"}; {"skipped": reason} with fewer than 2 paired studies or without text features."""
    if test.text is None:
        return {"skipped": "the reports were not encoded (encode_studies(text=False))"}
    paired = test.has_image & test.has_text
    n = int(paired.sum())
    if n < 2:
        return {"skipped": f"retrieval needs at least 2 paired test studies, found {n}"}
    sim = similarity(test.image[paired], test.text[paired])  # [images, reports]
    return {"image_to_text": recall_at_k(sim, ks), "text_to_image": recall_at_k(sim.t(), ks), "n": n,
            "ties": "pessimistic (a candidate scored equal to the match ranks above it)"}
