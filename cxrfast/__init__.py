"""cxrfast: fused GPU kernels for chest X-ray image–report pre-training.

``import cxrfast`` is lean: it imports neither torch (the modules that need it import it, and cxrfast._ext
loads torch before the extension, which links against libtorch) nor triton, DALI or the compiled extension,
and it initialises no CUDA context, so `cxrfast --help` and `--version` are instant. The public functions are
resolved lazily on first attribute access.
"""

__version__ = "0.1.0"

_LAZY = {
    "contrastive_loss": ("cxrfast.ops.contrastive", "contrastive_loss"),
    "triplet_loss": ("cxrfast.ops.triplet", "triplet_loss"),
    "explain": ("cxrfast.ops._dispatch", "explain"),
    "UnsupportedInputError": ("cxrfast.ops._dispatch", "UnsupportedInputError"),
    "word_region_similarity": ("cxrfast.ops.local", "word_region_similarity"),
    "local_contrastive_loss": ("cxrfast.ops.local", "local_contrastive_loss"),
    "local_triplet_loss": ("cxrfast.ops.local", "local_triplet_loss"),
    "lovt_local_loss": ("cxrfast.ops.lovt", "lovt_local_loss"),
}
_SUBMODULES = {"ops", "nn", "reference", "distributed", "cli", "kernels", "viz", "io", "data"}

from cxrfast._lazy import lazy_exports  # noqa: E402

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY, _SUBMODULES)
