// DICOM Part 10 parser and native pixel decoder (see dicom.h). No torch or Python headers.
#include "dicom.h"

#include "jpeg_lossless.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <sstream>

#ifdef CXRFAST_WITH_ZLIB
#include <zlib.h>
#endif

namespace cxrfast::dicom {
namespace {

constexpr std::uint32_t kUndefined = 0xFFFFFFFFu;
constexpr std::uint32_t kItem = 0xFFFEE000u, kItemEnd = 0xFFFEE00Du, kSeqEnd = 0xFFFEE0DDu;
constexpr std::uint32_t kPixelData = 0x7FE00010u;
constexpr int kMaxDepth = 64;  // nested sequences; deeper input is rejected, not recursed into

const char* const kExplicitLE = "1.2.840.10008.1.2.1";
const char* const kImplicitLE = "1.2.840.10008.1.2";
const char* const kExplicitBE = "1.2.840.10008.1.2.2";
const char* const kDeflated = "1.2.840.10008.1.2.1.99";

// Bytes from the file shown in a message: printable ASCII as is, anything else as \xNN.
std::string printable(const std::string& raw) {
  std::string out;
  for (unsigned char c : raw) {
    if (c >= 0x20 && c < 0x7F) {
      out += char(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      out += buf;
    }
  }
  return out;
}

std::string tag_str(std::uint32_t tag) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "(%04X,%04X)", tag >> 16, tag & 0xFFFFu);
  return buf;
}

[[noreturn]] void fail(std::uint32_t tag, std::size_t offset, const std::string& what) {
  std::ostringstream os;
  os << "tag " << tag_str(tag) << " at byte " << offset << ": " << what;
  throw ParseError(os.str());
}

// VRs whose explicit-VR header has 2 reserved bytes and a 32-bit length
bool long_vr(char a, char b) {
  static const char* const kLong[] = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"};
  for (const char* v : kLong)
    if (v[0] == a && v[1] == b) return true;
  return false;
}

bool valid_vr(char a, char b) { return a >= 'A' && a <= 'Z' && b >= 'A' && b <= 'Z'; }

// One of the VRs of PS3.5 6.2.
bool known_vr(char a, char b) {
  static const char* const kVrs[] = {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB",
                                     "OD", "OF", "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM",
                                     "UC", "UI", "UL", "UN", "UR", "US", "UT", "UV"};
  for (const char* v : kVrs)
    if (v[0] == a && v[1] == b) return true;
  return false;
}

// Whether the first 8 bytes (size >= 8) of a file without preamble, "DICM" and file meta group can start a
// dataset: a standard (even) group in either byte order, then a known explicit VR or an implicit length that
// fits the file. A PNG (group 5089), a JPEG (D8FF), a text or a ZIP file fail it: they are "not DICOM", rather
// than a DICOM file with an absurd element length.
bool plausible_first_element(const std::uint8_t* d, std::size_t size) {
  const std::uint32_t le_group = std::uint32_t(d[0] | d[1] << 8), be_group = std::uint32_t(d[0] << 8 | d[1]);
  const bool le_ok = le_group % 2 == 0 && le_group <= 0x7FE0u, be_ok = be_group % 2 == 0 && be_group <= 0x7FE0u;
  if (!le_ok && !be_ok) return false;
  if (known_vr(char(d[4]), char(d[5]))) return true;
  const std::uint32_t length = std::uint32_t(d[4]) | std::uint32_t(d[5]) << 8 | std::uint32_t(d[6]) << 16 |
                               std::uint32_t(d[7]) << 24;  // implicit VR: little endian only
  return le_ok && (length == 0xFFFFFFFFu || length <= size - 8);
}

struct Reader {
  const std::uint8_t* data;
  std::size_t size;
  bool big_endian = false;
  bool explicit_vr = true;

