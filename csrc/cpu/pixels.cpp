// The radiograph pixel pipeline on the CPU (see pixels.h). The LUT / VOI semantics follow PS3.3 C.11 as
// pydicom implements them (pydicom.pixels.apply_modality_lut / apply_voi_lut), normalised to v ∈ [0, 1]:
// pydicom's windowed output y ∈ [y_min, y_max] is v = (y - y_min) / (y_max - y_min) here.
#include "pixels.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <tuple>
#include <utility>

namespace cxrfast::pixels {
namespace {

// A number for an error message: 0.5, 10, 1e+300, nan (std::to_string gives 0.500000 and 0.000000 for 1e-9).
std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.10g", v);
  return buf;
}

enum Function { kLinear, kLinearExact, kSigmoid };

// The resolved description of stored value → v.
struct Transfer {
  const Source* s = nullptr;
  Voi mode = Voi::None;
  Function function = kLinear;
  double center = 0.0, width = 1.0;  // window
  const Lut* voi_lut = nullptr;
  double lo = 0.0, hi = 1.0;         // min-max / percentile bounds, or the natural range (Voi::None)
  bool invert = false;

  // Modality LUT or rescale (pydicom.pixels.apply_modality_lut): values below the first mapped value take
  // the first entry, values past the last entry take the last.
  double modality(double x) const {
    if (s->has_modality_lut) return lut(s->modality_lut, x);
    if (s->has_rescale) return x * s->slope + s->intercept;
    return x;
  }

  static double lut(const Lut& l, double y) {
    const double n = double(l.data.size());
    double i = y >= double(l.first_mapped) ? std::floor(y - double(l.first_mapped)) : 0.0;
    i = std::min(std::max(i, 0.0), n - 1.0);
    return double(l.data[std::size_t(i)]);
  }

  double voi(double y) const {
    switch (mode) {
      case Voi::Window:
        if (function == kSigmoid) return 1.0 / (1.0 + std::exp(-4.0 * (y - center) / width));
        {
          // LINEAR shifts the window by ½ and narrows it by 1 (C.11.2.1.2.1); LINEAR_EXACT does not.
          const double c = function == kLinear ? center - 0.5 : center;
          const double w = function == kLinear ? width - 1.0 : width;
          if (y <= c - w / 2) return 0.0;
          if (y > c + w / 2) return 1.0;
          return (y - c) / w + 0.5;
        }
      case Voi::Lut:
        return lut(*voi_lut, y) / (std::ldexp(1.0, voi_lut->bits) - 1.0);
      default:  // MinMax, Percentile, None: a linear map of [lo, hi] onto [0, 1]
        return hi != lo ? (y - lo) / (hi - lo) : 0.0;
    }
  }

