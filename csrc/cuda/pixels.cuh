// CUDA launcher of cxrfast::radiograph_render: the radiograph pixel pipeline for a batch of images of
// different sizes in one launch. Raw pointers + cudaStream_t only, no torch headers, so
//   nvcc -c -std=c++17 -gencode=arch=compute_90,code=sm_90 -Icsrc csrc/cuda/pixels.cu
// compile-checks on any machine with nvcc. The caller (csrc/bindings_cuda.cpp) owns all memory.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "pixels_math.h"

namespace cxrfast {
namespace cuda {

// out[b, i, j] = store(render_pixel(samples, tables, images[b], filter, i, j)) for b < batch, i, j < size:
// the table lookup (Modality LUT / rescale, VOI, inversion, folded into each image's table on the host), the
// antialiased resize and the pad / crop, and the output conversion, fused; one thread per output pixel.
//   samples: device, the images' 16-bit sample patterns, packed (images[b].sample_offset)
//   tables:  device, the images' tables of 2^bits_stored floats, packed (images[b].table_offset)
//   images:  device, `batch` descriptors (validated by the caller)
//   out:     device, batch · size · size elements of out.type
cudaError_t radiograph_render(const std::uint16_t* samples, const float* tables, const pixels::Image* images,
                              int batch, int size, int filter, pixels::Output out, void* dst, cudaStream_t stream);

}  // namespace cuda
}  // namespace cxrfast
