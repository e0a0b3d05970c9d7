// cxrfast._C bindings of the radiograph pixel pipeline (csrc/pixels.h) and the CPU kernel of the op
// cxrfast::radiograph_render (the CUDA kernel's computation, csrc/pixels_math.h render_pixel, run on the host).
//
// Python-facing:
//   radiograph_pixels(pixels, meta, options) -> ndarray        stored values (numpy) → square image
//   radiograph_dicom(data, frame, options) -> (meta, ndarray|None)
//       parse + decode + pipeline in one call with the GIL released; None when the pixel data needs a
//       library codec (cxrfast.io decodes it, then calls radiograph_pixels)
//   Prepared / radiograph_prepare(...): one image readied for the batched kernel: its table, its geometry
//       and its samples, written into a (pinned) staging buffer by write_samples.
#include <torch/extension.h>

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "bindings.h"
#include "dicom.h"
#include "pixels.h"
#include "render.h"

namespace py = pybind11;
namespace px = cxrfast::pixels;
namespace dcm = cxrfast::dicom;

namespace cxrfast::bind {
namespace {

template <class T>
T get(const py::dict& d, const char* key, T fallback) {
  return d.contains(key) && !d[key].is_none() ? d[key].cast<T>() : fallback;
}

px::Lut lut_from(const py::handle& h) {
  const py::dict d = h.cast<py::dict>();
  px::Lut l;
  l.first_mapped = d["first_mapped"].cast<std::int64_t>();
  l.bits = d["bits"].cast<int>();
  const auto data = py::array_t<std::uint16_t, py::array::c_style | py::array::forcecast>::ensure(d["data"]);
  if (!data) throw px::PipelineError("LUT Data (0028,3006) is not an array of integers");
  l.data.assign(data.data(), data.data() + data.size());
  return l;
}

// The pipeline's view of a file, from the meta dict of read_dicom (or the one cxrfast.io builds for a PNG).
px::Source source_from_meta(const py::dict& m) {
  px::Source s;
  s.rows = get<int>(m, "rows", 0);
  s.columns = get<int>(m, "columns", 0);
  s.bits_stored = get<int>(m, "bits_stored", 0);
  s.is_signed = get<int>(m, "pixel_representation", 0) == 1;
  const std::string photometric = get<std::string>(m, "photometric_interpretation", "MONOCHROME2");
  const int spp = get<int>(m, "samples_per_pixel", 1);
  if (spp != 1 || (photometric != "MONOCHROME1" && photometric != "MONOCHROME2"))
    throw px::PipelineError("Photometric Interpretation (0028,0004) " + photometric + " with " + std::to_string(spp) +
                            " sample(s) per pixel: the radiograph pipeline takes grayscale (MONOCHROME1/2) only");
  s.monochrome1 = photometric == "MONOCHROME1";
  s.has_rescale = get<bool>(m, "has_rescale", false);
  s.slope = get<double>(m, "rescale_slope", 1.0);
  s.intercept = get<double>(m, "rescale_intercept", 0.0);
  if (m.contains("modality_lut") && !m["modality_lut"].is_none()) {
    s.has_modality_lut = true;
    s.modality_lut = lut_from(m["modality_lut"]);
  }
  s.window_center = get<std::vector<double>>(m, "window_center", {});
  s.window_width = get<std::vector<double>>(m, "window_width", {});
  s.voi_lut_function = get<std::string>(m, "voi_lut_function", "");
  if (m.contains("voi_luts") && !m["voi_luts"].is_none())
    for (const auto& item : m["voi_luts"].cast<py::list>()) s.voi_luts.push_back(lut_from(item));
  return s;
}

px::Voi voi_from(const std::string& v) {
  if (v == "auto") return px::Voi::Auto;
  if (v == "window") return px::Voi::Window;
  if (v == "lut") return px::Voi::Lut;
  if (v == "minmax") return px::Voi::MinMax;
  if (v == "percentile") return px::Voi::Percentile;
  if (v == "none") return px::Voi::None;
  throw px::PipelineError("unknown voi '" + v + "'");
}

int out_type_from(const std::string& t) {
  if (t == "uint8") return px::kU8;
  if (t == "uint16") return px::kU16;
  if (t == "float16") return px::kF16;
  if (t == "float32") return px::kF32;
  throw px::PipelineError("unknown dtype '" + t + "'");
}

// Options from the dict cxrfast.io builds (it validates them first, with the argument names).
px::Options options_from(const py::dict& d) {
  px::Options o;
  o.size = get<int>(d, "size", 512);
  o.fit = get<std::string>(d, "fit", "pad") == "crop" ? px::Fit::Crop : px::Fit::Pad;
  o.filter = get<std::string>(d, "resample", "area") == "bilinear" ? px::kBilinear : px::kArea;
  o.voi = voi_from(get<std::string>(d, "voi", "auto"));
  o.fallback = voi_from(get<std::string>(d, "fallback", "minmax"));
  if (d.contains("window") && !d["window"].is_none()) {
    const auto w = d["window"].cast<std::pair<double, double>>();
    o.has_window = true, o.center = w.first, o.width = w.second;
  }
  o.function = get<std::string>(d, "function", "");
  o.voi_index = get<int>(d, "voi_index", 0);
  const auto p = get<std::pair<double, double>>(d, "percentiles", {0.5, 99.5});
  o.p_lo = p.first, o.p_hi = p.second;
  o.invert = get<int>(d, "invert", -1);
  o.out_type = out_type_from(get<std::string>(d, "dtype", "uint8"));
  o.mean = get<float>(d, "mean", 0.0f);
  o.std = get<float>(d, "std", 1.0f);
  o.pad_value = get<float>(d, "pad_value", 0.0f);
  return o;
}

py::dtype out_dtype(int out_type) {
  switch (out_type) {
    case px::kU8: return py::dtype::of<std::uint8_t>();
    case px::kU16: return py::dtype::of<std::uint16_t>();
    case px::kF16: return py::dtype("float16");
    default: return py::dtype::of<float>();
  }
}

py::array new_image(const px::Options& o) {
  return py::array(out_dtype(o.out_type), std::vector<py::ssize_t>{o.size, o.size});
}

// pixels as a C-contiguous array in native byte order (a '>u2' array holds the same values as a '<u2' one).
py::array native_c_array(const py::array& pixels) {
  py::object a = pixels;
  if (!pixels.dtype().attr("isnative").cast<bool>()) a = pixels.attr("astype")(pixels.dtype().attr("newbyteorder")("="));
  py::array c = py::array::ensure(a, py::array::c_style);
  if (!c) throw px::PipelineError("pixels cannot be made a C-contiguous array");
  return c;
}

py::array radiograph_pixels(py::array pixels, py::dict meta, py::dict options) {
  if (pixels.ndim() != 2)
    throw px::PipelineError("pixels must be 2-D [rows, columns], got " + std::to_string(pixels.ndim()) + " dimensions");
  const char kind = pixels.dtype().kind();
  if ((kind != 'u' && kind != 'i') || (pixels.itemsize() != 1 && pixels.itemsize() != 2 && pixels.itemsize() != 4))
    throw px::PipelineError("pixels must hold 8-, 16- or 32-bit integers, got dtype " +
                            py::str(pixels.dtype()).cast<std::string>());
  const py::array c = native_c_array(pixels);
  px::Source s = source_from_meta(meta);
  s.rows = int(c.shape(0)), s.columns = int(c.shape(1));
  if (s.bits_stored == 0) s.bits_stored = int(8 * c.itemsize());
  s.is_signed = kind == 'i';
  const px::Options o = options_from(options);
  py::array out = new_image(o);
  const void* src = c.data();
  void* dst = out.mutable_data();
  const int bytes = int(c.itemsize());
  {
    py::gil_scoped_release release;
    px::process(src, bytes, s, o, dst);
  }
  return out;
}

// A frame's samples: a pointer into the file when they can be read in place (native little endian, 8 or
// 16 bits, one sample: the pipeline masks and sign-extends), else decoded into `buffer`.
const void* frame_samples(const std::uint8_t* data, std::size_t size, const dcm::Parsed& p, int frame,
                          std::vector<std::uint8_t>& buffer) {
  const std::size_t frame_bytes = dcm::native_frame_bytes(p);
  // Not for the deflated syntax: its offsets count in the inflated dataset, not in `data`. (HighBit does not
  // matter: the decoder and the table both take the low BitsStored bits, as pydicom does.)
  const bool in_place = dcm::codec(p) == dcm::Codec::Native && !p.deflated && !p.big_endian &&
                        p.samples_per_pixel == 1 && (p.bits_allocated == 8 || p.bits_allocated == 16);
  if (in_place) {
    const std::uint8_t* ptr = data + p.pixel_offset + std::size_t(frame) * frame_bytes;
    if (p.bits_allocated == 8 || reinterpret_cast<std::uintptr_t>(ptr) % 2 == 0) return ptr;
  }
  buffer.resize(frame_bytes);
  dcm::decode_frame(data, size, p, frame, buffer.data());
  return buffer.data();
}

// Codecs of this extension; the others (imagecodecs) and the absent pixel data go through cxrfast.io.read_dicom.
bool decoded_here(const dcm::Parsed& p) {
  const dcm::Codec c = dcm::codec(p);
  return c == dcm::Codec::Native || c == dcm::Codec::Rle || c == dcm::Codec::JpegLossless;
}

void check_frame(const dcm::Parsed& p, int frame) {
  if (frame < 0 || frame >= p.number_of_frames)
    throw py::index_error("frame " + std::to_string(frame) + " out of range for " + std::to_string(p.number_of_frames) +
                          " frame(s)");
}

// A DICOM file parsed for the pipeline: its meta dict, and whether this extension decodes its pixel data (then
// the pixel description and `frame` are checked); when not, cxrfast.io decodes it with a library or raises.
struct PipelineFile {
  ParsedBytes f;
  py::dict meta;
  bool decodes;
};

PipelineFile open_frame(const py::bytes& data, int frame) {
  PipelineFile r{parse_bytes(data), {}, false};
  r.meta = dicom_meta(r.f.p);
  r.decodes = decoded_here(r.f.p);
  if (r.decodes) {
    dcm::check_decodable(r.f.p);
    check_frame(r.f.p, frame);
  }
  return r;
}

py::tuple radiograph_dicom(py::bytes data, int frame, py::dict options) {
  const PipelineFile file = open_frame(data, frame);
  if (!file.decodes) return py::make_tuple(file.meta, py::none());
  const auto& [ptr, size, p] = file.f;
  const py::dict& meta = file.meta;
  const px::Source s = source_from_meta(meta);
  const px::Options o = options_from(options);
  py::array out = new_image(o);
  void* dst = out.mutable_data();
  {
    py::gil_scoped_release release;
    std::vector<std::uint8_t> buffer;
    const void* samples = frame_samples(ptr, size, p, frame, buffer);
    px::process(samples, p.bits_allocated / 8, s, o, dst);
  }
  return py::make_tuple(meta, out);
}

// One image readied for cxrfast::radiograph_render: table, geometry and where its samples are (in the file's
// bytes, kept alive here, when they can be read in place; else in `owned`, decoded).
struct Prepared {
  px::Image image{};
  std::vector<float> table;
  py::object keep;                  // the bytes / array `src` points into
  std::vector<std::uint8_t> owned;  // decoded samples
  const void* src = nullptr;
  int bytes = 2;                    // 1 or 2 per sample
  std::int64_t count = 0;           // rows · columns
  py::object meta;