  void need(std::size_t pos, std::size_t n, std::uint32_t tag, const char* what) const {
    if (pos > size || n > size - pos) {
      std::ostringstream os;
      os << what << " needs " << n << " bytes but the file ends at byte " << size << " (truncated or a lying length)";
      fail(tag, pos, os.str());
    }
  }
  // The value of the element whose header starts at `start` (its value at `pos`, `n` bytes): the message
  // gives the element's own offset, then where its value starts and ends, so the numbers agree.
  void need_value(std::size_t start, std::size_t pos, std::size_t n, std::uint32_t tag, const char* what) const {
    if (pos > size || n > size - pos) {
      std::ostringstream os;
      os << what << " needs " << n << " bytes from byte " << pos << " (to byte " << pos + n
         << ") but the file ends at byte " << size << " (truncated or a lying length)";
      fail(tag, start, os.str());
    }
  }
  std::uint16_t u16(std::size_t pos) const {
    return big_endian ? std::uint16_t(data[pos] << 8 | data[pos + 1]) : std::uint16_t(data[pos] | data[pos + 1] << 8);
  }
  std::uint32_t u32(std::size_t pos) const {
    return big_endian ? (std::uint32_t(data[pos]) << 24 | std::uint32_t(data[pos + 1]) << 16 |
                         std::uint32_t(data[pos + 2]) << 8 | data[pos + 3])
                      : (std::uint32_t(data[pos]) | std::uint32_t(data[pos + 1]) << 8 |
                         std::uint32_t(data[pos + 2]) << 16 | std::uint32_t(data[pos + 3]) << 24);
  }
  std::uint64_t u64(std::size_t pos) const {
    const std::uint64_t a = u32(pos), b = u32(pos + 4);
    return big_endian ? (a << 32 | b) : (b << 32 | a);
  }
  std::uint32_t tag_at(std::size_t pos) const { return std::uint32_t(u16(pos)) << 16 | u16(pos + 2); }
};

struct Header {
  std::uint32_t tag;
  char vr[2];
  std::uint32_t length;
  std::size_t value;  // offset of the value
  std::size_t start;  // offset of the element (its tag)
};

void need_value(const Reader& r, const Header& h, const char* what) { r.need_value(h.start, h.value, h.length, h.tag, what); }

// Element header at pos (items and delimiters are always tag + 32-bit length, whatever the syntax).
Header read_header(const Reader& r, std::size_t pos) {
  r.need(pos, 8, 0, "an element header");
  Header h{r.tag_at(pos), {0, 0}, 0, 0, pos};
  if ((h.tag >> 16) == 0xFFFEu || !r.explicit_vr) {
    h.length = r.u32(pos + 4);
    h.value = pos + 8;
    return h;
  }
  h.vr[0] = char(r.data[pos + 4]);
  h.vr[1] = char(r.data[pos + 5]);
  if (!valid_vr(h.vr[0], h.vr[1])) fail(h.tag, pos, "invalid VR bytes in an explicit-VR dataset");
  if (long_vr(h.vr[0], h.vr[1])) {
    r.need(pos, 12, h.tag, "a long-VR element header");
    h.length = r.u32(pos + 8);
    h.value = pos + 12;
  } else {
    h.length = r.u16(pos + 6);
    h.value = pos + 8;
  }
  return h;
}

std::size_t skip_undefined(const Reader& r, std::size_t pos, std::uint32_t tag, int depth);
std::size_t skip_element(const Reader& r, const Header& e, std::size_t pos, int depth);

// Skip the items of an undefined-length sequence starting at pos; returns the offset after its delimiter.
std::size_t skip_undefined(const Reader& r, std::size_t pos, std::uint32_t tag, int depth) {
  if (depth > kMaxDepth) fail(tag, pos, "sequences nested deeper than 64 levels");
  while (true) {
    Header item = read_header(r, pos);
    if (item.tag == kSeqEnd) return item.value;
    if (item.tag != kItem) fail(item.tag, pos, "expected an item (FFFE,E000) or a sequence delimiter in " + tag_str(tag));
    if (item.length != kUndefined) {
      need_value(r, item, "an item");
      pos = item.value + item.length;
      continue;
    }
    // undefined-length item: elements until the item delimiter
    pos = item.value;
    while (true) {
      Header e = read_header(r, pos);
      if (e.tag == kItemEnd) {
        pos = e.value;
        break;
      }
      pos = skip_element(r, e, pos, depth + 1);
    }
  }
}

std::string str_value(const Reader& r, const Header& h) {
  std::string s(reinterpret_cast<const char*>(r.data + h.value), h.length);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\0')) s.pop_back();
  std::size_t start = s.find_first_not_of(' ');
  return start == std::string::npos ? std::string() : s.substr(start);
}

std::vector<double> numbers(const Reader& r, const Header& h) {
  std::vector<double> out;
  std::string s = str_value(r, h);
  std::stringstream ss(s);
  std::string part;
  while (std::getline(ss, part, '\\')) {
    try {
      std::size_t used = 0;
      double v = std::stod(part, &used);
      out.push_back(v);
    } catch (const std::exception&) {
      fail(h.tag, h.value, "not a number: '" + printable(part) + "'");
    }
  }
  return out;
}

int us_value(const Reader& r, const Header& h) {
  if (h.length < 2) fail(h.tag, h.value, "US value shorter than 2 bytes");
  return r.u16(h.value);
}

int is_value(const Reader& r, const Header& h) {
  std::vector<double> v = numbers(r, h);
  if (v.empty()) fail(h.tag, h.value, "empty integer string");
  // (a double outside int's range, or NaN, would make the cast undefined)
  if (!(v[0] >= -2147483648.0 && v[0] <= 2147483647.0)) fail(h.tag, h.value, "integer string out of range");
  return int(v[0]);
}

// (7FE0,0001) Extended Offset Table, (7FE0,0002) its lengths: 64-bit unsigned values (OV).
std::vector<std::uint64_t> u64_values(const Reader& r, const Header& h) {
  if (h.length % 8) fail(h.tag, h.value, "length " + std::to_string(h.length) + " is not a multiple of 8 (64-bit values)");
  std::vector<std::uint64_t> out(h.length / 8);
  for (std::size_t k = 0; k < out.size(); ++k) out[k] = r.u64(h.value + 8 * k);
  return out;
}

bool is_vr(const Header& h, const char* vr) { return h.vr[0] == vr[0] && h.vr[1] == vr[1]; }

// Skips element e (its header at pos); returns the offset after it. An undefined length is only allowed on
// a sequence: SQ, any element of an implicit-VR dataset, or UN (then implicit VR little endian, PS3.5 6.2.2).
std::size_t skip_element(const Reader& r, const Header& e, std::size_t pos, int depth) {
  if (e.length != kUndefined) {
    need_value(r, e, "an element value");
    return e.value + e.length;
  }
  if (r.explicit_vr && !is_vr(e, "SQ") && !is_vr(e, "UN")) fail(e.tag, pos, "undefined length on a non-sequence element");
  Reader inner = r;
  if (r.explicit_vr && is_vr(e, "UN")) inner.explicit_vr = false, inner.big_endian = false;
  return skip_undefined(inner, e.value, e.tag, depth);
}

constexpr std::uint32_t kModalityLutSequence = 0x00283000u, kVoiLutSequence = 0x00283010u;
constexpr std::uint32_t kLutDescriptor = 0x00283002u, kLutExplanation = 0x00283003u, kModalityLutType = 0x00283004u,
                        kLutData = 0x00283006u;

// The elements of one LUT item that matter, as located in it.
struct LutItem {
  bool has_descriptor = false, has_data = false;
  Header descriptor{}, data{};
  std::string explanation, type;
};

// Converts a LUT item (the index-th of sequence `seq`, its item tag at item_pos) into a Lut. pydicom's
// readings: the first descriptor value is always unsigned (0 means 65536 entries), the second is signed
// when the VR says SS or, with an implicit / ambiguous VR, when PixelRepresentation is 1 (resolved in
// parse(), after the walk); LUT Data (US or OW) holds 16-bit words in the dataset's byte order.
Lut make_lut(const Reader& r, const LutItem& it, std::uint32_t seq, std::size_t item_pos, int index) {
  const std::string where = " in item " + std::to_string(index) + " of " + tag_str(seq);
  if (!it.has_descriptor) fail(seq, item_pos, "no LUT Descriptor (0028,3002)" + where);
  if (!it.has_data) fail(seq, item_pos, "no LUT Data (0028,3006)" + where);
  const Header& d = it.descriptor;
  if (d.length != 6)
    fail(d.tag, d.value, "LUT Descriptor of " + std::to_string(d.length) + " bytes" + where + ", 3 values of 2 bytes expected");
  Lut lut;
  const std::size_t entries = r.u16(d.value) == 0 ? 65536 : r.u16(d.value);  // PS3.3 C.11.1.1.1: 0 means 2^16
  lut.first_mapped_raw = r.u16(d.value + 2);
  lut.bits = r.u16(d.value + 4);
  lut.sign = !r.explicit_vr ? Lut::Sign::Ambiguous
             : is_vr(d, "US") ? Lut::Sign::Unsigned
             : is_vr(d, "SS") ? Lut::Sign::Signed
                              : Lut::Sign::Ambiguous;
  if (lut.bits < 1 || lut.bits > 16)
    fail(d.tag, d.value, "LUT Descriptor gives " + std::to_string(lut.bits) + " bits per entry" + where + ", 1..16 expected");
  lut.explanation = it.explanation;
  lut.type = it.type;
  const Header& v = it.data;
  const std::size_t n = v.length;
  lut.data.resize(entries);
  if (lut.bits <= 8 && (n == entries || (entries % 2 && n == entries + 1))) {
    // 8-bit entries packed two per 16-bit word ("stored as with Bits Allocated 8", PS3.3 C.11.1.1.1): in a
    // big endian dataset the words, and so the bytes of each pair, are swapped. (pydicom reads only the
    // one-entry-per-word layout below.)
    for (std::size_t k = 0; k < entries; ++k) {
      std::size_t at = r.big_endian ? (k ^ 1u) : k;
      if (at >= n) at = k;
      lut.data[k] = r.data[v.value + at];
    }
  } else if (n / 2 >= entries) {
    for (std::size_t k = 0; k < entries; ++k) {
      lut.data[k] = r.u16(v.value + 2 * k);
      // an 8-bit table holds uint8 entries (pydicom's dtype): a larger word is a corrupt table, not a value
      if (lut.bits <= 8 && lut.data[k] > 0xFF)
        fail(v.tag, v.value + 2 * k, "LUT Data entry " + std::to_string(k) + " is " + std::to_string(lut.data[k]) +
                                         where + ", more than the " + std::to_string(lut.bits) + " bits per entry of its LUT Descriptor");
    }
  } else {
    fail(v.tag, v.value, "LUT Data holds " + std::to_string(n) + " bytes" + where + ", too few for the " +
                             std::to_string(entries) + " entries of " + std::to_string(lut.bits) +
                             " bits its LUT Descriptor declares");
  }
  return lut;
}

// Reads the items of the Modality LUT Sequence or VOI LUT Sequence h (its header at pos) into p; returns
// the offset after the sequence. Defined or undefined lengths, for the sequence and each item.
std::size_t read_lut_sequence(const Reader& r, const Header& h, std::size_t pos, Parsed& p) {
  const bool modality = h.tag == kModalityLutSequence;
  (modality ? p.has_modality_lut_sequence : p.has_voi_lut_sequence) = true;
  Reader in = r;
  if (r.explicit_vr && is_vr(h, "UN")) {
    in.explicit_vr = false, in.big_endian = false;  // a UN sequence is implicit VR little endian (PS3.5 6.2.2)
  } else if (r.explicit_vr && !is_vr(h, "SQ")) {
    fail(h.tag, pos, "VR " + printable(std::string(h.vr, 2)) + " where a sequence (SQ) is required");
  }
  const bool undefined = h.length == kUndefined;
  if (!undefined) need_value(r, h, "a sequence");
  const std::size_t end = undefined ? r.size : h.value + h.length;
  std::size_t at = h.value;
  for (int index = 0;; ++index) {
    if (!undefined && at == end) return at;
    const Header item = read_header(in, at);
    if (undefined && item.tag == kSeqEnd) return item.value;
    if (item.tag != kItem)
      fail(item.tag, at, std::string("expected an item (FFFE,E000)") + (undefined ? " or a sequence delimiter" : "") +
                             " in " + tag_str(h.tag));
    const bool item_undefined = item.length == kUndefined;
    if (item.value > end || (!item_undefined && item.length > end - item.value))
      fail(item.tag, at, "item runs past the end of " + tag_str(h.tag));
    const std::size_t item_end = item_undefined ? end : item.value + item.length;
    LutItem li;
    std::size_t e_pos = item.value;
    while (item_undefined || e_pos < item_end) {
      const Header e = read_header(in, e_pos);
      if (item_undefined && e.tag == kItemEnd) {
        e_pos = e.value;
        if (e_pos > end) fail(e.tag, e_pos - 8, "item runs past the end of " + tag_str(h.tag));
        break;
      }
      const std::size_t next = skip_element(in, e, e_pos, 2);
      if (next > item_end) fail(e.tag, e_pos, "element runs past the end of its item in " + tag_str(h.tag));
      const bool lut_element = e.tag == kLutDescriptor || e.tag == kLutData || e.tag == kLutExplanation || e.tag == kModalityLutType;
      if (lut_element && e.length == kUndefined) fail(e.tag, e_pos, "undefined length in " + tag_str(h.tag));
      if (e.tag == kLutDescriptor) li.descriptor = e, li.has_descriptor = true;
      if (e.tag == kLutData) li.data = e, li.has_data = true;
      if (e.tag == kLutExplanation) li.explanation = str_value(in, e);
      if (e.tag == kModalityLutType) li.type = str_value(in, e);
      e_pos = next;
    }
    Lut lut = make_lut(in, li, h.tag, at, index);
    if (!modality) {
      p.voi_luts.push_back(std::move(lut));
    } else if (index == 0) {  // one item by the standard; pydicom applies the first
      p.modality_lut = std::move(lut);
      p.has_modality_lut = true;
    }
    at = item_undefined ? e_pos : item_end;
  }
}

// Records the pixel data of element h; returns the offset just after it.
std::size_t read_pixel_data(const Reader& r, const Header& h, Parsed& p) {
  p.has_pixel_data = true;
  p.pixel_element = h.start;
  p.pixel_vr_ow = h.vr[0] == 'O' && h.vr[1] == 'W';
  if (h.length != kUndefined) {
    need_value(r, h, "native pixel data");
    p.pixel_offset = h.value;
    p.pixel_length = h.length;
    return h.value + h.length;
  }
  p.encapsulated = true;
  std::size_t pos = h.value;
  bool first = true;
  while (true) {
    Header item = read_header(r, pos);
    if (item.tag == kSeqEnd) return item.value;
    if (item.tag != kItem || item.length == kUndefined)
      fail(item.tag, pos, "encapsulated pixel data: expected a defined-length item or the sequence delimiter");
    need_value(r, item, "a pixel data fragment");
    if (first) {  // the basic offset table (possibly empty)
      if (item.length % 4) fail(item.tag, pos, "basic offset table length is not a multiple of 4");
      for (std::size_t k = 0; k < item.length; k += 4) p.basic_offset_table.push_back(r.u32(item.value + k));
      first = false;
    } else {
      p.fragments.emplace_back(item.value, item.length);
    }
    pos = item.value + item.length;
  }
}

void on_element(const Reader& r, const Header& h, Parsed& p) {
  switch (h.tag) {
    case 0x00280010u: p.rows = us_value(r, h); break;
    case 0x00280011u: p.columns = us_value(r, h); break;
    case 0x00280100u: p.bits_allocated = us_value(r, h); break;
    case 0x00280101u: p.bits_stored = us_value(r, h); break;
    case 0x00280102u: p.high_bit = us_value(r, h); break;
    case 0x00280103u: p.pixel_representation = us_value(r, h); break;
    case 0x00280002u: p.samples_per_pixel = us_value(r, h); break;
    case 0x00280006u: p.planar_configuration = us_value(r, h); break;
    case 0x00280008u: p.number_of_frames = is_value(r, h); break;
    case 0x00280004u: p.photometric_interpretation = str_value(r, h); break;
    case 0x00281052u: { auto v = numbers(r, h); if (!v.empty()) { p.rescale_intercept = v[0]; p.rescale_seen |= 1; } break; }
    case 0x00281053u: { auto v = numbers(r, h); if (!v.empty()) { p.rescale_slope = v[0]; p.rescale_seen |= 2; } break; }
    case 0x00281050u: p.window_center = numbers(r, h); break;
    case 0x00281051u: p.window_width = numbers(r, h); break;
    case 0x00281056u: p.voi_lut_function = str_value(r, h); break;
    case 0x7FE00001u: p.extended_offset_table = u64_values(r, h); p.extended_offset_table_element = h.start; break;
    case 0x7FE00002u:
      p.extended_offset_table_lengths = u64_values(r, h);
      p.extended_offset_table_lengths_element = h.start;
      break;
    case 0x00080016u: p.sop_class_uid = str_value(r, h); break;
    case 0x00080018u: p.sop_instance_uid = str_value(r, h); break;
    case 0x0020000Du: p.study_instance_uid = str_value(r, h); break;
    case 0x0020000Eu: p.series_instance_uid = str_value(r, h); break;
    case 0x00100020u: p.patient_id = str_value(r, h); break;
    case 0x00080020u: p.study_date = str_value(r, h); break;
    case 0x00185101u: p.view_position = str_value(r, h); break;
    case 0x00080060u: p.modality = str_value(r, h); break;
    default: break;
  }
}

// Walk a dataset from pos to end (top level only: sequences are skipped, their presence recorded).
void walk(Reader& r, std::size_t pos, std::size_t end, Parsed& p) {
  std::uint32_t last = 0;
  while (pos < end) {
    if (end - pos < 8) fail(last, pos, "trailing bytes shorter than an element header");
    Header h = read_header(r, pos);
    last = h.tag;
    if (h.tag == kPixelData) {
      pos = read_pixel_data(r, h, p);
      continue;
    }
    if (h.tag == kModalityLutSequence || h.tag == kVoiLutSequence) {
      pos = read_lut_sequence(r, h, pos, p);
      continue;
    }
    if (h.length == kUndefined) {  // a sequence, skipped
      pos = skip_element(r, h, pos, 1);
      continue;
    }
    need_value(r, h, "an element value");
    on_element(r, h, p);
    pos = h.value + h.length;
  }
}

#ifdef CXRFAST_WITH_ZLIB
// The raw deflate stream (RFC 1951, no zlib header, as PS3.5 A.5 specifies) src[0, n), which starts at
// file byte `at`, inflated; at most `limit` bytes. Bytes after the end of the stream (a pad byte) are ignored.
std::vector<std::uint8_t> inflate_dataset(const std::uint8_t* src, std::size_t n, std::size_t at, std::size_t limit) {
  struct Stream {  // inflateEnd on every path, thrown ones included
    z_stream zs{};
    bool ready = false;
    ~Stream() { if (ready) inflateEnd(&zs); }
  } s;
  auto error = [&](const std::string& what) -> ParseError {
    return ParseError("deflated dataset (transfer syntax " + std::string(kDeflated) + ") starting at byte " +
                      std::to_string(at) + ": " + what);
  };
  if (inflateInit2(&s.zs, -MAX_WBITS) != Z_OK) throw error("zlib could not be initialised");
  s.ready = true;
  constexpr std::size_t kChunk = std::size_t(1) << 30;  // zlib counts in 32-bit uInt
  // images deflate 2-4×; grow by doubling from there, never past the limit
  std::vector<std::uint8_t> out(std::min(limit, std::max<std::size_t>(n * 4, 1 << 16)));
  std::size_t have = 0, used = 0;
  while (true) {
    if (have == out.size()) {
      if (out.size() >= limit)
        throw error("inflates to more than " + std::to_string(limit) + " bytes, the limit against decompression bombs");
      out.resize(std::min(limit, out.size() * 2));
    }
    s.zs.next_in = const_cast<Bytef*>(src + used);
    s.zs.avail_in = uInt(std::min(n - used, kChunk));
    s.zs.next_out = out.data() + have;
    s.zs.avail_out = uInt(std::min(out.size() - have, kChunk));
    const uInt in0 = s.zs.avail_in, out0 = s.zs.avail_out;
    const int ret = inflate(&s.zs, Z_NO_FLUSH);
    used += in0 - s.zs.avail_in;
    have += out0 - s.zs.avail_out;
    if (ret == Z_STREAM_END) break;
    if (ret == Z_OK) continue;
    if (ret == Z_BUF_ERROR && used < n) continue;  // the output was full: grow it
    if (ret == Z_BUF_ERROR) throw error("the stream ends before its last block (truncated)");
    throw error(std::string("zlib: ") + (s.zs.msg ? s.zs.msg : "error " + std::to_string(ret)));
  }
  out.resize(have);
  return out;
}
#endif

}  // namespace

