"""Studies → Batches with torch's DataLoader (the fallback where DALI is not installed, and the reference
the DALI pipeline is tested against).

    batches = StudyBatches(studies, tokenizer, views=2, augment=Augment(size=224), seed=0)
    loader = make_loader(batches, batch_size=64, rank=0, world=1, workers=2)
    for epoch in range(E):
        loader.batch_sampler.set_epoch(epoch)
        for batch in loader: ...                    # cxrfast.data.Batch

Which samples go where: `EpochBatches` permutes the studies once per epoch (seed, epoch) and cuts the
permutation into global batches of batch_size · world samples; each rank takes its slice of every global
batch. Every sample is seen exactly once per epoch on exactly one rank, and every rank runs the same
number of steps (what DDP needs): the last global batch is split as evenly as possible, and if it holds
fewer samples than there are ranks it joins the previous one instead. DALI (cxrfast.data.dali) uses the
same sampler and the same per-image augmentation numbers (cxrfast.data.transforms).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from cxrfast.data.batch import KIND_CODES, Batch
from cxrfast.data.studies import ImageRef, Study, label_vector
from cxrfast.data.transforms import Augment, WarpParams, draw, normalize, sample_generator, warp_torch

__all__ = ["EpochBatches", "StudyBatches", "ImageReader", "make_loader", "collate", "ANATOMY_MASKS"]

# masks of the synthetic dataset that are anatomy, not findings (left out of a study's finding mask)
ANATOMY_MASKS = ("lungs", "heart")


class EpochBatches(torch.utils.data.Sampler):
    """Batches of indices for one rank (see the module docstring). Call set_epoch(e) before each epoch."""

    def __init__(self, n: int, batch_size: int, *, rank: int = 0, world: int = 1, seed: int = 0,
                 shuffle: bool = True):
        if n < 1:
            raise ValueError(f"EpochBatches: the dataset is empty (n={n})")
        if batch_size < 1:
            raise ValueError(f"EpochBatches: batch_size must be >= 1 (per rank), got {batch_size}")
        if not (world >= 1 and 0 <= rank < world):
            raise ValueError(f"EpochBatches: need 0 <= rank < world, got rank={rank}, world={world}")
        if n < world:
            raise ValueError(f"EpochBatches: {n} samples cannot give each of {world} ranks one")
        self.n, self.batch_size, self.rank, self.world = n, batch_size, rank, world
        self.seed, self.shuffle, self.epoch = seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def global_batches(self, epoch: int | None = None) -> list[np.ndarray]:
        """The epoch's global batches (index arrays), all ranks' samples in rank order."""
        epoch = self.epoch if epoch is None else epoch
        order = (np.random.default_rng([self.seed, epoch, 0x53414d50]).permutation(self.n) if self.shuffle
                 else np.arange(self.n))
        g = self.batch_size * self.world
        cuts = list(range(0, self.n, g))
        batches = [order[c:c + g] for c in cuts]
        if len(batches) > 1 and len(batches[-1]) < self.world:
            batches[-2] = np.concatenate([batches[-2], batches.pop()])
        return batches

    def rank_slice(self, batch: np.ndarray, rank: int | None = None) -> np.ndarray:
        """This rank's part of one global batch: contiguous, sizes differing by at most one."""
        rank = self.rank if rank is None else rank
        bounds = np.linspace(0, len(batch), self.world + 1).round().astype(int)
        return batch[bounds[rank]:bounds[rank + 1]]

    def __iter__(self):
        for b in self.global_batches():
            yield self.rank_slice(b).tolist()

    def __len__(self) -> int:
        return len(self.global_batches())


class ImageReader:
    """Reads an ImageRef as uint8 [H, W]: from prepared shards (ImageRef.shard) or from the file through
    cxrfast.io's pipeline, resized to `source_size` (aspect kept, padded) so that augmentation starts from
    a bounded image. Shard folders are opened once per process (memory-mapped)."""

    def __init__(self, source_size: int = 256, **pipeline):
        self.source_size = source_size
        self.pipeline = pipeline
        self._shards: dict = {}

    def __getstate__(self):  # DataLoader workers reopen the memory maps
        return {"source_size": self.source_size, "pipeline": self.pipeline, "_shards": {}}

    def read(self, ref: ImageRef) -> np.ndarray:
        if ref.shard is not None:
            folder, row = ref.shard
            if folder not in self._shards:
                from cxrfast.data.shards import ShardedImages

                self._shards[folder] = ShardedImages(folder)
            image, _ = self._shards[folder][int(row)]
            return np.array(image)  # a copy: the shard is a read-only memory map
        from cxrfast.io import load_radiograph

        return load_radiograph(ref.path, self.source_size, dtype="uint8", **self.pipeline).image