  Prepared() = default;
  Prepared(Prepared&&) = default;  // moves keep `owned`'s buffer, so `src` stays valid
  Prepared(const Prepared&) = delete;
  Prepared& operator=(const Prepared&) = delete;

  std::int64_t table_count() const { return std::int64_t(table.size()); }

  // Copy the samples (widened to 16-bit patterns) and the table into host buffers of at least
  // sample_count / table_count elements past the offsets (e.g. pinned torch tensors' data_ptr), and record
  // the offsets the kernel reads them at.
  void write(std::uintptr_t samples_address, std::int64_t sample_offset, std::uintptr_t tables_address,
             std::int64_t table_offset) {
    if (!src) throw px::PipelineError("Prepared.write: this image has no samples (it needs a library codec)");
    py::gil_scoped_release release;
    auto* dst = reinterpret_cast<std::uint16_t*>(samples_address) + sample_offset;
    if (bytes == 2) {
      std::memcpy(dst, src, std::size_t(count) * 2);
    } else {
      const auto* s8 = static_cast<const std::uint8_t*>(src);
      for (std::int64_t i = 0; i < count; ++i) dst[i] = s8[i];
    }
    std::memcpy(reinterpret_cast<float*>(tables_address) + table_offset, table.data(), table.size() * sizeof(float));
    image.sample_offset = sample_offset;
    image.table_offset = table_offset;
  }