Bytes dataset_bytes(const Parsed& p, const std::uint8_t* file, std::size_t file_size) {
  if (p.deflated) return {p.inflated.data(), p.inflated.size()};
  return {file, file_size};
}

Parsed parse(const std::uint8_t* data, std::size_t size, std::size_t max_inflated) {
  Parsed p;
  Reader r{data, size};
  std::size_t pos = 0;
  if (size >= 132 && std::memcmp(data + 128, "DICM", 4) == 0) {
    p.has_preamble = true;
    pos = 132;
  } else if (size >= 4 && std::memcmp(data, "DICM", 4) == 0) {
    pos = 4;
  }
  // file meta group (0002,xxxx): always explicit VR little endian
  r.explicit_vr = true;
  r.big_endian = false;
  bool meta = false;
  while (pos + 8 <= size && (r.tag_at(pos) >> 16) == 0x0002u) {
    meta = true;
    Header h = read_header(r, pos);
    if (h.length == kUndefined) fail(h.tag, pos, "undefined length in the file meta group");
    need_value(r, h, "a file meta element");
    if (h.tag == 0x00020010u) p.transfer_syntax = str_value(r, h);
    if (h.tag == 0x00020002u) p.media_storage_sop_class_uid = str_value(r, h);
    pos = h.value + h.length;
  }
  if (!meta) {
    if (p.has_preamble) fail(0x00020000u, pos, "no file meta group after the DICM prefix");
    // a bare dataset: explicit VR LE when the bytes after the first tag look like a VR, else implicit
    if (size < 8) throw ParseError("file of " + std::to_string(size) + " bytes is too short to be DICOM");
    if (pos == 0 && !plausible_first_element(data, size))
      throw ParseError("not a DICOM file (no DICM prefix and no plausible first element)");
    p.transfer_syntax = valid_vr(char(data[4]), char(data[5])) ? kExplicitLE : kImplicitLE;
  } else if (p.transfer_syntax.empty()) {
    fail(0x00020010u, pos, "the file meta group has no TransferSyntaxUID");
  }
  if (p.transfer_syntax == kImplicitLE) {
    r.explicit_vr = false;
  } else if (p.transfer_syntax == kExplicitBE) {
    r.big_endian = true;
  }
  p.dataset_offset = pos;
  if (p.transfer_syntax == kDeflated) {
#ifdef CXRFAST_WITH_ZLIB
    // the dataset is explicit VR little endian once inflated; offsets from here on count in p.inflated
    p.deflated = true;
    p.inflated = inflate_dataset(data + pos, size - pos, pos, max_inflated);
    r = Reader{p.inflated.data(), p.inflated.size()};
    pos = 0;
#else
    (void)max_inflated;
    throw ParseError("tag (0002,0010): transfer syntax " + printable(p.transfer_syntax) +
                     " (Deflated Explicit VR Little Endian) is not supported by this build (built without zlib)");
#endif
  }
  // every other syntax (the compressed ones) is explicit VR little endian with encapsulated pixel data.
  // Some writers declare explicit VR but write implicit: like pydicom, trust the bytes of the first
  // element over the declaration.
  if (r.explicit_vr && pos + 8 <= r.size && !valid_vr(char(r.data[pos + 4]), char(r.data[pos + 5])))
    r.explicit_vr = false;
  p.explicit_vr = r.explicit_vr;
  p.big_endian = r.big_endian;
  if (!p.deflated) {
    walk(r, pos, r.size, p);
  } else {
    try {
      walk(r, pos, r.size, p);
    } catch (const ParseError& e) {
      throw ParseError(std::string(e.what()) + " (a byte of the inflated dataset)");
    }
  }
  if (p.high_bit < 0) p.high_bit = p.bits_stored - 1;
  // A rescale needs both attributes, as pydicom's apply_modality_lut reads them (one alone is ignored).
  p.has_rescale = p.rescale_seen == 3;
  // the first mapped value of an ambiguous ("US or SS") LUT Descriptor follows PixelRepresentation
  auto resolve = [&](Lut& l) {
    const bool is_signed = l.sign == Lut::Sign::Signed || (l.sign == Lut::Sign::Ambiguous && p.pixel_representation == 1);
    l.first_mapped = is_signed ? int(std::int16_t(l.first_mapped_raw)) : int(l.first_mapped_raw);
  };
  if (p.has_modality_lut) resolve(p.modality_lut);
  for (Lut& l : p.voi_luts) resolve(l);
  return p;
}

