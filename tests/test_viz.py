"""cxrfast.viz: the heat map lands where the attention is, and a real PNG is written."""

import pytest
import torch

import cxrfast
from cxrfast import viz


def test_heat_map_peaks_at_the_attended_region():
    att = torch.zeros(2, 12)
    att[0, 5] = 1.0  # grid 3×4: row 1, column 1
    att[1, 11] = 1.0  # row 2, column 3
    maps = viz.heat_maps(att, (30, 40), grid=(3, 4))
    assert maps.shape == (2, 30, 40)
    for m, (r, c) in zip(maps, [(1, 1), (2, 3)]):
        y, x = divmod(int(m.argmax()), 40)
        assert r * 10 <= y < (r + 1) * 10 and c * 10 <= x < (c + 1) * 10, (y, x)
        assert m.min() == 0 and m.max() == pytest.approx(1.0)


def test_save_word_attention_writes_a_png(tmp_path):
    regions, words = torch.randn(2, 16, 8), torch.randn(2, 5, 8)
    lengths = torch.tensor([3, 5])
    _, maps = cxrfast.word_region_similarity(regions, words, lengths, return_attention=True)
    image = torch.rand(64, 64)
    path = viz.save_word_attention(tmp_path / "att.png", image, maps[0], words=["left", "pleural", "effusion"])
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    import matplotlib.image

    h, w = matplotlib.image.imread(path).shape[:2]
    assert w > 3 * h  # image + three word panels side by side


def test_errors():
    with pytest.raises(ValueError, match="R=12 regions is not a square grid"):
        viz.heat_maps(torch.rand(12), (8, 8))
    with pytest.raises(ValueError, match="grid 3×3 = 9 does not match R=12"):
        viz.heat_maps(torch.rand(12), (8, 8), grid=(3, 3))
    with pytest.raises(ValueError, match="`image` must be"):
        viz.save_word_attention("x.png", torch.rand(2, 3, 4, 5), torch.rand(4))
    with pytest.raises(ValueError, match="4 words given but `attention` has 2 rows"):
        viz.save_word_attention("x.png", torch.rand(8, 8), torch.rand(2, 4), words=list("abcd"))
