"""The five presets as thin models over cxrfast's ops (see cxrfast.models.factory).

    from cxrfast.models import create_model, list_presets, random_batch
    model = create_model("globallocal", size="tiny")
    out = model(random_batch(model, 4))            # {"global": ..., "local": ..., "loss": ...}

Names resolve on first use: importing cxrfast.models imports neither transformers nor any preset.
"""

_LAZY = {
    "create_model": ("cxrfast.models.factory", "create_model"),
    "list_presets": ("cxrfast.models.factory", "list_presets"),
    "random_batch": ("cxrfast.models.factory", "random_batch"),
    "model_class": ("cxrfast.models.factory", "model_class"),
    "load_config": ("cxrfast.models.config", "load_config"),
    "PresetModel": ("cxrfast.models.base", "PresetModel"),
    "PresetConfig": ("cxrfast.models.config", "PresetConfig"),
    "attention": ("cxrfast.models.attention", "attention"),
}

from cxrfast._lazy import lazy_exports  # noqa: E402

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY, ())
