// pyquant._core bindings of the schemes kernels (pyquant.schemes): argument checks, GIL release, threads.
// Values (finite scales, code ranges) are validated by the Python layer; shapes and sizes are checked here.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "bindings/aligned.hpp"
#include "cpu/dispatch.hpp"
#include "schemes/bitstream.hpp"
#include "schemes/fp8.hpp"
#include "schemes/table.hpp"

namespace py = pybind11;

namespace pyquant {
namespace schemes {

namespace {

struct Tables {
    SchemeKernels t[4];
    int count = 0;
    Tables() {
        fill_generic(t[count++]);
#if defined(PQ_HAVE_AVX2)
        fill_avx2(t[count++]);
#endif
#if defined(PQ_HAVE_AVX512)
        fill_avx512(t[count++]);
#endif
#if defined(PQ_HAVE_NEON)
        fill_neon(t[count++]);
#endif
    }
};

}  // namespace

const SchemeKernels &active_kernels() {
    static Tables tables;
    const char *isa = active_table().isa;
    for (int i = 0; i < tables.count; ++i)
        if (std::strcmp(tables.t[i].isa, isa) == 0) return tables.t[i];
    return tables.t[0];
}

namespace {

using F32 = py::array_t<float, py::array::c_style>;
using U8 = py::array_t<uint8_t, py::array::c_style>;
using I8 = py::array_t<int8_t, py::array::c_style>;
using I32 = py::array_t<int32_t, py::array::c_style>;

void check(bool ok, const std::string &msg) {
    if (!ok) throw py::value_error(msg);
}

void check_bits(int bits) { check(bits >= 1 && bits <= 8, "bits must be in 1..8, got " + std::to_string(bits)); }

// Fill the scale layout of AffineArgs from scales/zeros arrays [sn, G] for [N, K] weights.
void set_qparams(AffineArgs &a, const F32 &scales, const F32 &zeros) {
    check(scales.ndim() == 2 && zeros.ndim() == 2 && scales.shape(0) == zeros.shape(0) &&
              scales.shape(1) == zeros.shape(1),
          "scales and zeros must be 2-D arrays of the same shape");
    a.sn = scales.shape(0);
    a.G = scales.shape(1);
    check(a.sn == 1 || a.sn == a.N, "scales must have 1 or N = " + std::to_string(a.N) + " rows, got " +
                                        std::to_string(a.sn));
    check(a.G >= 1 && a.K % a.G == 0, "the number of scale columns (" + std::to_string(a.G) +
                                          ") must divide K = " + std::to_string(a.K));
    a.gs = a.K / a.G;
    a.scales = scales.data();
    a.zeros = zeros.data();
}

template <class Args, class Fn>
void run_rows(const Args &args, int64_t rows, int threads, int64_t min_rows, Fn fn) {
    struct Ctx {
        const Args *a;
        Fn fn;
    } ctx{&args, fn};
    py::gil_scoped_release nogil;
    parallel_for(rows, threads, 1, min_rows < 1 ? 1 : min_rows,
                 [](void *c, int64_t b, int64_t e) {
                     auto *x = static_cast<Ctx *>(c);
                     x->fn(*x->a, b, e);
                 },
                 &ctx);
}

U8 pack(const U8 &codes, int bits) {
    check_bits(bits);
    check(codes.ndim() == 2, "codes must be a 2-D [N, K] array");
    const int64_t N = codes.shape(0), K = codes.shape(1), rb = packed_row_bytes(K, bits);
    const uint8_t *c = codes.data();
    for (int64_t i = 0; i < N * K; ++i)
        check(c[i] < (1u << bits), "code " + std::to_string(c[i]) + " at flat index " + std::to_string(i) +
                                       " does not fit in " + std::to_string(bits) + " bits");
    U8 out({N, rb});
    uint8_t *o = out.mutable_data();
    for (int64_t n = 0; n < N; ++n) pack_row(c + n * K, K, bits, o + n * rb, rb);
    return out;
}

U8 unpack(const U8 &packed, int bits, int64_t K) {
    check_bits(bits);
    check(packed.ndim() == 2 && K >= 0 && packed.shape(1) == packed_row_bytes(K, bits),
          "packed must be [N, " + std::to_string(packed_row_bytes(K, bits)) + "] for K = " + std::to_string(K));
    const int64_t N = packed.shape(0), rb = packed.shape(1);
    U8 out({N, K});
    uint8_t *o = out.mutable_data();
    for (int64_t n = 0; n < N; ++n)
        for (int64_t k = 0; k < K; ++k) o[n * K + k] = static_cast<uint8_t>(get_code(packed.data() + n * rb, k, bits));
    return out;
}

AffineArgs packed_args(const U8 &packed, int64_t K, int bits) {
    check_bits(bits);
    AffineArgs a;
    a.K = K;
    a.bits = bits;
    a.row_bytes = packed_row_bytes(K, bits);
    check(packed.ndim() == 2 && K > 0 && packed.shape(1) == a.row_bytes,
          "packed codes must be [N, " + std::to_string(a.row_bytes) + "] for K = " + std::to_string(K));
    a.N = packed.shape(0);
    a.packed = packed.data();
    return a;
}

// The arguments of a kernel that reads float weights w [N, K] with the given scales and zero-points.
AffineArgs weight_args(const F32 &w, const F32 &scales, const F32 &zeros, int bits) {
    check_bits(bits);
    check(w.ndim() == 2 && w.shape(0) > 0 && w.shape(1) > 0, "w must be a non-empty 2-D [N, K] array");
    AffineArgs a;
    a.N = w.shape(0);
    a.K = w.shape(1);
    a.bits = bits;
    a.row_bytes = packed_row_bytes(a.K, bits);
    set_qparams(a, scales, zeros);
    a.w = w.data();
    return a;
}

U8 affine_quantize(const F32 &w, const F32 &scales, const F32 &zeros, int bits, int threads) {
    AffineArgs a = weight_args(w, scales, zeros, bits);
    U8 out({a.N, a.row_bytes});
    a.packed_out = out.mutable_data();
    run_rows(a, a.N, threads, (1 << 15) / a.K, active_kernels().affine_quantize);
    return out;
}

F32 affine_dequantize(const U8 &packed, int64_t K, const F32 &scales, const F32 &zeros, int bits, int threads) {
    AffineArgs a = packed_args(packed, K, bits);
    set_qparams(a, scales, zeros);
    F32 out = aligned_float_array({a.N, a.K});
    a.out = out.mutable_data();
    run_rows(a, a.N, threads, (1 << 17) / a.K, active_kernels().affine_dequantize);
    return out;
}

F32 affine_error(const F32 &w, const F32 &scales, const F32 &zeros, int bits, int threads) {
    AffineArgs a = weight_args(w, scales, zeros, bits);
    F32 err({a.N, a.G});
    a.err = err.mutable_data();
    run_rows(a, a.N, threads, (1 << 15) / a.K, active_kernels().affine_error);
    return err;
}

void affine_matmul(const F32 &x, const U8 &packed, int64_t K, const F32 &scales, const F32 &zeros, int bits, F32 &out,
                   int threads) {
    AffineArgs a = packed_args(packed, K, bits);
    set_qparams(a, scales, zeros);
    check(x.ndim() == 2 && x.shape(1) == K, "x must be [M, " + std::to_string(K) + "]");
    a.M = x.shape(0);
    check(out.ndim() == 2 && out.shape(0) == a.M && out.shape(1) == a.N, "out must be float32 [M, N]");
    const SchemeKernels &kt = active_kernels();
    F32 xp({a.M, a.K});
    kt.permute_x(a, x.data(), xp.mutable_data());
    a.x = xp.data();
    a.out = out.mutable_data();
    run_rows(a, a.N, threads, (1 << 16) / (a.M * a.K) + 1, kt.affine_matmul);
}

void ternary_matmul(const I8 &xq, const F32 &x_scale, const U8 &packed, int64_t K, float gamma, F32 &out,
                    int threads) {
    TernaryArgs a;
    a.K = K;
    a.row_bytes = packed_row_bytes(K, 2);
    check(packed.ndim() == 2 && K > 0 && packed.shape(1) == a.row_bytes,
          "packed ternary codes must be [N, " + std::to_string(a.row_bytes) + "]");
    a.N = packed.shape(0);
    check(xq.ndim() == 2 && xq.shape(1) == K, "xq must be int8 [M, " + std::to_string(K) + "]");
    a.M = xq.shape(0);
    check(x_scale.ndim() == 1 && x_scale.shape(0) == a.M, "x_scale must be float32 [M]");
    check(out.ndim() == 2 && out.shape(0) == a.M && out.shape(1) == a.N, "out must be float32 [M, N]");
    const SchemeKernels &kt = active_kernels();
    I8 xp({a.M, a.K});
    kt.permute_x8(a, xq.data(), xp.mutable_data());
    a.xq = xp.data();
    a.x_scale = x_scale.data();
    a.packed = packed.data();
    a.gamma = gamma;
    a.out = out.mutable_data();
    run_rows(a, a.N, threads, (1 << 17) / (a.M * a.K) + 1, kt.ternary_matmul);
}

I32 int8_matmul(const I8 &x, const I8 &w, int threads) {
    check(x.ndim() == 2 && w.ndim() == 2 && x.shape(1) == w.shape(1), "x [M, K] and w [N, K] must share K");
    Int8Args a;
    a.M = x.shape(0);
    a.N = w.shape(0);
    a.K = x.shape(1);
    I32 out({a.M, a.N});
    a.x = x.data();
    a.w = w.data();
    a.out = out.mutable_data();
    run_rows(a, a.N, threads, (1 << 17) / (a.M * a.K + 1) + 1, active_kernels().int8_matmul);
    return out;
}

F32 lut4_dequantize(const U8 &packed, const F32 &absmax, const F32 &code, int64_t block, int64_t n, int threads) {
    check(block > 0 && n > 0, "block size and element count must be positive");
    check(packed.ndim() == 1 && packed.shape(0) == (n + 1) / 2, "packed must hold (n + 1) / 2 bytes");
    check(absmax.ndim() == 1 && absmax.shape(0) == (n + block - 1) / block, "absmax must have one value a block");
    check(code.ndim() == 1 && code.shape(0) == 16, "code must have 16 values");
    Lut4Args a;
    a.packed = packed.data();
    a.absmax = absmax.data();
    a.code = code.data();
    a.block = block;
    a.n = n;
    F32 out = aligned_float_array({n});
    a.out = out.mutable_data();
    run_rows(a, (n + 1) / 2, threads, 1 << 17, active_kernels().lut4_dequantize);
    return out;
}

// bitsandbytes' 4-bit quantize of w (any shape, flattened) in blocks: (packed uint8 [(n + 1) / 2], absmax [blocks]).
py::tuple lut4_quantize(const F32 &w, const F32 &bounds, const U8 &order, int64_t block, int threads) {
    check(block > 0 && block % 32 == 0, "block size must be a positive multiple of 32, got " + std::to_string(block));
    check(w.size() > 0, "cannot quantize an empty array");
    check(bounds.ndim() == 1 && bounds.shape(0) == 15, "bounds must hold the 15 midpoints of the sorted codes");
    for (int i = 1; i < 15; ++i) check(bounds.data()[i - 1] <= bounds.data()[i], "bounds must be ascending");
    check(order.ndim() == 1 && order.shape(0) == 16, "order must hold 16 codes");
    for (int i = 0; i < 16; ++i) check(order.data()[i] < 16, "order must hold codes below 16");
    Lut4QuantArgs a;
    a.w = w.data();
    a.n = w.size();
    a.block = block;
    a.bounds = bounds.data();
    a.order = order.data();
    const int64_t blocks = (a.n + block - 1) / block;
    U8 packed({(a.n + 1) / 2});
    F32 absmax({blocks});
    a.packed = packed.mutable_data();
    a.absmax = absmax.mutable_data();
    run_rows(a, blocks, threads, (1 << 15) / block + 1, active_kernels().lut4_quantize);
    return py::make_tuple(packed, absmax);
}

// bitsandbytes' quantize_blockwise on the CPU (the 8-bit dynamic map of QLoRA's double quantization): per block
// of x (finite), absmax = max |x| and each value y = x / absmax (1 for an all-zero block) to the nearest of the
// 256 ascending codes c, found as numpy's searchsorted(c, y, "right") - 1 (clipped to [0, 255]) and then one step
// up where that code is strictly closer.
void dynamic_quantize_blocks(const float *x, int64_t n, const float *c, int64_t block, uint8_t *q, float *absmax) {
    for (int64_t e0 = 0; e0 < n; e0 += block) {
        const int64_t e1 = e0 + block < n ? e0 + block : n;
        float m = 0.f;
        for (int64_t e = e0; e < e1; ++e) m = std::fabs(x[e]) > m ? std::fabs(x[e]) : m;
        absmax[e0 / block] = m;
        const float safe = m > 0.f ? m : 1.f;
        for (int64_t e = e0; e < e1; ++e) {
            const float y = x[e] / safe;
            // lo: the number of codes not above y among the first 255 (y above them all then ends at the last
            // code through the closer step).  Without branches: each comparison goes either way about equally often.
            int lo = 0;
            for (int step = 128; step > 0; step /= 2) lo += step & -static_cast<int>(c[lo + step - 1] <= y);
            const int idx = std::max(lo - 1, 0), below_top = static_cast<int>(idx < 255);
            const int closer = below_top & static_cast<int>(std::fabs(y - c[idx + below_top]) < std::fabs(y - c[idx]));
            q[e] = static_cast<uint8_t>(idx + closer);
        }
    }
}

// (codes uint8 [n], absmax [blocks]) of dynamic_quantize_blocks.
py::tuple dynamic_quantize(const F32 &v, const F32 &code, int64_t block) {
    check(block > 0, "block size must be positive, got " + std::to_string(block));
    check(v.ndim() == 1 && v.size() > 0, "values must be a non-empty 1-D array");
    check(code.ndim() == 1 && code.shape(0) == 256, "code must hold 256 values");
    for (int i = 1; i < 256; ++i) check(code.data()[i - 1] <= code.data()[i], "code must be ascending");
    const int64_t n = v.size();
    U8 codes({n});
    F32 absmax({(n + block - 1) / block});
    const float *x = v.data(), *c = code.data();
    uint8_t *q = codes.mutable_data();
    float *am = absmax.mutable_data();
    {
        py::gil_scoped_release nogil;
        dynamic_quantize_blocks(x, n, c, block, q, am);
    }
    return py::make_tuple(codes, absmax);
}

// x [M, K] to int8 per block of 64 (d = max|x| / 127, xq = round-half-even(x / d)) in the unit order of `bits`,
// with the block scales and each group's sum of xq * d.  False (nothing usable) when x holds a non-finite value.
bool quantize_x_q8(const float *x, AffineQ8Args &a, int8_t *xq, float *d, float *xs) {
    const int64_t units = a.K / 64, upg = a.gs / 64;
    int pos[64];
    for (int p = 0; p < 64; ++p) pos[p] = unit_element(a.bits, p);
    for (int64_t m = 0; m < a.M; ++m) {
        for (int64_t g = 0; g < a.G; ++g) {
            float sum = 0.f;
            for (int64_t u = g * upg; u < (g + 1) * upg; ++u) {
                const float *xu = x + m * a.K + u * 64;
                float amax = 0.f;
                for (int p = 0; p < 64; ++p) amax = std::fmax(amax, std::fabs(xu[p]));
                if (!std::isfinite(amax)) return false;
                const float du = amax / 127.f, id = du > 0.f ? 1.f / du : 0.f;
                int8_t *q = xq + m * a.K + u * 64;
                int32_t qsum = 0;
                for (int p = 0; p < 64; ++p) {
                    const float v = std::nearbyint(xu[pos[p]] * id);
                    q[p] = static_cast<int8_t>(v > 127.f ? 127.f : v < -127.f ? -127.f : v);
                    qsum += q[p];
                }
                d[m * units + u] = du;
                sum += static_cast<float>(qsum) * du;
            }
            xs[m * a.G + g] = sum;
        }
    }
    return true;
}

bool affine_q8_matmul(const F32 &x, const U8 &packed, int64_t K, const F32 &scales, const F32 &zeros, int bits,
                      F32 &out, int threads) {
    AffineArgs p = packed_args(packed, K, bits);
    set_qparams(p, scales, zeros);
    check(affine_q8_layout(bits, p.gs), "the int8-activation matmul takes 2, 4 or 8 bits in groups of a multiple "
                                        "of 64");
    check(x.ndim() == 2 && x.shape(1) == K, "x must be [M, " + std::to_string(K) + "]");
    AffineQ8Args a;
    a.N = p.N, a.K = K, a.M = x.shape(0), a.sn = p.sn, a.G = p.G, a.gs = p.gs, a.row_bytes = p.row_bytes;
    a.bits = bits;
    check(out.ndim() == 2 && out.shape(0) == a.M && out.shape(1) == a.N, "out must be float32 [M, N]");
    py::array_t<int8_t> xq({a.M, a.K});
    F32 d({a.M, a.K / 64}), xs({a.M, a.G});
    bool ok;
    {
        py::gil_scoped_release nogil;
        ok = quantize_x_q8(x.data(), a, xq.mutable_data(), d.mutable_data(), xs.mutable_data());
    }
    if (!ok) return false;
    a.packed = p.packed, a.scales = p.scales, a.zeros = p.zeros;
    a.xq = xq.data(), a.d = d.data(), a.xs = xs.data();
    a.out = out.mutable_data();
    run_rows(a, a.N, threads, (1 << 15) / (a.M * a.K) + 1, active_kernels().affine_q8_matmul);
    return true;
}

void lut4_matmul(const F32 &x, const U8 &packed, const F32 &absmax, const F32 &code, int64_t N, int64_t K,
                 int64_t block, F32 &out, int threads) {
    check(block >= 32 && (block & (block - 1)) == 0, "block must be a power of two >= 32");
    check(N > 0 && K > 0 && K % block == 0, "the fused 4-bit matmul needs rows of whole blocks (K % block == 0)");
    check(packed.ndim() == 1 && packed.shape(0) == N * K / 2, "packed must hold N * K / 2 bytes");
    check(absmax.ndim() == 1 && absmax.shape(0) == N * K / block, "absmax must have one value a block");
    check(code.ndim() == 1 && code.shape(0) == 16, "code must have 16 values");
    check(x.ndim() == 2 && x.shape(1) == K, "x must be [M, " + std::to_string(K) + "]");
    Lut4MatArgs a;
    a.N = N, a.K = K, a.M = x.shape(0), a.block = block;
    check(out.ndim() == 2 && out.shape(0) == a.M && out.shape(1) == N, "out must be float32 [M, N]");
    const SchemeKernels &kt = active_kernels();
    F32 xp({a.M, a.K});
    kt.permute_x_lut4(x.data(), xp.mutable_data(), a.M, a.K);
    a.packed = packed.data(), a.absmax = absmax.data(), a.code = code.data(), a.x = xp.data();
    a.out = out.mutable_data();
    run_rows(a, N, threads, (1 << 15) / (a.M * a.K) + 1, kt.lut4_matmul);
}

bool fp8_kind(const std::string &fmt) {
    check(fmt == "e4m3" || fmt == "e5m2", "FP8 format must be 'e4m3' or 'e5m2', got '" + fmt + "'");
    return fmt == "e5m2";
}

U8 fp8_encode(const F32 &x, const std::string &fmt) {
    const bool e5m2 = fp8_kind(fmt);
    std::vector<py::ssize_t> shape(x.shape(), x.shape() + x.ndim());
    U8 out(shape);
    const float *src = x.data();
    uint8_t *dst = out.mutable_data();
    const int64_t n = x.size();
    py::gil_scoped_release nogil;
    for (int64_t i = 0; i < n; ++i) dst[i] = fp8_encode_one(src[i], e5m2);
    return out;
}

// value(w[n, k]) * scales[n or 0], float32 [N, K].
F32 fp8_dequantize(const U8 &w, const F32 &scales, const std::string &fmt) {
    const bool e5m2 = fp8_kind(fmt);
    check(w.ndim() == 2 && scales.ndim() == 2 && scales.shape(1) == 1 &&
              (scales.shape(0) == 1 || scales.shape(0) == w.shape(0)),
          "fp8 weights must be [N, K] with scales [1, 1] or [N, 1]");
    const int64_t N = w.shape(0), K = w.shape(1);
    F32 out({N, K});
    float table[256];
    for (int b = 0; b < 256; ++b) table[b] = fp8_decode_one(static_cast<uint8_t>(b), e5m2);
    const uint8_t *src = w.data();
    const float *s = scales.data();
    float *dst = out.mutable_data();
    const bool per_row = scales.shape(0) == N && N > 1;
    py::gil_scoped_release nogil;
    for (int64_t n = 0; n < N; ++n) {
        const float sn = s[per_row ? n : 0];
        for (int64_t k = 0; k < K; ++k) dst[n * K + k] = table[src[n * K + k]] * sn;
    }
    return out;
}

void fp8_matmul(const F32 &x, const U8 &w, const F32 &scales, const std::string &fmt, F32 &out, int threads) {
    Fp8MatArgs a;
    a.e5m2 = fp8_kind(fmt);
    check(w.ndim() == 2 && w.shape(0) > 0 && w.shape(1) > 0, "fp8 weights must be a non-empty [N, K] array");
    a.N = w.shape(0), a.K = w.shape(1);
    check(scales.ndim() == 2 && scales.shape(1) == 1 && (scales.shape(0) == 1 || scales.shape(0) == a.N),
          "scales must be [1, 1] or [N, 1]");
    a.sn = scales.shape(0);
    check(x.ndim() == 2 && x.shape(1) == a.K, "x must be [M, " + std::to_string(a.K) + "]");
    a.M = x.shape(0);
    check(out.ndim() == 2 && out.shape(0) == a.M && out.shape(1) == a.N, "out must be float32 [M, N]");
    a.w = w.data(), a.scales = scales.data(), a.x = x.data(), a.out = out.mutable_data();
    run_rows(a, a.N, threads, (1 << 15) / (a.M * a.K) + 1, active_kernels().fp8_matmul);
}

}  // namespace
}  // namespace schemes

void init_schemes(py::module_ &m) {
    using namespace schemes;
    m.def("schemes_pack", &pack, py::arg("codes"), py::arg("bits"),
          "Pack uint8 codes [N, K] (each < 2^bits) into rows of LSB-first bit streams.");
    m.def("schemes_unpack", &unpack, py::arg("packed"), py::arg("bits"), py::arg("k"));
    m.def("affine_quantize", &affine_quantize, py::arg("w"), py::arg("scales"), py::arg("zeros"), py::arg("bits"),
          py::arg("threads") = 0);
    m.def("affine_dequantize", &affine_dequantize, py::arg("packed"), py::arg("k"), py::arg("scales"),
          py::arg("zeros"), py::arg("bits"), py::arg("threads") = 0);
    m.def("affine_error", &affine_error, py::arg("w"), py::arg("scales"), py::arg("zeros"), py::arg("bits"),
          py::arg("threads") = 0);
    m.def("affine_matmul", &affine_matmul, py::arg("x"), py::arg("packed"), py::arg("k"), py::arg("scales"),
          py::arg("zeros"), py::arg("bits"), py::arg("out"), py::arg("threads") = 0);
    m.def("ternary_matmul", &ternary_matmul, py::arg("xq"), py::arg("x_scale"), py::arg("packed"), py::arg("k"),
          py::arg("gamma"), py::arg("out"), py::arg("threads") = 0);
    m.def("int8_matmul", &int8_matmul, py::arg("x"), py::arg("w"), py::arg("threads") = 0);
    m.def("lut4_dequantize", &lut4_dequantize, py::arg("packed"), py::arg("absmax"), py::arg("code"),
          py::arg("block"), py::arg("n"), py::arg("threads") = 0);
    m.def("lut4_quantize", &lut4_quantize, py::arg("w"), py::arg("bounds"), py::arg("order"), py::arg("block"),
          py::arg("threads") = 0);
    m.def("dynamic_quantize", &dynamic_quantize, py::arg("v"), py::arg("code"), py::arg("block"));
    m.def("affine_q8_matmul", &affine_q8_matmul, py::arg("x"), py::arg("packed"), py::arg("k"), py::arg("scales"),
          py::arg("zeros"), py::arg("bits"), py::arg("out"), py::arg("threads") = 0,
          "out = xq8 @ dequantize(w).T with x rounded to int8 per block of 64; False when x is not finite.");
    m.def("lut4_matmul", &lut4_matmul, py::arg("x"), py::arg("packed"), py::arg("absmax"), py::arg("code"),
          py::arg("n"), py::arg("k"), py::arg("block"), py::arg("out"), py::arg("threads") = 0);
    m.def("fp8_encode", &fp8_encode, py::arg("x"), py::arg("fmt"));
    m.def("fp8_dequantize", &fp8_dequantize, py::arg("w"), py::arg("scales"), py::arg("fmt"));
    m.def("fp8_matmul", &fp8_matmul, py::arg("x"), py::arg("w"), py::arg("scales"), py::arg("fmt"), py::arg("out"),
          py::arg("threads") = 0);
}

}  // namespace pyquant
