// The radiograph pixel pipeline's per-pixel arithmetic, shared by the CPU code (csrc/cpu/pixels.cpp) and
// the CUDA kernel (csrc/cuda/pixels.cu): one definition of the resize filters, the table index of a stored
// sample and the output conversion, so the kernel computes what the CPU tests check.
//
// No torch, no standard-library containers: nvcc compiles this as device code.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define CXR_HD __host__ __device__ __forceinline__
#else
#define CXR_HD inline
#endif

namespace cxrfast::pixels {

// Resampling filters. Area: the exact box average of the source pixels an output pixel covers (OpenCV
// INTER_AREA and PIL's BOX for downscaling). Bilinear: the antialiased triangle filter of torch's
// interpolate(mode="bilinear", antialias=True, align_corners=False), whose support widens with the
// downscale factor.
enum Filter : int { kArea = 0, kBilinear = 1 };

// Output dtypes. Float outputs carry v (or (v - mean) / std); integer outputs round v · max to nearest-even.
enum OutType : int { kU8 = 0, kU16 = 1, kF16 = 2, kF32 = 3 };

// One output axis of `size` positions. The source axis of `in` samples is resized to `n` samples and
// placed at `offset` = (size - n) / 2: positive pads, negative centre-crops. scale = in / n, per axis, so a
// resized image covers its source exactly; the aspect ratio is kept up to the rounding of n.
struct Axis {
  int in, n, offset;
  double scale;
};

// The source samples [k0, k1) that resized position r (0 <= r < n) reads, and the weight normalisation.
struct Taps {
  int k0, k1;
  double norm;  // 1 / Σ raw weights for the bilinear filter; 1 for area (its weights sum to 1 exactly)
};

CXR_HD double triangle(double x) {
  x = x < 0 ? -x : x;
  return x < 1.0 ? 1.0 - x : 0.0;
}

// torch's _compute_indices_weights_aa for interp_size 2: centre s·(r + ½), support s (at least 1), the
// window rounded as torch rounds it.
CXR_HD Taps bilinear_taps(const Axis& a, int r) {
  const double s = a.scale, center = s * (r + 0.5), support = s >= 1.0 ? s : 1.0;
  const double inv = s >= 1.0 ? 1.0 / s : 1.0;
  int k0 = int(center - support + 0.5), k1 = int(center + support + 0.5);
  if (k0 < 0) k0 = 0;
  if (k1 > a.in) k1 = a.in;
  double total = 0.0;
  for (int k = k0; k < k1; ++k) total += triangle((k - center + 0.5) * inv);
  return {k0, k1, total > 0.0 ? 1.0 / total : 0.0};
}

CXR_HD double bilinear_weight(const Axis& a, const Taps& t, int k, int r) {
  const double s = a.scale, inv = s >= 1.0 ? 1.0 / s : 1.0;
  return triangle((k - s * (r + 0.5) + 0.5) * inv) * t.norm;
}

// Area: resized position r covers the source interval [r·s, (r+1)·s); source sample k weighs the length of
// its overlap with that interval, divided by s.
CXR_HD Taps area_taps(const Axis& a, int r) {
  const double lo = r * a.scale, hi = (r + 1) * a.scale;
  int k0 = int(floor(lo)), k1 = int(ceil(hi));
  if (k0 < 0) k0 = 0;
  if (k1 > a.in) k1 = a.in;
  return {k0, k1, 1.0};
}

CXR_HD double area_weight(const Axis& a, int k, int r) {
  const double lo = fmax(double(k), r * a.scale), hi = fmin(double(k + 1), (r + 1) * a.scale);
  return hi > lo ? (hi - lo) / a.scale : 0.0;
}

CXR_HD Taps taps(int filter, const Axis& a, int r) { return filter == kArea ? area_taps(a, r) : bilinear_taps(a, r); }

CXR_HD double weight(int filter, const Axis& a, const Taps& t, int k, int r) {
  return filter == kArea ? area_weight(a, k, r) : bilinear_weight(a, t, k, r);
}

// Table index of a 16-bit stored sample given as its bit pattern: the value in the low `bits_stored` bits
// (sign-extended when signed) offset so the smallest storable value is 0. Masking makes raw words with
// garbage above the high bit read as pydicom reads them; on already-decoded samples it is the identity.
CXR_HD std::uint32_t table_index(std::uint32_t pattern, int bits_stored, bool is_signed) {
  const std::uint32_t mask = bits_stored >= 32 ? 0xFFFFFFFFu : ((1u << bits_stored) - 1u);
  const std::uint32_t v = pattern & mask;
  // Signed: v + 2^(bits-1) modulo 2^bits maps [-2^(bits-1), 2^(bits-1)) onto [0, 2^bits) in order.
  return is_signed ? ((v + (1u << (bits_stored - 1))) & mask) : v;
}

struct Output {
  int type;           // OutType
  float mean, inv_std;  // float outputs: (v - mean) · inv_std (mean 0, inv_std 1 when not normalising)
};

// NaN → 0: a NaN reaching the float → integer conversion would be undefined behaviour.
CXR_HD float clamp01(float v) { return v > 0.f ? (v < 1.f ? v : 1.f) : 0.f; }

// v ∈ [0, 1] as an integer of `levels` (255 or 65535), rounded to nearest (ties to even, like numpy).
CXR_HD float quantize(float v, float levels) {
#ifdef __CUDA_ARCH__
  return rintf(clamp01(v) * levels);
#else
  return std::nearbyint(clamp01(v) * levels);
#endif
}


// One image of a batch as the kernel reads it: its samples (16-bit patterns) in a packed buffer, its table
// (2^bits_stored floats: v ∈ [0, 1] per stored value) in a packed buffer, and its geometry.
struct Image {
  std::int64_t sample_offset, table_offset;
  std::int32_t rows, cols, bits_stored, is_signed;
  Axis ay, ax;
  float pad;  // v of the padding (pad mode)
};

// v of output pixel (i, j): the filter's weighted sum over the source window of table[stored sample]. This
// is the CUDA kernel's whole computation and the CPU reference of it (cxrfast::radiograph_render on CPU);
// the fast CPU path (csrc/cpu/pixels.cpp) computes the same sums separably.
CXR_HD float render_pixel(const std::uint16_t* samples, const float* tables, const Image& im, int filter, int i,
                          int j) {
  // (in 64 bits: i - offset cannot overflow whatever a descriptor holds)
  const std::int64_t ri64 = std::int64_t(i) - im.ay.offset, rj64 = std::int64_t(j) - im.ax.offset;
  if (ri64 < 0 || ri64 >= im.ay.n || rj64 < 0 || rj64 >= im.ax.n) return im.pad;
  const int ri = int(ri64), rj = int(rj64);
  const Taps ty = taps(filter, im.ay, ri), tx = taps(filter, im.ax, rj);
  const std::uint16_t* src = samples + im.sample_offset;
  const float* table = tables + im.table_offset;
  double acc = 0.0;
  for (int y = ty.k0; y < ty.k1; ++y) {
    const double wy = weight(filter, im.ay, ty, y, ri);
    if (wy == 0.0) continue;
    const std::uint16_t* row = src + std::int64_t(y) * im.cols;
    double sum = 0.0;
    for (int x = tx.k0; x < tx.k1; ++x)
      sum += weight(filter, im.ax, tx, x, rj) * double(table[table_index(row[x], im.bits_stored, im.is_signed != 0)]);
    acc += wy * sum;
  }
  return float(acc);
}

// float → IEEE half bits, rounded to nearest even (what torch's .half() and numpy's float16 do), written
// out so host and device share it without cuda_fp16.h.
CXR_HD std::uint16_t half_bits(float f) {
#ifdef __CUDA_ARCH__
  std::uint32_t x = __float_as_uint(f);
#else
  std::uint32_t x;
  std::memcpy(&x, &f, sizeof x);
#endif
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7FFFFFFFu;
  if (x >= 0x7F800000u) return std::uint16_t(sign | (x > 0x7F800000u ? 0x7E00u : 0x7C00u));  // NaN, inf
  if (x >= 0x477FF000u) return std::uint16_t(sign | 0x7C00u);  // ≥ 65520 rounds to inf
  if (x < 0x38800000u) {  // below 2^-14: a subnormal half (value = m · 2^-24) or zero
    if (x <= 0x33000000u) return std::uint16_t(sign);  // ≤ 2^-25: the tie at 2^-25 goes to even (0)
    const std::uint32_t e = x >> 23, m = (x & 0x7FFFFFu) | 0x800000u, shift = 126u - e;
    std::uint32_t r = m >> shift;
    const std::uint32_t rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return std::uint16_t(sign | r);
  }
  const std::uint32_t r = x + 0xFFFu + ((x >> 13) & 1u);  // round the 13 dropped mantissa bits to even
  return std::uint16_t(sign | ((r - 0x38000000u) >> 13));   // exponent bias 127 → 15
}

CXR_HD void store_half(void* out, std::int64_t idx, float f) { static_cast<std::uint16_t*>(out)[idx] = half_bits(f); }

// Store v into element `idx` of an output of type o.type.
CXR_HD void store(void* out, std::int64_t idx, float v, const Output& o) {
  switch (o.type) {
    case kU8: static_cast<std::uint8_t*>(out)[idx] = std::uint8_t(quantize(v, 255.f)); break;
    case kU16: static_cast<std::uint16_t*>(out)[idx] = std::uint16_t(quantize(v, 65535.f)); break;
    default: {
      const float f = (v - o.mean) * o.inv_std;
      if (o.type == kF32) {
        static_cast<float*>(out)[idx] = f;
      } else {
        store_half(out, idx, f);
      }
    }
  }
}

}  // namespace cxrfast::pixels
