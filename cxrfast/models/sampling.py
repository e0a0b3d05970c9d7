"""Random draws inside a model's forward that torch.compile can trace: a counter-based generator.

A preset that draws in its forward (JoImTeRNet's random negatives, masked-language-model masks) cannot use a
torch.Generator there: dynamo cannot put one in a graph (``torch.compile(fullgraph=True)`` refuses the call),
and torch's global generator would tie the model's draws to whatever else consumed it. So the model owns a
`CounterDraws`: every value is a hash of (seed, step, stream, position) computed with int64 tensor arithmetic,

    bits[p] = h(h(p ^ k)),  k = h(h((step mod 2³²) ^ seed) ^ stream),  h = a 32-bit integer hash (lowbias32)

- the same values on every device, eagerly and compiled, with no host sync and no Python loop;
- reproducible: the draws of a step are a function of the seed and the step, which is a buffer (saved with
  the model's state dict, so a resumed run continues the sequence) advanced once per training forward;
- streams keep independent draws of the same step apart (negatives, mask positions, ...).

    draws = CounterDraws(seed=0)
    u = draws.uniform(stream=1, shape=(B, T), device=dev)     # float32 in [0, 1), 24 random bits each
    n = draws.other_indices(stream=0, n=B, device=dev)        # one uniformly random other index per anchor
    draws.advance()                                           # next step

The hash is C. Wellons' "lowbias32" (xorshift-multiply rounds; a bijection of [0, 2³²)). The multiplications
are done mod 2³² on int64 without overflowing it (the constant split into 16-bit halves).

Under torch.distributed every rank keeps the same seed and step and draws by GLOBAL position (`offset`: the
rank's first row in the global batch, cxrfast.distributed.global_rows): a sample gets the same numbers on
whichever rank holds it and in one process with the whole batch, and ranks' samples differ as positions do.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CounterDraws", "mix32", "mlm_corrupt"]

M32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """x · c mod 2³² for int64 x in [0, 2³²): the products stay below 2⁴⁹."""
    hi, lo = c >> 16, c & 0xFFFF
    return ((((x * hi) & 0xFFFF) << 16) + x * lo) & M32


def mix32(x: torch.Tensor) -> torch.Tensor:
    """The lowbias32 hash of int64 values in [0, 2³²) (a bijection of that range)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


class CounterDraws(nn.Module):
    """A counter-based generator a model owns (see the module docstring). `step` is a persistent int64
    buffer: advance() adds one (in place, traceable); the draws read it without changing it."""

    def __init__(self, seed: int = 0):
        super().__init__()
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"CounterDraws: `seed` must be an int, got {type(seed).__name__}")
        self.seed = seed & M32
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))

    def bits(self, stream: int, shape, device=None, offset: int = 0) -> torch.Tensor:
        """int64 [shape] of 32 random bits each (values in [0, 2³²)) for this step and `stream`: the values at
        flat positions offset .. offset + numel − 1 (row-major), so a slice of a larger draw is drawn alone by
        giving its first position (e.g. a rank's rows of the global batch: offset = first row · row size)."""
        device = self.step.device if device is None else device
        step = self.step.to(device)
        key = mix32(mix32((step & M32) ^ self.seed) ^ (int(stream) & M32))
        shape = tuple(shape)
        numel = 1
        for n in shape:
            numel *= n
        position = (torch.arange(numel, dtype=torch.int64, device=device) + int(offset)).view(shape)
        return mix32(mix32(position ^ key))

    def uniform(self, stream: int, shape, device=None, offset: int = 0) -> torch.Tensor:
        """float32 [shape] uniform on [0, 1) in steps of 2⁻²⁴ (exact: the top 24 of the 32 bits); `offset` as
        in bits."""
        return (self.bits(stream, shape, device, offset) >> 8).to(torch.float32) * (2.0 ** -24)

    def other_indices(self, stream: int, n: int, device=None) -> torch.Tensor:
        """int64 [n]: entry i uniform over {0..n-1} \\ {i} (r = bits mod (n − 1), then r + (r ≥ i), as
        cxrfast.reference.triplet.random_negatives maps its draw; the modulo bias is below n / 2³²).
        n = 1: [-1] (no other sample)."""
        device = self.step.device if device is None else device
        if n < 2:
            return torch.full((n,), -1, dtype=torch.int64, device=device)
        r = self.bits(stream, (n,), device) % (n - 1)
        return r + (r >= torch.arange(n, device=device)).to(torch.int64)

    def advance(self) -> None:
        with torch.no_grad():
            self.step.add_(1)

    def extra_repr(self) -> str:
        return f"seed={self.seed}"


def mlm_corrupt(draws: CounterDraws, input_ids: torch.Tensor, candidates: torch.Tensor, *, vocab_size: int,
                mask_id: int, random_low: int, probability: float = 0.15, mask_fraction: float = 0.8,
                random_fraction: float = 0.1, stream: int = 0, row_offset: int = 0):
    """BERT's masked-language-model corruption, drawn from `draws` (streams stream, stream + 1, stream + 2).

    input_ids [B, T] long, candidates [B, T] bool (the tokens that may be chosen: real word pieces, not
    special tokens or padding); row_offset: the first row's index in the global batch (a rank's rows draw
    what one process with the whole batch draws for them). Each candidate is chosen with `probability`
    (independently); a chosen token becomes [MASK] (`mask_fraction` of them), a token drawn uniformly from
    [random_low, vocab_size) (`random_fraction`), or stays (the rest). Returns (corrupted ids [B, T], labels
    [B, T]: the original id where chosen, -100 elsewhere — F.cross_entropy's ignore_index). Tensor ops only:
    no loop, no host sync."""
    shape, device = tuple(input_ids.shape), input_ids.device
    at = row_offset * shape[1]
    chosen = candidates & (draws.uniform(stream, shape, device, at) < probability)
    action = draws.uniform(stream + 1, shape, device, at)
    random_ids = random_low + draws.bits(stream + 2, shape, device, at) % (vocab_size - random_low)
    corrupted = torch.where(chosen & (action < mask_fraction), torch.full_like(input_ids, mask_id), input_ids)
    corrupted = torch.where(chosen & (action >= mask_fraction) & (action < mask_fraction + random_fraction),
                            random_ids, corrupted)
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    return corrupted, labels
