// The radiograph pixel pipeline on the host: stored values → Modality LUT / rescale → VOI (window, VOI LUT,
// min-max or percentile) → MONOCHROME1 inversion → aspect-preserving antialiased resize with pad or centre
// crop to a square → uint8 / uint16 / float16 / float32 (optionally (v - mean) / std).
//
// Everything up to the resize is a function of the stored value alone, so for samples of at most 16 bits it
// is folded into one table of 2^BitsStored floats v ∈ [0, 1] (built once per image: O(2^bits), plus one
// histogram pass when the VOI depends on the pixel values); the resize then reads table[sample]. The same
// table drives the CUDA kernel (csrc/cuda/pixels.cu). No torch or Python headers: the fuzz target and the
// nvcc compile check build without them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "pixels_math.h"

namespace cxrfast::pixels {

// A bad option or a file whose VOI description cannot be applied; the message names the option or tag.
class PipelineError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// One item of a Modality or VOI LUT Sequence: LUT Descriptor (0028,3002) = [entries, first mapped, bits]
// and LUT Data (0028,3006).
struct Lut {
  std::int64_t first_mapped = 0;
  int bits = 16;
  std::vector<std::uint16_t> data;
};

enum class Voi { Auto, Window, Lut, MinMax, Percentile, None };
enum class Fit { Pad, Crop };

// What the file says about its pixels.
struct Source {
  int rows = 0, columns = 0;
  int bits_stored = 16;
  bool is_signed = false;
  bool monochrome1 = false;
  bool has_rescale = false;
  double slope = 1.0, intercept = 0.0;
  bool has_modality_lut = false;
  Lut modality_lut;
  std::vector<double> window_center, window_width;
  std::string voi_lut_function;  // (0028,1056); empty: LINEAR
  std::vector<Lut> voi_luts;     // VOI LUT Sequence items
};

struct Options {
  int size = 512;
  Fit fit = Fit::Pad;
  int filter = kArea;
  Voi voi = Voi::Auto;
  Voi fallback = Voi::MinMax;  // what Auto does when the file has neither a VOI LUT nor a window
  bool has_window = false;     // an explicit window (voi Window) instead of the file's
  double center = 0.0, width = 0.0;
  std::string function;        // overrides VOILUTFunction when not empty
  int voi_index = 0;           // which window / VOI LUT item of the file
  double p_lo = 0.5, p_hi = 99.5;
  int invert = -1;             // -1: when MONOCHROME1; 0: never; 1: always
  int out_type = kU8;
  float mean = 0.0f, std = 1.0f;  // float outputs: (v - mean) / std
  float pad_value = 0.0f;         // v of the padding, before the mean/std normalisation
};

// The output geometry of a rows × cols source: the two axes of the square of side o.size. Throws
// PipelineError when a resized length would not fit an int (a centre crop of an absurdly elongated image).
void plan(int rows, int cols, const Options& o, Axis* ay, Axis* ax);

// The table of v for every stored value of an image (2^bits_stored floats, indexed by table_index), for samples
// of at most 16 bits (sample_bytes 1 or 2): Modality LUT / rescale, VOI, inversion. Reads the n samples only
// when the VOI depends on them: their index range (min-max) or their histogram (percentile).
std::vector<float> image_table(const void* samples, int sample_bytes, std::size_t n, const Source& s, const Options& o);

// The whole pipeline on one frame of rows × columns samples (sample_bytes 1, 2 or 4; patterns as stored,
// masked and sign-extended here) into `out` (size × size of o.out_type), separably: each source row is
// mapped through the table once and scattered into the output rows it weighs on, then each output row is
// filtered horizontally. Multi-threading is the caller's: one call per image.
void process(const void* samples, int sample_bytes, const Source& s, const Options& o, void* out);

// Bytes per output element of out_type.
int out_bytes(int out_type);

}  // namespace cxrfast::pixels
