// CUDA backend of the `cxrfast` operators: allocates with torch, launches the raw-pointer kernels
// of csrc/cuda on the current stream. Compiled only when torch and the toolkit have CUDA
// (setup.py defines CXRFAST_WITH_CUDA then).
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "cuda/group_counts.cuh"
#include "cuda/pixels.cuh"
#include "group_counts.h"
#include "render.h"

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

// The batch's descriptors arrive on the host (they are checked there against the buffers' sizes) and are
// copied to the device here; samples and tables are already on it.
at::Tensor radiograph_render_cuda(const at::Tensor& samples, const at::Tensor& tables, const at::Tensor& images,
                                  int64_t size, int64_t filter, int64_t out_type, double mean, double inv_std) {
  const std::vector<pixels::Image> ims = render::check_inputs(samples, tables, images, size, filter, out_type);
  TORCH_CHECK(samples.is_cuda() && tables.device() == samples.device(),
              "radiograph_render: samples and tables must be on the same CUDA device, got ", samples.device(), " and ",
              tables.device());
  const c10::cuda::CUDAGuard device_guard(samples.device());
  const int64_t batch = static_cast<int64_t>(ims.size());
  at::Tensor out = at::empty({batch, size, size}, samples.options().dtype(render::out_dtype(out_type)));
  if (batch == 0) return out;
  const at::Tensor dev_images = images.to(samples.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const pixels::Output o{static_cast<int>(out_type), static_cast<float>(mean), static_cast<float>(inv_std)};
  const auto* d = reinterpret_cast<const pixels::Image*>(dev_images.const_data_ptr());
  auto* dst = static_cast<uint8_t*>(out.data_ptr());
  const int64_t per_image_bytes = size * size * out.element_size();
  for (int64_t b0 = 0; b0 < batch; b0 += 65535) {  // grid y holds 65535 images
    const int n = static_cast<int>(std::min<int64_t>(65535, batch - b0));
    C10_CUDA_CHECK(cuda::radiograph_render(reinterpret_cast<const uint16_t*>(samples.const_data_ptr()),
                                           tables.const_data_ptr<float>(), d + b0, n, static_cast<int>(size),
                                           static_cast<int>(filter), o, dst + b0 * per_image_bytes, stream));
  }
  return out;
}

}  // namespace
}  // namespace cxrfast

TORCH_LIBRARY_IMPL(cxrfast, CUDA, m) {
  m.impl("group_counts", &cxrfast::group_counts_cuda);
  m.impl("radiograph_render", &cxrfast::radiograph_render_cuda);
}
