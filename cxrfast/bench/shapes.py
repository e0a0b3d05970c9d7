"""Named shape sets of the loss benchmarks, per paper and use.

A `Shape` is one benchmark case: which loss (and its variant), batch B, embedding dim D, and which
paper it stands for; for the local (word–region) loss also R regions per image, L padded words per
report and the shortest report (real lengths are drawn uniformly from min_words..L, seeded). The sets
of the pairwise losses (suite "losses", benchmarks/test_bench_losses.py):

    gpu       the default on CUDA: the papers' embedding dims at large batches, up to B = 1M (fused only:
              a baseline would need a B × B logits matrix, 4 TB in fp32); for the CLI also GLoRIA at B = 48
    cpu       the pytest suite on a CPU-only machine (2 cores): the same dims at batches that run in seconds
    cpu-demo  `cxrfast bench losses` on CPU: a handful of cases (two of them local), well under two minutes
    smoke     tiny, for tests

and of the local loss (suite "local", benchmarks/test_bench_local.py), named local-<set>: a suite given
the set name "gpu" runs "local-gpu" (`for_suite`):

    local-gpu    GLoRIA's setting: a 19 × 19 feature map (R = 361), D = 768, reports of 20–97 words
                 (L = 97), at B = 48 (fused and the looped baseline) and B = 1024 (fused only: the
                 baseline's autograd graph would not fit on any GPU)
    local-cpu    GLoRIA's per-pair dims at B = 8, and two smaller settings that run in seconds on 2 cores
    local-smoke  tiny, for tests

Embedding dims: CLIP ViT-B / ConVIRT project to 512; LoVT's instance-level projection is 128 here;
VSE++ embeds into 1024; JoImTeRNet's global matching space is taken as 512, margin 0.5 (see
cxrfast.ops.triplet). Triplet margins follow the papers (VSE++ 0.2).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

LOSSES = ("infonce", "triplet", "local")
# which benchmark suite (results/<device>/<suite>.json) runs which losses
SUITES = {"losses": ("infonce", "triplet"), "local": ("local",)}


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
    R: int = 0                   # local only: regions per image (GLoRIA: 19 × 19 = 361)
    L: int = 0                   # local only: padded words per report
    min_words: int = 0           # local only: real lengths are uniform in min_words..L

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"Shape: `loss` must be one of {LOSSES}, got {self.loss!r}")
        if self.negatives not in ("hardest", "all"):
            raise ValueError(f"Shape: `negatives` must be 'hardest' or 'all', got {self.negatives!r}")
        if self.loss == "local" and not (self.R >= 1 and 1 <= self.min_words <= self.L):
            raise ValueError(f"Shape: the local loss needs R >= 1 and 1 <= min_words <= L, got R={self.R}, "
                             f"L={self.L}, min_words={self.min_words}")

    @property
    def kind(self) -> str:
        """The loss as shown in tables: "infonce", "triplet-hardest", "triplet-all", "local"."""
        return self.loss if self.loss in ("infonce", "local") else f"triplet-{self.negatives}"

    @property
    def suite(self) -> str:
        """The benchmark suite that runs this shape: "losses" or "local"."""
        return next(name for name, losses in SUITES.items() if self.loss in losses)

    @property
    def id(self) -> str:
        """Stable identifier, also the pytest parameter id: e.g. "infonce-clip-convirt-b4096-d512",
        "local-gloria-b48-r361-l97-d768"."""
        paper = "".join(c if c.isalnum() else "-" for c in self.paper.lower()).strip("-")
        dims = f"-r{self.R}-l{self.L}" if self.loss == "local" else ""
        return f"{self.kind}-{paper}-b{self.B}{dims}-d{self.D}"

    @property
    def label(self) -> str:
        """Short text naming the case in notes: "B=4096 D=512", "B=48 R=361 L=97 D=768"."""
        dims = f" R={self.R} L={self.L}" if self.loss == "local" else ""
        return f"B={self.B}{dims} D={self.D}"

    def word_lengths(self, seed: int = 0) -> list[int]:
        """Local only: the B real report lengths, uniform in min_words..L, the same on every run and
        machine (Python's Mersenne Twister, not torch's generator)."""
        import random

        rng = random.Random(seed)
        return [rng.randint(self.min_words, self.L) for _ in range(self.B)]

    @property
    def mean_words(self) -> float:
        """Local only: the mean real report length n̄ of `word_lengths()`."""
        lengths = self.word_lengths()
        return sum(lengths) / len(lengths)

    def flops(self, phase: str) -> int | None:
        """Nominal FLOPs of the problem (the same for every implementation, see kernels/pairwise.py and
        ops/_wordregion.py).

        InfoNCE and triplet "all": forward 2·B²·D (the score matrix once), backward 6·B²·D (recompute +
        two gradient products), 8·B²·D in all. Triplet "hardest": forward 2·B²·D; its backward touches
        only the 2·B chosen pairs (O(B·D)), so no roofline is given for it alone.
        Local: per (image, report) pair at the padded length L, forward 4·R·L·D (s = V Wᵀ, C = αᵀ V),
        backward 12·R·L·D (s and C recomputed, H = V Cᵀ, ∂s W, ∂sᵀ V, (α·k) C); B² pairs.
        """
        if self.loss == "local":
            per_pair = {"fwd": 4, "bwd": 12, "fwdbwd": 16}
            if phase not in per_pair:
                raise ValueError(f"Shape.flops: `phase` must be fwd, bwd or fwdbwd, got {phase!r}")
            return per_pair[phase] * self.B * self.B * self.R * self.L * self.D
        s = 2 * self.B * self.B * self.D
        if phase == "fwd":
            return s
        dense_backward = self.loss == "infonce" or self.negatives == "all"
        if phase == "bwd":
            return 3 * s if dense_backward else None
        if phase == "fwdbwd":
            return 4 * s if dense_backward else s
        raise ValueError(f"Shape.flops: `phase` must be fwd, bwd or fwdbwd, got {phase!r}")

    def min_flops(self, phase: str) -> float | None:
        """The FLOPs the work needs at least, the roofline's compute bound. The pairwise losses: their
        nominal FLOPs. Local: no recompute and only the real words, n̄ = mean_words: forward 4·R·n̄·D,
        backward 8·R·n̄·D (H, ∂s W, ∂sᵀ V, (α·k) C), 12·R·n̄·D in all, per pair; B² pairs."""
        if self.loss != "local":
            return self.flops(phase)
        per_pair = {"fwd": 4, "bwd": 8, "fwdbwd": 12}[phase]
        return per_pair * self.B * self.B * self.R * self.mean_words * self.D

    def min_bytes(self, phase: str, element_size: int) -> int:
        """Least memory traffic: read both embeddings (forward), also write both gradients (backward)."""
        rows = self.B * (self.R + self.L) if self.loss == "local" else 2 * self.B
        io = rows * self.D * element_size
        return {"fwd": io, "bwd": 2 * io, "fwdbwd": 2 * io}[phase]

    def baseline_matrix_bytes(self, element_size: int = 4) -> int:
        """Bytes of one B × B matrix; the baselines hold several (logits, softmax, gradients)."""
        return self.B * self.B * element_size

    def as_dict(self) -> dict:
        """The fields (what Shape(**...) takes) plus kind and id."""
        return {**asdict(self), "kind": self.kind, "id": self.id}


def _infonce(paper: str, D: int, batches, **kw) -> list[Shape]:
    return [Shape("infonce", paper, B, D, **kw) for B in batches]


def _triplet(paper: str, D: int, batches, negatives="hardest", margin=0.2, **kw) -> list[Shape]:
    return [Shape("triplet", paper, B, D, negatives=negatives, margin=margin, **kw) for B in batches]


def _local(paper: str, R: int, L: int, min_words: int, D: int, batches, **kw) -> list[Shape]:
    return [Shape("local", paper, B, D, R=R, L=L, min_words=min_words, **kw) for B in batches]


SETS: dict[str, list[Shape]] = {
    "gpu": [
        *_infonce("CLIP/ConVIRT", 512, (4096, 32768), gpu_only=True),
        Shape("infonce", "CLIP/ConVIRT", 1 << 20, 512, fused_only=True, gpu_only=True),
        *_infonce("LoVT", 128, (4096, 32768), gpu_only=True),
        *_triplet("VSE++", 1024, (4096, 32768), gpu_only=True),
        *_triplet("JoImTeRNet", 512, (32768,), margin=0.5, gpu_only=True),
        *_triplet("VSE++", 1024, (32768,), negatives="all", gpu_only=True),
        *_local("GLoRIA", 361, 97, 20, 768, (48,), gpu_only=True),  # (the losses suite leaves these out)
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
        *_local("7x7 map", 49, 32, 8, 128, (16,)),
        *_local("10x10 map", 100, 97, 20, 64, (32,)),
    ],
    "smoke": [
        *_infonce("smoke", 32, (64,)),
        *_triplet("smoke", 32, (64,)),
        *_triplet("smoke", 16, (48,), negatives="all"),
    ],
    # GLoRIA: 19 × 19 regions of the ResNet-50 conv4 map, D = 768, reports of up to 97 words
    "local-gpu": [
        *_local("GLoRIA", 361, 97, 20, 768, (48,), gpu_only=True),
        *_local("GLoRIA", 361, 97, 20, 768, (1024,), fused_only=True, gpu_only=True),
    ],
    "local-cpu": [
        *_local("GLoRIA", 361, 97, 20, 768, (8,)),
        *_local("7x7 map", 49, 32, 8, 128, (16,)),
        *_local("10x10 map", 100, 97, 20, 64, (32,)),
    ],
    "local-smoke": [
        *_local("smoke", 16, 12, 3, 32, (8,)),
    ],
}

# The CPU memory target: chunked InfoNCE, forward + backward, peak RSS growth at most this.
RSS_TARGET = Shape("infonce", "LoVT", 32768, 128)
RSS_TARGET_LIMIT_BYTES = 512 * 2**20
# ... and for the local loss: the chunked word–region path at B = 256 (65,536 image–report pairs).
LOCAL_RSS_TARGET = Shape("local", "10x10 map", 256, 64, R=100, L=97, min_words=20)
LOCAL_RSS_TARGET_LIMIT_BYTES = 2**30

# The GPU targets of the local loss (bf16, local-gpu): at B = 48, fused forward+backward at least
# this many times faster than the baseline, with at most 1/this of its peak extra memory; at B = 1024
# (fused only) peak extra memory at most LOCAL_GPU_MEMORY_LIMIT_BYTES.
LOCAL_GPU_SPEEDUP_TARGET = 20.0
LOCAL_GPU_MEMORY_RATIO_TARGET = 20.0
LOCAL_GPU_MEMORY_LIMIT_BYTES = 16 * 2**30


def get(name: str) -> list[Shape]:
    """The shape set `name`; the error lists the known names."""
    if name not in SETS:
        raise KeyError(f"unknown shape set {name!r}; known: {', '.join(SETS)}")
    return list(SETS[name])


def default_set(device_type: str) -> str:
    """The pytest suite's default: "gpu" on CUDA, "cpu" elsewhere."""
    return "gpu" if device_type == "cuda" else "cpu"


def for_suite(suite: str, name: str) -> list[Shape]:
    """The shapes of set `name` that benchmark suite `suite` runs. A suite other than "losses" reads
    its own set "<suite>-<name>" where that exists ("cpu" -> "local-cpu" for the local suite), so one
    --bench-shapes list serves every suite; shapes of other suites' losses are left out."""
    return [s for s in get(suite_set_name(suite, name)) if s.loss in SUITES[suite]]


def suite_set_name(suite: str, name: str) -> str:
    """The set that `name` means for `suite`: "<suite>-<name>" where that exists (not for "losses")."""
    if suite not in SUITES:
        raise KeyError(f"unknown benchmark suite {suite!r}; known: {', '.join(SUITES)}")
    own = f"{suite}-{name}"
    return own if suite != "losses" and own in SETS else name
