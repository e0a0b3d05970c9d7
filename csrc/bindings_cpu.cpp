// Python module cxrfast._C and the C++ half of the `cxrfast` operator namespace.
//
// TORCH_LIBRARY_FRAGMENT (not TORCH_LIBRARY): the same namespace also receives ops defined from
// Python (torch.library.triton_op / custom_op in cxrfast/ops); only one TORCH_LIBRARY block may
// exist per namespace, fragments compose with it.
#include <torch/extension.h>

#include <pybind11/numpy.h>

#include <string>

#include "bindings.h"
#include "dicom.h"
#include "group_counts.h"

namespace py = pybind11;

TORCH_LIBRARY_FRAGMENT(cxrfast, m) {
  m.def("group_counts(Tensor groups) -> Tensor");
}

TORCH_LIBRARY_IMPL(cxrfast, CPU, m) {
  m.impl("group_counts", &cxrfast::group_counts_cpu);
}

namespace cxrfast::bind {

// DICOM strings are bytes in the dataset's character set; Latin-1 decodes any of them (the UIDs, dates,
// codes and IDs read here are ASCII in valid files) and never fails on corrupt ones.
py::str latin1(const std::string& s) {
  return py::reinterpret_steal<py::str>(PyUnicode_DecodeLatin1(s.data(), py::ssize_t(s.size()), nullptr));
}

// A Modality / VOI LUT item as cxrfast.io documents it: data is uint8 for tables of at most 8 bits per
// entry and uint16 otherwise, the dtype pydicom's apply_modality_lut / apply_voi give their result.
py::dict lut_dict(const cxrfast::dicom::Lut& l) {
  py::dict d;
  d["first_mapped"] = l.first_mapped;
  d["bits"] = l.bits;
  py::array data;
  if (l.bits <= 8) {
    py::array_t<std::uint8_t> a(py::ssize_t(l.data.size()));
    for (std::size_t k = 0; k < l.data.size(); ++k) a.mutable_data()[k] = std::uint8_t(l.data[k]);
    data = a;
  } else {
    data = py::array_t<std::uint16_t>(py::ssize_t(l.data.size()), l.data.data());
  }
  d["data"] = data;
  d["explanation"] = latin1(l.explanation);
  return d;
}

py::dict dicom_meta(const cxrfast::dicom::Parsed& p) {
  py::dict d;
  d["transfer_syntax"] = latin1(p.transfer_syntax);
  d["explicit_vr"] = p.explicit_vr;
  d["big_endian"] = p.big_endian;
  d["has_preamble"] = p.has_preamble;
  d["rows"] = p.rows;
  d["columns"] = p.columns;
  d["bits_allocated"] = p.bits_allocated;
  d["bits_stored"] = p.bits_stored;
  d["high_bit"] = p.high_bit;
  d["pixel_representation"] = p.pixel_representation;
  d["samples_per_pixel"] = p.samples_per_pixel;
  d["planar_configuration"] = p.planar_configuration;
  d["number_of_frames"] = p.number_of_frames;
  d["photometric_interpretation"] = latin1(p.photometric_interpretation);
  d["rescale_slope"] = p.rescale_slope;
  d["rescale_intercept"] = p.rescale_intercept;
  d["has_rescale"] = p.has_rescale;
  d["window_center"] = p.window_center;
  d["window_width"] = p.window_width;
  d["voi_lut_function"] = latin1(p.voi_lut_function);
  d["has_modality_lut_sequence"] = p.has_modality_lut_sequence;
  d["has_voi_lut_sequence"] = p.has_voi_lut_sequence;
  py::object modality_lut = py::none();
  if (p.has_modality_lut) {
    py::dict m = lut_dict(p.modality_lut);
    m["type"] = latin1(p.modality_lut.type);
    modality_lut = m;
  }
  d["modality_lut"] = modality_lut;
  py::list voi_luts;
  for (const auto& l : p.voi_luts) voi_luts.append(lut_dict(l));
  d["voi_luts"] = voi_luts;
  d["sop_instance_uid"] = latin1(p.sop_instance_uid);
  d["study_instance_uid"] = latin1(p.study_instance_uid);
  d["series_instance_uid"] = latin1(p.series_instance_uid);
  d["patient_id"] = latin1(p.patient_id);
  d["study_date"] = latin1(p.study_date);
  d["view_position"] = latin1(p.view_position);
  d["modality"] = latin1(p.modality);
  d["sop_class_uid"] = latin1(p.sop_class_uid.empty() ? p.media_storage_sop_class_uid : p.sop_class_uid);
  d["has_pixel_data"] = p.has_pixel_data;
  d["encapsulated"] = p.encapsulated;
  d["fragments"] = p.fragments;
  d["basic_offset_table"] = p.basic_offset_table;
  d["extended_offset_table"] = p.extended_offset_table;
  d["extended_offset_table_lengths"] = p.extended_offset_table_lengths;
  d["deflated"] = p.deflated;
  d["codec"] = cxrfast::dicom::codec_name(cxrfast::dicom::codec(p));
  return d;
}

ParsedBytes parse_bytes(const py::bytes& bytes, std::size_t max_inflated) {
  const std::string_view view = bytes;
  ParsedBytes r{reinterpret_cast<const std::uint8_t*>(view.data()), view.size(), {}};
  py::gil_scoped_release release;
  r.p = cxrfast::dicom::parse(r.data, r.size, max_inflated);
  return r;
}

}  // namespace cxrfast::bind