  py::bytes descriptor() const { return py::bytes(reinterpret_cast<const char*>(&image), sizeof image); }
};

// Fill r's table and geometry for samples of r.bytes bytes at r.src. Without the GIL.
void ready(Prepared& r, const px::Source& s, const px::Options& o) {
  if (s.bits_stored > 16)
    throw px::PipelineError("the batched kernel takes samples of at most 16 bits, got Bits Stored (0028,0101) " +
                            std::to_string(s.bits_stored));
  if (r.bytes == 4) {
    // 32-bit words holding at most 16 stored bits: their low 16 bits are the pattern the kernel masks (and
    // sign-extends) as it does 16-bit words; narrowed into `owned` (decoded there, or copied from src).
    const std::size_t n = std::size_t(s.rows) * std::size_t(s.columns);
    std::vector<std::uint8_t> narrow(2 * n);
    const auto* w = static_cast<const std::uint32_t*>(r.src);
    auto* d = reinterpret_cast<std::uint16_t*>(narrow.data());
    for (std::size_t i = 0; i < n; ++i) d[i] = std::uint16_t(w[i]);
    r.owned = std::move(narrow);
    r.src = r.owned.data(), r.bytes = 2;
  }
  if (r.bytes != 1 && r.bytes != 2)
    throw px::PipelineError("the batched kernel takes 8-, 16- or 32-bit samples, got " + std::to_string(8 * r.bytes));
  r.count = std::int64_t(s.rows) * s.columns;
  r.table = px::image_table(r.src, r.bytes, std::size_t(r.count), s, o);
  px::plan(s.rows, s.columns, o, &r.image.ay, &r.image.ax);
  r.image.rows = s.rows, r.image.cols = s.columns, r.image.bits_stored = s.bits_stored;
  r.image.is_signed = s.is_signed ? 1 : 0;
  r.image.pad = o.pad_value;
}

Prepared prepare_dicom(py::bytes data, int frame, py::dict options) {
  const PipelineFile file = open_frame(data, frame);
  Prepared r;
  r.meta = file.meta;
  if (!file.decodes) return r;  // no samples: cxrfast.io decodes with a library (or raises the error)
  const auto& [ptr, size, p] = file.f;
  const px::Source s = source_from_meta(file.meta);
  const px::Options o = options_from(options);
  r.keep = data;
  r.bytes = p.bits_allocated / 8;
  {
    py::gil_scoped_release release;
    r.src = frame_samples(ptr, size, p, frame, r.owned);
    ready(r, s, o);
  }
  return r;
}

Prepared prepare_pixels(py::array pixels, py::dict meta, py::dict options) {
  if (pixels.ndim() != 2 || (pixels.dtype().kind() != 'u' && pixels.dtype().kind() != 'i') ||
      (pixels.itemsize() != 1 && pixels.itemsize() != 2 && pixels.itemsize() != 4))
    throw px::PipelineError("pixels for the batched kernel must be 2-D 8-, 16- or 32-bit integers (at most 16 bits "
                            "stored), got " + std::to_string(pixels.ndim()) + "-D " +
                            py::str(pixels.dtype()).cast<std::string>());
  const py::array c = native_c_array(pixels);
  px::Source s = source_from_meta(meta);
  s.rows = int(c.shape(0)), s.columns = int(c.shape(1));
  if (s.bits_stored == 0) s.bits_stored = int(8 * c.itemsize());
  s.is_signed = pixels.dtype().kind() == 'i';
  const px::Options o = options_from(options);
  Prepared r;
  r.meta = meta;
  r.keep = c;
  r.src = c.data();
  r.bytes = int(c.itemsize());
  {
    py::gil_scoped_release release;
    ready(r, s, o);
  }
  return r;
}

// ---- cxrfast::radiograph_render on the CPU: render_pixel for every output pixel ------------------------

at::Tensor radiograph_render_cpu(const at::Tensor& samples, const at::Tensor& tables, const at::Tensor& images,
                                 std::int64_t size, std::int64_t filter, std::int64_t out_type, double mean,
                                 double inv_std) {
  const std::vector<px::Image> ims = cxrfast::render::check_inputs(samples, tables, images, size, filter, out_type);
  TORCH_CHECK(samples.device().is_cpu() && tables.device().is_cpu(), "radiograph_render: samples and tables on the CPU");
  at::Tensor out = at::empty({std::int64_t(ims.size()), size, size},
                             samples.options().dtype(cxrfast::render::out_dtype(out_type)));
  const auto* s = reinterpret_cast<const std::uint16_t*>(samples.const_data_ptr());
  const float* t = tables.const_data_ptr<float>();
  auto* o = static_cast<std::uint8_t*>(out.data_ptr());
  const px::Output outp{int(out_type), float(mean), float(inv_std)};
  const std::int64_t per = size * size, elem = px::out_bytes(int(out_type));
  at::parallel_for(0, std::int64_t(ims.size()) * size, 1, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t bi = begin; bi < end; ++bi) {
      const std::int64_t b = bi / size, i = bi % size;
      for (std::int64_t j = 0; j < size; ++j)
        px::store(o + b * per * elem, i * size + j, px::render_pixel(s, t, ims[std::size_t(b)], int(filter), int(i), int(j)),
                  outp);
    }
  });
  return out;
}

}  // namespace