namespace {

// The stored value of a raw sample: its low BitsStored bits, sign-extended for PixelRepresentation 1.
// HighBit (0028,0102) does not move them: pydicom, whose pixel_array is read_dicom's oracle, takes the low
// BitsStored bits whatever HighBit says (and current DICOM requires HighBit = BitsStored - 1), so files that
// set HighBit higher read as pydicom reads them.
std::uint32_t stored_value(std::uint32_t v, int bytes, int stored, bool is_signed) {
  if (stored < bytes * 8) {
    v &= (std::uint32_t(1) << stored) - 1u;
    if (is_signed && (v >> (stored - 1)) & 1u) v |= ~((std::uint32_t(1) << stored) - 1u);
  }
  return v;
}

}  // namespace

std::size_t native_frame_bytes(const Parsed& p) {
  return std::size_t(p.rows) * std::size_t(p.columns) * std::size_t(p.samples_per_pixel) *
         std::size_t(p.bits_allocated / 8);
}

bool native_ybr422(const Parsed& p) {
  return p.has_pixel_data && !p.encapsulated && p.samples_per_pixel == 3 && p.photometric_interpretation == "YBR_FULL_422";
}

std::size_t native_stored_frame_bytes(const Parsed& p) {
  return native_ybr422(p) ? native_frame_bytes(p) / 3 * 2 : native_frame_bytes(p);
}

