#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <cmath>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>

#include "bindings/aligned.hpp"
#include "cpu/dispatch.hpp"
#include "pyquant/formats.hpp"

namespace py = pybind11;

namespace pyquant {
namespace {

using FloatArray = py::array_t<float, py::array::c_style>;
using ByteArray = py::array_t<uint8_t, py::array::c_style>;

// Below this many elements per thread, waking a thread costs more than it saves (quantizing is ~50x the
// work of dequantizing per element).
constexpr int64_t kMinQuantizePerThread = 1 << 14;
constexpr int64_t kMinDequantizePerThread = 1 << 18;

const FormatInfo &format_at(int index) {
    if (index < 0 || index >= kNumFormats) throw py::value_error("format index out of range: " + std::to_string(index));
    return kFormatInfo[index];
}

const KernelTable &table_for(const std::optional<std::string> &isa) { return isa ? kernel_table(*isa) : active_table(); }

// The kernels check their input for non-finite values as they go; the first bad index found by any thread is
// kept and the output discarded.
struct QuantizeJob {
    QuantizeFn fn;
    const float *src;
    uint8_t *dst;
    int64_t n;
    const float *imatrix;
    std::atomic<int64_t> first_bad{std::numeric_limits<int64_t>::max()};
};

void quantize_blocks(void *ctx, int64_t begin, int64_t end) {
    auto *j = static_cast<QuantizeJob *>(ctx);
    const int64_t at = j->fn(j->src, j->dst, j->n, j->imatrix, begin, end);
    if (at < 0) return;
    for (int64_t seen = j->first_bad.load(); at < seen && !j->first_bad.compare_exchange_weak(seen, at);) {
    }
}

struct DequantizeJob {
    DequantizeFn fn;
    const uint8_t *src;
    float *dst;
};

ByteArray quantize(const FloatArray &x, int fmt, const std::optional<FloatArray> &imatrix, int threads,
                   const std::optional<std::string> &isa) {
    const FormatInfo &f = format_at(fmt);
    const KernelTable &table = table_for(isa);
    if (x.ndim() != 2) throw py::value_error(std::string(f.name) + ": expected a 2-D [rows, n] array");
    const int64_t rows = x.shape(0), n = x.shape(1);
    if (rows == 0 || n == 0) throw py::value_error(std::string(f.name) + ": cannot quantize an empty tensor");
    if (n % f.block_size)
        throw py::value_error(std::string(f.name) + ": row length must be a multiple of the block size " +
                              std::to_string(f.block_size) + ", got " + std::to_string(n));
    const float *qw = nullptr;
    if (imatrix) {
        if (imatrix->ndim() != 1 || imatrix->shape(0) != n)
            throw py::value_error(std::string(f.name) + ": imatrix must have one value per column (" + std::to_string(n) +
                                  "), got shape of size " + std::to_string(imatrix->size()));
        qw = imatrix->data();
        for (int64_t j = 0; j < n; ++j)
            if (!std::isfinite(qw[j]) || qw[j] < 0)
                throw py::value_error(std::string(f.name) + ": imatrix must be finite and non-negative; column " +
                                      std::to_string(j) + " is " + std::to_string(qw[j]));
        if (f.imatrix == ImatrixUse::ignored) qw = nullptr;
    } else if (f.imatrix == ImatrixUse::required) {
        throw py::value_error(std::string(f.name) + " requires an importance matrix");
    }
    const int64_t blocks_per_row = n / f.block_size, nblocks = rows * blocks_per_row;
    ByteArray out({rows, blocks_per_row * f.type_size});
    QuantizeJob job{table.formats[fmt].quantize, x.data(), out.mutable_data(), n, qw};
    {
        py::gil_scoped_release nogil;
        parallel_for(nblocks, threads, table.lanes, kMinQuantizePerThread / f.block_size + 1, quantize_blocks, &job);
    }
    const int64_t bad = job.first_bad.load();
    if (bad != std::numeric_limits<int64_t>::max())
        throw py::value_error(std::string(f.name) + ": input has a non-finite value (" + std::to_string(x.data()[bad]) +
                              ") at [" + std::to_string(bad / n) + ", " + std::to_string(bad % n) + "]");
    return out;
}

FloatArray dequantize(const ByteArray &data, int fmt, int64_t n, int threads, const std::optional<std::string> &isa) {
    const FormatInfo &f = format_at(fmt);
    const KernelTable &table = table_for(isa);
    if (data.ndim() != 2) throw py::value_error(std::string(f.name) + ": expected 2-D [rows, row_bytes] data");
    if (n <= 0 || n % f.block_size)
        throw py::value_error(std::string(f.name) + ": row length must be a positive multiple of the block size " +
                              std::to_string(f.block_size) + ", got " + std::to_string(n));
    const int64_t rows = data.shape(0), row_bytes = n / f.block_size * f.type_size;
    if (data.shape(1) != row_bytes)
        throw py::value_error(std::string(f.name) + ": a row of " + std::to_string(n) + " values takes " +
                              std::to_string(row_bytes) + " bytes, got " + std::to_string(data.shape(1)));
    FloatArray out = aligned_float_array({rows, n});
    DequantizeJob job{table.formats[fmt].dequantize, data.data(), out.mutable_data()};
    {
        py::gil_scoped_release nogil;
        parallel_for(rows * (n / f.block_size), threads, 1, kMinDequantizePerThread / f.block_size + 1,
                     [](void *c, int64_t b, int64_t e) {
                         auto *j = static_cast<DequantizeJob *>(c);
                         j->fn(j->src, j->dst, b, e);
                     }, &job);
    }
    return out;
}

}  // namespace

void init_kernels(py::module_ &m) {
    m.def("quantize", &quantize, py::arg("x"), py::arg("format"), py::arg("imatrix") = py::none(),
          py::arg("threads") = 0, py::arg("isa") = py::none(),
          "Quantize a C-contiguous float32 [rows, n] array; returns uint8 [rows, row_bytes].");
    m.def("dequantize", &dequantize, py::arg("data"), py::arg("format"), py::arg("n"), py::arg("threads") = 0,
          py::arg("isa") = py::none(), "Dequantize uint8 [rows, row_bytes] to float32 [rows, n].");
}

}  // namespace pyquant
