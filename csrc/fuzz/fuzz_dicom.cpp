// Fuzz target of the DICOM parser and native decoder (csrc/dicom.h), under AddressSanitizer + UBSan.
//
// With clang:  clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -I csrc csrc/fuzz/fuzz_dicom.cpp
//              csrc/cpu/dicom.cpp -o fuzz_dicom && ./fuzz_dicom corpus/
// With g++ (no libFuzzer): the same file builds a standalone mutation fuzzer (-DCXRFAST_FUZZ_MAIN), see
// csrc/fuzz/run.sh: it mutates seed files (bit flips, byte sets, truncation, insertions, deletions,
// 16/32-bit length-field rewrites) and runs every mutant through parse + decode. With -DCXRFAST_WITH_ZLIB
// (and -lz) deflated seeds are also mutated inside: half their mutants edit the inflated dataset and
// deflate it again, so the parser behind the inflater sees mutants, not just zlib's error paths.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "dicom.h"

#ifdef CXRFAST_WITH_ZLIB
#include <zlib.h>
#endif

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace cxrfast::dicom;
  try {
    // the same calls as cxrfast._C's dicom_read (csrc/bindings_cpu.cpp), last frame only
    // a 64 MiB inflation cap keeps each iteration small (the real default is 4 GiB)
    Parsed p = parse(data, size, std::size_t(64) << 20);
    if (codec(p) == Codec::None) return 0;
    check_decodable(p);
    if (codec(p) == Codec::External) {  // what cxrfast.io hands to the codec library: the frame's stream
      encapsulated_frame(data, size, p, p.number_of_frames - 1);
      return 0;
    }
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
  // CXRFAST_FUZZ_SEED picks another mutant sequence (the default keeps runs reproducible)
  const char* seed = std::getenv("CXRFAST_FUZZ_SEED");
  std::mt19937_64 rng(seed ? std::strtoull(seed, nullptr, 10) : 12345);
#ifdef CXRFAST_WITH_ZLIB
  // deflated seeds: (file meta part, inflated dataset), to mutate the dataset and deflate it again
  std::vector<std::pair<std::vector<std::uint8_t>, std::vector<std::uint8_t>>> inner(seeds.size());
  for (std::size_t k = 0; k < seeds.size(); ++k) {
    try {
      cxrfast::dicom::Parsed p = cxrfast::dicom::parse(seeds[k].data(), seeds[k].size());
      if (p.deflated)
        inner[k] = {std::vector<std::uint8_t>(seeds[k].begin(), seeds[k].begin() + long(p.dataset_offset)), p.inflated};
    } catch (const cxrfast::dicom::ParseError&) {
    }
  }
  long redeflated = 0;
#endif
  for (long it = 0; it < iterations; ++it) {
    const std::size_t pick = rng() % seeds.size();
    std::vector<std::uint8_t> m = seeds[pick];
#ifdef CXRFAST_WITH_ZLIB
    const bool deflate_after = !inner[pick].second.empty() && rng() % 2;
    if (deflate_after) m = inner[pick].second;
#endif
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
#ifdef CXRFAST_WITH_ZLIB
    if (deflate_after) {  // raw deflate (PS3.5 A.5) of the mutated dataset after the seed's file meta group
      std::vector<std::uint8_t> z(compressBound(uLong(m.size())) + 64);
      z_stream zs{};
      deflateInit2(&zs, 6, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
      zs.next_in = m.data();
      zs.avail_in = uInt(m.size());
      zs.next_out = z.data();
      zs.avail_out = uInt(z.size());
      deflate(&zs, Z_FINISH);
      z.resize(zs.total_out);
      deflateEnd(&zs);
      m = inner[pick].first;
      m.insert(m.end(), z.begin(), z.end());
      ++redeflated;
    }
#endif
    LLVMFuzzerTestOneInput(m.data(), m.size());
  }
#ifdef CXRFAST_WITH_ZLIB
  std::printf("%ld mutants of inflated datasets deflated again\n", redeflated);
#endif
  std::printf("%ld iterations, no crash\n", iterations);
  return 0;
}
#endif