namespace {

using cxrfast::bind::dicom_meta;

py::tuple dicom_read(py::bytes data, int frame, std::size_t max_inflated, bool decode) {
  const auto [ptr, size, p] = cxrfast::bind::parse_bytes(data, max_inflated);  // `data` lives for the whole call
  py::dict meta = dicom_meta(p);
  if (!decode || cxrfast::dicom::codec(p) == cxrfast::dicom::Codec::None) return py::make_tuple(meta, py::none());
  cxrfast::dicom::check_decodable(p);
  const std::size_t frame_bytes = cxrfast::dicom::native_frame_bytes(p);
  const std::size_t frames = std::size_t(p.number_of_frames);
  if (frame < -1 || frame >= int(frames))
    throw py::index_error("frame " + std::to_string(frame) + " out of range for " + std::to_string(frames) +
                          " frame(s)");
  if (cxrfast::dicom::codec(p) == cxrfast::dicom::Codec::External) {  // the encoded frames, for cxrfast.io
    py::list streams;
    for (int f = frame == -1 ? 0 : frame, last = frame == -1 ? int(frames) : frame + 1; f < last; ++f) {
      std::vector<std::uint8_t> s;
      {
        py::gil_scoped_release release;
        s = cxrfast::dicom::encapsulated_frame(ptr, size, p, f);
      }
      streams.append(py::bytes(reinterpret_cast<const char*>(s.data()), s.size()));
    }
    return py::make_tuple(meta, streams);
  }
  const bool is_signed = p.pixel_representation == 1;
  py::dtype dtype = p.bits_allocated == 8 ? (is_signed ? py::dtype::of<std::int8_t>() : py::dtype::of<std::uint8_t>())
                    : p.bits_allocated == 16 ? (is_signed ? py::dtype::of<std::int16_t>() : py::dtype::of<std::uint16_t>())
                                             : (is_signed ? py::dtype::of<std::int32_t>() : py::dtype::of<std::uint32_t>());
  std::vector<py::ssize_t> shape;
  if (frame == -1 && frames > 1) shape.push_back(py::ssize_t(frames));
  shape.push_back(p.rows);
  shape.push_back(p.columns);
  if (p.samples_per_pixel > 1) shape.push_back(p.samples_per_pixel);
  py::array out(dtype, shape);
  auto* dst = static_cast<std::uint8_t*>(out.mutable_data());
  {
    py::gil_scoped_release release;
    const int first = frame == -1 ? 0 : frame, last = frame == -1 ? int(frames) : frame + 1;
    for (int f = first; f < last; ++f)
      cxrfast::dicom::decode_frame(ptr, size, p, f, dst + std::size_t(f - first) * frame_bytes);
  }
  return py::make_tuple(meta, out);
}

}  // namespace

// Importing the module runs the static registrations above; the module itself only reports how
// it was built.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def(
      "cuda_compiled",
      []() {
#ifdef CXRFAST_WITH_CUDA
        return true;
#else
        return false;
#endif
      },
      "True when the CUDA kernels (csrc/cuda) were compiled into this extension.");
  m.def(
      "zlib_compiled",
      []() {
#ifdef CXRFAST_WITH_ZLIB
        return true;
#else
        return false;
#endif
      },
      "True when zlib was linked (setup.py found zlib.h): the deflated DICOM transfer syntax is read; without "
      "it, such files raise a DicomError saying so.");

  py::register_exception<cxrfast::dicom::ParseError>(m, "DicomParseError", PyExc_ValueError);
  cxrfast::bind::register_pixels(m);
  m.def("dicom_read", &dicom_read, py::arg("data"), py::arg("frame") = -1,
        py::arg("max_inflated") = cxrfast::dicom::kMaxInflatedBytes, py::arg("decode") = true,
        "Parse a DICOM Part 10 file (bytes) → (meta dict, pixels). pixels: a numpy array for the syntaxes "
        "decoded here (native, RLE Lossless, JPEG Lossless; frame −1: all frames); for those decoded by a codec "
        "library (meta['codec'] == 'external') the list of the requested frames' encoded streams (bytes); "
        "else None, and the meta lists the fragments' (offset, length). max_inflated: the largest inflated "
        "dataset accepted from the deflated syntax. decode=False: the meta only (pixels None), nothing checked "
        "beyond the parse.");
}
