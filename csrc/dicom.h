// DICOM Part 10 parsing and native (uncompressed) pixel decoding, without torch or Python headers, so
// the same code builds into cxrfast._C and into a standalone fuzz target.
//
// Every read is bounds-checked; malformed input raises cxrfast::dicom::ParseError naming the tag and
// the byte offset, never reads outside the buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace cxrfast::dicom {

class ParseError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// One item of the Modality LUT Sequence (0028,3000) or the VOI LUT Sequence (0028,3010).
// Applied to a value x as pydicom.pixels.apply_modality_lut / apply_voi do:
//   data[clamp(x − first_mapped, 0, data.size() − 1)]   (values below first_mapped take data[0]).
struct Lut {
  int first_mapped = 0;            // LUT Descriptor value 2: signed or unsigned as pydicom reads it (see parse)
  int bits = 16;                   // LUT Descriptor value 3: bits per entry (1..16)
  std::vector<std::uint16_t> data; // LUT Data: exactly LUT Descriptor value 1 entries (0 means 65536)
  std::string explanation;         // (0028,3003) LUT Explanation
  std::string type;                // (0028,3004) Modality LUT Type (Modality LUT Sequence only)
  // how the first mapped value is read: the explicit VR US or SS, else ambiguous ("US or SS", resolved by
  // PixelRepresentation after the walk, as pydicom's ambiguous-VR correction does)
  enum class Sign { Unsigned, Signed, Ambiguous } sign = Sign::Ambiguous;
  std::uint16_t first_mapped_raw = 0;
};

// Largest inflated dataset accepted from the deflated transfer syntax: deflate expands up to 1032×, so a
// few MB of input could otherwise claim gigabytes (a decompression bomb). Element lengths are 32-bit and a
// radiograph dataset is tens of MB; beyond this the file is refused.
constexpr std::size_t kMaxInflatedBytes = std::size_t(4) << 30;

struct Parsed {
  std::string transfer_syntax;  // (0002,0010); guessed when there is no file meta group
  bool explicit_vr = true;
  bool big_endian = false;
  bool has_preamble = false;
  // Deflated Explicit VR Little Endian: everything after the file meta group inflated. Every offset below
  // then counts in `inflated`, not in the file: decode through dataset_bytes().
  bool deflated = false;
  std::vector<std::uint8_t> inflated;
  std::size_t dataset_offset = 0;  // where the dataset (after the file meta group) starts in the file
  // image pixel module
  int rows = 0, columns = 0, bits_allocated = 0, bits_stored = 0, high_bit = -1;
  int pixel_representation = 0, samples_per_pixel = 1, planar_configuration = 0, number_of_frames = 1;
  std::string photometric_interpretation;
  // modality / VOI
  double rescale_slope = 1.0, rescale_intercept = 0.0;
  bool has_rescale = false;  // both Rescale Intercept (0028,1052) and Rescale Slope (0028,1053) present
  int rescale_seen = 0;      // bit 0: intercept, bit 1: slope
  std::vector<double> window_center, window_width;
  std::string voi_lut_function;
  bool has_modality_lut_sequence = false, has_voi_lut_sequence = false;
  bool has_modality_lut = false;  // the first item of a (non-empty) Modality LUT Sequence, as pydicom uses it
  Lut modality_lut;
  std::vector<Lut> voi_luts;      // every item of the VOI LUT Sequence
  // identification the data layer needs
  std::string sop_instance_uid, study_instance_uid, series_instance_uid, patient_id, study_date, view_position,
      modality;
  std::string sop_class_uid;               // (0008,0016)
  std::string media_storage_sop_class_uid;  // (0002,0002) of the file meta group (a DICOMDIR has only this)
  // pixel data (7FE0,0010)
  bool has_pixel_data = false;
  bool encapsulated = false;
  bool pixel_vr_ow = false;  // OW: in big endian, 8-bit values sit byte-swapped in 16-bit words
  std::size_t pixel_element = 0;  // offset of the (7FE0,0010) element itself, for messages
  std::size_t extended_offset_table_element = 0, extended_offset_table_lengths_element = 0;  // idem
  std::size_t pixel_offset = 0, pixel_length = 0;                    // native
  std::vector<std::uint32_t> basic_offset_table;                     // encapsulated
  std::vector<std::pair<std::size_t, std::size_t>> fragments;        // (offset, length), encapsulated
  // (7FE0,0001) Extended Offset Table and (7FE0,0002) its lengths: per frame, the offset of its first
  // fragment's item tag (counted like the basic offset table's) and the frame's length in bytes
  std::vector<std::uint64_t> extended_offset_table, extended_offset_table_lengths;
};

