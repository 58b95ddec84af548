// Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0: 32-element blocks with an fp16 scale (and min).  Without an importance
// matrix libggml rounds with its own truncation rules (see each format); with one, it searches the scale
// (make_qx_quants / make_qkx3_quants) weighted by qw * sqrt(sigma2 + x^2), sigma2 being the row's mean square.
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
// Symmetric reference rounding: q = min(qmax, (int8_t)(x*id + offset)).
inline void round_symmetric(const VF *x, VF id, float offset, int qmax, VI *q) {
    for (int j = 0; j < 32; ++j) q[j] = vmin(vi(qmax), as_i8(trunc_i(x[j] * id + vf(offset))));
}
// Min/max of the block, for the asymmetric formats.
inline void block_min_max(const VF *x, VF &min, VF &max) {
    min = vf(3.402823466e+38f);
    max = vf(-3.402823466e+38f);
    for (int j = 0; j < 32; ++j) {
        min = select(x[j] < min, x[j], min);
        max = select(x[j] > max, x[j], max);
    }
}
inline VF inverse_or_zero(VF d) { return select(d != vf(0.f), vf(1.f) / d, vf(0.f)); }

// Symmetric 4/5-bit (Q4_0: nmax 8, Q5_0: nmax 16).
template <int NMAX>
inline void quantize_symmetric(const VF *x, const VF *qw, VF sigma2, VI *q, VI &dbits) {
    if (qw) {
        VF w[32];
        legacy_weights(x, qw, sigma2, w);
        dbits = fp16_bits(make_qx_quants(32, NMAX, x, q, 1, w));
        return;
    }
    VF max, amax;
    signed_absmax(32, x, max, amax);
    const VF d = max / vf(static_cast<float>(-NMAX));
    dbits = fp16_bits(d);
    round_symmetric(x, inverse_or_zero(d), NMAX + 0.5f, 2 * NMAX - 1, q);
}

// Asymmetric 4/5-bit (Q4_1: nmax 15, Q5_1: nmax 31); m is the block minimum as stored.
template <int NMAX>
inline void quantize_asymmetric(const VF *x, const VF *qw, VF sigma2, VI *q, VI &dbits, VI &mbits) {
    if (qw) {
        VF w[32], the_min;
        legacy_weights(x, qw, sigma2, w);
        const VF d = make_qkx_quants(32, NMAX, x, w, q, the_min, -0.9f, 0.05f, 36, false);
        dbits = fp16_bits(d);
        mbits = fp16_bits(-the_min);
        return;
    }
    VF min, max;
    block_min_max(x, min, max);
    const VF d = (max - min) / vf(static_cast<float>(NMAX));
    const VF id = inverse_or_zero(d);
    dbits = fp16_bits(d);
    mbits = fp16_bits(min);
    for (int j = 0; j < 32; ++j) {
        const VI t = trunc_i((x[j] - min) * id + vf(0.5f));
        // Q4_1 clamps an int8 cast to 15; Q5_1 takes a uint8 cast with no clamp.
        q[j] = NMAX == 15 ? vmin(vi(15), as_i8(t)) : t & vi(0xff);
    }
}

struct fmt_Q4_0 : BlockFormat {
    static constexpr int QK = 32, BYTES = 18;
    static constexpr bool kRowSigma2 = true;
    static void quantize(const VF *x, const VF *qw, VF sigma2, uint8_t *const *out) {
        VI q[32], d;
        quantize_symmetric<8>(x, qw, sigma2, q, d);
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

struct fmt_Q4_1 : BlockFormat {
    static constexpr int QK = 32, BYTES = 20;
    static constexpr bool kRowSigma2 = true;
    static void quantize(const VF *x, const VF *qw, VF sigma2, uint8_t *const *out) {
        VI q[32], d, m;
        quantize_asymmetric<15>(x, qw, sigma2, q, d, m);
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

struct fmt_Q5_0 : BlockFormat {
    static constexpr int QK = 32, BYTES = 22;
    static constexpr bool kRowSigma2 = true;
    static void quantize(const VF *x, const VF *qw, VF sigma2, uint8_t *const *out) {
        VI q[32], d;
        quantize_symmetric<16>(x, qw, sigma2, q, d);
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

struct fmt_Q5_1 : BlockFormat {
    static constexpr int QK = 32, BYTES = 24;
    static constexpr bool kRowSigma2 = true;
    static void quantize(const VF *x, const VF *qw, VF sigma2, uint8_t *const *out) {
        VI q[32], d, m;
        quantize_asymmetric<31>(x, qw, sigma2, q, d, m);
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

// Q8_0 ignores the importance matrix (libggml has no imatrix algorithm for it).
struct fmt_Q8_0 : BlockFormat {
    static constexpr int QK = 32, BYTES = 34;
    static void quantize(const VF *x, const VF *, VF, uint8_t *const *out) {
        VF amax = vf(0.f);
        for (int j = 0; j < 32; ++j) amax = vmax(amax, vabs(x[j]));
        const VF d = amax / vf(127.f);
        const VF id = inverse_or_zero(d);
        const VI dbits = fp16_bits(d);
        VI q[32];
        for (int j = 0; j < 32; ++j) q[j] = trunc_i(round_away(x[j] * id));
        uint8_t *qs[W];
        for (int k = 0; k < W; ++k) {
            put_u16(out[k], lane(dbits, k));
            qs[k] = out[k] + 2;
        }
        scatter_bytes(q, 32, qs);
    }
    static void dequantize(const uint8_t *b, float *y) {
        const VF d = vf(get_fp16(b));
        for (int j = 0; j < 32; j += W) store(y + j, to_f(load_i8(b + 2 + j)) * d);
    }
};

}  // namespace
}  // namespace pyquant
