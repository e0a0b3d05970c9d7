// The radiograph pixel pipeline on the GPU: csrc/pixels_math.h's render_pixel, one thread per output pixel,
// blockIdx.y the image. The per-pixel arithmetic is the CPU-tested definition; this file only maps threads.
#include "pixels.cuh"

namespace cxrfast {
namespace cuda {
namespace {

constexpr int kThreads = 256;

__global__ void radiograph_render_kernel(const std::uint16_t* __restrict__ samples, const float* __restrict__ tables,
                                         const pixels::Image* __restrict__ images, int size, int filter,
                                         pixels::Output out, void* dst) {
  const std::int64_t per_image = std::int64_t(size) * size;
  const std::int64_t p = std::int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (p >= per_image) return;
  const int b = blockIdx.y;
  const pixels::Image im = images[b];
  const int i = int(p / size), j = int(p % size);
  pixels::store(dst, std::int64_t(b) * per_image + p, pixels::render_pixel(samples, tables, im, filter, i, j), out);
}

}  // namespace

cudaError_t radiograph_render(const std::uint16_t* samples, const float* tables, const pixels::Image* images,
                              int batch, int size, int filter, pixels::Output out, void* dst, cudaStream_t stream) {
  if (batch <= 0 || size <= 0) return cudaSuccess;
  if (batch > 65535) return cudaErrorInvalidValue;  // grid y; the binding splits larger batches
  const std::int64_t per_image = std::int64_t(size) * size;
  const dim3 grid(unsigned((per_image + kThreads - 1) / kThreads), unsigned(batch));
  radiograph_render_kernel<<<grid, kThreads, 0, stream>>>(samples, tables, images, size, filter, out, dst);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace cxrfast
