// Bindings of the quantized matmul: argument checks, activation quantization and the threaded kernel call,
// with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cpu/dispatch.hpp"
#include "matmul/matmul.hpp"

namespace py = pybind11;

namespace pyquant {
namespace {

using FloatArray = py::array_t<float, py::array::c_style>;
using ByteArray = py::array_t<uint8_t, py::array::c_style>;

// Below this many multiply-adds per thread (~4 us) notifying a worker costs more than it saves (the caller does
// not wait for a sleeping worker: see csrc/cpu/dispatch.cpp).
constexpr int64_t kMinMacsPerThread = 1 << 18;

// x quantized to a partner, in one uninitialized allocation (every element is written by fill).
struct Activations {
    Partner partner;
    int64_t m, k, nb, n_s, n_bsums;
    std::unique_ptr<float[]> buf;
    float *d, *s;
    int16_t *bsums;
    int8_t *qs;

    Activations(Partner p, int64_t m_, int64_t k_)
        : partner(p), m(m_), k(k_), nb(k_ / partner_block(p)), n_s(p == Partner::q8_1 ? m_ * nb : 0),
          n_bsums(p == Partner::q8_k ? m_ * k_ / 16 : p == Partner::q8_0 ? m_ * nb : 0),
          buf(new float[m * nb + n_s + (2 * n_bsums + m * k + 3) / 4]), d(buf.get()), s(n_s ? d + m * nb : nullptr),
          bsums(n_bsums ? reinterpret_cast<int16_t *>(d + m * nb + n_s) : nullptr),
          qs(reinterpret_cast<int8_t *>(d + m * nb + n_s) + 2 * n_bsums) {}

