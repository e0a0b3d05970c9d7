"""Pure-PyTorch definitions of every cxrfast op.

These functions are the specification: differentiable, device- and dtype-agnostic, and importable
without triton, DALI or the compiled extension. They materialise whatever the math needs (for the
losses, the full B×B similarity matrix), so they are for tests, benchmarks and small inputs.
"""

from cxrfast.reference.contrastive import contrastive_loss, similarity_matrix
from cxrfast.reference.local import (local_contrastive_loss, local_triplet_loss, paired_word_region_similarity,
                                     word_region_similarity)
from cxrfast.reference.triplet import random_negatives, triplet_loss

__all__ = ["contrastive_loss", "local_contrastive_loss", "local_triplet_loss", "paired_word_region_similarity",
           "random_negatives", "similarity_matrix", "triplet_loss", "word_region_similarity"]
