"""Preset configs: plain dataclasses that round-trip through JSON, one per preset, with the paper's defaults
and the "paper" / "small" / "tiny" sizes.

    cfg = GlobalLocalConfig.for_size("tiny", temp_attention=4.0)   # overrides by field name
    cfg.to_json("run/config.json"); GlobalLocalConfig.from_json("run/config.json") == cfg
    load_config("run/config.json")                                  # any preset, by its "preset" field
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

__all__ = ["PresetConfig", "EncoderSpec", "SIZES", "load_config", "config_class"]

SIZES = ("paper", "small", "tiny")
_REGISTRY: dict[str, type] = {}


@dataclasses.dataclass
class EncoderSpec:
    """An encoder: `kind` ("resnet", "vit", "bert"), its transformers config fields, and an optional local
    Hugging Face directory to load weights from (nothing is downloaded)."""

    kind: str
    config: dict = dataclasses.field(default_factory=dict)
    pretrained: str | None = None


@dataclasses.dataclass
class PresetConfig:
    """Base of every preset's config. Subclasses set `preset` and define `sizes()`: size → field overrides."""

    preset: str = ""
    size: str = "paper"
    image_size: int = 224
    max_views: int = 1
    max_length: int = 128
    findings: tuple = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
    # the tokenizer's vocabulary and special ids (cxrfast.data.text's defaults; set from a loaded tokenizer)
    vocab_size: int = 30522
    pad_id: int = 0
    cls_id: int = 2
    sep_id: int = 3
    mask_id: int = 4

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("PRESET")
        if name:
            _REGISTRY[name] = cls

    @classmethod
    def sizes(cls) -> dict[str, dict]:
        return {s: {} for s in SIZES}

    @classmethod
    def for_size(cls, size: str = "paper", **overrides) -> "PresetConfig":
        """The config of `size` with `overrides` (field names; an unknown name is an error naming it)."""
        table = cls.sizes()
        if size not in table:
            raise ValueError(f"{cls.__name__}: size must be one of {tuple(table)}, got {size!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"{cls.__name__}: unknown field(s) {unknown}; fields: {sorted(names)}")
        values = {**table[size], **overrides}
        return cls(preset=cls.PRESET, size=size, **values)

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))

    def to_json(self, path=None) -> str:
        text = json.dumps(self.to_dict(), indent=1, sort_keys=True)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_dict(cls, data: dict) -> "PresetConfig":
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown field(s) {unknown} in the config")
        values = {}
        for k, v in data.items():
            default = names[k].default
            if isinstance(default, tuple) or (names[k].default_factory is not dataclasses.MISSING
                                              and isinstance(names[k].default_factory(), tuple)):
                v = tuple(v)
            if k.endswith("encoder") and isinstance(v, dict):
                v = EncoderSpec(**v)
            values[k] = v
        return cls(**values)

    @classmethod
    def from_json(cls, path) -> "PresetConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def config_class(preset: str) -> type:
    """The config class of a preset name (the presets' modules register themselves on import)."""
    from cxrfast.models import factory

    factory._load_presets()
    if preset not in _REGISTRY:
        raise ValueError(f"unknown preset {preset!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[preset]


def load_config(path) -> PresetConfig:
    """A saved config (any preset; its "preset" field says which)."""
    data = json.loads(Path(path).read_text())
    if "preset" not in data:
        raise ValueError(f"{path}: not a cxrfast preset config (no 'preset' field)")
    return config_class(data["preset"]).from_dict(data)
