// JPEG Lossless process 14 decoder (see jpeg_lossless.h).
//
// Speed (one core, 12-bit 2500×2048 radiograph, ~7 bits per sample) comes from four choices:
// 1. The entropy-coded data is first copied without its stuffed bytes (FF00 → FF) into a buffer padded with
//    zeros, one segment per restart interval. The bit reader then never meets a marker: its refill is
//    branch-free (load 8 bytes big-endian, keep whole bytes; F. Giesen's "variant 4").
// 2. One lookup of the next kLutBits bits resolves a Huffman code AND its magnitude bits when both fit
//    (most samples of a radiograph): the entry holds the difference and the total bit count. Longer codes and
//    large magnitudes take a slower path that decodes them exactly.
// 3. After a refill (≥ 56 bits buffered) four such samples (≤ kLutBits each) need no further refill, so one
//    branch-free refill serves four samples and the hot loop has one well-predicted branch per sample.
// 4. The prediction is specialised per predictor and output type (templates), kept in registers (Ra), and
//    written straight into the output; the bounds of the bit reader are checked once per row against a
//    padding that a row cannot overrun, not per sample.
#include "jpeg_lossless.h"

#include <array>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

namespace cxrfast::jpegll {
namespace {

[[noreturn]] void fail(std::size_t offset, const std::string& what) {
  throw DecodeError("JPEG lossless stream, byte " + std::to_string(offset) + ": " + what);
}

// Lookup width. An entry resolves a code and its magnitude bits when they total ≤ kLutBits; 4 × kLutBits
// must fit in the 56 bits a refill guarantees. 2^12 entries × 4 bytes = 16 KiB per table: L1-resident.
constexpr int kLutBits = 12;
constexpr int kGroup = 4;  // samples decoded per refill on the fast path
static_assert(kGroup * kLutBits <= 56, "a group of fast samples must fit in one refill");

// Entry layout. Fast (bit 7 clear): bits 0-5 the total bit count (code + magnitude), bits 16-31 the difference
// (two's complement, modulo 2^16). Slow (bit 7 set): bits 8-12 the code length (0 when the code is longer
// than kLutBits or no code), bits 16-23 the category SSSS.
constexpr std::uint32_t kSlow = 0x80;

struct Huffman {
  bool defined = false;
  std::array<std::uint8_t, 16> counts{};  // codes per length 1..16
  std::vector<std::uint8_t> values;
};

// A Huffman table ready for decoding: the lookup table plus T.81 F.2.2.3's MAXCODE/VALPTR/MINCODE for codes
// longer than kLutBits.
struct Table {
  std::array<int, 18> maxcode{};  // per code length 1..16, −1 when no code of that length
  std::array<int, 17> valptr{}, mincode{};
  std::vector<std::uint8_t> values;
  std::vector<std::uint32_t> lut;
};

// The difference coded by `ssss` magnitude bits `v` (T.81 F.2.2.1 EXTEND), 1 ≤ ssss ≤ 15.
inline int extend(int v, int ssss) { return v < (1 << (ssss - 1)) ? v - ((1 << ssss) - 1) : v; }

Table build(const Huffman& h) {
  Table t;
  t.values = h.values;
  t.lut.assign(std::size_t(1) << kLutBits, kSlow);  // no code of ≤ kLutBits bits: the slow path searches
  int code = 0, k = 0;
  for (int len = 1; len <= 16; ++len) {
    const int count = h.counts[std::size_t(len - 1)];
    if (count) {
      t.valptr[std::size_t(len)] = k;
      t.mincode[std::size_t(len)] = code;
      for (int c = 0; c < count && len <= kLutBits; ++c) {
        // an over-subscribed table (code ≥ 2^len) has no room left in the lookup: those codes never match
        if (code + c >= (1 << len) || std::size_t(k + c) >= t.values.size()) break;
        const int s = t.values[std::size_t(k + c)];
        const int free_bits = kLutBits - len;
        const std::uint32_t first = std::uint32_t(code + c) << free_bits;
        for (std::uint32_t fill = 0; fill < (1u << free_bits); ++fill) {
          std::uint32_t e;
          if (s == 0) {
            e = std::uint32_t(len);
          } else if (s == 16) {
            e = 0x80000000u | std::uint32_t(len);  // 32768 ≡ −32768 modulo 2^16, no magnitude bits (H.1.2.2)
          } else if (s < 16 && len + s <= kLutBits) {
            const int v = int(fill >> (free_bits - s)) & ((1 << s) - 1);
            e = std::uint32_t(std::uint16_t(extend(v, s))) << 16 | std::uint32_t(len + s);
          } else {
            e = kSlow | std::uint32_t(len) << 8 | std::uint32_t(s) << 16;
          }
          t.lut[first | fill] = e;
        }
      }
      code += count;
      k += count;
      t.maxcode[std::size_t(len)] = code - 1;
    } else {
      t.maxcode[std::size_t(len)] = -1;
    }
    code <<= 1;
  }
  t.maxcode[17] = 0x7FFFFFFF;
  return t;
}

inline std::uint64_t load_be64(const std::uint8_t* p) {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  return v;
#elif defined(__GNUC__)
  return __builtin_bswap64(v);
#else
  v = ((v & 0x00FF00FF00FF00FFull) << 8) | ((v >> 8) & 0x00FF00FF00FF00FFull);
  v = ((v & 0x0000FFFF0000FFFFull) << 16) | ((v >> 16) & 0x0000FFFF0000FFFFull);
  return (v << 32) | (v >> 32);
#endif
}

// One restart interval's entropy-coded bits, stuffing removed, in the padded buffer.
struct Segment {
  std::size_t begin = 0, end = 0;  // in the clean buffer
  std::size_t src_begin = 0;       // byte offset in the stream (for messages)
  std::size_t src_end = 0;         // where it stopped in the stream: the marker's FF, or the end
  int marker = -1;                 // the marker byte that ended it (0xD0–0xD7: RSTn), −1: the end of the data
};

// MSB-first bit reader over a clean (unstuffed, zero-padded) buffer. refill() is branch-free and leaves
// 56–63 bits buffered. Reading past a segment's end gives the next segment's bits or the padding's zeros;
// the caller checks after each row that no bit beyond the segment was consumed (then the stream is cut).
struct BitReader {
  const std::uint8_t* ptr;  // the next byte not yet (fully) in buf
  std::uint64_t buf = 0;    // the next bits, MSB first; the `count` top bits are valid
  unsigned count = 0;