  float operator()(double stored) const {
    double v = voi(modality(stored));
    v = v > 0.0 ? (v < 1.0 ? v : 1.0) : 0.0;  // NaN (a modality output past the double range) → 0
    return float(invert ? 1.0 - v : v);
  }
};

// What the VOI step does for this file and these options (Auto resolved), without the data-dependent bounds.
Transfer resolve(const Source& s, const Options& o) {
  Transfer t;
  t.s = &s;
  t.invert = o.invert == -1 ? s.monochrome1 : o.invert == 1;
  Voi mode = o.voi;
  if (mode == Voi::Auto) {
    if (o.has_window) mode = Voi::Window;
    else if (!s.voi_luts.empty()) mode = Voi::Lut;
    else if (!s.window_center.empty()) mode = Voi::Window;
    else mode = o.fallback;
  }
  t.mode = mode;
  if (mode == Voi::Window) {
    if (o.has_window) {
      t.center = o.center, t.width = o.width;
    } else {
      const std::size_t n = std::min(s.window_center.size(), s.window_width.size());
      if (n == 0)
        throw PipelineError("voi='window': the file has no Window Center / Window Width (0028,1050)/(0028,1051); "
                            "pass window=(center, width) or choose another voi");
      if (o.voi_index < 0 || std::size_t(o.voi_index) >= n)
        throw PipelineError("voi_index " + std::to_string(o.voi_index) + " out of range: the file has " +
                            std::to_string(n) + " window(s) (0028,1050)");
      t.center = s.window_center[o.voi_index], t.width = s.window_width[o.voi_index];
    }
    const std::string f = !o.function.empty() ? o.function : s.voi_lut_function.empty() ? "LINEAR" : s.voi_lut_function;
    if (f == "LINEAR") t.function = kLinear;
    else if (f == "LINEAR_EXACT") t.function = kLinearExact;
    else if (f == "SIGMOID") t.function = kSigmoid;
    else
      throw PipelineError("VOI LUT Function (0028,1056) '" + f + "' is not LINEAR, LINEAR_EXACT or SIGMOID");
    // an explicit window=(center, width) is named as the argument, the file's as its tags
    const std::string which = o.has_window ? "window=(" + num(t.center) + ", " + num(t.width) + ")"
                                           : "window center/width (0028,1050)/(0028,1051) " + num(t.center) + " / " +
                                                 num(t.width);
    if (!std::isfinite(t.center) || !std::isfinite(t.width)) throw PipelineError(which + ": must be finite");
    if (t.function == kLinear ? t.width < 1.0 : t.width <= 0.0)
      throw PipelineError((o.has_window ? which + ": width " : "window width (0028,1051) ") + num(t.width) +
                          " is invalid for " + f + (t.function == kLinear ? " (needs >= 1)" : " (needs > 0)"));
  } else if (mode == Voi::Lut) {
    if (s.voi_luts.empty())
      throw PipelineError("voi='lut': the file has no VOI LUT Sequence (0028,3010)");
    if (o.voi_index < 0 || std::size_t(o.voi_index) >= s.voi_luts.size())
      throw PipelineError("voi_index " + std::to_string(o.voi_index) + " out of range: the VOI LUT Sequence (0028,3010) has " +
                          std::to_string(s.voi_luts.size()) + " item(s)");
    t.voi_lut = &s.voi_luts[o.voi_index];
  } else if (mode == Voi::None) {
    // The natural range of the modality output, as pydicom's apply_windowing takes it.
    double lo, hi;
    if (s.has_modality_lut) {
      lo = 0.0, hi = std::ldexp(1.0, s.modality_lut.bits) - 1.0;
    } else if (!s.is_signed) {
      lo = 0.0, hi = std::ldexp(1.0, s.bits_stored) - 1.0;
    } else {
      lo = -std::ldexp(1.0, s.bits_stored - 1), hi = std::ldexp(1.0, s.bits_stored - 1) - 1.0;
    }
    if (s.has_rescale && !s.has_modality_lut) lo = lo * s.slope + s.intercept, hi = hi * s.slope + s.intercept;
    // ordered, so v rises with the modality value as in every other mode (a negative slope swaps the ends)
    t.lo = std::min(lo, hi), t.hi = std::max(lo, hi);
  }
  return t;
}

// Percentiles q_lo, q_hi (numpy's default "linear" method) of a multiset given as (value, count) pairs.
std::pair<double, double> percentiles(std::vector<std::pair<double, std::uint64_t>>& yc, double q_lo, double q_hi) {
  std::sort(yc.begin(), yc.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::uint64_t> cum(yc.size());
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < yc.size(); ++i) cum[i] = (total += yc[i].second);
  auto stat = [&](std::uint64_t k) {  // k-th smallest, 0-based
    const auto it = std::upper_bound(cum.begin(), cum.end(), k);
    return yc[std::size_t(it - cum.begin())].first;
  };
  auto at = [&](double q) {
    const double h = double(total - 1) * q / 100.0;
    const std::uint64_t k = std::uint64_t(std::floor(h));
    const double a = stat(k), b = k + 1 < total ? stat(k + 1) : a;
    return a + (h - double(k)) * (b - a);
  };
  return {at(q_lo), at(q_hi)};
}

void check(const Source& s, const Options& o) {
  if (o.size < 1 || o.size > 32768) throw PipelineError("size must be in [1, 32768], got " + std::to_string(o.size));
  if (s.rows < 1 || s.columns < 1)
    throw PipelineError("image of " + std::to_string(s.rows) + " x " + std::to_string(s.columns) + " pixels");
  if (s.bits_stored < 1 || s.bits_stored > 32)
    throw PipelineError("Bits Stored (0028,0101) " + std::to_string(s.bits_stored) + " outside [1, 32]");
  if (!(o.p_lo >= 0.0 && o.p_lo < o.p_hi && o.p_hi <= 100.0))
    throw PipelineError("percentiles must satisfy 0 <= low < high <= 100, got (" + std::to_string(o.p_lo) + ", " +
                        std::to_string(o.p_hi) + ")");
  if (o.filter != kArea && o.filter != kBilinear) throw PipelineError("unknown resample filter");
  if (o.out_type < kU8 || o.out_type > kF32) throw PipelineError("unknown output type");
  if (s.has_rescale && !s.has_modality_lut && !(std::isfinite(s.slope) && std::isfinite(s.intercept)))
    throw PipelineError("Rescale Slope (0028,1053) " + num(s.slope) + " / Rescale Intercept (0028,1052) " +
                        num(s.intercept) + ": both must be finite");
  if (s.has_modality_lut && s.modality_lut.data.empty())
    throw PipelineError("Modality LUT Sequence (0028,3000) item has no LUT Data (0028,3006)");
  for (const Lut& l : s.voi_luts)
    if (l.data.empty()) throw PipelineError("VOI LUT Sequence (0028,3010) item has no LUT Data (0028,3006)");
  // (the parser guarantees these; the meta dict of radiograph_pixels may not)
  if (s.has_modality_lut && (s.modality_lut.bits < 1 || s.modality_lut.bits > 16))
    throw PipelineError("Modality LUT Sequence (0028,3000): LUT Descriptor (0028,3002) gives " +
                        std::to_string(s.modality_lut.bits) + " bits per entry, 1..16 expected");
  for (const Lut& l : s.voi_luts)
    if (l.bits < 1 || l.bits > 16)
      throw PipelineError("VOI LUT Sequence (0028,3010): LUT Descriptor (0028,3002) gives " + std::to_string(l.bits) +
                          " bits per entry, 1..16 expected");
}

void check_width(const Source& s, int sample_bytes) {
  if (sample_bytes != 1 && sample_bytes != 2 && sample_bytes != 4)
    throw PipelineError("samples of " + std::to_string(sample_bytes) + " bytes");
  if (s.bits_stored > 8 * sample_bytes)
    throw PipelineError("Bits Stored (0028,0101) " + std::to_string(s.bits_stored) + " exceeds the " +
                        std::to_string(8 * sample_bytes) + "-bit samples");
}

// One output axis: the valid output positions [first, last), and for each its source taps.
struct AxisPlan {
  int first = 0, last = 0;
  int src0 = 0, src1 = 0;  // the source samples any valid position reads
  std::vector<int> k0, count, woff;
  std::vector<float> w;
};

AxisPlan axis_plan(const Axis& a, int size, int filter) {
  AxisPlan p;
  p.first = std::max(0, a.offset);
  p.last = std::min(size, a.offset + a.n);
  p.src0 = a.in, p.src1 = 0;
  for (int i = p.first; i < p.last; ++i) {
    const int r = i - a.offset;
    const Taps t = taps(filter, a, r);
    int k0 = t.k0, k1 = t.k1;
    while (k0 < k1 && weight(filter, a, t, k0, r) == 0.0) ++k0;  // area: an interval ending on a pixel edge
    while (k1 > k0 && weight(filter, a, t, k1 - 1, r) == 0.0) --k1;
    p.k0.push_back(k0);
    p.count.push_back(k1 - k0);
    p.woff.push_back(int(p.w.size()));
    for (int k = k0; k < k1; ++k) p.w.push_back(float(weight(filter, a, t, k, r)));
    if (k1 > k0) p.src0 = std::min(p.src0, k0), p.src1 = std::max(p.src1, k1);
  }
  if (p.src1 <= p.src0) p.src0 = p.src1 = 0;
  return p;
}

// Resize the mapped image into vout (size × size, pad elsewhere). map_row(k, c0, c1, dst, w) adds w · v[k][c]
// to dst[c - c0] for c in [c0, c1).
template <class MapRow>
void resample(const Axis& ay, const Axis& ax, int size, int filter, float pad, MapRow map_row, float* vout) {
  const AxisPlan py = axis_plan(ay, size, filter), px = axis_plan(ax, size, filter);
  const int c0 = px.src0, width = px.src1 - px.src0, rows_out = py.last - py.first;
  std::fill(vout, vout + std::size_t(size) * size, pad);
  if (rows_out <= 0 || px.last <= px.first || width <= 0) return;

  // Vertical first, as a scatter: every source row is mapped once and added into the (one to three) output
  // rows it weighs on; the accumulator holds rows_out × width floats (about 2 MB at 224 from 2048 columns).
  std::vector<std::vector<std::pair<int, float>>> into(std::size_t(py.src1 - py.src0));
  for (int ii = 0; ii < rows_out; ++ii)
    for (int t = 0; t < py.count[ii]; ++t)
      into[std::size_t(py.k0[ii] + t - py.src0)].push_back({ii, py.w[std::size_t(py.woff[ii] + t)]});
  std::vector<float> acc(std::size_t(rows_out) * width, 0.0f), row(static_cast<std::size_t>(width));
  for (int k = py.src0; k < py.src1; ++k) {
    const auto& targets = into[std::size_t(k - py.src0)];
    if (targets.empty()) continue;
    if (targets.size() == 1) {  // most rows when shrinking: map and accumulate in one pass
      map_row(k, c0, c0 + width, acc.data() + std::size_t(targets[0].first) * width, targets[0].second);
      continue;
    }
    std::fill(row.begin(), row.end(), 0.0f);
    map_row(k, c0, c0 + width, row.data(), 1.0f);
    for (const auto& [ii, w] : targets) {
      float* a = acc.data() + std::size_t(ii) * width;
      for (int c = 0; c < width; ++c) a[c] += w * row[std::size_t(c)];
    }
  }
  // Horizontal: a short dot product per output pixel.
  for (int ii = 0; ii < rows_out; ++ii) {
    const float* a = acc.data() + std::size_t(ii) * width;  // column c0 of the source
    float* o = vout + std::size_t(py.first + ii) * size;
    for (int jj = 0; jj < px.last - px.first; ++jj) {
      const float* w = px.w.data() + px.woff[std::size_t(jj)];
      const float* src = a + (px.k0[std::size_t(jj)] - c0);
      float sum = 0.0f;
      for (int t = 0; t < px.count[std::size_t(jj)]; ++t) sum += w[t] * src[t];
      o[px.first + jj] = sum;
    }
  }
}

// Stored value of a sample pattern: the low bits_stored bits, sign-extended when signed.
std::int64_t stored_value(std::uint32_t pattern, int bits, bool is_signed) {
  const std::uint32_t idx = table_index(pattern, bits, is_signed);
  return is_signed ? std::int64_t(idx) - (std::int64_t(1) << (bits - 1)) : std::int64_t(idx);
}


void histogram(const void* samples, int sample_bytes, std::size_t n, int bits_stored, bool is_signed,
               std::uint64_t* hist) {
  // table_index inlined (a mask, plus an offset when signed): 2^bits_stored counters, 32 KB at 12 bits.
  const std::uint32_t mask = bits_stored >= 32 ? 0xFFFFFFFFu : (1u << bits_stored) - 1u;
  const std::uint32_t half = is_signed ? 1u << (bits_stored - 1) : 0u;
  // Four interleaved sub-histograms: neighbouring pixels of a smooth image often share a bin, and one
  // histogram would serialise those increments through store-to-load forwarding.
  auto count = [&](const auto* p) {
    const std::size_t bins = std::size_t(mask) + 1;
    std::vector<std::uint32_t> sub(4 * bins, 0);
    std::size_t i = 0;
    while (i < n) {
      const std::size_t stop = std::min(n, i + (std::size_t(1) << 30));  // flush before a uint32 can wrap
      for (; i + 4 <= stop; i += 4) {
        ++sub[(std::uint32_t(p[i]) + half) & mask];
        ++sub[bins + ((std::uint32_t(p[i + 1]) + half) & mask)];
        ++sub[2 * bins + ((std::uint32_t(p[i + 2]) + half) & mask)];
        ++sub[3 * bins + ((std::uint32_t(p[i + 3]) + half) & mask)];
      }
      for (; i < stop; ++i) ++sub[(std::uint32_t(p[i]) + half) & mask];
      for (std::size_t b = 0; b < bins; ++b) {
        hist[b] += std::uint64_t(sub[b]) + sub[bins + b] + sub[2 * bins + b] + sub[3 * bins + b];
        sub[b] = sub[bins + b] = sub[2 * bins + b] = sub[3 * bins + b] = 0;
      }
    }
  };
  if (sample_bytes == 1) count(static_cast<const std::uint8_t*>(samples));
  else count(static_cast<const std::uint16_t*>(samples));
}

// The smallest and largest table index among n samples.
void index_range(const void* samples, int sample_bytes, std::size_t n, int bits_stored, bool is_signed,
                 std::uint32_t* lo, std::uint32_t* hi) {
  const std::uint32_t mask = (1u << bits_stored) - 1u, half = is_signed ? 1u << (bits_stored - 1) : 0u;
  auto scan = [&](const auto* p) {
    std::uint32_t a = mask, b = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint32_t idx = (std::uint32_t(p[i]) + half) & mask;
      a = std::min(a, idx), b = std::max(b, idx);
    }
    *lo = a, *hi = b;
  };
  if (sample_bytes == 1) scan(static_cast<const std::uint8_t*>(samples));
  else scan(static_cast<const std::uint16_t*>(samples));
}

