"""cxrfast::group_counts (csrc/) against its definition: out[i] = #{j : groups[j] == groups[i]}."""

import pytest
import torch

from cxrfast import _ext

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def definition(groups: torch.Tensor) -> torch.Tensor:
    """The op spelled out in Python: O(B^2), obviously right."""
    ids = groups.tolist()
    return torch.tensor([sum(1 for h in ids if h == g) for g in ids], dtype=torch.int32)


@pytest.fixture
def op():
    if not _ext.load():
        pytest.skip(f"cxrfast._C is not built: {_ext.unavailable_reason()}")
    return torch.ops.cxrfast.group_counts


def random_ids(n, dtype, distinct, gen):
    """n ids drawn from `distinct` random values spread over dtype's whole range (negatives too)."""
    info = torch.iinfo(dtype)
    pool = torch.randint(info.min, info.max, (max(distinct, 1),), dtype=torch.int64, generator=gen)
    return pool[torch.randint(0, pool.numel(), (n,), generator=gen)].to(dtype)


def cases(dtype):
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))  # follows the test's seed
    lo, hi = (INT64_MIN, INT64_MAX) if dtype == torch.int64 else (INT32_MIN, INT32_MAX)
    yield "length 1", torch.tensor([7], dtype=dtype)
    yield "empty", torch.empty(0, dtype=dtype)
    yield "all equal", torch.full((33,), -4, dtype=dtype)
    yield "all distinct", torch.randperm(257, generator=gen).to(dtype) * 1_000_003 - 77
    yield "extremes", torch.tensor([hi, lo, -1, 0, hi, lo, 1, hi, -1], dtype=dtype)
    for n, distinct in [(2, 1), (7, 3), (129, 5), (1000, 40), (1000, 1000)]:
        yield f"random n={n} distinct<={distinct}", random_ids(n, dtype, distinct, gen)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_matches_definition(op, dtype):
    for name, groups in cases(dtype):
        out = op(groups)
        assert out.dtype == torch.int32 and out.shape == groups.shape, name
        torch.testing.assert_close(out, definition(groups), rtol=0, atol=0, msg=name)
        assert torch.equal(op(groups), out), f"{name}: not deterministic"


def test_non_contiguous_input(op):
    base = torch.tensor([[5, 9], [-5, 9], [5, 1], [2**40, 9]], dtype=torch.int64)
    view = base[:, 0]  # stride 2
    assert not view.is_contiguous()
    torch.testing.assert_close(op(view), definition(view), rtol=0, atol=0)


def test_large_against_unique():
    """B = 200k with many collisions: the O(B) CPU kernel against the torch.unique fallback."""
    if not _ext.load():
        pytest.skip(f"cxrfast._C is not built: {_ext.unavailable_reason()}")
    groups = torch.randint(-(2**62), 2**62, (20_000,))[torch.randint(0, 20_000, (200_000,))]
    torch.testing.assert_close(
        torch.ops.cxrfast.group_counts(groups), _ext.group_counts_torch(groups), rtol=0, atol=0
    )


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_fallback_matches_definition(dtype):
    """The pure-PyTorch path used when the extension has no kernel for the device."""
    for name, groups in cases(dtype):
        out = _ext.group_counts_torch(groups)
        assert out.dtype == torch.int32, name
        torch.testing.assert_close(out, definition(groups), rtol=0, atol=0, msg=name)


def test_python_entry_point_uses_extension_on_cpu(op):
    groups = torch.tensor([3, 1, 3, -5, 3])
    assert _ext.group_counts(groups).tolist() == [3, 1, 3, 1, 3]


BAD_INPUTS = {
    "2-D": torch.zeros(2, 3, dtype=torch.int64),
    "0-D": torch.tensor(3),
    "float": torch.zeros(4),
    "int16": torch.zeros(4, dtype=torch.int16),
    "bool": torch.zeros(4, dtype=torch.bool),
}


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_rejects_bad_input_naming_the_argument(op, kind):
    bad = BAD_INPUTS[kind]
    with pytest.raises(RuntimeError, match=r"group_counts: expected `groups` to be a 1-D int32/int64"):
        op(bad)
    with pytest.raises(RuntimeError, match=r"expected `groups`.*got a \d-D"):
        _ext.group_counts_torch(bad)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_opcheck(op, dtype):
    for groups in (torch.tensor([4, -1, 4, 4, 9], dtype=dtype), torch.tensor([0], dtype=dtype)):
        torch.library.opcheck(op, (groups,))


def test_torch_compile_fullgraph(op):
    def per_sample_weight(groups, loss):
        # the losses' use: average each sample's loss over the samples of its group
        return loss / op(groups).to(loss.dtype)

    compiled = torch.compile(per_sample_weight, fullgraph=True)
    groups = torch.tensor([10, 11, 10, -3, 10, 11])
    loss = torch.rand(6, dtype=torch.float64)
    torch.testing.assert_close(compiled(groups, loss), loss / definition(groups).double())
    # the Python entry point (extension check + dispatch) traces without a graph break too
    wrapper = torch.compile(lambda g: _ext.group_counts(g) * 2, fullgraph=True)
    torch.testing.assert_close(wrapper(groups), definition(groups) * 2, rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_cuda_matches_cpu(op, dtype):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    if not _ext.cuda_compiled():
        pytest.skip("cxrfast._C was built without CUDA kernels (CPU torch or no nvcc at build time)")
    for name, groups in cases(dtype):
        out = op(groups.cuda())
        assert out.is_cuda and out.dtype == torch.int32, name
        torch.testing.assert_close(out.cpu(), op(groups), rtol=0, atol=0, msg=name)
    big = random_ids(3_000_001, dtype, 100_000, torch.Generator().manual_seed(0))
    torch.testing.assert_close(op(big.cuda()).cpu(), op(big), rtol=0, atol=0)
    strided = big.cuda()[::3]
    torch.testing.assert_close(op(strided).cpu(), op(big[::3]), rtol=0, atol=0)
    torch.library.opcheck(op, (big[:1000].cuda(),))
