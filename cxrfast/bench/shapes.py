"""Named shape sets of the loss benchmarks, per paper and use.

A `Shape` is one benchmark case: which loss (and its variant), batch B, embedding dim D, and which
paper it stands for. The sets:

    gpu       the default on CUDA: the papers' embedding dims at large batches, up to B = 1M (fused only:
              a baseline would need a B × B logits matrix, 4 TB in fp32)
    cpu       the pytest suite on a CPU-only machine (2 cores): the same dims at batches that run in seconds
    cpu-demo  `cxrfast bench losses` on CPU: a handful of cases, well under two minutes with the baseline
    smoke     tiny, for tests

Embedding dims: CLIP ViT-B / ConVIRT project to 512; LoVT's instance-level projection is 128 here;
VSE++ embeds into 1024; JoImTeRNet's global matching space is taken as 512, margin 0.5 (see
cxrfast.ops.triplet). Triplet margins follow the papers (VSE++ 0.2).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

LOSSES = ("infonce", "triplet")


@dataclass(frozen=True)
class Shape:
    loss: str                    # "infonce" | "triplet"
    paper: str                   # whose setting this is, e.g. "CLIP/ConVIRT"
    B: int
    D: int
    negatives: str = "hardest"   # triplet only: "hardest" (VSE++ max violation) | "all" (sum, VSE0)
    margin: float = 0.2          # triplet only
    fused_only: bool = False     # the baseline would need a B × B matrix that no device holds
    gpu_only: bool = False       # too slow for a CPU run

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"Shape: `loss` must be one of {LOSSES}, got {self.loss!r}")
        if self.negatives not in ("hardest", "all"):
            raise ValueError(f"Shape: `negatives` must be 'hardest' or 'all', got {self.negatives!r}")

    @property
    def kind(self) -> str:
        """The loss as shown in tables: "infonce", "triplet-hardest", "triplet-all"."""
        return self.loss if self.loss == "infonce" else f"triplet-{self.negatives}"

    @property
    def id(self) -> str:
        """Stable identifier, also the pytest parameter id: e.g. "infonce-clip-convirt-b4096-d512"."""
        paper = "".join(c if c.isalnum() else "-" for c in self.paper.lower()).strip("-")
        return f"{self.kind}-{paper}-b{self.B}-d{self.D}"

    def flops(self, phase: str) -> int | None:
        """Nominal FLOPs of the problem (the same for every implementation, see kernels/pairwise.py).

        InfoNCE and triplet "all": forward 2·B²·D (the score matrix once), backward 6·B²·D (recompute +
        two gradient products), 8·B²·D in all. Triplet "hardest": forward 2·B²·D; its backward touches
        only the 2·B chosen pairs (O(B·D)), so no roofline is given for it alone.
        """
        s = 2 * self.B * self.B * self.D
        if phase == "fwd":
            return s
        dense_backward = self.loss == "infonce" or self.negatives == "all"
        if phase == "bwd":
            return 3 * s if dense_backward else None
        if phase == "fwdbwd":
            return 4 * s if dense_backward else s
        raise ValueError(f"Shape.flops: `phase` must be fwd, bwd or fwdbwd, got {phase!r}")

    def min_bytes(self, phase: str, element_size: int) -> int:
        """Least memory traffic: read both embeddings (forward), also write both gradients (backward)."""
        io = 2 * self.B * self.D * element_size
        return {"fwd": io, "bwd": 2 * io, "fwdbwd": 2 * io}[phase]

    def baseline_matrix_bytes(self, element_size: int = 4) -> int:
        """Bytes of one B × B matrix; the baselines hold several (logits, softmax, gradients)."""
        return self.B * self.B * element_size

    def as_dict(self) -> dict:
        return {**asdict(self), "kind": self.kind, "id": self.id}


def _infonce(paper: str, D: int, batches, **kw) -> list[Shape]:
    return [Shape("infonce", paper, B, D, **kw) for B in batches]


def _triplet(paper: str, D: int, batches, negatives="hardest", margin=0.2, **kw) -> list[Shape]:
    return [Shape("triplet", paper, B, D, negatives=negatives, margin=margin, **kw) for B in batches]


SETS: dict[str, list[Shape]] = {
    "gpu": [
        *_infonce("CLIP/ConVIRT", 512, (4096, 32768), gpu_only=True),
        Shape("infonce", "CLIP/ConVIRT", 1 << 20, 512, fused_only=True, gpu_only=True),
        *_infonce("LoVT", 128, (4096, 32768), gpu_only=True),
        *_triplet("VSE++", 1024, (4096, 32768), gpu_only=True),
        *_triplet("JoImTeRNet", 512, (32768,), margin=0.5, gpu_only=True),
        *_triplet("VSE++", 1024, (32768,), negatives="all", gpu_only=True),
    ],
    "cpu": [
        *_infonce("CLIP/ConVIRT", 512, (1024, 4096)),
        *_infonce("LoVT", 128, (2048, 8192)),
        *_triplet("VSE++", 1024, (1024, 4096)),
        *_triplet("VSE++", 1024, (2048,), negatives="all"),
    ],
    "cpu-demo": [
        *_infonce("CLIP/ConVIRT", 512, (2048,)),
        *_infonce("LoVT", 128, (8192,)),
        *_triplet("VSE++", 1024, (2048,)),
        *_triplet("VSE++", 1024, (2048,), negatives="all"),
    ],
    "smoke": [
        *_infonce("smoke", 32, (64,)),
        *_triplet("smoke", 32, (64,)),
        *_triplet("smoke", 16, (48,), negatives="all"),
    ],
}

# The CPU memory target: chunked InfoNCE, forward + backward, peak RSS growth at most this.
RSS_TARGET = Shape("infonce", "LoVT", 32768, 128)
RSS_TARGET_LIMIT_BYTES = 512 * 2**20


def get(name: str) -> list[Shape]:
    """The shape set `name`; the error lists the known names."""
    if name not in SETS:
        raise KeyError(f"unknown shape set {name!r}; known: {', '.join(SETS)}")
    return list(SETS[name])


def default_set(device_type: str) -> str:
    """The pytest suite's default: "gpu" on CUDA, "cpu" elsewhere."""
    return "gpu" if device_type == "cuda" else "cpu"
