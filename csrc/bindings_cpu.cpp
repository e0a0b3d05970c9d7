// Python module cxrfast._C and the C++ half of the `cxrfast` operator namespace.
//
// TORCH_LIBRARY_FRAGMENT (not TORCH_LIBRARY): the same namespace also receives ops defined from
// Python (torch.library.triton_op / custom_op in cxrfast/ops); only one TORCH_LIBRARY block may
// exist per namespace, fragments compose with it.
#include <torch/extension.h>

#include "group_counts.h"

TORCH_LIBRARY_FRAGMENT(cxrfast, m) {
  m.def("group_counts(Tensor groups) -> Tensor");
}

TORCH_LIBRARY_IMPL(cxrfast, CPU, m) {
  m.impl("group_counts", &cxrfast::group_counts_cpu);
}

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
}
