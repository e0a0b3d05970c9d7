// CUDA launcher of cxrfast::group_counts. Raw pointers + cudaStream_t only, no torch headers, so
//   nvcc -c -std=c++17 -gencode=arch=compute_90,code=sm_90 csrc/cuda/group_counts.cu
// compile-checks on any machine with nvcc. The caller (csrc/bindings_cuda.cpp) owns all memory.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace cxrfast {
namespace cuda {

// Scratch bytes that group_counts<Key> needs for `n` keys (0 when n == 0). Host-only, launches
// nothing. Key is int32_t or int64_t (explicitly instantiated in group_counts.cu).
template <typename Key>
cudaError_t group_counts_workspace_bytes(int32_t n, size_t* workspace_bytes);

// out[i] = #{j : groups[j] == groups[i]} for i < n, enqueued on `stream`.
//   groups:    device, n contiguous keys (any values, negative included)
//   out:       device, n int32
//   workspace: device, at least group_counts_workspace_bytes<Key>(n) bytes, 256-byte aligned
// Method: radix-sort (key, index) pairs, then for each sorted position the run length of its key
// is found by two binary searches over the sorted keys and scattered back to the original index.
// O(n log n) work, no atomics, deterministic.
template <typename Key>
cudaError_t group_counts(const Key* groups, int32_t n, int32_t* out, void* workspace,
                         size_t workspace_bytes, cudaStream_t stream);

}  // namespace cuda
}  // namespace cxrfast
