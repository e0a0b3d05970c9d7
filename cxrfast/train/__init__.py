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

from cxrfast._lazy import lazy_exports  # noqa: E402

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY, ())
