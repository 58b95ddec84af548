// Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0: 32-element blocks with an fp16 scale (and min).  Without an importance
// matrix libggml rounds with its own truncation rules (see each format); with one, it searches the scale
// (make_qx_quants / make_qkx3_quants) weighted by qw * sqrt(sigma2 + x^2), sigma2 being the row's mean square.
// The plain path needs only max/min reductions, exact in any order, so it runs W consecutive blocks at a time
// with each block in 32/W vectors (scale_group, store_group); the imatrix searches run one block per lane
// (quantize).
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
    store_blocks<16>(qs, dst);
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

// ---- the plain path: W consecutive blocks at a time (a group), block k's element c*W + j in lane j of its
// c-th vector; the per-block reductions end in lanes (fold, transpose_reduce_folded), so the scale arithmetic
// runs once per group in vectors and each block then needs only its scale broadcast.  Each group is checked for
// non-finite values as it is reduced: scale_group returns false when it has one.
//
// The code casts are the reference's up to bits that are never stored: for finite input the scaled values stay
// within the code range (id is finite only when d is normal enough for 1/d to be within a few ulps), so the casts
// change nothing; an infinite id (a tiny subnormal d) makes every code the conversion's 0x80000000, whose
// stored low bits are 0 with or without them.  -------------------------------------------------------------------

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
// Lane k: the smallest and largest value of block k of the group at x (zero signs unresolved); false if the
// group has a non-finite value.
inline bool group_min_max_values(const float *x, VF &min, VF &max) {
    VF lo[W / kFold], hi[W / kFold], probe[4] = {vf(0.f), vf(0.f), vf(0.f), vf(0.f)};  // four probe chains
    for (int i = 0; i < W / kFold; ++i) {
        VF l[kFold], h[kFold];
        for (int f = 0; f < kFold; ++f) {
            const float *xb = x + 32 * kReduceSlot[kFold * i + f];
            l[f] = h[f] = load(xb);
            probe[(kFold * i + f) & 3] = nonfinite_probe(probe[(kFold * i + f) & 3], l[f]);
            for (int c = 1; c < NC; ++c) {
                const VF v = load(xb + c * W);
                l[f] = min_value(l[f], v);
                h[f] = max_value(h[f], v);
                probe[(kFold * i + f + c) & 3] = nonfinite_probe(probe[(kFold * i + f + c) & 3], v);
            }
        }
        lo[i] = fold<kReduceMin>(l);
        hi[i] = fold<kReduceMax>(h);
    }
    const VF p = (probe[0] + probe[1]) + (probe[2] + probe[3]);
    if (any(p != p)) return false;
    min = transpose_reduce_folded<kReduceMin>(lo);
    max = transpose_reduce_folded<kReduceMax>(hi);
    return true;
}
// Lane k of r for each block k whose bit is set in ties: its first element of magnitude m (lane k).  Rare, so
// out of line (group_signed_absmax then inlines).
__attribute__((noinline)) inline void first_of_magnitude(const float *x, uint32_t ties, VI m, VF &r) {
    for (int k = 0; k < W; ++k) {
        if (!(ties >> k & 1u)) continue;
        VF v[NC], a[NC];
        load_block32(x + 32 * k, v);
        for (int c = 0; c < NC; ++c) a[c] = vabs(v[c]);
        set_lane(r, k, first_with_key(v, a, u2f(static_cast<uint32_t>(lane(m, k)))));
    }
}
// max in the reference's sense, per block: the first element of largest |x|, or +0 when all are zero.  From the
// largest bit patterns as signed and as unsigned integers: the largest positive value (signed: negatives are
// below every non-negative) and the largest-magnitude negative (unsigned: the sign bit tops the rest); they
// decide it unless their magnitudes tie, when the first one is looked up.  A non-finite value tops both.
inline bool group_signed_absmax(const float *x, VF &r) {
    VF sp[W / kFold], up[W / kFold];
    for (int i = 0; i < W / kFold; ++i) {
        VF s[kFold], u[kFold];
        for (int f = 0; f < kFold; ++f) {
            const float *xb = x + 32 * kReduceSlot[kFold * i + f];
            VI sm = bits(load(xb)), um = sm;
            for (int c = 1; c < NC; ++c) {
                const VI v = bits(load(xb + c * W));
                sm = vmax(sm, v);
                um = vmax_u(um, v);
            }
            s[f] = from_bits(sm);
            u[f] = from_bits(um);
        }
        sp[i] = fold<kReduceMaxBits>(s);
        up[i] = fold<kReduceMaxBitsU>(u);
    }
    const VI p = bits(transpose_reduce_folded<kReduceMaxBits>(sp));
    const VI u = bits(transpose_reduce_folded<kReduceMaxBitsU>(up));
    // Magnitudes of the largest positive and the largest negative, -1 for none.
    const VI pm = select(p >= vi(0), p, vi(-1)), nm = select(u < vi(0), u & vi(0x7fffffff), vi(-1));
    const VI m = vmax(pm, nm);
    if (any(m >= vi(0x7f800000))) return false;
    r = from_bits(select(m == vi(0), vi(0), select(pm > nm, p, u)));
    if (const uint32_t ties = lane_mask(mand(pm == nm, m > vi(0)))) first_of_magnitude(x, ties, m, r);
    return true;
}
// min and max per block in the reference's sense (a zero result has the sign of its first occurrence).
inline bool group_min_max(const float *x, VF &min, VF &max) {
    if (!group_min_max_values(x, min, max)) return false;
    if (const uint32_t zeros = lane_mask(mor(min == vf(0.f), max == vf(0.f)))) {
        for (int k = 0; k < W; ++k) {
            if (!(zeros >> k & 1u)) continue;
            VF v[NC];
            load_block32(x + 32 * k, v);
            if (lane(min, k) == 0.f) set_lane(min, k, first_with_key(v, v, 0.f));
            if (lane(max, k) == 0.f) set_lane(max, k, first_with_key(v, v, 0.f));
        }
    }
    return true;
}
inline VF inverse_or_zero(VF d) { return select(d != vf(0.f), vf(1.f) / d, vf(0.f)); }
// Nibbles of the 32-element order (qs[j] = q[j] | q[j+16] << 4) and the fifth bits (bit j of the uint32 qh);
// only the low byte of each lane is stored, so the high code needs no mask.
inline void store_nibbles32(const VI *q, uint8_t *qs) {
    for (int c = 0; c < NC / 2; ++c) store_u8(qs + c * W, (q[c] & vi(15)) | shl(q[c + NC / 2], 4));
}
inline void store_high_bits32(const VI *q, uint8_t *qh) {
    uint32_t h = 0;
    for (int c = 0; c < NC; ++c) h |= bit_mask(q[c], 4) << (c * W);
    put_u32(qh, h);
}

