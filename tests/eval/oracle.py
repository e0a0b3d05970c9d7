"""A PresetModel whose features are planted, so that each evaluation must find what was planted:

    encode_image   global = [label signs (+1 positive, -1 negative, 0 unknown) per finding, a code of the
                   study id]; local = per region of a 16 × 16 grid, the fraction covered by each finding's
                   mask (the synthetic masks, in the evaluation frame) — the localized probe's oracle
    encode_text    a study's report: the same vector as its image (so retrieval is perfect); any other text
                   (a prompt): +1 (-1 when it says "no") on each finding it names, 0 on the code

With these, zero-shot AUC is 1 for both prompt styles (a positive's score is above 0, a negative's below),
Recall@1 is 1 both ways, the linear probe separates the labels, the localized probe recovers the masks.
A wrong column order, a shifted row, a mask taken from another study would each break one of them.
"""

from __future__ import annotations

import zlib

import torch

from cxrfast.eval.localized import load_finding_masks, mask_file, region_targets
from cxrfast.models.base import PresetModel
from cxrfast.models.globallocal import GlobalLocalConfig

CODE_DIM = 8
GRID = (16, 16)
KEYWORDS = {"Atelectasis": {"atelectasis"}, "Cardiomegaly": {"cardiomegaly", "cardiac", "heart"},
            "Consolidation": {"consolidation", "airspace"}, "Edema": {"edema"},
            "Pleural Effusion": {"effusion", "effusions", "pleural"}}


class OracleModel(PresetModel):
    CONFIG = GlobalLocalConfig

    def __init__(self, studies, tokenizer):
        super().__init__(GlobalLocalConfig.for_size("tiny", vocab_size=tokenizer.vocab_size))
        self.dummy = torch.nn.Parameter(torch.zeros(1))  # a device for PresetModel.device
        self.tokenizer = tokenizer
        self.findings = tuple(self.config.findings)
        self.reports = {s.study_id for s in studies if s.report is not None}
        self.masks = {}
        for s in studies:
            frontal = s.views(("PA", "AP"))
            path = mask_file(s, frontal[0].image_id, studies.root) if frontal else None
            if path is not None:
                self.masks[s.study_id] = path

    def _code(self, study_id: str) -> torch.Tensor:
        g = torch.Generator().manual_seed(zlib.crc32(study_id.encode()))
        return torch.randn(CODE_DIM, generator=g)

    def _study_vector(self, batch, b: int) -> torch.Tensor:
        lab = batch.labels[b].cpu()
        sign = torch.where(torch.isnan(lab), torch.zeros_like(lab), 2 * lab - 1)
        return torch.cat([sign, self._code(batch.study_ids[b])])

    def encode_image(self, batch):
        glob = torch.stack([self._study_vector(batch, b) for b in range(len(batch))])
        R, S = GRID[0] * GRID[1], self.config.image_size
        local = torch.zeros(len(batch), R, len(self.findings))
        for b, sid in enumerate(batch.study_ids):
            if sid in self.masks:
                m = load_finding_masks(self.masks[sid], self.findings, S)[None]
                local[b] = region_targets(m, GRID)[0]
        return {"global": glob, "local": local, "grid": GRID}

    def encode_text(self, batch):
        out = []
        for b, sid in enumerate(batch.study_ids):
            if sid in self.reports:
                out.append(self._study_vector(batch, b))
                continue
            words = set(self.tokenizer.decode(batch.input_ids[b].tolist()).lower().split())
            sign = -1.0 if "no" in words else 1.0
            v = torch.zeros(len(self.findings) + CODE_DIM)
            for k, f in enumerate(self.findings):
                if words & KEYWORDS[f]:
                    v[k] = sign
            out.append(v)
        return {"global": torch.stack(out)}
