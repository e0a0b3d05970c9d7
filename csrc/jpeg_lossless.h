// JPEG Lossless, process 14 (ITU T.81 Annex H): Huffman-coded prediction residuals, predictors 1–7,
// precision 2–16, point transform, restart markers. No torch or Python headers (fuzzable standalone).
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace cxrfast::jpegll {

class DecodeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct FrameInfo {
  int precision = 0, rows = 0, columns = 0, components = 0;
};

// Read the frame header (SOF3) without decoding.
FrameInfo probe(const std::uint8_t* data, std::size_t size);

// Decode one JPEG Lossless stream into `out`: rows × columns × components samples, interleaved, each
// `bytes_per_sample` (1 or 2) bytes in host byte order. The stream's frame must match rows/columns/
// components; throws DecodeError naming the marker and byte offset otherwise. A stream whose entropy-coded
// data end before every sample is decoded, or whose restart interval leaves whole bytes unread before its
// RSTn marker (samples decoded from corrupt data), is an error too, never a silently wrong image. Restart
// intervals must be whole lines. Reads nothing outside [data, data + size) and writes exactly the samples.
void decode(const std::uint8_t* data, std::size_t size, int rows, int columns, int components, int bytes_per_sample,
            std::uint8_t* out);

}  // namespace cxrfast::jpegll