namespace {

// stored_value in place, branch-free (vectorisable), over n samples of type T, after a byte swap when `swap`.
// Used by the native fast path and, without the swap, by finish_decoded (a per-sample memcpy loop there cost
// ~35 ms per 2500x2048 frame).
template <typename T>
void fix_samples(T* o, std::size_t n, int stored, bool swap, bool is_signed) {
  constexpr int width = int(8 * sizeof(T));
  swap = swap && sizeof(T) > 1;
  const bool trim = stored < width;
  const std::uint32_t mask = trim ? (std::uint32_t(1) << stored) - 1u : 0xFFFFFFFFu;
  const std::uint32_t sign = (is_signed && trim) ? std::uint32_t(1) << (stored - 1) : 0u;
  if (!swap && !trim) return;
  for (std::size_t k = 0; k < n; ++k) {
    std::uint32_t v = o[k];
    if (swap) v = sizeof(T) == 2 ? ((v & 0xFFu) << 8 | v >> 8) : __builtin_bswap32(v);
    v &= mask;
    v = (v ^ sign) - sign;  // sign extension (sign = 0: none)
    o[k] = T(v);
  }
}

// The fast path of decode_native_frame (no 8-bit OW big endian, no planar conversion): one copy, then
// fix_samples.
template <typename T>
void native_fast(const std::uint8_t* src, std::size_t n_bytes, const Parsed& p, std::uint8_t* out) {
  std::memcpy(out, src, n_bytes);
  fix_samples(reinterpret_cast<T*>(out), n_bytes / sizeof(T), p.bits_stored, p.big_endian,
              p.pixel_representation == 1);  // out: numpy's allocation, aligned for T
}

}  // namespace