@dataclass
class Sample:
    """One study made ready: views [V, 1, S, S] float, view_mask [V], text, kind, labels [F], id, masks."""

    views: torch.Tensor
    view_mask: torch.Tensor
    text: str | None
    kind: int
    labels: torch.Tensor
    study_id: str
    masks: torch.Tensor | None = None


class StudyBatches(torch.utils.data.Dataset):
    """Map-style dataset: index → Sample (images augmented, labels as a vector); `collate` tokenises the
    reports of a whole batch at once and returns a Batch.

    views: view slots per sample (a study's images of the allowed ViewPositions, frontal first, up to this
    many; missing slots are zeros with view_mask False). A text-only study has all slots empty; an
    image-only study has no text. masks: read per-finding region masks where the dataset provides them
    (`study.extra["masks"][image_id]` → an .npz of named masks; the synthetic dataset), warped like their
    image: the union of the findings' masks (anatomy masks, ANATOMY_MASKS, left out)."""

    def __init__(self, studies, tokenizer, *, views: int = 1, allowed_views=("PA", "AP"),
                 augment: Augment = Augment(), seed: int = 0, max_length: int = 128, findings=None,
                 uncertain: str = "ignore", reader: ImageReader | None = None, mean: float = 0.5, std: float = 0.25,
                 masks: bool = False):
        if views < 1:
            raise ValueError(f"StudyBatches: views must be >= 1, got {views}")
        self.studies = studies
        self.tokenizer = tokenizer
        self.views, self.allowed_views = views, allowed_views
        self.augment, self.seed, self.max_length = augment, seed, max_length
        self.findings = tuple(findings if findings is not None else getattr(studies, "findings", ()))
        self.uncertain = uncertain
        self.reader = reader or ImageReader()
        self.mean, self.std = mean, std
        self.masks = masks
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.studies)

    def image_refs(self, study: Study) -> list[ImageRef]:
        """The view slots' images: the allowed views, frontal first (the adapter's order), up to `views`."""
        refs = study.views(self.allowed_views) if self.allowed_views else list(study.images)
        return refs[: self.views]

    def params(self, index: int, view: int, height: int, width: int, epoch: int | None = None) -> WarpParams:
        """The augmentation of (sample, view) this epoch: the same numbers in every pipeline."""
        epoch = self.epoch if epoch is None else epoch
        return draw(self.augment, sample_generator(self.seed, epoch, index, view), height, width)

    def __getitem__(self, index) -> Sample:
        """Sample `index` at the dataset's epoch, or `(epoch, index)` at that epoch (a long-lived loader's
        sampler passes the epoch along, so workers need not be restarted to follow it)."""
        epoch = None
        if isinstance(index, tuple):
            epoch, index = index
        study = self.studies[index]
        S = self.augment.size
        views = torch.zeros(self.views, 1, S, S)
        mask = torch.zeros(self.views, dtype=torch.bool)
        masks = torch.zeros(self.views, 1, S, S) if self.masks else None
        for v, ref in enumerate(self.image_refs(study)):
            img = self.reader.read(ref)
            p = self.params(index, v, *img.shape, epoch=epoch)
            views[v] = normalize(warp_torch(torch.from_numpy(np.ascontiguousarray(img)).float()[None] / 255.0, p),
                                 self.mean, self.std)
            mask[v] = True
            if masks is not None:
                m = _region_mask(study, ref, img.shape)
                if m is not None:
                    geometric = WarpParams(p.matrix, 1.0, 1.0, p.size)
                    masks[v] = (warp_torch(m[None], geometric) > 0.5).float()
        if study.kind == "text":
            views.zero_()
        study_id, text, kind, labels = self.meta(index)
        return Sample(views, mask, text, kind, labels, study_id, masks)

    def meta(self, index: int):
        """(study id, report text or None, kind code, labels [F]) of one sample: everything but the images."""
        study = self.studies[index]
        labels = torch.tensor(label_vector(study.labels, self.findings, self.uncertain), dtype=torch.float32)
        return study.study_id, (study.text if study.report is not None else None), KIND_CODES[study.kind], labels

    def collate(self, samples: list[Sample]) -> Batch:
        enc = self.tokenizer.encode([s.text for s in samples], max_length=self.max_length)
        masks = torch.stack([s.masks for s in samples]) if self.masks else None
        return Batch(
            views=torch.stack([s.views for s in samples]), view_mask=torch.stack([s.view_mask for s in samples]),
            input_ids=torch.from_numpy(enc.input_ids), attention_mask=torch.from_numpy(enc.attention_mask),
            word_index=torch.from_numpy(enc.word_index), sentence_index=torch.from_numpy(enc.sentence_index),
            kind=torch.tensor([s.kind for s in samples], dtype=torch.int64),
            labels=torch.stack([s.labels for s in samples]) if self.findings else torch.zeros(len(samples), 0),
            study_ids=[s.study_id for s in samples], findings=self.findings, masks=masks)


