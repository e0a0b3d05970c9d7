"""What a pre-training run is told: `TrainConfig`, saved as train.json in the run folder, and each preset's
optimiser defaults (the papers').

    cfg = TrainConfig(preset="globallocal", size="tiny", steps=300, batch_size=32)
    cfg.to_json("run/train.json"); TrainConfig.from_json("run/train.json") == cfg
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

__all__ = ["TrainConfig", "OPTIMIZERS", "preset_defaults"]

OPTIMIZERS = ("adamw", "adam", "sgd")

# Each paper's optimiser (released configs): (optimizer, lr, weight decay). `cxrfast pretrain` uses these unless
# told otherwise; the tiny and small sizes train faster with a larger lr (TrainConfig.lr overrides).
_PAPER = {
    "globallocal": ("adam", 5e-5, 1e-6),    # GLoRIA: Adam 5e-5, weight decay 1e-6
    "joimternet": ("adam", 1e-4, 0.0),      # JoImTeRNet: Adam 1e-4
    "lovt": ("adamw", 1e-4, 1e-6),          # LoVT: AdamW 1e-4, weight decay 1e-6
    "mixed": ("adamw", 1e-4, 0.05),         # BEiT / SimMIM-style AdamW
    "refers": ("sgd", 3e-2, 0.0),           # REFERS: SGD with momentum 0.9, lr 3e-2
}


def preset_defaults(preset: str, size: str) -> tuple[str, float, float]:
    """(optimizer, lr, weight decay) for a preset at a size: the paper's at "paper"; at "small" / "tiny" the same
    optimiser with a lr for few-step training (SGD keeps its own)."""
    opt, lr, wd = _PAPER.get(preset, ("adamw", 1e-4, 0.0))
    if size != "paper" and opt != "sgd":
        lr = 1e-3
    return opt, lr, wd


@dataclasses.dataclass
class TrainConfig:
    """A pre-training run. Data: "synthetic" (the default: `cxrfast synth` output, generated on first use
    into `root` or a cache folder) or any `open_dataset` name with its `root`; `images` points at prepared
    shards. Steps: `steps` if given, else `epochs` over the training split. `batch_size` is per rank; the
    global batch is batch_size × world × accum."""

    preset: str = "globallocal"
    size: str = "tiny"
    data: str = "synthetic"
    root: str | None = None
    images: str | None = None
    split: str | None = "train"         # the split trained on; None: every study (datasets without a split)
    synth_n: int = 2000
    synth_size: int = 256
    out: str | None = None
    steps: int | None = None
    epochs: float = 1.0
    batch_size: int = 32
    accum: int = 1
    optimizer: str | None = None
    lr: float | None = None
    weight_decay: float | None = None
    warmup: float = 0.05                 # a fraction of the steps (< 1) or a number of steps (>= 1)
    clip: float | None = 1.0
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"                    # "auto": bf16 autocast on CUDA, none on CPU; "bf16", "fp16", "none"
    loader: str = "auto"                 # "auto": DALI where installed and on CUDA, else torch; "torch", "dali"
    workers: int = 2
    tokenizer: str | None = None         # a tokenizer directory; default: trained on the training reports
    vocab_size: int = 4000
    log_every: int = 10
    ckpt_every: int = 100
    keep: int = 2                        # checkpoints kept
    progress: bool = True
    overrides: dict = dataclasses.field(default_factory=dict)   # preset config fields (create_model overrides)

    def __post_init__(self):
        if self.accum < 1 or self.batch_size < 1:
            raise ValueError(f"TrainConfig: batch_size and accum must be >= 1, got {self.batch_size}, {self.accum}")
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise ValueError(f"TrainConfig.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.amp not in ("auto", "bf16", "fp16", "none"):
            raise ValueError(f"TrainConfig.amp must be auto, bf16, fp16 or none, got {self.amp!r}")
        if self.loader not in ("auto", "torch", "dali"):
            raise ValueError(f"TrainConfig.loader must be auto, torch or dali, got {self.loader!r}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"TrainConfig.steps must be >= 1, got {self.steps}")
        if self.epochs <= 0:
            raise ValueError(f"TrainConfig.epochs must be > 0, got {self.epochs}")

    def resolved_optimizer(self) -> tuple[str, float, float]:
        opt, lr, wd = preset_defaults(self.preset, self.size)
        return (self.optimizer or opt, self.lr if self.lr is not None else lr,
                self.weight_decay if self.weight_decay is not None else wd)

    def to_json(self, path=None) -> str:
        text = json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_json(cls, path) -> "TrainConfig":
        data = json.loads(Path(path).read_text())
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{path}: unknown TrainConfig field(s) {unknown}")
        return cls(**data)
