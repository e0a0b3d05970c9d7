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

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace cxrfast::dicom;
  try {
    // the same calls as cxrfast._C's dicom_read (csrc/bindings_cpu.cpp), last frame only
    Parsed p = parse(data, size);
    if (codec(p) == Codec::None) return 0;
    check_decodable(p);
    const std::size_t frame = native_frame_bytes(p);
    if (frame > (std::size_t(1) << 28)) return 0;  // keep each fuzz iteration small
    std::vector<std::uint8_t> out(frame);
    decode_frame(data, size, p, p.number_of_frames - 1, out.data());
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
