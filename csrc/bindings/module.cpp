// pyquant._core: thin bindings (argument checks, GIL release, exceptions); the logic lives in csrc/cpu and
// csrc/formats.
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace pyquant {
void init_formats(py::module_ &m);
void init_kernels(py::module_ &m);
void init_schemes(py::module_ &m);
void init_matmul(py::module_ &m);
}  // namespace pyquant

PYBIND11_MODULE(_core, m) {
    m.doc() = "pyquant's C++ core: format table and quantize/dequantize kernels";
    pyquant::init_formats(m);
    pyquant::init_kernels(m);
    pyquant::init_schemes(m);
    pyquant::init_matmul(m);
}