// The table from what the VOI needs of the image: counts per index (percentile; min-max through a Modality
// LUT, which need not be monotonic) or the index range (min-max through a monotonic rescale).
std::vector<float> build_table(const Source& s, const Options& o, const std::uint64_t* hist, const std::uint32_t* range) {
  Transfer t = resolve(s, o);
  const std::size_t n = std::size_t(1) << s.bits_stored;
  auto stored = [&](std::size_t idx) { return s.is_signed ? double(idx) - double(n / 2) : double(idx); };
  if (t.mode == Voi::MinMax || t.mode == Voi::Percentile) {
    std::vector<std::pair<double, std::uint64_t>> yc;
    if (hist) {
      for (std::size_t i = 0; i < n; ++i)
        if (hist[i]) yc.push_back({t.modality(stored(i)), hist[i]});
    } else {
      yc = {{t.modality(stored(range[0])), 1}, {t.modality(stored(range[1])), 1}};
    }
    if (yc.empty()) throw PipelineError("empty image");
    std::tie(t.lo, t.hi) = t.mode == Voi::MinMax ? percentiles(yc, 0.0, 100.0) : percentiles(yc, o.p_lo, o.p_hi);
  }
  std::vector<float> table(n);
  for (std::size_t i = 0; i < n; ++i) table[i] = t(stored(i));
  return table;
}

}  // namespace