// Parse a whole Part 10 file (with or without the 128-byte preamble + "DICM"). A deflated dataset is
// inflated into Parsed::inflated (at most max_inflated bytes, else ParseError); without zlib in the build
// the deflated syntax is a ParseError.
Parsed parse(const std::uint8_t* data, std::size_t size, std::size_t max_inflated = kMaxInflatedBytes);

// The bytes that the offsets of `p` count in: the inflated dataset for the deflated syntax, else the file.
// The decode functions below take the file and call this themselves.
struct Bytes {
  const std::uint8_t* data;
  std::size_t size;
};
Bytes dataset_bytes(const Parsed& p, const std::uint8_t* file, std::size_t file_size);

// Bytes of one decoded frame: rows · columns · samples · bits_allocated / 8 (bits_allocated 8/16/32).
std::size_t native_frame_bytes(const Parsed& p);

// Native YBR_FULL_422 (3 samples, two pixels sharing Cb and Cr): stored as 2 samples per pixel.
bool native_ybr422(const Parsed& p);

// Bytes of one native frame as stored in the file: native_frame_bytes, or 2/3 of it for native_ybr422.
std::size_t native_stored_frame_bytes(const Parsed& p);

// Decode native frame `frame` (0-based) into `out` (native_frame_bytes(p) bytes, host byte order):
// byte-swapped for big endian, bits above bits_stored masked off, sign-extended when
// pixel_representation is 1, interleaved samples (planar_configuration 1 is converted to interleaved).
void decode_native_frame(const std::uint8_t* data, std::size_t size, const Parsed& p, int frame, std::uint8_t* out);

// Decode RLE Lossless frame `frame` (its one fragment) into `out` (native_frame_bytes(p) bytes, host byte
// order, interleaved samples), with the same bits-stored masking and sign extension as native data.
void decode_rle_frame(const std::uint8_t* data, std::size_t size, const Parsed& p, int frame, std::uint8_t* out);

// The bytes of encapsulated frame `frame`: located by the extended offset table when there is one; else
// all fragments for a single frame; for several frames the fragments between consecutive basic-offset-table
// entries, or one fragment per frame without a table.
std::vector<std::uint8_t> encapsulated_frame(const std::uint8_t* data, std::size_t size, const Parsed& p, int frame);

// Bits-stored masking and sign extension, in place, of `n` decoded samples of p.bits_allocated bits
// (for codecs that return the stored value itself, such as JPEG lossless).
void finish_decoded(const Parsed& p, std::uint8_t* out, std::size_t n);

// External: a compressed syntax whose frames this library locates (encapsulated_frame) and cxrfast.io hands
// to a codec library: JPEG baseline/extended, JPEG-LS, JPEG 2000, HTJ2K.
enum class Codec { None, Native, Rle, JpegLossless, External };

// How the pixel data of `p` is decoded; Codec::None: no pixel data, or a syntax nothing here decodes.
Codec codec(const Parsed& p);

// "native", "rle", "jpeg-lossless", "external" or "none" (meta["codec"] of cxrfast.io.read_dicom).
const char* codec_name(Codec c);

// Checks that the pixel description of `p` (codec(p) != None) can be decoded: BitsAllocated, BitsStored
// and HighBit consistent, dimensions present, and the output (native_frame_bytes(p) per frame) bounded by
// the data that must produce it. Throws ParseError naming (7FE0,0010) and the problem.
void check_decodable(const Parsed& p);

// Decode frame `frame` with codec(p) (Native, Rle or JpegLossless) into `out` (native_frame_bytes(p)
// bytes); after check_decodable.
void decode_frame(const std::uint8_t* data, std::size_t size, const Parsed& p, int frame, std::uint8_t* out);

}  // namespace cxrfast::dicom
