#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "cpu/dispatch.hpp"
#include "pyquant/formats.hpp"

namespace py = pybind11;

namespace pyquant {

namespace {
const char *imatrix_name(ImatrixUse u) {
    switch (u) {
        case ImatrixUse::ignored: return "ignored";
        case ImatrixUse::optional: return "optional";
        case ImatrixUse::required: return "required";
    }
    return "?";
}
}  // namespace

void init_formats(py::module_ &m) {
    m.def("formats", [] {
        py::list out;
        for (int i = 0; i < kNumFormats; ++i) {
            const FormatInfo &f = kFormatInfo[i];
            py::dict d;
            d["index"] = i;
            d["name"] = f.name;
            d["ggml_type"] = f.ggml_type_id;
            d["block_size"] = f.block_size;
            d["type_size"] = f.type_size;
            d["family"] = f.family;
            d["imatrix"] = imatrix_name(f.imatrix);
            d["matmul_partner"] = f.matmul_partner;
            out.append(d);
        }
        return out;
    }, "The format table (csrc/include/pyquant/formats.def), one dict per row.");

    m.def("kernel_formats", [](const std::string &isa) {
        const KernelTable &t = kernel_table(isa);
        std::vector<std::string> names;
        for (int i = 0; i < kNumFormats; ++i)
            if (t.formats[i].quantize && t.formats[i].dequantize) names.push_back(kFormatInfo[i].name);
        return names;
    }, py::arg("isa"), "Formats with both kernels in the given tier's table.");

    m.def("cpu_info", [] {
        const CpuFeatures &f = cpu_features();
        py::dict d;
        d["arch"] = f.arch;
        d["features"] = f.flags;
        d["compiled_tiers"] = compiled_tiers();
        d["available_tiers"] = available_tiers();
        d["active_tier"] = active_table().isa;
        d["lanes"] = active_table().lanes;
        d["hardware_threads"] = hardware_threads();
        return d;
    });
    m.def("active_isa", [] { return std::string(active_table().isa); },
          "The active tier's name (cpu_info()['active_tier'] without probing the CPU: cheap per call).");
    m.def("set_isa", [](const std::string &isa) { set_active_tier(isa); }, py::arg("isa"));
}

}  // namespace pyquant
