// Input checks of the op cxrfast::radiograph_render, shared by its CPU (bindings_pixels.cpp) and CUDA
// (bindings_cuda.cpp) kernels.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "pixels_math.h"

namespace cxrfast::render {

// The image descriptors (a contiguous CPU uint8 tensor [B, sizeof(Image)]), each checked against the
// buffers it points into; also checks samples (1-D int16), tables (1-D float32), size, filter, out_type.
std::vector<pixels::Image> check_inputs(const at::Tensor& samples, const at::Tensor& tables, const at::Tensor& images,
                                        std::int64_t size, std::int64_t filter, std::int64_t out_type);

// The tensor dtype of out_type (uint8, uint16, float16, float32).
at::ScalarType out_dtype(std::int64_t out_type);

}  // namespace cxrfast::render
