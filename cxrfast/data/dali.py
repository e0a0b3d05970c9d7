"""Studies → Batches with NVIDIA DALI doing the image work (nvidia-dali-cuda130, optional).

    from cxrfast.data.dali import DaliLoader
    loader = DaliLoader(batches, batch_size=64, rank=rank, world=world, device_id=rank)   # None: CPU pipeline
    for epoch in range(E):
        loader.set_epoch(epoch)
        for batch in loader: ...                                                        # cxrfast.data.Batch

It takes a `cxrfast.data.loader.StudyBatches` (the studies, tokenizer, views, augmentation, seed) and
gives what torch's DataLoader over it gives: the same samples in the same order on each rank (the same
`EpochBatches`), the same crops (the same per-image augmentation numbers, `StudyBatches.params`), the
same pixels up to the last grey level of rounding. Where the images come from:

- prepared shards (ImageRef.shard): rows of the memory-mapped shard files, copied into DALI's input;
- files (DICOM, PNG, JPEG): cxrfast's C++ decoder and pixel pipeline, on a thread pool (it releases the
  GIL), to the reader's source size.

DALI then runs, per image, one affine warp (crop + resize + rotation + shift, bilinear), brightness and
contrast, the clamp to [0, 1] and the normalisation, on its own threads (device_id=None) or on the GPU
(device_id = the GPU's index: the warp and everything after it run there, and the batch comes out on that
device). The reports are tokenised on the host, a batch at a time, as in the fallback.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from cxrfast.data.batch import Batch
from cxrfast.data.loader import EpochBatches, StudyBatches

__all__ = ["DaliLoader", "dali_available"]


def dali_available() -> str | None:
    """None when DALI imports, else why not (the message names the package to install)."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError as exc:
        return f"NVIDIA DALI is not installed ({exc}); pip install nvidia-dali-cuda130"
    return None


class DaliLoader:
    """See the module docstring. `num_threads`: DALI's CPU threads and the file-reading pool's size;
    `prefetch`: batches DALI prepares ahead."""

    def __init__(self, dataset: StudyBatches, batch_size: int, *, rank: int = 0, world: int = 1,
                 device_id: int | None = None, num_threads: int = 2, prefetch: int = 2, shuffle: bool = True):
        why = dali_available()
        if why:
            raise ImportError(why)
        self.dataset = dataset
        self.sampler = EpochBatches(len(dataset), batch_size, rank=rank, world=world, seed=dataset.seed,
                                    shuffle=shuffle)
        self.device_id, self.num_threads, self.prefetch = device_id, num_threads, prefetch
        self.epoch = 0
        self._pool = ThreadPoolExecutor(max_workers=max(1, num_threads))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.sampler.set_epoch(epoch)
        self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    # the per-batch host work ---------------------------------------------------------------------------
    def _slots(self, indices):
        """(index, view slot, ImageRef or None) for every image slot of a batch, sample-major."""
        V = self.dataset.views
        out = []
        for i in indices:
            study = self.dataset.studies[int(i)]
            refs = self.dataset.image_refs(study) if study.kind != "text" else []
            out += [(int(i), v, refs[v] if v < len(refs) else None) for v in range(V)]
        return out

    def _inputs(self, indices):
        """DALI's inputs for one batch: images (uint8 HWC), warp matrices, brightness, contrast; and the
        view mask. Empty slots get a 1×1 black image (zeroed again afterwards)."""
        slots = self._slots(indices)
        read = self.dataset.reader.read
        images = list(self._pool.map(lambda s: read(s[2]) if s[2] is not None else None, slots))
        mats, bright, contr, present = [], [], [], []
        for (i, v, ref), img in zip(slots, images):
            if img is None:
                mats.append(np.zeros((2, 3), np.float32))
                bright.append(np.float32(1.0))
                contr.append(np.float32(1.0))
                present.append(False)
                continue
            p = self.dataset.params(i, v, *img.shape)
            mats.append(p.as_array())
            bright.append(np.float32(p.brightness))
            contr.append(np.float32(p.contrast))
            present.append(True)
        hwc = [np.ascontiguousarray(img[:, :, None]) if img is not None else np.zeros((1, 1, 1), np.uint8)
               for img in images]
        return hwc, mats, bright, contr, np.asarray(present).reshape(len(indices), self.dataset.views)

    def _pipeline(self, batches):
        from nvidia.dali import fn, pipeline_def, types
        from nvidia.dali import math as dmath

        d = self.dataset
        S, mean, std = d.augment.size, d.mean, d.std
        largest = max(len(b) for b in batches) * d.views
        masks = {}

        def source(info):
            if info.iteration >= len(batches):
                raise StopIteration
            hwc, mats, bright, contr, present = self._inputs(batches[info.iteration])
            masks[info.iteration] = present
            return hwc, mats, bright, contr

        gpu = self.device_id is not None

        @pipeline_def(batch_size=largest, num_threads=self.num_threads, device_id=self.device_id,
                      prefetch_queue_depth=self.prefetch, exec_dynamic=True)
        def pipe():
            img, mat, b, c = fn.external_source(source=source, num_outputs=4, batch=True, batch_info=True,
                                                layout=["HWC", "", "", ""], dtype=[types.UINT8, types.FLOAT,
                                                                                   types.FLOAT, types.FLOAT])
            if gpu:
                img = img.gpu()
            x = fn.warp_affine(img, matrix=mat, size=[S, S], interp_type=types.INTERP_LINEAR, fill_value=0,
                               inverse_map=True)
            x = fn.cast(x, dtype=types.FLOAT) * (1.0 / 255.0)
            x = fn.brightness_contrast(x, brightness=b, contrast=c, contrast_center=0.5)
            x = dmath.clamp(x, 0.0, 1.0)
            return fn.transpose((x - mean) * (1.0 / std), perm=[2, 0, 1])  # CHW

        p = pipe()
        p.build()
        return p, masks

    def __iter__(self):
        return self.iterate()

    def iterate(self, start: int = 0):
        """This epoch's batches from batch `start` on (a resumed epoch: the earlier ones are not loaded)."""
        batches = [self.sampler.rank_slice(b) for b in self.sampler.global_batches()][start:]
        if not batches:
            return
        pipe, masks = self._pipeline(batches)
        d = self.dataset
        S, V = d.augment.size, d.views
        for k, indices in enumerate(batches):
            (out,) = pipe.run()
            if self.device_id is None:
                views = torch.from_numpy(out.as_array())
            else:
                views = torch.from_dlpack(out.as_tensor())
            present = torch.from_numpy(masks.pop(k)).to(views.device)
            views = views.view(len(indices), V, 1, S, S) * present[:, :, None, None, None]
            samples = [d.meta(int(i)) for i in indices]
            enc = d.tokenizer.encode([s[1] for s in samples], max_length=d.max_length)
            dev = views.device
            yield Batch(views=views, view_mask=present.bool(),
                        input_ids=torch.from_numpy(enc.input_ids).to(dev),
                        attention_mask=torch.from_numpy(enc.attention_mask).to(dev),
                        word_index=torch.from_numpy(enc.word_index).to(dev),
                        sentence_index=torch.from_numpy(enc.sentence_index).to(dev),
                        kind=torch.tensor([s[2] for s in samples], dtype=torch.int64, device=dev),
                        labels=(torch.stack([s[3] for s in samples]) if d.findings
                                else torch.zeros(len(samples), 0)).to(dev),
                        study_ids=[s[0] for s in samples], findings=d.findings)

