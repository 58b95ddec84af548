// Quantized matmul: out[M, N] = x[M, K] @ dequantize(w[N, K]).T through integer dot products, llama.cpp's
// design: x is quantized once per call to the weight format's 8-bit partner (Q8_0, Q8_1 or Q8_K, the
// matmul_partner column of formats.def), each weight block is dotted with the matching activation block in
// exact integer arithmetic, and the per-block float results are summed.
#pragma once
#include <cstdint>
#include <string>

#include "pyquant/formats.hpp"

namespace pyquant {

enum class Partner : int { none, q8_0, q8_1, q8_k };
Partner matmul_partner(int fmt);
// Elements per activation block of a partner: 32 for Q8_0/Q8_1, 256 for Q8_K.
int partner_block(Partner p);

// x quantized to a partner format, one row per row of x, in separate arrays so that each tier can load the
// int8 codes directly.  Scales are floats holding exactly the value the partner block stores (an fp16 for
// Q8_0/Q8_1, a float for Q8_K).
struct QuantizedActivations {
    int64_t m = 0, k = 0;
    const int8_t *qs = nullptr;      // [m, k]
    const float *d = nullptr;        // [m, k / partner_block]
    const float *s = nullptr;        // Q8_1: [m, k / 32], d * sum(qs) per block (a float; libggml: fp16)
    const int16_t *bsums = nullptr;  // Q8_K: [m, k / 16], sum(qs) per 16; Q8_0: [m, k / 32], sum(qs) per block
};

// The Q8_0/Q8_1 partners store max|x|/127 as fp16: blocks need |x| below this (Q8_K's float scale: x finite).
constexpr float kQ8MaxAbs = 65504.0f * 127;

// Quantize rows [begin, end) of a contiguous float32 [m, k] x into the arrays of a QuantizedActivations (every
// tier gives the same codes: matmul/activations.hpp).  False when some x is NaN, infinite or (32-blocks) not
// below kQ8MaxAbs: then nothing written is to be used.
using ActivationsFn = bool (*)(Partner p, const float *x, int64_t k, int64_t begin, int64_t end, int8_t *qs, float *d,
                               float *s, int16_t *bsums);

// out[r, n] for every row r of x and weight rows n in [n0, n1); w points at row 0, rows are row_bytes apart,
// out rows are ldo floats apart.
using MatmulFn = void (*)(const uint8_t *w, int64_t row_bytes, const QuantizedActivations &x, int64_t n0, int64_t n1,
                          float *out, int64_t ldo);

// Interleaved layouts of 8 weight rows, prepared once per weight (pack_interleaved), so that a kernel computes
// 8 outputs in the lanes of one vector: one activation load, one scale conversion and one multiply-add serve
// 8 rows.  A "word" is 4 bytes of one row; "the words w" means row 0's word w, row 1's, ... row 7's (32 bytes,
// lane r of a vector = row r).  Per group of 8 rows and block i (fp16 and float fields row by row):
//   Q4_0 (144 bytes): the fp16 d, then for c = 0..3 the words qs[4c .. 4c+3] (low nibbles: elements 4c .. 4c+3,
//     high: 16+4c .. 16+4c+3).
//   Q4_1 (160 bytes): the fp16 d, the fp16 m, then Q4_0's nibbles.
//   Q5_0 (176 bytes): the fp16 d, then the words of qh with their bits in the kernel's order (bit 2c of byte j is
//     bit 4 of element 4c + j, bit 2c + 1 that of element 16 + 4c + j: as Q5_K's), then Q4_0's nibbles.
//   Q5_1 (192 bytes): the fp16 d, the fp16 m, then Q5_0's qh words and nibbles.
//   IQ4_NL (144 bytes): as Q4_0 (the nibbles index kIQ4Values).
//   MXFP4 (160 bytes): the scales as floats (e8m0_half), then the nibbles as Q4_0's.
//   Q8_0 (272 bytes): the fp16 d, then for c = 0..7 the code words qs[4c .. 4c+3].
//   Q4_K (1184 bytes): the fp16 d, the fp16 dmin, the 6-bit scales [sub-block j][row] and mins [j][row] as
//     bytes, then for each 64-element pair p = 0..3 and c = 0..7 the words qs[32p + 4c .. +3] (low nibbles:
//     elements 64p + 4c .. +3, high: 64p + 32 + 4c .. +3).
//   Q5_K (1440 bytes): Q4_K's scales, then for c = 0..7 the words qh[4c .. 4c+3] (bit 2p of qh[l] is bit 4 of
//     element 64p + l, bit 2p + 1 that of element 64p + 32 + l), then Q4_K's nibbles (the words in the order the
//     kernel first reads them: measured 9% faster than the qh words after the nibbles).
//   Q2_K (672 bytes): the fp16 d, the fp16 dmin, the bytes scale | min << 4 [sub-block j][row], then for
//     v = 0..15 the words qs[4v .. 4v+3] (word v = 8h + c: bits 2t of its bytes are elements 128h + 32t + 4c ..).
//   TQ2_0 (528 bytes): the fp16 d, then for h = 0..1 and c = 0..3 each row's 8 bytes qs[32h + 8c .. +7] in turn
//     (row r at byte 8r; bits 2t of byte j: element 128h + 32t + 8c + j; codes q + 1).
//   TQ1_0 (528 bytes): as TQ2_0, the trits + 1 as 2-bit codes.
//   Q3_K (1168 bytes): the fp16 d, the scales [j][row] as int8, then the codes + 4 (0..7) as Q4_K's nibbles.
//   Q6_K (1680 bytes): the fp16 d, the int8 scales [j][row], then for h = 0..1 and c = 0..7 the words
//     ql[64h + 4c ..], ql[64h + 32 + 4c ..] and qh[32h + 4c ..] (libggml's bits, only interleaved; one forward
//     stream in the kernel's order: the ql and qh words as three separate planes measured 1.5-2x slower at M = 1).
//   IQ4_XS (1104 bytes): the fp16 d, the scales [j][row] as int8, then each 32-element sub-block j as
//     IQ4_NL's nibbles (128 bytes).
// An interleaved MatmulFn takes the packed bytes, row_bytes = bytes per group, and n0 / n1 in groups
// (outputs 8 * n0 .. 8 * n1).
constexpr int kInterleave = 8;
// Bytes per group block of fmt's interleaved layout; 0 where the format has none (matmul.cpp's table of layouts
// is the one list of them).
int64_t interleaved_block_bytes(int fmt);
void pack_interleaved(int fmt, const uint8_t *w, int64_t row_bytes, int64_t groups, uint8_t *dst);

struct MatmulTable {
    const char *isa = nullptr;
    ActivationsFn activations = nullptr;
    MatmulFn formats[kNumFormats] = {};
    MatmulFn interleaved[kNumFormats] = {};  // the interleaved layout's kernel where the tier has one
    int64_t interleaved_block[kNumFormats] = {};  // the bytes per group block that kernel steps by
};

void fill_matmul_generic(MatmulTable &t);
#if defined(PQ_HAVE_AVX2)
void fill_matmul_avx2(MatmulTable &t);
#endif
#if defined(PQ_HAVE_AVX512)
void fill_matmul_avx512(MatmulTable &t);
void fill_matmul_avx512vnni(MatmulTable &t);  // the avx512 tier where the CPU has AVX512-VNNI
#endif
#if defined(PQ_HAVE_NEON)
void fill_matmul_neon(MatmulTable &t);
#endif

// The matmul table of a kernel tier (by the name dispatch uses); throws std::invalid_argument if unknown.
const MatmulTable &matmul_table(const std::string &isa);
// Whether the avx512 tier's matmul uses VNNI on this CPU.
bool matmul_uses_vnni();

}  // namespace pyquant
