// JPEG Lossless process 14 decoder (see jpeg_lossless.h).
#include "jpeg_lossless.h"

#include <array>
#include <cstdio>
#include <cstring>
#include <vector>

namespace cxrfast::jpegll {
namespace {

[[noreturn]] void fail(std::size_t offset, const std::string& what) {
  throw DecodeError("JPEG lossless stream, byte " + std::to_string(offset) + ": " + what);
}

constexpr int kLutBits = 9;

struct Huffman {
  bool defined = false;
  std::array<int, 18> maxcode{};  // per code length 1..16, −1 when no code of that length
  std::array<int, 17> valptr{}, mincode{};
  std::vector<std::uint8_t> values;
  // codes of ≤ kLutBits bits, by their next kLutBits bits: (length << 8 | symbol), 0 when longer
  std::array<std::uint16_t, 1 << kLutBits> lut{};
};

Huffman build(const std::uint8_t* bits, const std::uint8_t* vals, std::size_t n_vals) {
  Huffman h;
  h.defined = true;
  h.values.assign(vals, vals + n_vals);
  int code = 0, k = 0;
  for (int len = 1; len <= 16; ++len) {
    const int count = bits[len - 1];
    if (count) {
      h.valptr[len] = k;
      h.mincode[len] = code;
      for (int c = 0; c < count && len <= kLutBits; ++c) {
        if (std::size_t(k + c) >= n_vals) break;
        const int first = (code + c) << (kLutBits - len), last = (code + c + 1) << (kLutBits - len);
        for (int e = first; e < last && e < (1 << kLutBits); ++e)
          h.lut[std::size_t(e)] = std::uint16_t(len << 8 | vals[k + c]);
      }
      code += count;
      k += count;
      h.maxcode[len] = code - 1;
    } else {
      h.maxcode[len] = -1;
    }
    code <<= 1;
  }
  h.maxcode[17] = 0x7FFFFFFF;
  return h;
}

// MSB-first bit buffer over entropy-coded data: byte stuffing (FF00) removed, and it never loads past a
// marker. The decoder consumes exactly the bits the samples need, so needing a bit beyond the data or a
// marker means the stream is truncated or corrupt: an error, never zeros (a silently wrong image).
class Bits {
 public:
  Bits(const std::uint8_t* d, std::size_t n, std::size_t pos) : data_(d), size_(n), pos_(pos) {}

  // The next n (≤ 32) bits, zero-padded past the end of what is available; consume() checks.
  std::uint32_t peek(int n) {
    if (count_ < n) refill();
    return std::uint32_t(acc_ >> (64 - n));
  }
  void consume(int n) {
    if (n > count_) fail(pos_, "entropy-coded data ends before every sample is decoded");
    acc_ <<= n;
    count_ -= n;
  }
  int bits(int n) {
    const std::uint32_t v = peek(n);
    consume(n);
    return int(v);
  }
  // At a restart: drop the partial byte, expect RSTn next.
  void restart(int expected) {
    acc_ = 0;
    count_ = 0;
    std::size_t at = stopped_ ? marker_ : pos_;
    while (at < size_ && data_[at] == 0xFF && at + 1 < size_ && data_[at + 1] == 0xFF) ++at;  // fill bytes
    if (at + 1 >= size_ || data_[at] != 0xFF) fail(at, "restart marker expected");
    const int m = data_[at + 1];
    if (m != 0xD0 + expected) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "expected RST%d, found FF%02X", expected, m);
      fail(at, buf);
    }
    pos_ = at + 2;
    stopped_ = false;
  }
  std::size_t pos() const { return pos_; }

 private:
  void refill() {
    while (count_ <= 56 && !stopped_) {
      if (pos_ >= size_) {
        stopped_ = true;
        marker_ = pos_;
        break;
      }
      const std::uint8_t b = data_[pos_];
      if (b == 0xFF) {
        std::size_t q = pos_ + 1;
        while (q < size_ && data_[q] == 0xFF) ++q;  // fill bytes
        if (q >= size_ || data_[q] != 0x00) {  // a marker (or the end): stop loading here
          stopped_ = true;
          marker_ = pos_;
          break;
        }
        pos_ = q + 1;
      } else {
        ++pos_;
      }
      acc_ |= std::uint64_t(b) << (56 - count_);
      count_ += 8;
    }
  }
  const std::uint8_t* data_;
  std::size_t size_, pos_;
  std::uint64_t acc_ = 0;
  int count_ = 0;
  bool stopped_ = false;
  std::size_t marker_ = 0;
};

int decode_symbol(Bits& b, const Huffman& h) {
  const std::uint16_t e = h.lut[b.peek(kLutBits)];
  if (e) {
    b.consume(e >> 8);
    return e & 0xFF;
  }
  const std::uint32_t window = b.peek(16);  // a code longer than kLutBits bits
  int len = kLutBits + 1, code = 0;
  for (; len <= 16; ++len) {
    code = int(window >> (16 - len));
    if (code <= h.maxcode[len]) break;
  }
  if (len > 16) fail(b.pos(), "invalid Huffman code");
  const int idx = h.valptr[len] + code - h.mincode[len];
  if (idx < 0 || std::size_t(idx) >= h.values.size()) fail(b.pos(), "Huffman code outside its table");
  b.consume(len);
  return h.values[std::size_t(idx)];
}

