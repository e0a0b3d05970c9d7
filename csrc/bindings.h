// Pieces of the cxrfast._C module shared between its binding files (bindings_cpu.cpp: the module, the
// torch ops and DICOM reading; bindings_pixels.cpp: the radiograph pixel pipeline).
#pragma once

#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>

#include "dicom.h"

namespace cxrfast::bind {

// The parsed attributes as the meta dict of cxrfast.io.read_dicom (Latin-1 strings).
pybind11::dict dicom_meta(const dicom::Parsed& p);

// Latin-1 decode of DICOM bytes (never fails on corrupt strings).
pybind11::str latin1(const std::string& s);

// A DICOM file's bytes parsed with the GIL released. `data` points into the caller's bytes object, which must
// outlive this.
struct ParsedBytes {
  const std::uint8_t* data;
  std::size_t size;
  dicom::Parsed p;
};
ParsedBytes parse_bytes(const pybind11::bytes& bytes, std::size_t max_inflated = dicom::kMaxInflatedBytes);

// Adds radiograph_pixels, radiograph_dicom and PipelineError to the module.
void register_pixels(pybind11::module_& m);

}  // namespace cxrfast::bind
