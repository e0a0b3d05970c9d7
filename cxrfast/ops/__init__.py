"""Public functional API and the torch.library ops (``torch.ops.cxrfast.*``).

Importing this module registers the ops; it imports neither triton nor the compiled extension
(the Triton launchers are imported on first use of impl="triton").
"""

from cxrfast.ops._dispatch import UnsupportedInputError, explain
from cxrfast.ops.contrastive import contrastive_loss
from cxrfast.ops.local import local_contrastive_loss, local_triplet_loss, word_region_similarity
from cxrfast.ops.lovt import lovt_local_loss
from cxrfast.ops.triplet import triplet_loss

__all__ = ["UnsupportedInputError", "contrastive_loss", "explain", "local_contrastive_loss", "local_triplet_loss",
           "lovt_local_loss", "triplet_loss", "word_region_similarity"]


def __dir__():
    return list(__all__)