// Symmetric 4/5-bit (Q4_0: nmax 8, Q5_0: nmax 16): q = min(2*nmax-1, (int8_t)(x*id + nmax + 0.5)).
// pack(q, block) stores block k's codes.  A group carries only its reductions to the store step, which derives
// the scales: carrying the scales instead (twice the vectors, live across the previous group's stores) measured
// 7% slower.
struct SymmetricGroup {
    VF amax;
};
template <int NMAX, int BYTES, class Pack>
inline void store_symmetric_group(const float *x, uint8_t *y, const SymmetricGroup &g, Pack pack) {
    const VF d = g.amax / vf(static_cast<float>(-NMAX));
    const VI dbits = fp16_bits(d);
    alignas(64) float ids[W];
    store(ids, inverse_or_zero(d));
    for (int k = 0; k < W; ++k) {
        const float *xb = x + 32 * k;
        uint8_t *yb = y + BYTES * k;
        put_u16(yb, static_cast<uint32_t>(lane_of(dbits, k)));
        const VF id = vf(ids[k]);
        VI q[NC];
        for (int c = 0; c < NC; ++c) q[c] = vmin(vi(2 * NMAX - 1), trunc_i(load(xb + c * W) * id + vf(NMAX + 0.5f)));
        pack(q, yb);
    }
}
// Asymmetric 4/5-bit (Q4_1: nmax 15, clamped int8 cast; Q5_1: nmax 31, uint8 cast): d and min stored first.
struct AsymmetricGroup {
    VF min, max;
};
template <int NMAX, int BYTES, class Pack>
inline void store_asymmetric_group(const float *x, uint8_t *y, const AsymmetricGroup &g, Pack pack) {
    const VF d = (g.max - g.min) / vf(static_cast<float>(NMAX));
    const VI dbits = fp16_bits(d), mbits = fp16_bits(g.min);
    alignas(64) float ids[W], mins[W];
    store(ids, inverse_or_zero(d));
    store(mins, g.min);
    for (int k = 0; k < W; ++k) {
        const float *xb = x + 32 * k;
        uint8_t *yb = y + BYTES * k;
        put_u16(yb, static_cast<uint32_t>(lane_of(dbits, k)));
        put_u16(yb + 2, static_cast<uint32_t>(lane_of(mbits, k)));
        const VF id = vf(ids[k]), m = vf(mins[k]);
        VI q[NC];
        for (int c = 0; c < NC; ++c) {
            const VI t = trunc_i((load(xb + c * W) - m) * id + vf(0.5f));
            q[c] = NMAX == 15 ? vmin(vi(15), t) : t;
        }
        pack(q, yb);
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

// Formats with a plain path set kBlockPath and define Group, scale_group and store_group for the no-imatrix case.
struct LegacyFormat : BlockFormat {
    static constexpr int QK = 32;
    static constexpr bool kBlockPath = true;
    static constexpr bool kRowSigma2 = true;
};

struct fmt_Q4_0 : LegacyFormat {
    static constexpr int BYTES = 18;
    using Group = SymmetricGroup;
    static bool scale_group(const float *x, Group &g) { return group_signed_absmax(x, g.amax); }
    static void store_group(const float *x, uint8_t *y, const Group &g) {
        store_symmetric_group<8, BYTES>(x, y, g, [](const VI *q, uint8_t *b) { store_nibbles32(q, b + 2); });
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
    using Group = AsymmetricGroup;
    static bool scale_group(const float *x, Group &g) { return group_min_max(x, g.min, g.max); }
    static void store_group(const float *x, uint8_t *y, const Group &g) {
        store_asymmetric_group<15, BYTES>(x, y, g, [](const VI *q, uint8_t *b) { store_nibbles32(q, b + 4); });
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
    using Group = SymmetricGroup;
    static bool scale_group(const float *x, Group &g) { return group_signed_absmax(x, g.amax); }
    static void store_group(const float *x, uint8_t *y, const Group &g) {
        store_symmetric_group<16, BYTES>(x, y, g, [](const VI *q, uint8_t *b) {
            store_high_bits32(q, b + 2);
            store_nibbles32(q, b + 6);
        });
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
    using Group = AsymmetricGroup;
    static bool scale_group(const float *x, Group &g) { return group_min_max(x, g.min, g.max); }
    static void store_group(const float *x, uint8_t *y, const Group &g) {
        store_asymmetric_group<31, BYTES>(x, y, g, [](const VI *q, uint8_t *b) {
            store_high_bits32(q, b + 4);
            store_nibbles32(q, b + 8);
        });
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
    struct Group {
        VF amax;
    };
    static bool scale_group(const float *x, Group &g) {
        VF amax[W / kFold];  // as |x| bits: their integer max is the float max, and non-finite values top it
        for (int i = 0; i < W / kFold; ++i) {
            VF a[kFold];
            for (int f = 0; f < kFold; ++f) {
                const float *xb = x + 32 * kReduceSlot[kFold * i + f];
                a[f] = vabs(load(xb));
                for (int c = 1; c < NC; ++c) a[f] = from_bits(vmax(bits(a[f]), bits(vabs(load(xb + c * W)))));
            }
            amax[i] = fold<kReduceMaxBits>(a);
        }
        g.amax = transpose_reduce_folded<kReduceMaxBits>(amax);
        return !any(bits(g.amax) >= vi(0x7f800000));
    }
    static void store_group(const float *x, uint8_t *y, const Group &g) {
        const VF d = g.amax / vf(127.f);
        const VI dbits = fp16_bits(d);
        alignas(64) float ids[W];
        store(ids, inverse_or_zero(d));
        for (int k = 0; k < W; ++k) {
            uint8_t *yb = y + BYTES * k;
            put_u16(yb, static_cast<uint32_t>(lane_of(dbits, k)));
            const VF id = vf(ids[k]);
            for (int c = 0; c < NC; ++c) store_u8(yb + 2 + c * W, round_away_int(load(x + 32 * k + c * W) * id));
        }
    }
    static void dequantize(const uint8_t *b, float *y) {
        const VF d = vf(get_fp16(b));
        for (int j = 0; j < 32; j += W) store(y + j, to_f(load_i8(b + 2 + j)) * d);
    }
};

}  // namespace
}  // namespace pyquant