  void refill() {
    buf |= load_be64(ptr) >> count;
    ptr += (63 - count) >> 3;
    count |= 56;
  }
  std::uint32_t peek(int n) const { return std::uint32_t(buf >> (64 - n)); }
  void consume(unsigned n) {
    buf <<= n;
    count -= n;
  }
};

// Bits consumed since the start of segment `s` (which `br` reads).
inline std::size_t bits_consumed(const BitReader& br, const std::uint8_t* clean, const Segment& s) {
  return std::size_t(br.ptr - (clean + s.begin)) * 8 - br.count;
}

// What error messages need to place a failure in the stream.
struct Where {
  const std::uint8_t* clean;
  const Segment* seg;
  std::size_t at(const BitReader& br) const {
    return seg->src_begin + bits_consumed(br, clean, *seg) / 8;  // approximate by the stuffed bytes before it
  }
};

// A sample whose lookup entry is slow: a code longer than kLutBits, magnitude bits beyond the lookup, or an
// invalid code or category. `br` was refilled (≥ 56 bits) and nothing consumed since.
[[gnu::noinline]] int decode_slow(BitReader& br, const Table& t, std::uint32_t e, const Where& where) {
  int len = int(e >> 8) & 0x1F, s = int(e >> 16) & 0xFF;
  if (len == 0) {  // a code longer than kLutBits bits (T.81 F.2.2.3)
    const std::uint32_t window = br.peek(16);
    int code = 0;
    for (len = kLutBits + 1; len <= 16; ++len) {
      code = int(window >> (16 - len));
      if (code <= t.maxcode[std::size_t(len)]) break;
    }
    if (len > 16) fail(where.at(br), "invalid Huffman code");
    const int idx = t.valptr[std::size_t(len)] + code - t.mincode[std::size_t(len)];
    if (idx < 0 || std::size_t(idx) >= t.values.size()) fail(where.at(br), "Huffman code outside its table");
    s = t.values[std::size_t(idx)];
  }
  if (s > 16) fail(where.at(br), "difference category above 16");
  br.consume(unsigned(len));  // ≤ 16 bits; ≥ 40 remain for the ≤ 15 magnitude bits
  if (s == 0) return 0;
  if (s == 16) return 32768;  // T.81 H.1.2.2: no extra bits
  const int v = int(br.peek(s));
  br.consume(unsigned(s));
  return extend(v, s);
}

// A sample whose entry `e` (looked up at the reader's position) is slow. Inline for the common slow case, a
// code of ≤ kLutBits bits whose magnitude bits reach beyond the lookup (high-entropy 16-bit data).
inline int decode_entry_slow(BitReader& br, const Table& t, std::uint32_t e, const Where& where) {
  br.refill();
  const unsigned len = (e >> 8) & 0x1F, s = (e >> 16) & 0xFF;
  if (__builtin_expect(len == 0 || s > 15, 0)) return decode_slow(br, t, e, where);
  br.consume(len);  // ≤ kLutBits bits, then 1 ≤ s ≤ 15 magnitude bits: within the 56 refilled
  const int v = int(br.peek(int(s)));
  br.consume(s);
  return extend(v, int(s));
}

// One difference, any entry.
inline int decode_one(BitReader& br, const Table& t, const Where& where) {
  br.refill();
  const std::uint32_t e = t.lut[br.peek(kLutBits)];
  if (__builtin_expect(!(e & kSlow), 1)) {
    br.consume(e & 63);
    return std::int32_t(e) >> 16;
  }
  return decode_entry_slow(br, t, e, where);
}

// Prediction (T.81 Table H.1) from Ra (left), Rb (above), Rc (above left), on the unshifted sample values.
template <int Pred>
inline int predict(int ra, int rb, int rc) {
  if constexpr (Pred == 1) return ra;
  else if constexpr (Pred == 2) return rb;
  else if constexpr (Pred == 3) return rc;
  else if constexpr (Pred == 4) return ra + rb - rc;
  else if constexpr (Pred == 5) return ra + ((rb - rc) >> 1);
  else if constexpr (Pred == 6) return rb + ((ra - rc) >> 1);
  else return (ra + rb) >> 1;
}

int predict_any(int predictor, int ra, int rb, int rc) {
  switch (predictor) {
    case 1: return predict<1>(ra, rb, rc);
    case 2: return predict<2>(ra, rb, rc);
    case 3: return predict<3>(ra, rb, rc);
    case 4: return predict<4>(ra, rb, rc);
    case 5: return predict<5>(ra, rb, rc);
    case 6: return predict<6>(ra, rb, rc);
    default: return predict<7>(ra, rb, rc);
  }
}

// One line of a one-component scan. prev == nullptr: the first line of the scan or of a restart interval
// (Pred is then 1 and the first sample is predicted by `first`, 2^(P−Pt−1)); else sample 0 is predicted by
// Rb. Values are stored modulo 2^(8·sizeof(T)): modulo 2^16 as T.81 H.2.1 says for 16-bit samples; for
// 8-bit ones a valid stream never leaves 0..255.
template <int Pred, typename T>
void line1(BitReader& br, const Table& t, const Where& where, T* cur, const T* prev, std::size_t W, int first) {
  const std::uint32_t* lut = t.lut.data();
  int ra = T((prev ? int(prev[0]) : first) + decode_one(br, t, where));
  cur[0] = T(ra);
  std::size_t x = 1;
  auto put = [&](int diff) {
    int rb = 0, rc = 0;
    if constexpr (Pred != 1) rb = prev[x], rc = prev[x - 1];  // Pred ≠ 1 is never used on a first line
    ra = T(predict<Pred>(ra, rb, rc) + diff);
    cur[x++] = T(ra);
  };
  while (x + kGroup <= W) {
    br.refill();  // ≥ 56 bits: room for kGroup fast samples
#pragma GCC unroll 4
    for (int k = 0; k < kGroup; ++k) {
      const std::uint32_t e = lut[br.peek(kLutBits)];
      if (__builtin_expect(e & kSlow, 0)) {  // this sample alone, then a new group
        put(decode_entry_slow(br, t, e, where));
        break;
      }
      br.consume(e & 63);
      put(std::int32_t(e) >> 16);
    }
  }
  while (x < W) put(decode_one(br, t, where));
}

// One line of an interleaved multi-component scan (or any scan): no specialisation, one sample at a time.
template <typename T>
void line_any(BitReader& br, const Table* const* tables, const Where& where, T* cur, const T* prev, std::size_t W,
              std::size_t C, int predictor, int first) {
  for (std::size_t x = 0; x < W; ++x) {
    for (std::size_t c = 0; c < C; ++c) {
      const int diff = decode_one(br, *tables[c], where);
      int pred;
      if (!prev) {
        pred = x == 0 ? first : int(cur[(x - 1) * C + c]);  // 2^(P−Pt−1), then Ra
      } else if (x == 0) {
        pred = int(prev[c]);  // the first column: Rb
      } else {
        pred = predict_any(predictor, int(cur[(x - 1) * C + c]), int(prev[x * C + c]), int(prev[(x - 1) * C + c]));
      }
      cur[x * C + c] = T(pred + diff);
    }
  }
}

struct Scan {
  const Table* const* tables;  // per component
  int predictor, first, pt;
  std::size_t rows, W, C, lines_per_interval;  // 0: no restarts
  const std::uint8_t* clean;
  const std::vector<Segment>* segments;
};

[[noreturn]] void fail_restart(const Segment& s, int expected) {
  if (s.marker < 0) fail(s.src_end, "restart marker expected (RST" + std::to_string(expected) + "), the data ends");
  char buf[64];
  std::snprintf(buf, sizeof buf, "expected RST%d, found FF%02X", expected, s.marker);
  fail(s.src_end, buf);
}

template <typename T, int Pred>
void decode_scan(const Scan& sc, T* out) {
  const auto& segs = *sc.segments;
  std::size_t seg = 0;
  BitReader br{sc.clean + segs[0].begin};
  Where where{sc.clean, &segs[0]};
  for (std::size_t y = 0; y < sc.rows; ++y) {
    bool first_line = y == 0;
    if (sc.lines_per_interval && y > 0 && y % sc.lines_per_interval == 0) {
      // T.81 H.1.2: prediction restarts as at the top of the scan; the interval's data follow RSTn
      const int expected = int(seg & 7);
      if (segs[seg].marker != 0xD0 + expected || seg + 1 >= segs.size()) fail_restart(segs[seg], expected);
      // The interval's data must end here, up to the padding of its last byte: whole bytes left over mean
      // that the samples were decoded from corrupt data (an inserted byte, say), which must not pass silently.
      const std::size_t used_bytes = (bits_consumed(br, sc.clean, segs[seg]) + 7) / 8;
      if (used_bytes < segs[seg].end - segs[seg].begin)
        fail(segs[seg].src_end, std::to_string(segs[seg].end - segs[seg].begin - used_bytes) +
                                    " bytes of entropy-coded data left over before RST" + std::to_string(expected));
      ++seg;
      br = BitReader{sc.clean + segs[seg].begin};
      where.seg = &segs[seg];
      first_line = true;
    }
    T* cur = out + y * sc.W * sc.C;
    const T* prev = first_line ? nullptr : cur - sc.W * sc.C;
    if constexpr (Pred == 0) {
      line_any<T>(br, sc.tables, where, cur, prev, sc.W, sc.C, sc.predictor, sc.first);
    } else if (first_line) {
      line1<1, T>(br, *sc.tables[0], where, cur, nullptr, sc.W, sc.first);
    } else {
      line1<Pred, T>(br, *sc.tables[0], where, cur, prev, sc.W, sc.first);
    }
    // The row consumed bits beyond its segment: the data were cut (or a marker sits inside them).
    if (bits_consumed(br, sc.clean, segs[seg]) > (segs[seg].end - segs[seg].begin) * 8)
      fail(segs[seg].src_end, "entropy-coded data ends before every sample is decoded");
  }
  if (sc.pt) {  // point transform: the samples were decoded shifted right by Pt
    const std::size_t n = sc.rows * sc.W * sc.C;
    for (std::size_t k = 0; k < n; ++k) out[k] = T(unsigned(out[k]) << sc.pt);
  }
}

template <typename T>
void decode_scan_typed(const Scan& sc, T* out) {
  if (sc.C != 1) return decode_scan<T, 0>(sc, out);
  switch (sc.predictor) {
    case 1: return decode_scan<T, 1>(sc, out);
    case 2: return decode_scan<T, 2>(sc, out);
    case 3: return decode_scan<T, 3>(sc, out);
    case 4: return decode_scan<T, 4>(sc, out);
    case 5: return decode_scan<T, 5>(sc, out);
    case 6: return decode_scan<T, 6>(sc, out);
    default: return decode_scan<T, 7>(sc, out);
  }
}

// Copy the entropy-coded data from `pos` into `clean` without stuffing (FF00 → FF; fill bytes FF FF… dropped),
// split at RSTn markers, stopping at any other marker or at the end. Returns the bytes written. In
// entropy-coded data about one byte in 256 is FF: memchr + memcpy of the runs between them (measured a little
// faster than a word-at-a-time copy that tests for FF).
std::size_t unstuff(const std::uint8_t* data, std::size_t size, std::size_t pos, std::uint8_t* clean,
                    std::vector<Segment>& segs) {
  std::size_t n = 0;
  Segment s;
  s.src_begin = pos;
  while (true) {
    const void* hit = pos < size ? std::memchr(data + pos, 0xFF, size - pos) : nullptr;
    const std::size_t run = hit ? std::size_t(static_cast<const std::uint8_t*>(hit) - (data + pos)) : size - pos;
    std::memcpy(clean + n, data + pos, run);
    n += run;
    pos += run;
    if (!hit) {  // the data end without a marker
      s.src_end = pos;
      s.marker = -1;
      break;
    }
    std::size_t q = pos + 1;
    while (q < size && data[q] == 0xFF) ++q;  // fill bytes
    if (q >= size) {
      s.src_end = pos;
      s.marker = -1;
      break;
    }
    if (data[q] == 0x00) {  // a stuffed FF
      clean[n++] = 0xFF;
      pos = q + 1;
      continue;
    }
    s.src_end = pos;
    s.marker = data[q];
    if (data[q] < 0xD0 || data[q] > 0xD7) break;  // EOI or another marker: the scan's data end here
    s.end = n;
    segs.push_back(s);
    s = Segment{};
    s.begin = n;
    s.src_begin = q + 1;
    pos = q + 1;
  }
  s.end = n;
  segs.push_back(s);
  return n;
}

}  // namespace

FrameInfo probe(const std::uint8_t* data, std::size_t size) {
  std::size_t pos = 0;
  if (size < 4 || data[0] != 0xFF || data[1] != 0xD8) fail(0, "no SOI marker (FFD8)");
  pos = 2;
  while (pos + 4 <= size) {
    if (data[pos] != 0xFF) fail(pos, "expected a marker");
    const int m = data[pos + 1];
    if (m == 0xFF) { ++pos; continue; }
    const std::size_t len = std::size_t(data[pos + 2]) << 8 | data[pos + 3];
    if (len < 2 || pos + 2 + len > size) fail(pos, "segment length runs past the end");
    if (m == 0xC3) {
      if (len < 8) fail(pos, "SOF3 segment too short");
      FrameInfo f;
      f.precision = data[pos + 4];
      f.rows = data[pos + 5] << 8 | data[pos + 6];
      f.columns = data[pos + 7] << 8 | data[pos + 8];
      f.components = data[pos + 9];
      return f;
    }
    if ((m >= 0xC0 && m <= 0xCF) && m != 0xC4 && m != 0xC8 && m != 0xCC) {
      char buf[96];
      std::snprintf(buf, sizeof buf, "frame marker FF%02X is not lossless process 14 (SOF3, FFC3)", m);
      fail(pos, buf);
    }
    pos += 2 + len;
  }
  fail(pos, "no SOF3 frame header");
}

void decode(const std::uint8_t* data, std::size_t size, int rows, int columns, int components, int bytes_per_sample,
            std::uint8_t* out) {
  if (bytes_per_sample != 1 && bytes_per_sample != 2) fail(0, "BitsAllocated must be 8 or 16 for JPEG lossless");
  std::array<Huffman, 4> huffman;
  FrameInfo frame;
  std::vector<int> frame_ids;
  int restart_interval = 0;
  if (size < 4 || data[0] != 0xFF || data[1] != 0xD8) fail(0, "no SOI marker (FFD8)");
  std::size_t pos = 2;
  while (true) {
    if (pos + 4 > size) fail(pos, "stream ends before the scan (SOS)");
    if (data[pos] != 0xFF) fail(pos, "expected a marker");
    const int m = data[pos + 1];
    if (m == 0xFF) { ++pos; continue; }
    const std::size_t len = std::size_t(data[pos + 2]) << 8 | data[pos + 3];
    if (len < 2 || pos + 2 + len > size) fail(pos, "segment length runs past the end");
    const std::uint8_t* seg = data + pos + 4;
    const std::size_t seg_len = len - 2;
    if (m == 0xC4) {  // DHT: one or more tables
      std::size_t k = 0;
      while (k < seg_len) {
        if (seg_len - k < 17) fail(pos, "DHT segment too short");
        const int tc_th = seg[k];
        if ((tc_th & 0x0F) > 3) fail(pos, "DHT table id above 3");
        std::size_t n = 0;
        for (int i = 0; i < 16; ++i) n += seg[k + 1 + i];
        if (n > 256 || seg_len - k - 17 < n) fail(pos, "DHT lists more values than it holds");
        Huffman& h = huffman[std::size_t(tc_th & 0x0F)];
        h.defined = true;
        std::memcpy(h.counts.data(), seg + k + 1, 16);
        h.values.assign(seg + k + 17, seg + k + 17 + n);
        k += 17 + n;
      }
    } else if (m == 0xC3) {
      if (seg_len < 6) fail(pos, "SOF3 segment too short");
      frame.precision = seg[0];
      frame.rows = seg[1] << 8 | seg[2];
      frame.columns = seg[3] << 8 | seg[4];
      frame.components = seg[5];
      if (seg_len < 6 + 3 * std::size_t(frame.components)) fail(pos, "SOF3 lists more components than it holds");
      frame_ids.clear();
      for (int c = 0; c < frame.components; ++c) {
        frame_ids.push_back(seg[6 + 3 * c]);
        if (seg[7 + 3 * c] != 0x11) fail(pos, "subsampled components are not supported in lossless streams here");
      }
      if (frame.precision < 2 || frame.precision > 16) fail(pos, "precision " + std::to_string(frame.precision) + " outside 2..16");
      if (frame.rows != rows || frame.columns != columns || frame.components != components)
        fail(pos, "frame " + std::to_string(frame.rows) + "×" + std::to_string(frame.columns) + "×" +
                      std::to_string(frame.components) + " does not match the dataset's " + std::to_string(rows) + "×" +
                      std::to_string(columns) + "×" + std::to_string(components));
      if (frame.precision > 8 * bytes_per_sample)
        fail(pos, "precision " + std::to_string(frame.precision) + " does not fit " + std::to_string(8 * bytes_per_sample) + "-bit samples");
    } else if (m == 0xDD) {
      if (seg_len < 2) fail(pos, "DRI segment too short");
      restart_interval = seg[0] << 8 | seg[1];
    } else if (m == 0xDA) {
      break;  // the scan
    } else if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) {
      char buf[96];
      std::snprintf(buf, sizeof buf, "frame marker FF%02X is not lossless process 14 (SOF3, FFC3)", m);
      fail(pos, buf);
    } else if (m == 0xD9) {
      fail(pos, "EOI before any scan");
    }
    pos += 2 + len;
  }
  if (frame.components == 0) fail(pos, "SOS before the SOF3 frame header");
  // SOS (its length was checked against the stream above)
  const std::size_t len = std::size_t(data[pos + 2]) << 8 | data[pos + 3];
  const std::uint8_t* seg = data + pos + 4;
  const int ns = seg[0];
  if (ns != frame.components || len < std::size_t(6 + 2 * ns))
    fail(pos, "the scan must hold every component (" + std::to_string(frame.components) + "), it lists " + std::to_string(ns));
  std::array<std::unique_ptr<Table>, 4> tables;
  std::vector<const Table*> comp_tables(static_cast<std::size_t>(ns));
  for (int c = 0; c < ns; ++c) {
    const int id = seg[1 + 2 * c], th = seg[2 + 2 * c] >> 4;
    if (th > 3 || !huffman[std::size_t(th)].defined) fail(pos, "scan component uses an undefined Huffman table");
    if (id != frame_ids[std::size_t(c)]) fail(pos, "scan components out of the frame's order");
    if (!tables[std::size_t(th)]) tables[std::size_t(th)] = std::make_unique<Table>(build(huffman[std::size_t(th)]));
    comp_tables[std::size_t(c)] = tables[std::size_t(th)].get();
  }
  const int predictor = seg[1 + 2 * ns];
  const int pt = seg[3 + 2 * ns] & 0x0F;
  if (predictor < 1 || predictor > 7) fail(pos, "predictor " + std::to_string(predictor) + " outside 1..7");
  if (pt >= frame.precision) fail(pos, "point transform above the precision");
  const std::size_t W = std::size_t(columns), C = std::size_t(components);
  // Restarts are supported at line starts (what encoders of lossless JPEG write): an interval of whole lines.
  if (restart_interval && restart_interval % columns)
    fail(pos, "restart interval of " + std::to_string(restart_interval) + " samples is not a whole number of lines");

