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

__all__ = sorted(_LAZY)


def __getattr__(name):
    import importlib

    if name not in _LAZY:
        raise AttributeError(f"module 'cxrfast.models' has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__():
    return __all__