int out_bytes(int out_type) { return out_type == kU8 ? 1 : out_type == kF32 ? 4 : 2; }

void plan(int rows, int cols, const Options& o, Axis* ay, Axis* ax) {
  const double f = double(o.size) / double(o.fit == Fit::Pad ? std::max(rows, cols) : std::min(rows, cols));
  auto axis = [&](int in) {
    // (a centre crop of a very elongated image: 1 × 70000 cropped to 32768 would be 2.3e9 wide)
    const double len = std::floor(double(in) * f + 0.5);
    if (!(len <= double(INT_MAX / 2)))
      throw PipelineError("a " + std::to_string(rows) + " x " + std::to_string(cols) + " image resized to fit " +
                          std::to_string(o.size) + " would be " + num(len) + " pixels long: too elongated to crop");
    const int n = std::max(1, int(len));
    // The excess (pad) or the overhang (crop) is split with its smaller half first.
    const int offset = n <= o.size ? (o.size - n) / 2 : -((n - o.size) / 2);
    return Axis{in, n, offset, double(in) / double(n)};
  };
  *ay = axis(rows);
  *ax = axis(cols);
}

std::vector<float> image_table(const void* samples, int sample_bytes, std::size_t n, const Source& s,
                               const Options& o) {
  check(s, o);
  if (s.bits_stored > 16 || sample_bytes > 2) throw PipelineError("image_table: samples above 16 bits have no table");
  check_width(s, sample_bytes);
  const Voi mode = resolve(s, o).mode;
  if (mode == Voi::Percentile || (mode == Voi::MinMax && s.has_modality_lut)) {
    std::vector<std::uint64_t> hist(std::size_t(1) << s.bits_stored, 0);
    histogram(samples, sample_bytes, n, s.bits_stored, s.is_signed, hist.data());
    return build_table(s, o, hist.data(), nullptr);
  }
  if (mode == Voi::MinMax) {
    std::uint32_t range[2];
    index_range(samples, sample_bytes, n, s.bits_stored, s.is_signed, &range[0], &range[1]);
    return build_table(s, o, nullptr, range);
  }
  return build_table(s, o, nullptr, nullptr);
}

