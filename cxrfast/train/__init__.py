"""Pre-training: `cxrfast pretrain` and its Python face (see cxrfast.train.loop).

    from cxrfast.train import TrainConfig, pretrain
    pretrain(TrainConfig(preset="globallocal", size="tiny", steps=300, out="runs/demo"))
"""

_LAZY = {
    "TrainConfig": ("cxrfast.train.config", "TrainConfig"),
    "pretrain": ("cxrfast.train.loop", "pretrain"),
    "RunResult": ("cxrfast.train.loop", "RunResult"),
    "load_checkpoint": ("cxrfast.train.checkpoint", "load_checkpoint"),
    "save_checkpoint": ("cxrfast.train.checkpoint", "save_checkpoint"),
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    import importlib

    if name not in _LAZY:
        raise AttributeError(f"module 'cxrfast.train' has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__():
    return __all__