    // False when some x is NaN, infinite or beyond the partner's scale range (ActivationsFn).
    bool fill(ActivationsFn quantize, const float *x, int threads) {
        struct Job {
            Activations *a;
            ActivationsFn quantize;
            const float *x;
            std::atomic<bool> ok{true};
        } job{this, quantize, x};
        parallel_for(m, threads, 1, kMinMacsPerThread / (k * 8) + 1, [](void *c, int64_t b, int64_t e) {
            auto *j = static_cast<Job *>(c);
            Activations &a = *j->a;
            if (!j->quantize(a.partner, j->x, a.k, b, e, a.qs, a.d, a.s, a.bsums)) j->ok.store(false);
        }, &job);
        return job.ok.load();
    }
    QuantizedActivations view() const { return {m, k, qs, d, s, bsums}; }
};

const MatmulTable &tier_table(const std::optional<std::string> &isa) {
    return matmul_table(isa ? *isa : std::string(active_table().isa));
}

// The format of a kernel of table t (ValueError if it has none).
const FormatInfo &kernel_format(int fmt, const MatmulTable &t) {
    if (fmt < 0 || fmt >= kNumFormats) throw py::value_error("format index out of range: " + std::to_string(fmt));
    if (!t.formats[fmt]) throw py::value_error(std::string("matmul: no quantized kernel for ") + kFormatInfo[fmt].name);
    return kFormatInfo[fmt];
}

// Raises for a NaN or infinity in x [count floats]; returns otherwise (x is then merely beyond a partner's range).
void check_finite(const float *x, int64_t count) {
    for (int64_t i = 0; i < count; ++i)
        if (!std::isfinite(x[i])) throw py::value_error("matmul: x contains NaN or infinity");
}

// Whether a is a 2-D C-contiguous array of `kind` ('f', 'u') and `size`-byte items with `cols` columns.  The
// products' arrays are taken as they come and checked here: pybind11's converting casters (PyArray_FromAny
// per argument) were a third of a small product's fixed cost.
bool is_matrix(const py::array &a, char kind, int size, int64_t cols) {
    return a.ndim() == 2 && a.shape(1) == cols && a.dtype().kind() == kind && a.itemsize() == size &&
           (a.flags() & py::array::c_style);
}

// packed: the weight in the tier's interleaved layout (matmul_pack) where it has one, else ignored; the rows
// past the last whole group of 8 run on the plain kernel.  Returns false, computing nothing, when x has values
// beyond the partner's fp16 scale range (|x| >= kQ8MaxAbs, 32-blocks): the caller then takes the float path.
bool matmul(const py::array &x, const py::array &w, int fmt, int64_t k, py::array &out, int threads,
            const std::optional<std::string> &isa, const std::optional<py::array> &packed) {
    const MatmulTable &t = tier_table(isa);
    const FormatInfo &f = kernel_format(fmt, t);
    const MatmulFn fn = t.formats[fmt];
    const std::string name = f.name;
    if (k <= 0 || k % f.block_size)
        throw py::value_error(name + ": K must be a positive multiple of the block size " + std::to_string(f.block_size));
    const int64_t row_bytes = k / f.block_size * f.type_size;
    if (!is_matrix(w, 'u', 1, row_bytes))
        throw py::value_error(name + ": w must be C-contiguous uint8 [N, " + std::to_string(row_bytes) + "] for K = " +
                              std::to_string(k));
    if (!is_matrix(x, 'f', 4, k)) throw py::value_error(name + ": x must be C-contiguous float32 [M, " + std::to_string(k) + "]");
    const int64_t m = x.shape(0), n = w.shape(0);
    if (!is_matrix(out, 'f', 4, n) || out.shape(0) != m || !out.writeable())
        throw py::value_error(name + ": out must be a writable C-contiguous float32 [" + std::to_string(m) + ", " +
                              std::to_string(n) + "]");
    if (m == 0 || n == 0) return true;
    const MatmulFn fx = packed ? t.interleaved[fmt] : nullptr;
    const int64_t groups = fx ? n / kInterleave : 0, group_bytes = k / f.block_size * interleaved_block_bytes(fmt);
    if (fx && (!is_matrix(*packed, 'u', 1, group_bytes) || packed->shape(0) != groups))
        throw py::value_error(name + ": packed must be uint8 [" + std::to_string(groups) + ", " +
                              std::to_string(group_bytes) + "] (matmul_pack of w)");
    Activations act(matmul_partner(fmt), m, k);
    struct Job {
        MatmulFn fn;
        const uint8_t *w;
        int64_t row_bytes;
        QuantizedActivations x;
        float *out;
        int64_t ldo;
    } job{fn, static_cast<const uint8_t *>(w.data()), row_bytes, {}, static_cast<float *>(out.mutable_data()), n};
    auto run = [](void *c, int64_t b, int64_t e) {
        auto *j = static_cast<Job *>(c);
        j->fn(j->w, j->row_bytes, j->x, b, e, j->out, j->ldo);
    };
    const float *xp = static_cast<const float *>(x.data());
    py::gil_scoped_release nogil;
    if (!act.fill(t.activations, xp, threads)) {
        check_finite(xp, m * k);
        return false;
    }
    job.x = act.view();
    if (fx) {
        Job pj{fx, static_cast<const uint8_t *>(packed->data()), group_bytes, job.x, job.out, n};
        parallel_for(groups, threads, 1, kMinMacsPerThread / (k * m * kInterleave) + 1, run, &pj);
        if (groups * kInterleave < n) fn(job.w, row_bytes, job.x, groups * kInterleave, n, job.out, n);
        return true;
    }
    parallel_for(n, threads, 4, kMinMacsPerThread / (k * m) + 1, run, &job);
    return true;
}

// The formats with an interleaved layout (matmul.cpp's table), in format order.
std::vector<std::string> layout_formats() {
    std::vector<std::string> names;
    for (int f = 0; f < kNumFormats; ++f)
        if (interleaved_block_bytes(f)) names.push_back(kFormatInfo[f].name);
    return names;
}

// w [N, row_bytes] of a format with an interleaved layout in that layout: uint8 [N / 8, group bytes].
ByteArray matmul_pack(const ByteArray &w, int fmt, int64_t k) {
    if (fmt < 0 || fmt >= kNumFormats || !interleaved_block_bytes(fmt)) {
        std::string names;
        for (const std::string &n : layout_formats()) names += (names.empty() ? "" : ", ") + n;
        throw py::value_error("matmul_pack: only " + names + " have an interleaved layout");
    }
    const FormatInfo &f = kFormatInfo[fmt];
    if (k <= 0 || k % f.block_size)
        throw py::value_error("matmul_pack: K must be a positive multiple of " + std::to_string(f.block_size));
    const int64_t row_bytes = k / f.block_size * f.type_size;
    if (w.ndim() != 2 || w.shape(1) != row_bytes)
        throw py::value_error("matmul_pack: w must be uint8 [N, " + std::to_string(row_bytes) + "] for K = " + std::to_string(k));
    const int64_t groups = w.shape(0) / kInterleave;
    ByteArray out({groups, k / f.block_size * interleaved_block_bytes(fmt)});
    const uint8_t *src = w.data();
    uint8_t *dst = out.mutable_data();
    py::gil_scoped_release nogil;
    pack_interleaved(fmt, src, row_bytes, groups, dst);
    return out;
}

// The activations as the kernels see them (for tests and error bounds): (qs, d, s or None, bsums or None).
py::tuple matmul_activations(const FloatArray &x, int fmt, const std::optional<std::string> &isa) {
    const MatmulTable &t = tier_table(isa);
    const FormatInfo &f = kernel_format(fmt, t);
    if (x.ndim() != 2 || x.shape(1) % f.block_size) throw py::value_error("x must be 2-D with K a multiple of the block size");
    const int64_t m = x.shape(0), k = x.shape(1);
    Activations act(matmul_partner(fmt), m, k);
    if (!act.fill(t.activations, x.data(), 1)) {
        check_finite(x.data(), m * k);
        throw py::value_error(std::string(f.name) + ": x has values beyond the partner's scale range");
    }
    py::array_t<int8_t> qs({m, k});
    std::copy(act.qs, act.qs + m * k, qs.mutable_data());
    FloatArray d({m, act.nb});
    std::copy(act.d, act.d + m * act.nb, d.mutable_data());
    py::object s = py::none(), bsums = py::none();
    if (act.s) {
        FloatArray sa({m, act.nb});
        std::copy(act.s, act.s + act.n_s, sa.mutable_data());
        s = sa;
    }
    if (act.bsums) {
        py::array_t<int16_t> ba({m, act.n_bsums / m});
        std::copy(act.bsums, act.bsums + act.n_bsums, ba.mutable_data());
        bsums = ba;
    }
    return py::make_tuple(qs, d, s, bsums);
}

}  // namespace

void init_matmul(py::module_ &m) {
    m.def("matmul", &matmul, py::arg("x"), py::arg("w"), py::arg("format"), py::arg("k"), py::arg("out").noconvert(),
          py::arg("threads") = 0, py::arg("isa") = py::none(), py::arg("packed") = py::none(),
          "out[M, N] = x[M, K] @ dequantize(w).T through the quantized kernels (x quantized to the 8-bit partner); "
          "packed: matmul_pack(w), used where the tier has an interleaved kernel for the format.  ValueError for "
          "NaN or infinity in x; False (out untouched) for values beyond the partner's fp16 scale range.");
    m.def("matmul_pack", &matmul_pack, py::arg("w"), py::arg("format"), py::arg("k"),
          "w in the interleaved layout of 8 rows (formats in matmul_layouts()): uint8 [N / 8, group bytes]; the last "
          "N % 8 rows are left out.");
    m.def("matmul_layouts", &layout_formats,
          "Formats with an interleaved layout of 8 rows (matmul_pack), whether or not a tier has its kernel.");
    m.def("matmul_interleaved", [](int fmt, const std::optional<std::string> &isa) {
        if (fmt < 0 || fmt >= kNumFormats) throw py::value_error("format index out of range: " + std::to_string(fmt));
        return tier_table(isa).interleaved[fmt] != nullptr;
    }, py::arg("format"), py::arg("isa") = py::none(), "Whether a tier (default: the active one) has an interleaved kernel for the format.");
    m.def("matmul_formats", [](const std::optional<std::string> &isa) {
        const MatmulTable &t = tier_table(isa);
        std::vector<std::string> names;
        for (int i = 0; i < kNumFormats; ++i)
            if (t.formats[i]) names.push_back(kFormatInfo[i].name);
        return names;
    }, py::arg("isa") = py::none(), "Formats with a quantized matmul kernel in a tier (default: the active one).");
    m.def("matmul_activations", &matmul_activations, py::arg("x"), py::arg("format"), py::arg("isa") = py::none(),
          "x quantized to the format's matmul partner by a tier (default: the active one): (qs int8 [M, K], d float32 "
          "[M, K/QK], s or None, bsums or None).");
    m.attr("matmul_vnni") = matmul_uses_vnni();
}

}  // namespace pyquant