void register_pixels(py::module_& m) {
  py::register_exception<px::PipelineError>(m, "PipelineError", PyExc_ValueError);
  m.def("radiograph_pixels", &radiograph_pixels, py::arg("pixels"), py::arg("meta"), py::arg("options"),
        "Stored values [rows, cols] → [size, size] image (Modality LUT/rescale, VOI, MONOCHROME1 inversion, "
        "antialiased resize, pad/crop, output dtype); the GIL is released while it runs.");
  m.def("radiograph_dicom", &radiograph_dicom, py::arg("data"), py::arg("frame"), py::arg("options"),
        "DICOM bytes → (meta, image), parse + decode + pipeline with the GIL released; image is None when the "
        "pixel data needs a library codec.");
  py::class_<Prepared>(m, "Prepared")
      .def_property_readonly("sample_count", [](const Prepared& r) { return r.count; })
      .def_property_readonly("table_count", &Prepared::table_count)
      .def_property_readonly("ready", [](const Prepared& r) { return r.src != nullptr; })
      .def_readonly("meta", &Prepared::meta)
      .def("write", &Prepared::write, py::arg("samples_address"), py::arg("sample_offset"), py::arg("tables_address"),
           py::arg("table_offset"))
      .def("descriptor", &Prepared::descriptor);
  m.def("radiograph_prepare", &prepare_dicom, py::arg("data"), py::arg("frame"), py::arg("options"),
        "DICOM bytes → Prepared (ready is False when the pixel data needs a library codec).");
  m.def("radiograph_prepare_pixels", &prepare_pixels, py::arg("pixels"), py::arg("meta"), py::arg("options"),
        "Decoded 8/16/32-bit stored values (at most 16 bits stored) → Prepared.");
  m.attr("radiograph_descriptor_bytes") = py::int_(sizeof(px::Image));
}

}  // namespace cxrfast::bind

