// group_counts: out[i] = #{j : groups[j] == groups[i]}  (int32, same length as groups).
//
// Shared by the CPU and CUDA bindings: the op's contract (input checks) lives here once.
// PyTorch equivalent:
//   _, inv, cnt = torch.unique(groups, return_inverse=True, return_counts=True); cnt[inv].int()
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <limits>

namespace cxrfast {

// Validates `groups` for every backend. Counts are int32, so the length must fit in int32.
inline void check_group_counts_input(const at::Tensor& groups) {
  TORCH_CHECK(
      groups.dim() == 1 &&
          (groups.scalar_type() == at::kLong || groups.scalar_type() == at::kInt),
      "group_counts: expected `groups` to be a 1-D int32/int64 tensor, got a ",
      groups.dim(), "-D ", groups.scalar_type(), " tensor of shape ", groups.sizes(),
      " on ", groups.device());
  TORCH_CHECK(
      groups.numel() <= std::numeric_limits<int32_t>::max(),
      "group_counts: expected `groups` to have at most 2^31-1 elements (counts are int32), got ",
      groups.numel());
}

// CPU kernel (csrc/cpu/group_counts.cpp).
at::Tensor group_counts_cpu(const at::Tensor& groups);

}  // namespace cxrfast