  // The entropy-coded data, unstuffed, then zero padding that no line can read past: a line consumes at most
  // 32 bits per sample and is checked at its end, and the refill reads 8 bytes ahead.
  const std::size_t data_start = pos + 2 + len;
  const std::size_t pad = 4 * W * C + 64;
  const std::size_t capacity = size - data_start + pad;
  std::unique_ptr<std::uint8_t[]> clean(new std::uint8_t[capacity]);
  std::vector<Segment> segments;
  const std::size_t used = unstuff(data, size, data_start, clean.get(), segments);
  std::memset(clean.get() + used, 0, capacity - used);

  Scan sc;
  sc.tables = comp_tables.data();
  sc.predictor = predictor;
  sc.first = 1 << (frame.precision - pt - 1);
  sc.pt = pt;
  sc.rows = std::size_t(rows);
  sc.W = W;
  sc.C = C;
  sc.lines_per_interval = restart_interval ? std::size_t(restart_interval) / W : 0;
  sc.clean = clean.get();
  sc.segments = &segments;
  const std::size_t n = std::size_t(rows) * W * C;
  if (bytes_per_sample == 1) return decode_scan_typed(sc, out);
  if (reinterpret_cast<std::uintptr_t>(out) % alignof(std::uint16_t) == 0)
    return decode_scan_typed(sc, reinterpret_cast<std::uint16_t*>(out));
  std::vector<std::uint16_t> aligned(n);  // a misaligned destination: decode aside, then copy
  decode_scan_typed(sc, aligned.data());
  std::memcpy(out, aligned.data(), n * 2);
}

}  // namespace cxrfast::jpegll
