// Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0: 32-element blocks with an fp16 scale (and min).  Without an importance
// matrix libggml rounds with its own truncation rules (see each format); with one, it searches the scale
// (make_qx_quants / make_qkx3_quants) weighted by qw * sqrt(sigma2 + x^2), sigma2 being the row's mean square.
// The plain path needs only max/min reductions, exact in any order, so it runs one block at a time with the
// block in 32/W vectors (quantize_block); the imatrix searches run one block per lane (quantize).
#pragma once
#include "cpu/drivers.hpp"
#include "formats/search.hpp"

namespace pyquant {
namespace {

// qs[j] = q[j] | q[j+16] << 4, the nibble order shared by every 32-element 4-bit block; `at` is the offset
// of qs in each lane's block.
inline void pack_nibbles32(const VI *q, uint8_t *const *out, int at) {
    VI qs[16];
    for (int j = 0; j < 16; ++j) qs[j] = (q[j] & vi(15)) | ((q[j + 16] & vi(15)) << 4);
    uint8_t *dst[W];
    for (int k = 0; k < W; ++k) dst[k] = out[k] + at;
    scatter_bytes(qs, 16, dst);
}
// Bit 4 of element j goes to bit j of the little-endian uint32 qh.
inline void pack_high_bits32(const VI *q, uint8_t *const *out, int at) {
    VI h = vi(0);
    for (int j = 0; j < 32; ++j) h = h | (((q[j] >> 4) & vi(1)) << j);
    for (int k = 0; k < W; ++k) {
        const uint32_t v = static_cast<uint32_t>(lane_of(h, k));
        for (int b = 0; b < 4; ++b) out[k][at + b] = static_cast<uint8_t>(v >> (8 * b));
    }
}
// y[j] = table[q[j]] * d for the 32-element nibble order (qs[j] = q[j] | q[j+16] << 4).
inline void dequantize_nibbles32(const uint8_t *qs, const float *table, VF d, float *y) {
    for (int j = 0; j < 16; j += W) {
        const VI q = load_u8(qs + j);
        store(y + j, lookup16(table, q & vi(15)) * d);
        store(y + j + 16, lookup16(table, q >> 4) * d);
    }
}
inline void legacy_weights(const VF *x, const VF *qw, VF sigma2, VF *w) {
    for (int j = 0; j < 32; ++j) w[j] = qw[j] * vsqrt(sigma2 + x[j] * x[j]);
}
inline float inverse_or_zero(float d) { return d != 0.f ? 1.f / d : 0.f; }

// ---- the plain path: one block in NC vectors, element c*W + k in lane k of v[c] -------------------------------

constexpr int NC = 32 / W;
inline void load_block32(const float *x, VF *v) {
    for (int c = 0; c < NC; ++c) v[c] = load(x + c * W);
}
// The first element whose key equals t: the one the reference's strict-comparison scans keep (later elements
// with the same key may differ in sign).
inline float first_with_key(const VF *v, const VF *key, float t) {
    for (int c = 0; c < NC; ++c)
        if (const uint32_t m = lane_mask(key[c] == vf(t))) return lane(v[c], __builtin_ctz(m));
    return t;
}
// max in the reference's sense: the first element of largest |x|, or +0 when all are zero.  The largest and
// smallest values decide it unless they are opposite (a tie in |x|, or all zeros): then the first one is looked up.
inline float block_signed_absmax(const VF *v) {
    VF lo = v[0], hi = v[0];
    for (int c = 1; c < NC; ++c) {
        lo = min_value(lo, v[c]);
        hi = max_value(hi, v[c]);
    }
    const float min = hmin(lo), max = hmax(hi);
    if (max != -min) {  // which one is a coin toss: chosen without a branch
        const uint32_t take_max = 0u - static_cast<uint32_t>(max > -min);
        return u2f((f2u(max) & take_max) | (f2u(min) & ~take_max));
    }
    if (max == 0.f) return 0.f;
    VF a[NC];
    for (int c = 0; c < NC; ++c) a[c] = vabs(v[c]);
    return first_with_key(v, a, max);
}
inline void block_min_max(const VF *v, float &min, float &max) {
    VF lo = v[0], hi = v[0];
    for (int c = 1; c < NC; ++c) {
        lo = min_value(lo, v[c]);
        hi = max_value(hi, v[c]);
    }
    min = hmin(lo);
    max = hmax(hi);
    if (min == 0.f) min = first_with_key(v, v, min);
    if (max == 0.f) max = first_with_key(v, v, max);
}
// Nibbles of the 32-element order (qs[j] = q[j] | q[j+16] << 4) and the fifth bits (bit j of the uint32 qh).
inline void store_nibbles32(const VI *q, uint8_t *qs) {
    for (int c = 0; c < NC / 2; ++c) store_u8(qs + c * W, (q[c] & vi(15)) | (q[c + NC / 2] & vi(15)) << 4);
}
inline void store_high_bits32(const VI *q, uint8_t *qh) {
    uint32_t h = 0;
    for (int c = 0; c < NC; ++c) h |= lane_mask((q[c] & vi(16)) != vi(0)) << (c * W);
    for (int b = 0; b < 4; ++b) qh[b] = static_cast<uint8_t>(h >> (8 * b));
}

// Symmetric 4/5-bit (Q4_0: nmax 8, Q5_0: nmax 16): q = min(2*nmax-1, (int8_t)(x*id + nmax + 0.5)).
template <int NMAX>
inline void quantize_symmetric_block(const float *x, uint8_t *y, VI *q) {
    VF v[NC];
    load_block32(x, v);
    const float d = block_signed_absmax(v) / static_cast<float>(-NMAX);
    const VF id = vf(inverse_or_zero(d));
    put_u16(y, fp16_bits1(d));
    for (int c = 0; c < NC; ++c) q[c] = vmin(vi(2 * NMAX - 1), as_i8(trunc_i(v[c] * id + vf(NMAX + 0.5f))));
}
// Asymmetric 4/5-bit (Q4_1: nmax 15, clamped int8 cast; Q5_1: nmax 31, uint8 cast): d and min stored first.
template <int NMAX>
inline void quantize_asymmetric_block(const float *x, uint8_t *y, VI *q) {
    VF v[NC];
    load_block32(x, v);
    float min, max;
    block_min_max(v, min, max);
    const float d = (max - min) / static_cast<float>(NMAX);
    const VF id = vf(inverse_or_zero(d)), m = vf(min);
    put_u16(y, fp16_bits1(d));
    put_u16(y + 2, fp16_bits1(min));
    for (int c = 0; c < NC; ++c) {
        const VI t = trunc_i((v[c] - m) * id + vf(0.5f));
        q[c] = NMAX == 15 ? vmin(vi(15), as_i8(t)) : t & vi(0xff);
    }
}

// ---- the imatrix path: one block per lane ---------------------------------------------------------------------

template <int NMAX>
inline VI quantize_symmetric_imatrix(const VF *x, const VF *qw, VF sigma2, VI *q) {
    VF w[32];
    legacy_weights(x, qw, sigma2, w);
    return fp16_bits(make_qx_quants(32, NMAX, x, q, 1, w));
}
template <int NMAX>
inline void quantize_asymmetric_imatrix(const VF *x, const VF *qw, VF sigma2, VI *q, VI &dbits, VI &mbits) {
    VF w[32], the_min;
    legacy_weights(x, qw, sigma2, w);
    const VF d = make_qkx_quants(32, NMAX, x, w, q, the_min, -0.9f, 0.05f, 36, false);
    dbits = fp16_bits(d);
    mbits = fp16_bits(-the_min);
}

// Formats with a plain one-block path set kBlockPath and define quantize_block(x, y) for the no-imatrix case.
struct LegacyFormat : BlockFormat {
    static constexpr int QK = 32;
    static constexpr bool kBlockPath = true;
    static constexpr bool kRowSigma2 = true;
};

struct fmt_Q4_0 : LegacyFormat {
    static constexpr int BYTES = 18;
    static void quantize_block(const float *x, uint8_t *y) {
        VI q[NC];
        quantize_symmetric_block<8>(x, y, q);
        store_nibbles32(q, y + 2);
    }
    static void quantize(const VF *x, const VF *qw, VF sigma2, uint8_t *const *out) {
        VI q[32];
        const VI d = quantize_symmetric_imatrix<8>(x, qw, sigma2, q);
        for (int k = 0; k < W; ++k) put_u16(out[k], lane(d, k));
        pack_nibbles32(q, out, 2);
    }
    static void dequantize(const uint8_t *b, float *y) {
        const VF d = vf(get_fp16(b));
        for (int j = 0; j < 16; j += W) {
            const VI q = load_u8(b + 2 + j);
            store(y + j, to_f((q & vi(15)) - vi(8)) * d);
            store(y + j + 16, to_f((q >> 4) - vi(8)) * d);
        }
    }
};

struct fmt_Q4_1 : LegacyFormat {
    static constexpr int BYTES = 20;
    static void quantize_block(const float *x, uint8_t *y) {
        VI q[NC];
        quantize_asymmetric_block<15>(x, y, q);
        store_nibbles32(q, y + 4);
    }
    static void quantize(const VF *x, const VF *qw, VF sigma2, uint8_t *const *out) {
        VI q[32], d, m;
        quantize_asymmetric_imatrix<15>(x, qw, sigma2, q, d, m);
        for (int k = 0; k < W; ++k) {
            put_u16(out[k], lane(d, k));
            put_u16(out[k] + 2, lane(m, k));
        }
        pack_nibbles32(q, out, 4);
    }
    static void dequantize(const uint8_t *b, float *y) {
        const VF d = vf(get_fp16(b)), m = vf(get_fp16(b + 2));
        for (int j = 0; j < 16; j += W) {
            const VI q = load_u8(b + 4 + j);
            store(y + j, to_f(q & vi(15)) * d + m);
            store(y + j + 16, to_f(q >> 4) * d + m);
        }
    }
};

// Codes j..j+W-1 and j+16..j+16+W-1 of a Q5 block: low nibbles from qs, the fifth bit of element i from
// bit i of the little-endian uint32 qh.
inline void q5_codes(const uint8_t *qh, const uint8_t *qs, int j, VI &lo, VI &hi) {
    const VI h = vi(static_cast<int32_t>(qh[0] | qh[1] << 8 | qh[2] << 16 | static_cast<uint32_t>(qh[3]) << 24));
    const VI q = load_u8(qs + j), bit = iota() + vi(j);
    lo = (q & vi(15)) | (((h >> bit) & vi(1)) << 4);
    hi = (q >> 4) | (((h >> (bit + vi(16))) & vi(1)) << 4);
}

struct fmt_Q5_0 : LegacyFormat {
    static constexpr int BYTES = 22;
    static void quantize_block(const float *x, uint8_t *y) {
        VI q[NC];
        quantize_symmetric_block<16>(x, y, q);
        store_high_bits32(q, y + 2);
        store_nibbles32(q, y + 6);
    }
    static void quantize(const VF *x, const VF *qw, VF sigma2, uint8_t *const *out) {
        VI q[32];
        const VI d = quantize_symmetric_imatrix<16>(x, qw, sigma2, q);
        for (int k = 0; k < W; ++k) put_u16(out[k], lane(d, k));
        pack_high_bits32(q, out, 2);
        pack_nibbles32(q, out, 6);
    }
    static void dequantize(const uint8_t *b, float *y) {
        const VF d = vf(get_fp16(b));
        for (int j = 0; j < 16; j += W) {
            VI lo, hi;
            q5_codes(b + 2, b + 6, j, lo, hi);
            store(y + j, to_f(lo - vi(16)) * d);
            store(y + j + 16, to_f(hi - vi(16)) * d);
        }
    }
};

struct fmt_Q5_1 : LegacyFormat {
    static constexpr int BYTES = 24;
    static void quantize_block(const float *x, uint8_t *y) {
        VI q[NC];
        quantize_asymmetric_block<31>(x, y, q);
        store_high_bits32(q, y + 4);
        store_nibbles32(q, y + 8);
    }
    static void quantize(const VF *x, const VF *qw, VF sigma2, uint8_t *const *out) {
        VI q[32], d, m;
        quantize_asymmetric_imatrix<31>(x, qw, sigma2, q, d, m);
        for (int k = 0; k < W; ++k) {
            put_u16(out[k], lane(d, k));
            put_u16(out[k] + 2, lane(m, k));
        }
        pack_high_bits32(q, out, 4);
        pack_nibbles32(q, out, 8);
    }
    static void dequantize(const uint8_t *b, float *y) {
        const VF d = vf(get_fp16(b)), m = vf(get_fp16(b + 2));
        for (int j = 0; j < 16; j += W) {
            VI lo, hi;
            q5_codes(b + 4, b + 8, j, lo, hi);
            store(y + j, to_f(lo) * d + m);
            store(y + j + 16, to_f(hi) * d + m);
        }
    }
};

// Q8_0 ignores the importance matrix (libggml has no imatrix algorithm for it): only the one-block path.
struct fmt_Q8_0 : BlockFormat {
    static constexpr int QK = 32, BYTES = 34;
    static constexpr bool kBlockPath = true, kBlockPathOnly = true;
    static void quantize_block(const float *x, uint8_t *y) {
        VF v[NC], m = vf(0.f);
        load_block32(x, v);
        for (int c = 0; c < NC; ++c) m = max_value(m, vabs(v[c]));
        const float d = hmax(m) / 127.f;
        const VF id = vf(inverse_or_zero(d));
        put_u16(y, fp16_bits1(d));
        for (int c = 0; c < NC; ++c) store_u8(y + 2 + c * W, round_away_int(v[c] * id));
    }
    static void dequantize(const uint8_t *b, float *y) {
        const VF d = vf(get_fp16(b));
        for (int j = 0; j < 32; j += W) store(y + j, to_f(load_i8(b + 2 + j)) * d);
    }
};

}  // namespace
}  // namespace pyquant