namespace cxrfast::render {

at::ScalarType out_dtype(std::int64_t out_type) {
  switch (out_type) {
    case px::kU8: return at::kByte;
    case px::kU16: return at::kUInt16;
    case px::kF16: return at::kHalf;
    case px::kF32: return at::kFloat;
  }
  TORCH_CHECK(false, "radiograph_render: out_type must be 0 (uint8), 1 (uint16), 2 (float16) or 3 (float32), got ",
              out_type);
}


std::vector<pixels::Image> check_inputs(const at::Tensor& samples, const at::Tensor& tables, const at::Tensor& images,
                                        std::int64_t size, std::int64_t filter, std::int64_t out_type) {
  namespace px = cxrfast::pixels;
  TORCH_CHECK(size >= 1 && size <= 32768, "radiograph_render: size must be in [1, 32768], got ", size);
  TORCH_CHECK(filter == px::kArea || filter == px::kBilinear, "radiograph_render: filter must be 0 (area) or 1 (bilinear), got ", filter);
  (void)out_dtype(out_type);
  TORCH_CHECK(images.device().is_cpu() && images.scalar_type() == at::kByte && images.dim() == 2 &&
                  images.size(1) == std::int64_t(sizeof(px::Image)) && images.is_contiguous(),
              "radiograph_render: `images` must be a contiguous CPU uint8 tensor [B, ", sizeof(px::Image),
              "] of image descriptors, got ", images.sizes(), " ", images.scalar_type(), " on ", images.device());
  TORCH_CHECK(samples.scalar_type() == at::kShort && samples.dim() == 1 && samples.is_contiguous(),
              "radiograph_render: `samples` must be a contiguous 1-D int16 tensor (16-bit patterns)");
  TORCH_CHECK(tables.scalar_type() == at::kFloat && tables.dim() == 1 && tables.is_contiguous(),
              "radiograph_render: `tables` must be a contiguous 1-D float32 tensor");
  std::vector<px::Image> out(std::size_t(images.size(0)));
  if (!out.empty()) std::memcpy(out.data(), images.data_ptr(), out.size() * sizeof(px::Image));
  // An axis as plan() writes it: n >= 1 resized samples placed at an offset in [-n, size] (so i - offset
  // cannot overflow), scale = in / n (anything else could index outside the image).
  auto axis_ok = [&](const px::Axis& a, std::int32_t in) {
    return a.in == in && a.n >= 1 && a.offset >= -a.n && a.offset <= size &&
           std::abs(a.scale * a.n - a.in) <= 1e-6 * a.in;
  };
  for (std::size_t b = 0; b < out.size(); ++b) {
    const px::Image& im = out[b];
    // offset + count compared as count <= numel - offset: the sum of a huge offset could wrap past numel
    const bool ok = im.rows >= 1 && im.cols >= 1 && im.bits_stored >= 1 && im.bits_stored <= 16 &&
                    im.sample_offset >= 0 && im.sample_offset <= samples.numel() &&
                    std::int64_t(im.rows) * im.cols <= samples.numel() - im.sample_offset &&
                    im.table_offset >= 0 && im.table_offset <= tables.numel() &&
                    (std::int64_t(1) << im.bits_stored) <= tables.numel() - im.table_offset &&
                    axis_ok(im.ay, im.rows) && axis_ok(im.ax, im.cols);
    TORCH_CHECK(ok, "radiograph_render: image descriptor ", b, " is inconsistent with the buffers (",
                samples.numel(), " samples, ", tables.numel(), " table entries)");
  }
  return out;
}

}  // namespace cxrfast::render

TORCH_LIBRARY_FRAGMENT(cxrfast, m) {
  m.def("radiograph_render(Tensor samples, Tensor tables, Tensor images, int size, int filter, int out_type, "
        "float mean, float inv_std) -> Tensor");
}

TORCH_LIBRARY_IMPL(cxrfast, CPU, m) {
  m.impl("radiograph_render", &cxrfast::bind::radiograph_render_cpu);
}
