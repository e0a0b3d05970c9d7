// CUDA backend of the `cxrfast` operators: allocates with torch, launches the raw-pointer kernels
// of csrc/cuda on the current stream. Compiled only when torch and the toolkit have CUDA
// (setup.py defines CXRFAST_WITH_CUDA then).
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cuda/group_counts.cuh"
#include "group_counts.h"

namespace cxrfast {
namespace {

at::Tensor group_counts_cuda(const at::Tensor& groups) {
  check_group_counts_input(groups);
  TORCH_CHECK(groups.is_cuda(), "group_counts: expected `groups` on a CUDA device, got ",
              groups.device());
  const c10::cuda::CUDAGuard device_guard(groups.device());
  const at::Tensor g = groups.contiguous();
  const int32_t n = static_cast<int32_t>(g.numel());  // fits: checked above
  at::Tensor out = at::empty({g.numel()}, g.options().dtype(at::kInt));
  if (n == 0) return out;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_INDEX_TYPES(g.scalar_type(), "group_counts_cuda", [&] {
    size_t workspace_bytes = 0;
    C10_CUDA_CHECK(cuda::group_counts_workspace_bytes<index_t>(n, &workspace_bytes));
    // The caching allocator hands out 512-byte aligned blocks, as the kernel requires.
    at::Tensor workspace = at::empty({static_cast<int64_t>(workspace_bytes)},
                                     g.options().dtype(at::kByte));
    C10_CUDA_CHECK(cuda::group_counts<index_t>(g.const_data_ptr<index_t>(), n,
                                               out.mutable_data_ptr<int32_t>(),
                                               workspace.mutable_data_ptr(), workspace_bytes,
                                               stream));
  });
  return out;
}

}  // namespace
}  // namespace cxrfast

TORCH_LIBRARY_IMPL(cxrfast, CUDA, m) {
  m.impl("group_counts", &cxrfast::group_counts_cuda);
}
