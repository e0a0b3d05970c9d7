// CPU kernel of cxrfast::group_counts: two passes over a hash map, O(B) expected time.
#include "group_counts.h"

#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>

#include <unordered_map>

namespace cxrfast {
namespace {

template <typename key_t>
void group_counts_kernel(const key_t* groups, int32_t* out, int64_t n) {
  std::unordered_map<key_t, int32_t> counts;
  counts.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    ++counts[groups[i]];
  }
  for (int64_t i = 0; i < n; ++i) {
    out[i] = counts.find(groups[i])->second;
  }
}

}  // namespace

at::Tensor group_counts_cpu(const at::Tensor& groups) {
  check_group_counts_input(groups);
  TORCH_CHECK(groups.device().is_cpu(), "group_counts: expected `groups` on CPU, got ",
              groups.device());
  const at::Tensor g = groups.contiguous();
  at::Tensor out = at::empty({g.numel()}, g.options().dtype(at::kInt));
  AT_DISPATCH_INDEX_TYPES(g.scalar_type(), "group_counts_cpu", [&] {
    group_counts_kernel<index_t>(g.const_data_ptr<index_t>(), out.mutable_data_ptr<int32_t>(),
                                 g.numel());
  });
  return out;
}

}  // namespace cxrfast
