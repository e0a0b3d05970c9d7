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

struct Parsed {
  std::string transfer_syntax;  // (0002,0010); guessed when there is no file meta group
  bool explicit_vr = true;
  bool big_endian = false;
  bool has_preamble = false;
  // image pixel module
  int rows = 0, columns = 0, bits_allocated = 0, bits_stored = 0, high_bit = -1;
  int pixel_representation = 0, samples_per_pixel = 1, planar_configuration = 0, number_of_frames = 1;
  std::string photometric_interpretation;
  // modality / VOI
  double rescale_slope = 1.0, rescale_intercept = 0.0;
  bool has_rescale = false;
  std::vector<double> window_center, window_width;
  std::string voi_lut_function;
  bool has_modality_lut_sequence = false, has_voi_lut_sequence = false;
  // identification the data layer needs
  std::string sop_instance_uid, study_instance_uid, series_instance_uid, patient_id, study_date, view_position,
      modality;
  // pixel data (7FE0,0010)
  bool has_pixel_data = false;
  bool encapsulated = false;
  bool pixel_vr_ow = false;  // OW: in big endian, 8-bit values sit byte-swapped in 16-bit words
  std::size_t pixel_offset = 0, pixel_length = 0;                    // native
  std::vector<std::uint32_t> basic_offset_table;                     // encapsulated
  std::vector<std::pair<std::size_t, std::size_t>> fragments;        // (offset, length), encapsulated
};

// Parse a whole Part 10 file (with or without the 128-byte preamble + "DICM").
Parsed parse(const std::uint8_t* data, std::size_t size);

// Bytes of one native frame: rows · columns · samples · bits_allocated / 8 (bits_allocated 8/16/32).
std::size_t native_frame_bytes(const Parsed& p);

// Decode native frame `frame` (0-based) into `out` (native_frame_bytes(p) bytes, host byte order):
// byte-swapped for big endian, bits above bits_stored masked off, sign-extended when
// pixel_representation is 1, interleaved samples (planar_configuration 1 is converted to interleaved).
void decode_native_frame(const std::uint8_t* data, std::size_t size, const Parsed& p, int frame, std::uint8_t* out);

// Decode RLE Lossless frame `frame` (its one fragment) into `out` (native_frame_bytes(p) bytes, host byte
// order, interleaved samples), with the same bits-stored masking and sign extension as native data.
void decode_rle_frame(const std::uint8_t* data, std::size_t size, const Parsed& p, int frame, std::uint8_t* out);

// The bytes of encapsulated frame `frame`: all fragments for a single frame; for several frames the
// fragments between consecutive basic-offset-table entries, or one fragment per frame without a table.
std::vector<std::uint8_t> encapsulated_frame(const std::uint8_t* data, std::size_t size, const Parsed& p, int frame);

// Bits-stored masking and sign extension, in place, of `n` decoded samples of p.bits_allocated bits
// (for codecs that return the stored value itself, such as JPEG lossless).
void finish_decoded(const Parsed& p, std::uint8_t* out, std::size_t n);

enum class Codec { None, Native, Rle, JpegLossless };

// How the pixel data of `p` is decoded here; Codec::None: no pixel data, or a compressed syntax this
// build locates but does not decode.
Codec codec(const Parsed& p);

// Checks that the pixel description of `p` (codec(p) != None) can be decoded: BitsAllocated, BitsStored
// and HighBit consistent, dimensions present, and the output (native_frame_bytes(p) per frame) bounded by
// the data that must produce it. Throws ParseError naming (7FE0,0010) and the problem.
void check_decodable(const Parsed& p);

// Decode frame `frame` with codec(p) into `out` (native_frame_bytes(p) bytes); after check_decodable.
void decode_frame(const std::uint8_t* data, std::size_t size, const Parsed& p, int frame, std::uint8_t* out);

}  // namespace cxrfast::dicom