int residual(Bits& b, int ssss) {
  if (ssss == 0) return 0;
  if (ssss == 16) return 32768;  // T.81 H.1.2.2: no extra bits
  if (ssss > 16) fail(b.pos(), "difference category above 16");
  int v = b.bits(ssss);
  if (v < (1 << (ssss - 1))) v -= (1 << ssss) - 1;
  return v;
}

struct Component {
  int id = 0, table = 0;
};

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
  std::array<Huffman, 4> tables;
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
        tables[tc_th & 0x0F] = build(seg + k + 1, seg + k + 17, n);
        k += 17 + n;
      }
    } else if (m == 0xC3) {
      if (seg_len < 6) fail(pos, "SOF3 segment too short");
      frame.precision = seg[0];
      frame.rows = seg[1] << 8 | seg[2];
      frame.columns = seg[3] << 8 | seg[4];
      frame.components = seg[5];
      if (seg_len < 6 + 3 * std::size_t(frame.components)) fail(pos, "SOF3 lists more components than it holds");
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
  if (pos + 4 > size) fail(pos, "stream ends in the SOS header");
  // SOS
  const std::size_t len = std::size_t(data[pos + 2]) << 8 | data[pos + 3];
  const std::uint8_t* seg = data + pos + 4;
  const int ns = seg[0];
  if (ns != frame.components || len < std::size_t(6 + 2 * ns))
    fail(pos, "the scan must hold every component (" + std::to_string(frame.components) + "), it lists " + std::to_string(ns));
  std::vector<Component> comps(static_cast<std::size_t>(ns));
  for (int c = 0; c < ns; ++c) {
    comps[std::size_t(c)].id = seg[1 + 2 * c];
    comps[std::size_t(c)].table = seg[2 + 2 * c] >> 4;
    if (comps[std::size_t(c)].table > 3 || !tables[std::size_t(comps[std::size_t(c)].table)].defined)
      fail(pos, "scan component uses an undefined Huffman table");
    if (comps[std::size_t(c)].id != frame_ids[std::size_t(c)]) fail(pos, "scan components out of the frame's order");
  }
  const int predictor = seg[1 + 2 * ns];
  const int pt = seg[3 + 2 * ns] & 0x0F;
  if (predictor < 1 || predictor > 7) fail(pos, "predictor " + std::to_string(predictor) + " outside 1..7");
  if (pt >= frame.precision) fail(pos, "point transform above the precision");
  Bits bits(data, size, pos + 2 + len);
  const int P = frame.precision;
  const std::size_t W = std::size_t(columns), C = std::size_t(components);
  // Restarts are supported at line starts (what encoders of lossless JPEG write): an interval of whole lines.
  if (restart_interval && restart_interval % columns)
    fail(pos, "restart interval of " + std::to_string(restart_interval) + " samples is not a whole number of lines");
  const std::size_t lines_per_interval = restart_interval ? std::size_t(restart_interval) / W : 0;
  std::vector<int> prev(W * C), cur(W * C);
  int next_rst = 0;
  for (std::size_t y = 0; y < std::size_t(rows); ++y) {
    bool first_line = y == 0;
    if (lines_per_interval && y > 0 && y % lines_per_interval == 0) {
      bits.restart(next_rst);  // T.81 H.1.2: prediction restarts as at the top of the scan
      next_rst = (next_rst + 1) & 7;
      first_line = true;
    }
    for (std::size_t x = 0; x < W; ++x) {
      for (std::size_t c = 0; c < C; ++c) {
        const int ssss = decode_symbol(bits, tables[std::size_t(comps[c].table)]);
        const int diff = residual(bits, ssss);
        int pred;
        if (first_line) {
          pred = x == 0 ? 1 << (P - pt - 1) : cur[(x - 1) * C + c];  // 2^(P−Pt−1), then Ra
        } else if (x == 0) {
          pred = prev[c];  // the first column: Rb
        } else {
          const int ra = cur[(x - 1) * C + c], rb = prev[x * C + c], rc = prev[(x - 1) * C + c];
          switch (predictor) {
            case 1: pred = ra; break;
            case 2: pred = rb; break;
            case 3: pred = rc; break;
            case 4: pred = ra + rb - rc; break;
            case 5: pred = ra + ((rb - rc) >> 1); break;
            case 6: pred = rb + ((ra - rc) >> 1); break;
            default: pred = (ra + rb) >> 1; break;
          }
        }
        cur[x * C + c] = (pred + diff) & 0xFFFF;  // modulo 2^16 (T.81 H.2.1)
      }
    }
    for (std::size_t k = 0; k < W * C; ++k) {
      const std::uint32_t v = std::uint32_t(cur[k]) << pt;
      std::uint8_t* dst = out + (y * W * C + k) * std::size_t(bytes_per_sample);
      if (bytes_per_sample == 1) {
        *dst = std::uint8_t(v);
      } else {
        const std::uint16_t v16 = std::uint16_t(v);
        std::memcpy(dst, &v16, 2);
      }
    }
    std::swap(prev, cur);
  }
}

}  // namespace cxrfast::jpegll