void decode_native_frame(const std::uint8_t* file, std::size_t file_size, const Parsed& p, int frame, std::uint8_t* out) {
  const auto [data, size] = dataset_bytes(p, file, file_size);
  const std::size_t n_bytes = native_stored_frame_bytes(p);
  const std::size_t start = p.pixel_offset + std::size_t(frame) * n_bytes;
  if (start > size || n_bytes > size - start) fail(kPixelData, start, "frame extends past the end of the file");
  const bool ybr422 = native_ybr422(p);
  const bool planar = p.samples_per_pixel > 1 && p.planar_configuration == 1 && !ybr422;
  const bool ow_swapped_bytes = p.bits_allocated == 8 && p.big_endian && p.pixel_vr_ow;
  if (!planar && !ow_swapped_bytes && !ybr422) {
    if (p.bits_allocated == 8) return native_fast<std::uint8_t>(data + start, n_bytes, p, out);
    if (p.bits_allocated == 16) return native_fast<std::uint16_t>(data + start, n_bytes, p, out);
    return native_fast<std::uint32_t>(data + start, n_bytes, p, out);
  }
  const int bytes = p.bits_allocated / 8;
  const std::size_t n_values = n_bytes / std::size_t(bytes);
  const int stored = p.bits_stored;
  const std::uint8_t* src = data + start;
  const int spp = p.samples_per_pixel;
  const std::size_t plane = std::size_t(p.rows) * std::size_t(p.columns);
  auto value = [&](std::size_t k) {  // stored value k of the frame
    std::uint32_t v = 0;
    const std::uint8_t* b = src + k * bytes;
    if (bytes == 1) {
      // OW big endian: the byte stream is 16-bit words, so the 8-bit values come pairwise swapped
      // (word pairs count over the whole pixel stream, which frames of odd size do not align with)
      v = b[0];
      if (p.big_endian && p.pixel_vr_ow) {
        const std::size_t g = (start - p.pixel_offset + k) ^ 1u;
        if (g < p.pixel_length) v = data[p.pixel_offset + g];
      }
    } else if (bytes == 2) {
      v = p.big_endian ? std::uint32_t(b[0] << 8 | b[1]) : std::uint32_t(b[0] | b[1] << 8);
    } else {
      v = p.big_endian ? (std::uint32_t(b[0]) << 24 | std::uint32_t(b[1]) << 16 | std::uint32_t(b[2]) << 8 | b[3])
                       : (std::uint32_t(b[0]) | std::uint32_t(b[1]) << 8 | std::uint32_t(b[2]) << 16 |
                          std::uint32_t(b[3]) << 24);
    }
    return stored_value(v, bytes, stored, p.pixel_representation == 1);
  };
  if (ybr422) {
    // YBR_FULL_422 (PS3.3 C.7.6.3.1.2): two pixels share their chroma, stored Y1 Y2 Cb Cr; expanded to
    // Y1 Cb Cr Y2 Cb Cr, as pydicom's pixel_array does (cxrfast.io then converts YBR_FULL to RGB, as it does)
    for (std::size_t k = 0; k + 4 <= n_values; k += 4) {
      const std::uint32_t y1 = value(k), y2 = value(k + 1), cb = value(k + 2), cr = value(k + 3);
      const std::uint32_t px[6] = {y1, cb, cr, y2, cb, cr};
      for (std::size_t j = 0; j < 6; ++j)
        std::memcpy(out + (k / 4 * 6 + j) * std::size_t(bytes), &px[j], std::size_t(bytes));  // host LE
    }
    return;
  }
  for (std::size_t k = 0; k < n_values; ++k) {
    const std::uint32_t v = value(k);
    // planar configuration 1 (RRR…GGG…BBB…) → interleaved, as pydicom returns it
    std::size_t dst = k;
    if (spp > 1 && p.planar_configuration == 1) {
      std::size_t s = k / plane, px = k % plane;
      dst = px * std::size_t(spp) + s;
    }
    std::memcpy(out + dst * bytes, &v, std::size_t(bytes));  // host little endian (x86, ARM)
  }
}

namespace {

// PackBits-decode one RLE segment into exactly `n` bytes; false when the segment is short.
bool unpack_segment(const std::uint8_t* src, std::size_t len, std::uint8_t* dst, std::size_t n) {
  std::size_t i = 0, o = 0;
  while (o < n && i < len) {
    const int h = static_cast<std::int8_t>(src[i++]);
    if (h >= 0) {  // h + 1 literal bytes
      const std::size_t count = std::size_t(h) + 1;
      if (count > len - i || count > n - o) return false;
      std::memcpy(dst + o, src + i, count);
      i += count;
      o += count;
    } else if (h != -128) {  // the next byte 1 − h times
      const std::size_t count = std::size_t(1 - h);
      if (i >= len || count > n - o) return false;
      std::memset(dst + o, src[i++], count);
      o += count;
    }
  }
  return o == n;
}

}  // namespace

namespace {

// (7FE0,0001) or (7FE0,0002) present: frames are located by the table (encapsulated_frame checks it is whole)
bool has_extended_offsets(const Parsed& p) {
  return !p.extended_offset_table.empty() || !p.extended_offset_table_lengths.empty();
}

}  // namespace