def _region_mask(study: Study, ref: ImageRef, shape) -> torch.Tensor | None:
    """The union of a study image's finding masks, resized to `shape`, or None (see StudyBatches)."""
    files = study.extra.get("masks", {})
    path = files.get(ref.image_id) if isinstance(files, dict) else None
    if path is None:
        return None
    with np.load(path) as z:
        findings = [k for k in z.files if k not in ANATOMY_MASKS]
        union = np.zeros(z[z.files[0]].shape, np.float32) if z.files else None
        for k in findings:
            union = np.maximum(union, z[k].astype(np.float32))
    if union is None:
        return torch.zeros(shape)
    t = torch.from_numpy(union)[None, None]
    return torch.nn.functional.interpolate(t, size=tuple(shape), mode="nearest")[0, 0]


def collate(dataset: StudyBatches):
    """The collate_fn of `dataset` (tokenises a batch's reports at once)."""
    return dataset.collate


def make_loader(dataset: StudyBatches, batch_size: int, *, rank: int = 0, world: int = 1, workers: int = 0,
                shuffle: bool = True, pin_memory: bool = False, prefetch_factor: int | None = None):
    """A torch DataLoader over `dataset` with EpochBatches (per-rank, every sample once per epoch). Its
    batch_sampler.set_epoch(e) sets the sampler's epoch (the order) and the dataset's (the augmentation);
    workers copy the dataset when an epoch starts (persistent_workers=False), so they follow it."""
    sampler = _EpochSync(dataset, EpochBatches(len(dataset), batch_size, rank=rank, world=world,
                                              seed=dataset.seed, shuffle=shuffle))
    kwargs = {"prefetch_factor": prefetch_factor} if workers and prefetch_factor else {}
    # its own generator: the base seed an iterator draws must not come from (and shift) the global generator
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                                       collate_fn=dataset.collate, pin_memory=pin_memory,
                                       persistent_workers=False, generator=torch.Generator().manual_seed(dataset.seed),
                                       **kwargs)


class _EpochSync(torch.utils.data.Sampler):
    """EpochBatches that also tells the dataset the epoch, so augmentation follows it. DataLoader workers
    are started per epoch (persistent_workers=False) and copy the dataset then, epoch included."""

    def __init__(self, dataset: StudyBatches, sampler: EpochBatches):
        self.dataset, self.sampler = dataset, sampler

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
        self.dataset.set_epoch(epoch)

    def __iter__(self):
        return iter(self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)

    def __getattr__(self, name):
        return getattr(self.sampler, name)


def steps_per_epoch(n: int, batch_size: int, world: int = 1) -> int:
    """Steps of one epoch for n samples at batch_size per rank (EpochBatches' rule)."""
    steps = math.ceil(n / (batch_size * world))
    if steps > 1 and n - (steps - 1) * batch_size * world < world:
        steps -= 1
    return steps
