"""The localized probe: masks read per finding and brought into the evaluation frame exactly, region targets
and upsampling in the presets' row-major order, high Dice when the local features are the masks themselves,
none on noise."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cxrfast.data.studies import COMPETITION_FINDINGS
from cxrfast.eval.localized import (load_finding_masks, localized_probe, mask_file, mask_rows, region_targets,
                                    upsample_logits)


def first_frontal(study):
    views = study.views(("PA", "AP"))
    return views[0].image_id if views else None


@pytest.fixture(scope="module")
def masks(studies):
    rows = mask_rows(studies, first_frontal, studies.root)
    return torch.stack([load_finding_masks(p, COMPETITION_FINDINGS, 64) for _, p in rows]), rows


def test_masks_are_the_files_in_the_evaluation_frame(studies, synth_root, masks):
    stack, rows = masks
    assert len(rows) == len(studies)  # every synthetic study has a frontal view with a mask file
    row, path = rows[3]
    assert path == synth_root / "masks" / f"{first_frontal(studies[row])}.npz"
    with np.load(path) as z:
        files = {k: z[k] for k in z.files}
    for k, f in enumerate(COMPETITION_FINDINGS):
        want = torch.from_numpy(files[f] > 0) if f in files else torch.zeros(64, 64, dtype=torch.bool)
        assert torch.equal(stack[3, k], want), f  # same size: the transform is the identity
    # at half the size: each output pixel is the bilinear sample at the centre of a 2 × 2 block, thresholded
    half = load_finding_masks(path, COMPETITION_FINDINGS, 32)
    assert torch.equal(half, F.avg_pool2d(stack[3].float()[None], 2)[0] > 0.5)
    assert stack.any(dim=(2, 3)).sum() > 20  # the findings are there to be found


def test_mask_file_prefers_the_adapters_record(studies, tmp_path):
    s = studies[0]
    image = first_frontal(s)
    other = tmp_path / "elsewhere.npz"
    np.savez(other, Edema=np.ones((8, 8), np.uint8))
    extra = dict(s.extra)
    try:
        s.extra["masks"] = {image: str(other)}
        assert mask_file(s, image, studies.root) == other
    finally:
        s.extra.clear()
        s.extra.update(extra)
    assert mask_file(s, image, studies.root).parent.name == "masks"
    assert mask_file(s, "no-such-image", studies.root) is None and mask_file(s, None, studies.root) is None
    assert [r for r, _ in mask_rows(studies, first_frontal, studies.root, limit=10, seed=1)] == \
        [r for r, _ in mask_rows(studies, first_frontal, studies.root, limit=10, seed=1)]


def test_region_targets_and_upsampling_are_row_major():
    m = torch.zeros(1, 1, 4, 6, dtype=torch.bool)
    m[0, 0, :2, 2:4] = True  # top row, middle column of a 2 × 3 grid
    t = region_targets(m, (2, 3))
    assert t.shape == (1, 6, 1) and t[0, :, 0].tolist() == [0, 1, 0, 0, 0, 0]
    m[0, 0, 2:, :1] = True  # half of the bottom-left region
    assert region_targets(m, (2, 3))[0, 3, 0] == 0.5
    # block-aligned masks come back from their regions' logits, in each block's inner 2 × 2 pixels (where its
    # own region's weight dominates the bilinear sample; near corners the neighbours may outvote it)
    g = torch.Generator().manual_seed(0)
    blocks = torch.rand(3, 2, 4, 5, generator=g) < 0.4
    full = blocks.repeat_interleave(4, 2).repeat_interleave(4, 3)  # [3, 2, 16, 20]
    logits = 20 * (region_targets(full, (4, 5)) - 0.5)
    back = upsample_logits(logits, (4, 5), (16, 20)) > 0
    inner = torch.tensor([1, 2])
    rows = (torch.arange(4)[:, None] * 4 + inner).flatten()
    cols = (torch.arange(5)[:, None] * 4 + inner).flatten()
    assert torch.equal(back[..., rows, :][..., cols], full[..., rows, :][..., cols])
    assert (back == full).float().mean() > 0.9


def test_oracle_features_give_high_dice_and_noise_none(masks):
    stack, _ = masks
    train, test = slice(0, 60), slice(60, None)
    grid = (16, 16)
    oracle = region_targets(stack, grid)  # [M, 256, 5]: the masks themselves, per region
    r = localized_probe(oracle[train], stack[train], oracle[test], stack[test], grid, COMPETITION_FINDINGS)
    assert r["converged"] and r["grid"] == [16, 16] and r["n_train"] == 60 and r["n_test"] == 20
    assert r["mean"] > 0.7, r
    for f in ("Cardiomegaly", "Consolidation", "Edema"):  # large regions; thin atelectasis bands are hardest
        assert r["per_finding"][f]["dice"] > 0.8, (f, r)
        assert 0 <= r["per_finding"][f]["dice_present"] <= 1 and r["per_finding"][f]["n_present"] > 0
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(stack.shape[0], 256, 5, generator=g)
    r = localized_probe(noise[train], stack[train], noise[test], stack[test], grid, COMPETITION_FINDINGS)
    # chance: a finding covers about 1% of the pixels, so guessing gives a Dice of about 0.01
    assert r["mean"] < 0.1, r
    # the same oracle from another study's masks is no better than noise: the rows must match
    shifted = oracle[test].roll(1, 0)
    r = localized_probe(oracle[train], stack[train], shifted, stack[test], grid, COMPETITION_FINDINGS)
    assert r["mean"] < 0.4, r


def test_errors(masks):
    stack, _ = masks
    loc = region_targets(stack[:4], (4, 4))
    with pytest.raises(ValueError, match=r"`train_local` must be \[M, 64, E\] for the grid 8×8"):
        localized_probe(loc, stack[:4], loc, stack[:4], (8, 8), COMPETITION_FINDINGS)
    with pytest.raises(ValueError, match="`test_masks` must be"):
        localized_probe(loc, stack[:4], loc, stack[:3], (4, 4), COMPETITION_FINDINGS)