void decode_rle_frame(const std::uint8_t* file, std::size_t file_size, const Parsed& p, int frame, std::uint8_t* out) {
  const auto [data, size] = dataset_bytes(p, file, file_size);
  if (frame < 0 || std::size_t(frame) >= p.fragments.size())
    fail(kPixelData, p.pixel_element, "RLE frame " + std::to_string(frame) + " has no fragment (each RLE frame is one fragment)");
  auto [offset, length] = p.fragments[std::size_t(frame)];
  if (offset > size || length > size - offset) fail(kPixelData, offset, "RLE fragment extends past the end of the file");
  const std::uint8_t* src = data + offset;
  std::vector<std::uint8_t> located;
  if (has_extended_offsets(p)) {  // the table places the frames, in any order: its fragment, not the k-th
    located = encapsulated_frame(file, file_size, p, frame);
    offset = p.fragments[0].first + std::size_t(p.extended_offset_table[std::size_t(frame)]);
    src = located.data();
    length = located.size();
  }
  if (length < 64) fail(kPixelData, offset, "RLE fragment shorter than its 64-byte header");
  auto le32 = [&](std::size_t at) {
    return std::uint32_t(src[at]) | std::uint32_t(src[at + 1]) << 8 | std::uint32_t(src[at + 2]) << 16 |
           std::uint32_t(src[at + 3]) << 24;
  };
  const int bytes = p.bits_allocated / 8;
  const int spp = p.samples_per_pixel;
  const std::uint32_t n_segments = le32(0);
  if (n_segments != std::uint32_t(bytes * spp))
    fail(kPixelData, offset, "RLE header lists " + std::to_string(n_segments) + " segments, BitsAllocated " +
                                 std::to_string(p.bits_allocated) + " × SamplesPerPixel " + std::to_string(spp) +
                                 " needs " + std::to_string(bytes * spp));
  const std::size_t plane = std::size_t(p.rows) * std::size_t(p.columns);
  std::vector<std::uint8_t> planes(plane * n_segments);
  for (std::uint32_t k = 0; k < n_segments; ++k) {
    const std::size_t start = le32(4 + 4 * k);
    const std::size_t end = k + 1 < n_segments ? le32(4 + 4 * (k + 1)) : length;
    if (start < 64 || start > end || end > length)
      fail(kPixelData, offset, "RLE segment " + std::to_string(k) + " offsets lie outside the fragment");
    if (!unpack_segment(src + start, end - start, planes.data() + k * plane, plane))
      fail(kPixelData, offset + start, "RLE segment " + std::to_string(k) + " decodes to fewer than Rows × Columns bytes");
  }
  const int stored = p.bits_stored;
  for (std::size_t px = 0; px < plane; ++px) {
    for (int s = 0; s < spp; ++s) {
      std::uint32_t v = 0;
      for (int b = 0; b < bytes; ++b) v = v << 8 | planes[(std::size_t(s) * bytes + b) * plane + px];  // MSB first
      v = stored_value(v, bytes, stored, p.pixel_representation == 1);
      std::memcpy(out + (px * std::size_t(spp) + std::size_t(s)) * std::size_t(bytes), &v, std::size_t(bytes));
    }
  }
}

std::vector<std::uint8_t> encapsulated_frame(const std::uint8_t* file, std::size_t file_size, const Parsed& p, int frame) {
  const auto [data, size] = dataset_bytes(p, file, file_size);
  const std::size_t frames = std::size_t(std::max(p.number_of_frames, 1));
  if (frame < 0 || std::size_t(frame) >= frames)
    fail(kPixelData, p.pixel_element, "frame " + std::to_string(frame) + " out of range for " + std::to_string(frames) + " frame(s)");
  std::vector<std::pair<std::size_t, std::size_t>> parts;
  std::size_t keep = std::size_t(-1);  // bytes of the frame, when a table gives its length
  if (has_extended_offsets(p)) {
    const auto& offsets = p.extended_offset_table;
    const auto& lengths = p.extended_offset_table_lengths;
    if (offsets.size() != frames || lengths.size() != frames)
      fail(0x7FE00001u, p.extended_offset_table_element, "the extended offset table has " + std::to_string(offsets.size()) + " offsets and " +
                               std::to_string(lengths.size()) + " lengths (7FE0,0002) for " + std::to_string(frames) +
                               " frames");
    if (p.fragments.empty()) fail(kPixelData, p.pixel_element, "no fragments");
    // offsets count from the first fragment's item tag, like the basic offset table's; the standard puts
    // each frame in one fragment, but a frame split over consecutive fragments is accepted too
    const std::size_t base = p.fragments[0].first - 8;
    const std::uint64_t offset = offsets[std::size_t(frame)], length = lengths[std::size_t(frame)];
    const std::size_t value = offset < size ? base + std::size_t(offset) + 8 : std::size_t(-1);
    auto it = std::lower_bound(p.fragments.begin(), p.fragments.end(), value,
                               [](const std::pair<std::size_t, std::size_t>& f, std::size_t v) { return f.first < v; });
    if (it == p.fragments.end() || it->first != value)
      fail(0x7FE00001u, p.extended_offset_table_element, "frame " + std::to_string(frame) + ": offset " + std::to_string(offset) +
                               " is not the start of a fragment's item");
    std::uint64_t total = 0;
    for (; it != p.fragments.end() && total < length; ++it) {
      parts.push_back(*it);
      total += it->second;
    }
    // a frame of odd length sits in a fragment padded to even length: one byte more is the pad
    if (total < length || total - length > 1)
      fail(0x7FE00002u, p.extended_offset_table_lengths_element, "frame " + std::to_string(frame) + ": the extended offset table gives " +
                               std::to_string(length) + " bytes, its fragments hold " + std::to_string(total));
    keep = std::size_t(length);
  } else if (frames == 1) {
    parts = p.fragments;
  } else if (!p.basic_offset_table.empty()) {
    if (p.basic_offset_table.size() != frames)
      fail(kPixelData, p.pixel_element, "the basic offset table has " + std::to_string(p.basic_offset_table.size()) +
                              " entries for " + std::to_string(frames) + " frames");
    // table offsets count from the first fragment's item tag (8 bytes before its value)
    if (p.fragments.empty()) fail(kPixelData, p.pixel_element, "no fragments");
    const std::size_t base = p.fragments[0].first - 8;
    const std::size_t lo = base + p.basic_offset_table[std::size_t(frame)];
    const std::size_t hi = std::size_t(frame) + 1 < frames ? base + p.basic_offset_table[std::size_t(frame) + 1]
                                                           : std::size_t(-1);
    for (const auto& f : p.fragments)
      if (f.first - 8 >= lo && f.first - 8 < hi) parts.push_back(f);
  } else if (p.fragments.size() == frames) {
    parts.push_back(p.fragments[std::size_t(frame)]);
  } else {
    fail(kPixelData, p.pixel_element, std::to_string(p.fragments.size()) + " fragments for " + std::to_string(frames) +
                            " frames and no basic offset table: frame boundaries unknown");
  }
  if (parts.empty()) fail(kPixelData, p.pixel_element, "frame " + std::to_string(frame) + " has no fragment");
  std::vector<std::uint8_t> out;
  for (const auto& [offset, length] : parts) {
    if (offset > size || length > size - offset) fail(kPixelData, offset, "fragment extends past the end of the file");
    out.insert(out.end(), data + offset, data + offset + length);
  }
  if (out.size() > keep) out.resize(keep);
  return out;
}

void finish_decoded(const Parsed& p, std::uint8_t* out, std::size_t n) {
  const bool is_signed = p.pixel_representation == 1;
  if (p.bits_allocated == 8) return fix_samples(out, n, p.bits_stored, false, is_signed);
  if (p.bits_allocated == 16)  // out: aligned for the sample type (numpy's allocation, or a vector's)
    return fix_samples(reinterpret_cast<std::uint16_t*>(out), n, p.bits_stored, false, is_signed);
  return fix_samples(reinterpret_cast<std::uint32_t*>(out), n, p.bits_stored, false, is_signed);
}