void process(const void* samples, int sample_bytes, const Source& s, const Options& o, void* out) {
  check(s, o);
  check_width(s, sample_bytes);
  Axis ay, ax;
  plan(s.rows, s.columns, o, &ay, &ax);
  const std::size_t npix = std::size_t(s.rows) * s.columns, nout = std::size_t(o.size) * o.size;
  std::vector<float> v(nout);
  const int cols = s.columns;

  if (sample_bytes <= 2) {
    const std::vector<float> table = image_table(samples, sample_bytes, npix, s, o);
    // Index the 2^bits_stored table directly (table_index inlined: a mask, plus an offset when signed), so
    // that a 12-bit image gathers from 16 KB (L1) rather than from a 256 KB table over all 16-bit patterns.
    const float* tab = table.data();
    const std::uint32_t mask = (1u << s.bits_stored) - 1u, half = s.is_signed ? 1u << (s.bits_stored - 1) : 0u;
    auto map_rows = [&](const auto* src) {
      resample(ay, ax, o.size, o.filter, o.pad_value, [&](int k, int c0, int c1, float* dst, float w) {
        const auto* r = src + std::size_t(k) * cols;
        for (int c = c0; c < c1; ++c) dst[c - c0] += w * tab[(std::uint32_t(r[c]) + half) & mask];
      }, v.data());
    };
    if (sample_bytes == 1) map_rows(static_cast<const std::uint8_t*>(samples));
    else map_rows(static_cast<const std::uint16_t*>(samples));
  } else {
    // 32-bit samples: no table; the transfer is evaluated per sample.
    const auto* src = static_cast<const std::uint32_t*>(samples);
    Transfer t = resolve(s, o);
    if (t.mode == Voi::MinMax || t.mode == Voi::Percentile) {
      std::vector<double> ys(npix);
      for (std::size_t i = 0; i < npix; ++i) ys[i] = t.modality(double(stored_value(src[i], s.bits_stored, s.is_signed)));
      std::sort(ys.begin(), ys.end());
      std::vector<std::pair<double, std::uint64_t>> yc;
      for (double y : ys) {
        if (yc.empty() || yc.back().first != y) yc.push_back({y, 0});
        ++yc.back().second;
      }
      std::tie(t.lo, t.hi) = t.mode == Voi::MinMax ? percentiles(yc, 0.0, 100.0) : percentiles(yc, o.p_lo, o.p_hi);
    }
    resample(ay, ax, o.size, o.filter, o.pad_value, [&](int k, int c0, int c1, float* dst, float w) {
      const std::uint32_t* r = src + std::size_t(k) * cols;
      for (int c = c0; c < c1; ++c) dst[c - c0] += w * t(double(stored_value(r[c], s.bits_stored, s.is_signed)));
    }, v.data());
  }

  const Output outp{o.out_type, o.mean, 1.0f / o.std};
  for (std::size_t i = 0; i < nout; ++i) store(out, std::int64_t(i), v[i], outp);
}

}  // namespace cxrfast::pixels
