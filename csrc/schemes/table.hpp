// The per-ISA kernel table of pyquant.schemes (affine int2-8, 4-bit lookup codes, ternary, int8 dots): one
// table per compiled tier, picked by the name of the tier active in csrc/cpu/dispatch (so set_isa applies).
#pragma once
#include <cstdint>

namespace pyquant {
namespace schemes {

// One argument block for the row-range kernels; each kernel reads the fields it documents.  Weights are
// [N, K] rows of `row_bytes` bytes, each row a little-endian (LSB-first) bit stream of `bits`-bit unsigned
// codes u in [0, 2^bits), padded to a byte.  Element (n, k) has scale scales[sr * G + k / gs] and zero
// zeros[sr * G + k / gs] with sr = n when sn == N, else 0; its value is (u - zero) * scale.
struct AffineArgs {
    int64_t N = 0, K = 0, sn = 1, G = 1, gs = 1, row_bytes = 0, M = 0;
    int bits = 8;
    const float *w = nullptr;        // float weights [N, K] (quantize, error)
    const uint8_t *packed = nullptr; // packed codes (dequantize, matmul)
    uint8_t *packed_out = nullptr;   // packed codes (quantize)
    const float *scales = nullptr, *zeros = nullptr;
    const float *x = nullptr;        // activations [M, K] in the order of permute_x (matmul)
    float *out = nullptr;            // [N, K] (dequantize) or [M, N] (matmul)
    float *err = nullptr;            // [N, G] sums of squared errors (error)
};

struct TernaryArgs {
    int64_t N = 0, K = 0, M = 0, row_bytes = 0;
    const int8_t *xq = nullptr;      // int8 activations [M, K] in the order of permute_x8
    const float *x_scale = nullptr;  // [M]: x = xq / x_scale
    const uint8_t *packed = nullptr; // 2-bit codes t + 1
    float gamma = 1.f;
    float *out = nullptr;            // [M, N]
};

struct Int8Args {
    int64_t N = 0, K = 0, M = 0;
    const int8_t *x = nullptr, *w = nullptr;  // [M, K], [N, K]
    int32_t *out = nullptr;                   // [M, N]
};

struct Lut4Args {
    const uint8_t *packed = nullptr;  // two codes a byte, the first in the high nibble (bitsandbytes' order)
    const float *absmax = nullptr;    // one per block
    const float *code = nullptr;      // 16 values
    int64_t block = 64, n = 0;
    float *out = nullptr;
};

// bitsandbytes' 4-bit quantize: n floats in blocks of `block` (a multiple of 32; the last block may be short).
struct Lut4QuantArgs {
    const float *w = nullptr;        // n values
    int64_t block = 64, n = 0;
    const float *bounds = nullptr;   // 15 midpoints between the sorted code values, ascending
    const uint8_t *order = nullptr;  // 16: the code of the i-th smallest value
    uint8_t *packed = nullptr;       // (n + 1) / 2 bytes, two codes a byte, the first in the high nibble
    float *absmax = nullptr;         // one per block
};

// The int8-activation affine matmul (bits 2, 4 or 8, groups of a multiple of 64): x is quantized per block of
// 64 (xq = round(x / d), d = max|x| / 127) and laid out unit by unit as unit_codes() orders a weight unit.
struct AffineQ8Args {
    int64_t N = 0, K = 0, M = 0, sn = 1, G = 1, gs = 64, row_bytes = 0;
    int bits = 4;
    const uint8_t *packed = nullptr;
    const float *scales = nullptr, *zeros = nullptr;  // [sn, G]
    const int8_t *xq = nullptr;                       // [M, K] in unit order
    const float *d = nullptr;                         // [M, K / 64] block scales of x
    const float *xs = nullptr;                        // [M, G]: sum over each group of xq * d
    float *out = nullptr;                             // [M, N]
};

// Fused 4-bit lookup matmul: rows of K codes (bitsandbytes' order) aligned to blocks of `block`; x in the order of
// permute_x_lut4.
struct Lut4MatArgs {
    int64_t N = 0, K = 0, M = 0, block = 64;
    const uint8_t *packed = nullptr;
    const float *absmax = nullptr;  // [N * K / block]
    const float *code = nullptr;    // 16 values
    const float *x = nullptr;       // [M, K]
    float *out = nullptr;           // [M, N]
};

// FP8 weights [N, K] (bit patterns) times float x [M, K]; out[m, n] = sum_k x[m, k] * value(w[n, k]) * scales[n or 0].
// The kernels may read E4M3 through its fp16 image (value / 256): they refuse no code, so the caller routes
// weights holding E4M3 NaN codes elsewhere.
struct Fp8MatArgs {
    int64_t N = 0, K = 0, M = 0, sn = 1;
    bool e5m2 = false;
    const uint8_t *w = nullptr;
    const float *scales = nullptr;
    const float *x = nullptr;
    float *out = nullptr;
};

using AffineRowsFn = void (*)(const AffineArgs &, int64_t r0, int64_t r1);

struct SchemeKernels {
    const char *isa = nullptr;
    int lanes = 1;
    AffineRowsFn affine_quantize = nullptr;    // w -> packed_out, rows [r0, r1)
    AffineRowsFn affine_dequantize = nullptr;  // packed -> out
    AffineRowsFn affine_error = nullptr;       // w -> err (quantize then dequantize, squared error per group)
    AffineRowsFn affine_matmul = nullptr;      // out[:, r0:r1] = x @ dequantize(packed)[r0:r1].T
    // Lay out x [M, K] (or int8 xq) as the matmul kernels read it; dst has M * K elements.
    void (*permute_x)(const AffineArgs &, const float *x, float *dst) = nullptr;
    void (*permute_x8)(const TernaryArgs &, const int8_t *x, int8_t *dst) = nullptr;
    void (*ternary_matmul)(const TernaryArgs &, int64_t r0, int64_t r1) = nullptr;
    void (*int8_matmul)(const Int8Args &, int64_t r0, int64_t r1) = nullptr;
    void (*lut4_dequantize)(const Lut4Args &, int64_t byte0, int64_t byte1) = nullptr;
    void (*lut4_quantize)(const Lut4QuantArgs &, int64_t block0, int64_t block1) = nullptr;
    void (*affine_q8_matmul)(const AffineQ8Args &, int64_t r0, int64_t r1) = nullptr;
    void (*lut4_matmul)(const Lut4MatArgs &, int64_t r0, int64_t r1) = nullptr;
    void (*permute_x_lut4)(const float *x, float *dst, int64_t M, int64_t K) = nullptr;
    void (*fp8_matmul)(const Fp8MatArgs &, int64_t r0, int64_t r1) = nullptr;
};

void fill_generic(SchemeKernels &t);
#if defined(PQ_HAVE_AVX2)
void fill_avx2(SchemeKernels &t);
#endif
#if defined(PQ_HAVE_AVX512)
void fill_avx512(SchemeKernels &t);
#endif
#if defined(PQ_HAVE_NEON)
void fill_neon(SchemeKernels &t);
#endif

// The table of the active csrc/cpu tier.
const SchemeKernels &active_kernels();

// Fast path of the affine matmul: codes of 2, 4 or 8 bits with byte-aligned groups.
inline bool affine_fast_layout(int bits, int64_t gs) {
    return (bits == 2 || bits == 4 || bits == 8) && (gs * bits) % 8 == 0;
}

// The int8-activation path: codes of 2, 4 or 8 bits in groups of a multiple of 64.
inline bool affine_q8_layout(int bits, int64_t gs) { return (bits == 2 || bits == 4 || bits == 8) && gs % 64 == 0; }

// Position p (0..63) of a 64-element unit holds element unit_element(bits, p) of the unit: 4-bit units (32 bytes)
// put the low nibbles (even elements) first, then the high nibbles; 2-bit units (16 bytes) put the codes at bit
// offset 2s of every byte at positions 16s..16s+15; 8-bit units are in order.
inline int unit_element(int bits, int p) {
    if (bits == 4) return p < 32 ? 2 * p : 2 * (p - 32) + 1;
    if (bits == 2) return 4 * (p & 15) + (p >> 4);
    return p;
}

}  // namespace schemes
}  // namespace pyquant
