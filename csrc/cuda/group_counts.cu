// CUDA kernel of cxrfast::group_counts (see group_counts.cuh for the contract).
#include "group_counts.cuh"

#include <cub/device/device_radix_sort.cuh>

namespace cxrfast {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 65535;  // grid-stride loops cover the rest
constexpr size_t kAlign = 256;     // cub and coalesced loads like 256-byte aligned buffers

size_t align_up(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

int num_blocks(int32_t n) {
  const int blocks = static_cast<int>((static_cast<int64_t>(n) + kThreads - 1) / kThreads);
  return blocks < kMaxBlocks ? blocks : kMaxBlocks;
}

// The workspace holds, in order: sorted keys | original indices | sorted indices | cub scratch.
template <typename Key>
struct Workspace {
  Key* sorted_keys;
  int32_t* index;
  int32_t* sorted_index;
  void* cub_scratch;
  size_t cub_bytes;
};

template <typename Key>
size_t arrays_bytes(int32_t n) {
  return align_up(sizeof(Key) * static_cast<size_t>(n)) +
         2 * align_up(sizeof(int32_t) * static_cast<size_t>(n));
}

template <typename Key>
cudaError_t cub_scratch_bytes(int32_t n, size_t* bytes) {
  // A null scratch pointer makes cub only report its scratch size; no pointer is read.
  *bytes = 0;
  return cub::DeviceRadixSort::SortPairs(nullptr, *bytes, static_cast<const Key*>(nullptr),
                                         static_cast<Key*>(nullptr),
                                         static_cast<const int32_t*>(nullptr),
                                         static_cast<int32_t*>(nullptr), n);
}

__global__ void iota_kernel(int32_t* index, int32_t n) {
  for (int32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    index[i] = i;
  }
}

// sorted[i]'s run is [first position with key >= sorted[i], first position with key > sorted[i]);
// the searches are confined to [0, i] and [i + 1, n) because sorted[i] itself belongs to the run.
template <typename Key>
__global__ void scatter_run_lengths_kernel(const Key* __restrict__ sorted,
                                           const int32_t* __restrict__ sorted_index, int32_t n,
                                           int32_t* __restrict__ out) {
  for (int32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const Key key = sorted[i];
    int32_t lo = 0, hi = i;  // lower bound in [0, i]
    while (lo < hi) {
      const int32_t mid = lo + (hi - lo) / 2;
      if (sorted[mid] < key) lo = mid + 1; else hi = mid;
    }
    const int32_t first = lo;
    lo = i + 1;
    hi = n;  // upper bound in [i + 1, n]
    while (lo < hi) {
      const int32_t mid = lo + (hi - lo) / 2;
      if (sorted[mid] <= key) lo = mid + 1; else hi = mid;
    }
    out[sorted_index[i]] = lo - first;
  }
}

}  // namespace

template <typename Key>
cudaError_t group_counts_workspace_bytes(int32_t n, size_t* workspace_bytes) {
  *workspace_bytes = 0;
  if (n <= 0) return cudaSuccess;
  size_t cub_bytes = 0;
  const cudaError_t err = cub_scratch_bytes<Key>(n, &cub_bytes);
  if (err != cudaSuccess) return err;
  *workspace_bytes = arrays_bytes<Key>(n) + align_up(cub_bytes);
  return cudaSuccess;
}

template <typename Key>
cudaError_t group_counts(const Key* groups, int32_t n, int32_t* out, void* workspace,
                         size_t workspace_bytes, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  size_t needed = 0;
  cudaError_t err = group_counts_workspace_bytes<Key>(n, &needed);
  if (err != cudaSuccess) return err;
  if (workspace == nullptr || workspace_bytes < needed) return cudaErrorInvalidValue;

  char* base = static_cast<char*>(workspace);
  Workspace<Key> ws;
  ws.sorted_keys = reinterpret_cast<Key*>(base);
  base += align_up(sizeof(Key) * static_cast<size_t>(n));
  ws.index = reinterpret_cast<int32_t*>(base);
  base += align_up(sizeof(int32_t) * static_cast<size_t>(n));
  ws.sorted_index = reinterpret_cast<int32_t*>(base);
  base += align_up(sizeof(int32_t) * static_cast<size_t>(n));
  ws.cub_scratch = base;
  ws.cub_bytes = needed - arrays_bytes<Key>(n);

  const int blocks = num_blocks(n);
  iota_kernel<<<blocks, kThreads, 0, stream>>>(ws.index, n);
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;

  // Signed keys sort correctly: cub flips the sign bit internally.
  err = cub::DeviceRadixSort::SortPairs(ws.cub_scratch, ws.cub_bytes, groups, ws.sorted_keys,
                                        ws.index, ws.sorted_index, n, 0,
                                        static_cast<int>(sizeof(Key) * 8), stream);
  if (err != cudaSuccess) return err;

  scatter_run_lengths_kernel<Key><<<blocks, kThreads, 0, stream>>>(ws.sorted_keys,
                                                                    ws.sorted_index, n, out);
  return cudaGetLastError();
}

template cudaError_t group_counts_workspace_bytes<int32_t>(int32_t, size_t*);
template cudaError_t group_counts_workspace_bytes<int64_t>(int32_t, size_t*);
template cudaError_t group_counts<int32_t>(const int32_t*, int32_t, int32_t*, void*, size_t,
                                           cudaStream_t);
template cudaError_t group_counts<int64_t>(const int64_t*, int32_t, int32_t*, void*, size_t,
                                           cudaStream_t);

}  // namespace cuda
}  // namespace cxrfast
