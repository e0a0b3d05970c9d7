// Fuzz target of the DICOM parser and native decoder (csrc/dicom.h), under AddressSanitizer + UBSan.
//
// With clang:  clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -I csrc csrc/fuzz/fuzz_dicom.cpp
//              csrc/cpu/dicom.cpp -o fuzz_dicom && ./fuzz_dicom corpus/
// With g++ (no libFuzzer): the same file builds a standalone mutation fuzzer (-DCXRFAST_FUZZ_MAIN), see
// csrc/fuzz/run.sh: it mutates seed files (bit flips, byte sets, truncation, insertions, deletions,
// 16/32-bit length-field rewrites) and runs every mutant through parse + decode.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "dicom.h"
#include "jpeg_lossless.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace cxrfast::dicom;
  try {
    Parsed p = parse(data, size);
    const bool rle = p.encapsulated && p.transfer_syntax == "1.2.840.10008.1.2.5";
    const bool jpegll = p.encapsulated && (p.transfer_syntax == "1.2.840.10008.1.2.4.57" ||
                                           p.transfer_syntax == "1.2.840.10008.1.2.4.70");
    if (!p.has_pixel_data || (p.encapsulated && !rle && !jpegll)) return 0;
    if (jpegll && p.bits_allocated == 32) return 0;
    if (p.bits_allocated != 8 && p.bits_allocated != 16 && p.bits_allocated != 32) return 0;
    if (p.bits_stored < 1 || p.bits_stored > p.bits_allocated || p.high_bit >= p.bits_allocated ||
        p.high_bit + 1 < p.bits_stored)
      return 0;
    if (p.rows <= 0 || p.columns <= 0 || p.samples_per_pixel <= 0 || p.samples_per_pixel > 4 || p.number_of_frames <= 0)
      return 0;
    const std::size_t frame = native_frame_bytes(p);
    if (frame == 0 || frame > (std::size_t(1) << 28)) return 0;
    if (jpegll) {
      std::vector<std::uint8_t> out(frame);
      std::vector<std::uint8_t> stream = encapsulated_frame(data, size, p, p.number_of_frames - 1);
      try {
        cxrfast::jpegll::decode(stream.data(), stream.size(), p.rows, p.columns, p.samples_per_pixel,
                                p.bits_allocated / 8, out.data());
      } catch (const cxrfast::jpegll::DecodeError&) {
        return 0;
      }
      finish_decoded(p, out.data(), frame / std::size_t(p.bits_allocated / 8));
      return 0;
    }
    if (rle ? p.fragments.size() < std::size_t(p.number_of_frames)
            : p.pixel_length / frame < std::size_t(p.number_of_frames))
      return 0;  // the binding's checks
    std::vector<std::uint8_t> out(frame);
    if (rle)
      decode_rle_frame(data, size, p, p.number_of_frames - 1, out.data());
    else
      decode_native_frame(data, size, p, p.number_of_frames - 1, out.data());
  } catch (const ParseError&) {
  }
  return 0;
}

#ifdef CXRFAST_FUZZ_MAIN
int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s ITERATIONS SEED_FILE...\n", argv[0]);
    return 2;
  }
  const long iterations = std::atol(argv[1]);
  std::vector<std::vector<std::uint8_t>> seeds;
  for (int i = 2; i < argc; ++i) {
    std::ifstream f(argv[i], std::ios::binary);
    seeds.emplace_back(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  std::mt19937_64 rng(12345);
  for (long it = 0; it < iterations; ++it) {
    std::vector<std::uint8_t> m = seeds[rng() % seeds.size()];
    const int edits = 1 + int(rng() % 8);
    for (int e = 0; e < edits && !m.empty(); ++e) {
      const std::size_t at = rng() % m.size();
      switch (rng() % 7) {
        case 0: m[at] ^= std::uint8_t(1u << (rng() % 8)); break;
        case 1: m[at] = std::uint8_t(rng()); break;
        case 2: m.resize(at); break;
        case 3: m.insert(m.begin() + long(at), std::uint8_t(rng())); break;
        case 4: m.erase(m.begin() + long(at)); break;
        case 5: if (at + 2 <= m.size()) { std::uint16_t v = std::uint16_t(rng()); m[at] = v & 0xFF; m[at + 1] = v >> 8; } break;
        default: if (at + 4 <= m.size()) { std::uint32_t v = (rng() % 2) ? 0xFFFFFFFFu : std::uint32_t(rng() % 1000000);
                   for (int k = 0; k < 4; ++k) m[at + k] = std::uint8_t(v >> (8 * k)); } break;
      }
    }
    LLVMFuzzerTestOneInput(m.data(), m.size());
  }
  std::printf("%ld iterations, no crash\n", iterations);
  return 0;
}
#endif