Codec codec(const Parsed& p) {
  if (!p.has_pixel_data) return Codec::None;
  if (!p.encapsulated) return Codec::Native;
  const std::string& ts = p.transfer_syntax;
  if (ts == "1.2.840.10008.1.2.5") return Codec::Rle;
  if (ts == "1.2.840.10008.1.2.4.57" || ts == "1.2.840.10008.1.2.4.70") return Codec::JpegLossless;
  // JPEG baseline / extended, JPEG-LS lossless / near-lossless, JPEG 2000 lossless / lossy, HTJ2K
  static const char* const kExternal[] = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.80",
                                          "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
                                          "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"};
  for (const char* uid : kExternal)
    if (ts == uid) return Codec::External;
  return Codec::None;
}

const char* codec_name(Codec c) {
  switch (c) {
    case Codec::Native: return "native";
    case Codec::Rle: return "rle";
    case Codec::JpegLossless: return "jpeg-lossless";
    case Codec::External: return "external";
    case Codec::None: break;
  }
  return "none";
}

namespace {

[[noreturn]] void pixel_error(const std::string& what) { throw ParseError("tag (7FE0,0010): " + what); }

}  // namespace

void check_decodable(const Parsed& p) {
  const Codec c = codec(p);
  if (c == Codec::JpegLossless && p.bits_allocated == 32)
    pixel_error("JPEG lossless holds at most 16-bit samples, BitsAllocated is 32");
  if (p.bits_allocated != 8 && p.bits_allocated != 16 && p.bits_allocated != 32)
    pixel_error("BitsAllocated " + std::to_string(p.bits_allocated) + " is not supported (8, 16 or 32)");
  if (p.bits_stored < 1 || p.bits_stored > p.bits_allocated || p.high_bit >= p.bits_allocated ||
      p.high_bit + 1 < p.bits_stored)
    pixel_error("BitsStored " + std::to_string(p.bits_stored) + " / HighBit " + std::to_string(p.high_bit) +
                " do not fit BitsAllocated " + std::to_string(p.bits_allocated));
  if (p.rows <= 0 || p.columns <= 0 || p.samples_per_pixel <= 0 || p.samples_per_pixel > 4 || p.number_of_frames <= 0)
    pixel_error("absurd dimensions: Rows " + std::to_string(p.rows) + ", Columns " + std::to_string(p.columns) +
                ", SamplesPerPixel " + std::to_string(p.samples_per_pixel) + ", NumberOfFrames " +
                std::to_string(p.number_of_frames));
  const std::size_t frame_bytes = native_frame_bytes(p);
  const std::size_t frames = std::size_t(p.number_of_frames);
  if (c == Codec::Rle) {
    if (p.fragments.size() < frames)
      pixel_error("RLE pixel data has " + std::to_string(p.fragments.size()) + " fragment(s) for " +
                  std::to_string(frames) + " frame(s) (each RLE frame is one fragment)");
    // PackBits expands a fragment at most 64× (2 bytes → 128): bounds the allocation by the file size
    for (std::size_t f = 0; f < frames; ++f)
      if (frame_bytes / 64 > p.fragments[f].second)
        pixel_error("absurd dimensions: Rows × Columns × Samples × BitsAllocated/8 = " + std::to_string(frame_bytes) +
                    " bytes cannot come from an RLE fragment of " + std::to_string(p.fragments[f].second) + " bytes");
  } else if (c == Codec::JpegLossless) {  // a lossless JPEG stream cannot compress below ~1 bit per sample
    std::size_t total = 0;
    for (const auto& f : p.fragments) total += f.second;
    if (frame_bytes * frames / (16 * std::size_t(p.bits_allocated / 8)) > total + 1024)
      pixel_error("absurd dimensions: " + std::to_string(frame_bytes * frames) + " bytes of samples cannot come from " +
                  std::to_string(total) + " bytes of JPEG lossless data");
  } else if (c == Codec::External) {
    // the codec library sizes its output from the stream's own header, which cxrfast.io checks against
    // Rows / Columns / SamplesPerPixel / BitsAllocated before decoding; here: frames must be locatable
    if (p.fragments.empty()) pixel_error("encapsulated pixel data without fragments");
  } else if (native_ybr422(p)) {
    const std::size_t stored_bytes = native_stored_frame_bytes(p);
    if (std::size_t(p.rows) * std::size_t(p.columns) % 2)
      pixel_error("YBR_FULL_422 needs an even number of pixels (two share their chroma), Rows × Columns is " +
                  std::to_string(std::size_t(p.rows) * std::size_t(p.columns)));
    if (p.pixel_length / stored_bytes < frames)
      pixel_error("pixel data holds " + std::to_string(p.pixel_length) + " bytes but YBR_FULL_422 (2 samples per "
                  "pixel stored) × Rows × Columns × BitsAllocated/8 × NumberOfFrames needs " +
                  std::to_string(stored_bytes * frames));
  } else if (frame_bytes == 0 || p.pixel_length / frame_bytes < frames) {
    pixel_error("pixel data holds " + std::to_string(p.pixel_length) + " bytes but Rows × Columns × Samples × " +
                "BitsAllocated/8 × NumberOfFrames needs " + std::to_string(frame_bytes * frames));
  }
}

void decode_frame(const std::uint8_t* data, std::size_t size, const Parsed& p, int frame, std::uint8_t* out) {
  switch (codec(p)) {
    case Codec::Native: return decode_native_frame(data, size, p, frame, out);
    case Codec::Rle: return decode_rle_frame(data, size, p, frame, out);
    case Codec::JpegLossless: {
      const std::vector<std::uint8_t> stream = encapsulated_frame(data, size, p, frame);
      try {
        jpegll::decode(stream.data(), stream.size(), p.rows, p.columns, p.samples_per_pixel, p.bits_allocated / 8, out);
      } catch (const jpegll::DecodeError& e) {
        throw ParseError("tag (7FE0,0010), frame " + std::to_string(frame) + ": " + e.what());
      }
      return finish_decoded(p, out, native_frame_bytes(p) / std::size_t(p.bits_allocated / 8));
    }
    case Codec::External: pixel_error("transfer syntax " + printable(p.transfer_syntax) +
                                      " is decoded by a codec library (cxrfast.io), not here");
    case Codec::None: break;
  }
  pixel_error("no decoder for transfer syntax " + printable(p.transfer_syntax));
}

}  // namespace cxrfast::dicom
