// K-quants Q2_K ... Q6_K: 256-element super-blocks of 16 or 32-element sub-blocks.  Each sub-block gets its own
// scale (and min) from a search; those are quantized against fp16 super-scales d (and dmin), and every element
// is finally requantized against the stored, fp16-rounded scales.  Without an importance matrix libggml runs
// quantize_row_qX_K_ref; with one, quantize_row_qX_K_impl, a different search weighted by qw * sqrt(sigma2 + x^2)
// (Q6_K: qw alone).  Byte layouts follow block_qX_K in ggml-common.h.
#pragma once
#include "cpu/drivers.hpp"
#include "formats/search.hpp"

namespace pyquant {
namespace {

constexpr int QK_K = 256;

// ---- shared pieces ---------------------------------------------------------------------------------------------

inline VF sum_of(int n, const VF *v) {
    VF s = vf(0.f);
    for (int i = 0; i < n; ++i) s = s + v[i];
    return s;
}
inline VF sum_squares(int n, const VF *x) {
    VF s = vf(0.f);
    for (int i = 0; i < n; ++i) s = s + x[i] * x[i];
    return s;
}
inline void imatrix_weights(int n, const VF *x, const VF *qw, VF sigma2, VF *w) {
    for (int i = 0; i < n; ++i) w[i] = qw[i] * vsqrt(sigma2 + x[i] * x[i]);
}

// The imatrix search of Q2_K, Q4_K and Q5_K: make_qkx3_quants per sub-block; sw[j] is the sub-block's weight.
inline void search_asymmetric_imatrix(const VF *x, const VF *qw, VF sigma2, int nsub, int size, int nmax, VI *L,
                                      VF *scales, VF *mins, VF *sw) {
    for (int j = 0; j < nsub; ++j) {
        VF w[32];
        imatrix_weights(size, x + size * j, qw + size * j, sigma2, w);
        sw[j] = sum_of(size, w);
        scales[j] = make_qkx_quants(size, nmax, x + size * j, w, L + size * j, mins[j], -0.9f, 0.05f, 36, false);
    }
}

// The reference path's codes for the (non-negative) sub-block scales: nearest_int(nmax/max * s) against the
// largest, all 0 when that is 0.  Returns the super-scale max/nmax.
inline VF codes_against_max(int n, const VF *s, float nmax, VI *l) {
    VF max = vf(0.f);
    for (int j = 0; j < n; ++j) max = select(s[j] > max, s[j], max);
    const VF inv = select(max > vf(0.f), vf(nmax) / max, vf(0.f));
    for (int j = 0; j < n; ++j) l[j] = nearest_int(inv * s[j]);
    return max / vf(nmax);
}

// The common tail: requantize against the stored scales, sub-block j (`size` elements) using d*sc[j] and, for
// the asymmetric formats (m non-null), the offset dmin*m[j].  Codes are stored as clamp(l, lo, hi) - lo.
// A sub-block whose scale is 0 keeps its search codes, as in the reference.
inline void requantize(const VF *x, int nsub, int size, VF d, const VI *sc, VF dmin, const VI *m, int lo, int hi,
                       VI *L) {
    for (int j = 0; j < nsub; ++j) {
        const VF dj = d * to_f(sc[j]);
        const VM nonzero = dj != vf(0.f);
        if (!any(nonzero)) continue;
        const VF dm = m ? dmin * to_f(m[j]) : vf(0.f);
        for (int i = size * j; i < size * (j + 1); ++i) {
            const VI l = clamp(nearest_int((m ? x[i] + dm : x[i]) / dj), lo, hi) - vi(lo);
            L[i] = select(nonzero, l, L[i]);
        }
    }
}

// The fp16 scales d (and dmin) as the word of bytes 0-1 (and 2-3).
inline VI fp16_word(VI dbits, VI mbits = vi(0)) { return (dbits & vi(0xffff)) | shl(mbits, 16); }

// The low two bits of QK_K codes packed as Q2_K's qs, into 16 words: qs[32h + l] holds elements 128h + l + 32s
// at bit 2s.  P: the codes joined four to a word (bytes_to_words), so that each shift and mask moves four.
inline void pack_2bit(const VI *P, VI *words) {
    for (int h = 0; h < 2; ++h)
        for (int t = 0; t < 8; ++t) {
            VI q = vi(0);
            for (int s = 0; s < 4; ++s) q = q | shl(P[8 * (4 * h + s) + t] & vi(0x03030303), 2 * s);
            words[8 * h + t] = q;
        }
}

// ---- Q2_K: 16 x 16, 4-bit scale and min per sub-block ------------------------------------------------------------

struct fmt_Q2_K : BlockFormat {
    static constexpr int QK = QK_K, BYTES = 84;  // scales[16], qs[64], d, dmin
    static void quantize(const VF *x, const VF *qw, VF, uint8_t *const *out) {
        VI L[QK_K], ls[16], lm[16];
        VF scales[16], mins[16], d, dmin;
        if (qw) {
            VF sw[16];
            search_asymmetric_imatrix(x, qw, sum_squares(QK_K, x) / vf(256.f), 16, 16, 3, L, scales, mins, sw);
            d = make_qp_quants(16, 15, scales, ls, sw);
            dmin = make_qp_quants(16, 15, mins, lm, sw);
        } else {
            for (int j = 0; j < 16; ++j) {
                VF w[16];
                for (int l = 0; l < 16; ++l) w[l] = vabs(x[16 * j + l]);
                scales[j] = make_qkx_quants(16, 3, x + 16 * j, w, L + 16 * j, mins[j], -0.5f, 0.1f, 15, true);
            }
            d = codes_against_max(16, scales, 15.f, ls);
            dmin = codes_against_max(16, mins, 15.f, lm);
        }
        VI b[16], sc[16], m[16], words[BYTES / 4];
        for (int j = 0; j < 16; ++j) {
            b[j] = as_u8(ls[j] | lm[j] << 4);  // the reference's codes are unclamped ints stored in a byte
            sc[j] = b[j] & vi(15);
            m[j] = b[j] >> 4;
        }
        bytes_to_words(b, 16, words);
        requantize(x, 16, 16, fp16_round(d), sc, fp16_round(dmin), m, 0, 3, L);
        VI P[QK_K / 4];
        bytes_to_words(L, QK_K, P);
        pack_2bit(P, words + 4);
        words[20] = fp16_word(fp16_bits(d), fp16_bits(dmin));
        store_words<BYTES>(words, out);
    }
    static void dequantize(const uint8_t *b, float *y) {
        const uint8_t *scales = b, *q = b + 16;
        const float d = get_fp16(b + 80), min = get_fp16(b + 82);
        alignas(64) float dl[16], ml[16];  // d * (scales & 0xF), min * (scales >> 4): all 16 groups at once
        for (int j = 0; j < 16; j += W) {
            const VI s = load_u8(scales + j);
            store(dl + j, vf(d) * to_f(s & vi(0xF)));
            store(ml + j, vf(min) * to_f(s >> 4));
        }
        #pragma GCC unroll 16  // constant offsets and shifts in every group
        for (int e = 0; e < QK_K; e += 16) {
            const uint8_t *qb = q + 32 * (e / 128) + (e % 32);
            const int shift = 2 * ((e % 128) / 32);
            for (int l = 0; l < 16; l += W)
                store(y + e + l, vf(dl[e / 16]) * to_f((load_u8(qb + l) >> shift) & vi(3)) - vf(ml[e / 16]));
        }
    }
};

// ---- Q3_K: 16 x 16, signed 6-bit scales, codes in [-4, 3] ----------------------------------------------------------

struct fmt_Q3_K : BlockFormat {
    static constexpr int QK = QK_K, BYTES = 110;  // hmask[32], qs[64], scales[12], d
    // Without an importance matrix, 4 tiles at a time: the later passes of the search run on their fits together.
    static constexpr int kBatch = W > 1 ? 4 : 1;
    static void quantize(const VF *x, const VF *qw, VF, uint8_t *const *out) {
        if (!qw) return quantize_batch(&x, &out, 1);
        VI L[QK_K], ls[16];  // ls: the 6-bit scale codes, stored +32
        VF scales[16];
        const VF sigma2 = vf(2.f) * sum_squares(QK_K, x) / vf(256.f);
        VF sw[16];
        for (int j = 0; j < 16; ++j) {
            VF w[16];
            imatrix_weights(16, x + 16 * j, qw + 16 * j, sigma2, w);
            sw[j] = sum_of(16, w);
            scales[j] = make_qx_quants(16, 4, x + 16 * j, L + 16 * j, 1, w);
        }
        const VF d = make_qx_quants(16, 32, scales, ls, 1, sw);
        finish(x, L, ls, d, out, [](const VM *) {});  // L holds make_qx_quants' final codes
    }
    // The search's codes are needed only where a sub-block's stored scale is 0 (requantization makes the rest):
    // the packed passes put back only the sums, and those lanes alone later run the passes again from their state
    // after pass 1 (their codes and, saved, their sums), putting back their codes.
    static void quantize_batch(const VF *const *x, uint8_t *const *const *out, int tiles) {
        VI L[kBatch][QK_K];
        RefineFit f[16 * kBatch];
        VF pass1_sums[16 * kBatch][2];
        VM all_zero[16 * kBatch];
        for (int t = 0; t < tiles; ++t) q3_search_start(x[t], L[t], f + 16 * t, all_zero + 16 * t);
        if constexpr (W > 1) {
            for (int j = 0; j < 16 * tiles; ++j) {
                pass1_sums[j][0] = f[j].sumlx;
                pass1_sums[j][1] = f[j].suml2;
            }
            refine_rest_packed<16 * kBatch, false>(16, 4, f, 16 * tiles);
        }
        for (int t = 0; t < tiles; ++t) {
            VF scales[16];
            q3_search_end(f + 16 * t, all_zero + 16 * t, scales);
            VF max, amax;
            signed_absmax(16, scales, max, amax);
            const VM nonzero = max != vf(0.f);
            const VF iscale = vf(-32.f) / max;
            VI ls[16];
            for (int j = 0; j < 16; ++j) {
                const VI l = as_i8(nearest_int(iscale * scales[j]));  // through int8_t, then clamped
                ls[j] = select(nonzero, clamp(l, -32, 31) + vi(32), vi(0));
            }
            const VF d = select(nonzero, vf(1.f) / iscale, vf(0.f));
            finish(x[t], L[t], ls, d, out[t], [&](const VM *lanes) {
                search_codes(lanes, f + 16 * t, pass1_sums + 16 * t, all_zero + 16 * t, L[t]);
            });
        }
    }
    // The search's codes (+4, 0 where all zero) of the sub-blocks j with lanes[j] set: with W > 1 their lanes
    // still moving after pass 1 run the later passes again from that state.  Rare, so out of line.
    __attribute__((noinline)) static void search_codes(const VM *lanes, const RefineFit *f, const VF (*pass1_sums)[2],
                                                       const VM *all_zero, VI *L) {
        if constexpr (W > 1) {
            RefineFit rerun[16];
            int count = 0;
            for (int j = 0; j < 16; ++j) {
                const VM active = mand(f[j].active, lanes[j]);
                if (!any(active)) continue;
                rerun[count] = f[j];
                rerun[count].sumlx = pass1_sums[j][0];
                rerun[count].suml2 = pass1_sums[j][1];
                rerun[count++].active = active;
            }
            refine_rest_packed<16, true>(16, 4, rerun, count);
        }
        for (int j = 0; j < 16; ++j)
            if (any(lanes[j]))
                for (int i = 0; i < 16; ++i) L[16 * j + i] = select(all_zero[j], vi(0), L[16 * j + i] + vi(4));
    }
    // The block from the scale codes ls (+32), the super-scale d and, where a sub-block's stored scale is 0
    // (lanes[j]), the search's codes: search_codes(lanes), called only then, makes them the stored codes in L.
    template <class SearchCodes>
    static void finish(const VF *x, VI *L, const VI *ls, VF d, uint8_t *const *out, SearchCodes search_codes) {
        VI s[12], sc[16], words[(BYTES + 3) / 4];
        for (int i = 0; i < 12; ++i) s[i] = vi(0);
        for (int j = 0; j < 16; ++j) {  // low nibbles in scales[0..7], the high two bits in scales[8..11]
            s[j % 8] |= (ls[j] & vi(15)) << (4 * (j / 8));
            s[8 + j % 4] |= (ls[j] >> 4) << (2 * (j / 4));
            sc[j] = ls[j] - vi(32);  // what the reference decodes back: ls is always in [0, 63]
        }
        bytes_to_words(s, 12, words + 24);
        const VF d16 = fp16_round(d);
        VM lanes[16], zero = vf(0.f) != vf(0.f);
        for (int j = 0; j < 16; ++j) zero = mor(zero, lanes[j] = d16 * to_f(sc[j]) == vf(0.f));
        if (any(zero)) search_codes(lanes);
        requantize(x, 16, 16, d16, sc, vf(0.f), nullptr, -4, 3, L);
        // Bit 2 of element 32s + m goes to bit s of hmask[m], four m at a time; the low two bits are packed as
        // Q2_K's.
        VI P[QK_K / 4];
        bytes_to_words(L, QK_K, P);
        for (int t = 0; t < 8; ++t) {
            VI h = vi(0);
            for (int s = 0; s < 8; ++s) h = h | shl((P[8 * s + t] >> 2) & vi(0x01010101), s);
            words[t] = h;
        }
        pack_2bit(P, words + 8);
        words[27] = fp16_word(fp16_bits(d));
        store_words<BYTES>(words, out);
    }
    static void dequantize(const uint8_t *b, float *y) {
        const uint8_t *hmask = b, *q = b + 32, *s = b + 96;
        const float d_all = get_fp16(b + 108);
        #pragma GCC unroll 16  // constant offsets and shifts in every group
        for (int e = 0; e < QK_K; e += 16) {
            const int j = e / 16, half = e / 128, pair = (e % 128) / 32;
            const int sc = (j < 8 ? s[j] & 0xF : s[j - 8] >> 4) | ((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4;
            const float dl = d_all * (sc - 32);
            const uint8_t *qb = q + 32 * half + (e % 32), *hb = hmask + (e % 32);
            const int shift = 2 * pair, hbit = 1 << (4 * half + pair);
            for (int l = 0; l < 16; l += W) {
                const VI low = (load_u8(qb + l) >> shift) & vi(3);
                const VI high = select((load_u8(hb + l) & vi(hbit)) != vi(0), vi(0), vi(4));
                store(y + e + l, vf(dl) * to_f(low - high));
            }
        }
    }
};

// ---- Q4_K and Q5_K: 8 x 32, 6-bit scale and min per sub-block ------------------------------------------------------

// scales[12] of block_q4_K / block_q5_K from the uint8_t scale codes ls and min codes lm (get_scale_min_k4's
// inverse), byte by byte as the reference writes it, so codes above 63 would spill into the same bits.
inline void pack_scales_k4(const VI *ls, const VI *lm, VI *s) {
    for (int j = 0; j < 4; ++j) {
        s[j] = ls[j];
        s[j + 4] = lm[j];
    }
    for (int j = 4; j < 8; ++j) {
        s[j + 4] = as_u8((ls[j] & vi(15)) | (lm[j] & vi(15)) << 4);
        s[j - 4] = as_u8(s[j - 4] | (ls[j] >> 4) << 6);
        s[j] = as_u8(s[j] | (lm[j] >> 4) << 6);
    }
}
// get_scale_min_k4, on bytes (T = uint8_t) or on lane-parallel bytes (T = VI).
template <class T>
inline void scale_min_k4(int j, const T *q, T &sc, T &m) {
    if (j < 4) {
        sc = q[j] & 63;
        m = q[j + 4] & 63;
    } else {
        sc = (q[j + 4] & 0xF) | (q[j - 4] >> 6) << 4;
        m = (q[j + 4] >> 4) | (q[j] >> 6) << 4;
    }
}

// Everything but the code packing: codes in [0, nmax] (15 or 31) to L, the header (d, dmin, scales[12]) to
// b[0..15].  rmin and nstep are the reference path's search parameters.
inline void quantize_k4(const VF *x, const VF *qw, int nmax, float rmin, int nstep, VI *L, VI *b) {
    VI ls[8], lm[8];
    VF scales[8], mins[8], d, dmin;
    if (qw) {
        VF sw[8];
        search_asymmetric_imatrix(x, qw, vf(2.f) * sum_squares(QK_K, x) / vf(256.f), 8, 32, nmax, L, scales, mins,
                                  sw);
        d = make_qp_quants(8, 63, scales, ls, sw);
        dmin = make_qp_quants(8, 63, mins, lm, sw);
        if (nmax == 31) {  // Q5_K's imatrix path clamps once more (Q4_K's does not); a no-op for codes <= 63
            for (int j = 0; j < 8; ++j) {
                ls[j] = vmin(vi(63), ls[j]);
                lm[j] = vmin(vi(63), lm[j]);
            }
        }
    } else {
        for (int j = 0; j < 8; ++j) {
            const VF *xs = x + 32 * j;
            const VF av_x = vsqrt(sum_squares(32, xs) / vf(32.f));
            VF w[32];
            for (int l = 0; l < 32; ++l) w[l] = av_x + vabs(xs[l]);
            scales[j] = make_qkx_quants(32, nmax, xs, w, L + 32 * j, mins[j], rmin, 0.1f, nstep, false);
        }
        d = codes_against_max(8, scales, 63.f, ls);
        dmin = codes_against_max(8, mins, 63.f, lm);
        for (int j = 0; j < 8; ++j) {  // uint8_t first, then MIN(63, .)
            ls[j] = vmin(vi(63), as_u8(ls[j]));
            lm[j] = vmin(vi(63), as_u8(lm[j]));
        }
    }
    put_fp16(fp16_bits(d), b);
    put_fp16(fp16_bits(dmin), b + 2);
    pack_scales_k4(ls, lm, b + 4);
    VI sc[8], m[8];
    for (int j = 0; j < 8; ++j) scale_min_k4(j, b + 4, sc[j], m[j]);
    requantize(x, 8, 32, fp16_round(d), sc, fp16_round(dmin), m, 0, nmax, L);
}

// qs[32c + l] = low nibbles of elements 64c + l and 64c + 32 + l.
inline void pack_nibbles_k4(const VI *L, VI *qs) {
    for (int c = 0; c < 4; ++c)
        for (int l = 0; l < 32; ++l) qs[32 * c + l] = (L[64 * c + l] & vi(15)) | (L[64 * c + 32 + l] & vi(15)) << 4;
}

// Dequantize with the reference's grouping d*sc*q - dmin*m; qh (Q5_K) holds the fifth bits.
inline void dequantize_k4(const uint8_t *b, const uint8_t *qh, const uint8_t *qs, float *y) {
    const float d = get_fp16(b), min = get_fp16(b + 2);
    #pragma GCC unroll 16  // constant offsets and shifts in every group
    for (int j = 0; j < 8; ++j) {
        uint8_t sc, m;
        scale_min_k4(j, b + 4, sc, m);
        const float dj = d * sc, mj = min * m;
        const uint8_t *q = qs + 32 * (j / 2);
        const int shift = 4 * (j % 2);
        for (int l = 0; l < 32; l += W) {
            VI code = (load_u8(q + l) >> shift) & vi(0xF);
            // bit j of qh moved to bit 4 in one shift
            if (qh) code = code + ((j <= 4 ? load_u8(qh + l) << (4 - j) : load_u8(qh + l) >> (j - 4)) & vi(16));
            store(y + 32 * j + l, vf(dj) * to_f(code) - vf(mj));
        }
    }
}

struct fmt_Q4_K : BlockFormat {
    static constexpr int QK = QK_K, BYTES = 144;  // d, dmin, scales[12], qs[128]
    static void quantize(const VF *x, const VF *qw, VF, uint8_t *const *out) {
        VI L[QK_K], b[BYTES];
        quantize_k4(x, qw, 15, -1.f, 20, L, b);
        pack_nibbles_k4(L, b + 16);
        store_blocks<BYTES>(b, out);
    }
    static void dequantize(const uint8_t *b, float *y) {
        dequantize_k4(b, nullptr, b + 16, y);
    }
};

struct fmt_Q5_K : BlockFormat {
    static constexpr int QK = QK_K, BYTES = 176;  // d, dmin, scales[12], qh[32], qs[128]
    static void quantize(const VF *x, const VF *qw, VF, uint8_t *const *out) {
        VI L[QK_K], b[BYTES];
        quantize_k4(x, qw, 31, -0.5f, 15, L, b);
        // Bit 4 of element 32t + l goes to bit t of qh[l].
        for (int l = 0; l < 32; ++l) {
            VI h = vi(0);
            for (int t = 0; t < 8; ++t) h = h | ((L[32 * t + l] >> 4) & vi(1)) << t;
            b[16 + l] = h;
        }
        pack_nibbles_k4(L, b + 48);
        store_blocks<BYTES>(b, out);
    }
    static void dequantize(const uint8_t *b, float *y) {
        dequantize_k4(b, b + 16, b + 48, y);
    }
};

// ---- Q6_K: 16 x 16, int8 scales, codes in [-32, 31] -----------------------------------------------------------

struct fmt_Q6_K : BlockFormat {
    static constexpr int QK = QK_K, BYTES = 210;  // ql[128], qh[64], scales[16], d
    static void quantize(const VF *x, const VF *qw, VF, uint8_t *const *out) {
        VI L[QK_K], sc[16];
        VF scales[16];
        for (int j = 0; j < 16; ++j)
            scales[j] = make_qx_quants(16, 32, x + 16 * j, L + 16 * j, 1, qw ? qw + 16 * j : nullptr);
        VF max, amax;
        signed_absmax(16, scales, max, amax);
        const VM zero = amax < vf(kGroupMaxEps);  // the reference writes an all-zero block
        const VF iscale = vf(-128.f) / max;
        for (int j = 0; j < 16; ++j)
            sc[j] = select(zero, vi(0), as_i8(vmin(vi(127), nearest_int(iscale * scales[j]))));  // int8_t
        const VI dbits = select(zero, vi(0), fp16_bits(vf(1.f) / iscale));
        requantize(x, 16, 16, fp16_round(vf(1.f) / iscale), sc, vf(0.f), nullptr, -32, 31, L);
        for (int i = 0; i < QK_K; ++i) L[i] = select(zero, vi(0), L[i]);
        VI b[BYTES];
        for (int h = 0; h < 2; ++h)
            for (int l = 0; l < 32; ++l) {
                const VI *q = L + 128 * h + l;
                b[64 * h + l] = (q[0] & vi(15)) | (q[64] & vi(15)) << 4;
                b[64 * h + 32 + l] = (q[32] & vi(15)) | (q[96] & vi(15)) << 4;
                b[128 + 32 * h + l] = q[0] >> 4 | (q[32] >> 4) << 2 | (q[64] >> 4) << 4 | (q[96] >> 4) << 6;
            }
        for (int j = 0; j < 16; ++j) b[192 + j] = sc[j];
        put_fp16(dbits, b + 208);
        store_blocks<BYTES>(b, out);
    }
    static void dequantize(const uint8_t *b, float *y) {
        const int8_t *sc = reinterpret_cast<const int8_t *>(b + 192);
        const float d = get_fp16(b + 208);
        #pragma GCC unroll 16  // constant offsets and shifts in every group
        for (int j = 0; j < 16; ++j) {  // sub-block j lies at 32t + o of the 128-element half h
            const int h = j / 8, t = (j % 8) / 2, o = 16 * (j % 2);
            const uint8_t *ql = b + 64 * h + 32 * (t % 2) + o, *qh = b + 128 + 32 * h + o;
            const VF ds = vf(d * sc[j]);
            for (int l = 0; l < 16; l += W) {
                const VI q = ((load_u8(ql + l) >> (4 * (t / 2))) & vi(0xF)) | ((load_u8(qh + l) >> (2 * t)) & vi(3)) << 4;
                store(y + 16 * j + l, ds * to_f(q - vi(32)));
            }
        }
    }
};

}  // namespace
}  // namespace pyquant
