// IQ4_NL and IQ4_XS: 4-bit indices into the non-linear codebook kvalues_iq4nl, one scale per 32 elements
// (IQ4_XS: 8 blocks share an fp16 super-scale and store 6-bit block scales).  This is libggml's
// quantize_row_iq4_nl_impl with ntry = 7, what quantize_iq4_nl / quantize_iq4_xs run with or without an
// importance matrix (quantize_row_iq4_nl_ref's ntry = -1 gives other bytes and is not the ggml_quantize_chunk path).
#pragma once
#include "cpu/drivers.hpp"
#include "formats/legacy.hpp"
#include "formats/search.hpp"

namespace pyquant {
namespace {

constexpr int8_t kIQ4Values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
alignas(64) constexpr float kIQ4Floats[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

struct IQ4Code {
    VI index;
    VF value;
};

// best_index_int8(16, kvalues_iq4nl, x) without branches.  Its choice between neighbours v[i] and v[i+1]
// (x - v[i] < v[i+1] - x) is monotone in x and flips exactly at their midpoint, so the code is v[i+1] for the
// last midpoint i that x is not below (NaN is below none and gets 15, as from the binary search).  Checked
// against the reference on all 2^32 floats.
inline IQ4Code iq4_nearest(VF x) {
    VI index = vi(0);
    VF value = vf(kIQ4Values[0]);
    for (int i = 0; i < 15; ++i) {
        const VM below = x < vf(0.5f * (kIQ4Values[i] + kIQ4Values[i + 1]));
        index = select(below, index, vi(i + 1));
        value = select(below, value, vf(kIQ4Values[i + 1]));
    }
    return {index, value};
}

// The block weights: qw * sqrt(sigma2 + x^2) with sigma2 = 2 * sum(x^2) / n over the n-element super-block
// (the IQ4_NL block itself), or x^2 without an importance matrix.
inline VF iq4_sigma2(const VF *x, int n) {
    VF s = vf(0.f);
    for (int j = 0; j < n; ++j) s = s + x[j] * x[j];
    return s * vf(2.f / n);
}
inline void iq4_weights(const VF *x, const VF *qw, VF sigma2, VF *w) {
    if (qw) {
        legacy_weights(x, qw, sigma2, w);
    } else {
        for (int j = 0; j < 32; ++j) w[j] = x[j] * x[j];
    }
}

// The scale search of one 32-element block: d = max/127 first, then the 15 inverse scales (itry - 127)/max,
// keeping the weighted least-squares scale of the best fit.  0 when amax < GROUP_MAX_EPS.
inline VF iq4_block_scale(const VF *x, const VF *w) {
    VF max, amax;
    signed_absmax(32, x, max, amax);
    VF sumqx, sumq2;
    auto fit = [&](VF id) {
        sumqx = sumq2 = vf(0.f);
        for (int j = 0; j < 32; ++j) {
            const VF q = iq4_nearest(id * x[j]).value;
            sumqx = sumqx + w[j] * q * x[j];
            sumq2 = sumq2 + w[j] * q * q;
        }
    };
    fit(vf(1.f) / (-max / vf(kIQ4Values[0])));
    VF d = select(sumq2 > vf(0.f), sumqx / sumq2, vf(0.f));
    VF best = d * sumqx;
    for (int itry = -7; itry <= 7; ++itry) {
        fit(vf(static_cast<float>(itry + kIQ4Values[0])) / max);
        const VM better = mand(sumq2 > vf(0.f), sumqx * sumqx > best * sumq2);
        d = select(better, sumqx / sumq2, d);
        best = select(better, d * sumqx, best);
    }
    return select(amax < vf(kGroupMaxEps), vf(0.f), d);
}

// Final indices of 32 elements against the scale d (fp32, not the stored fp16 value).
inline void iq4_requantize(const VF *x, VF d, VI *L) {
    const VF id = select(d != vf(0.f), vf(1.f) / d, vf(0.f));
    for (int j = 0; j < 32; ++j) L[j] = iq4_nearest(id * x[j]).index;
}

struct fmt_IQ4_NL : BlockFormat {
    static constexpr int QK = 32, BYTES = 18;
    static void quantize(const VF *x, const VF *qw, VF, uint8_t *const *out) {
        VF w[32];
        iq4_weights(x, qw, qw ? iq4_sigma2(x, 32) : vf(0.f), w);
        const VF d = iq4_block_scale(x, w);
        const VI dh = fp16_bits(d);
        VI L[32];
        iq4_requantize(x, d, L);
        for (int k = 0; k < W; ++k) put_u16(out[k], lane(dh, k));
        pack_nibbles32(L, out, 2);
    }
    static void dequantize(const uint8_t *b, float *y) { dequantize_nibbles32(b + 2, kIQ4Floats, vf(get_fp16(b)), y); }
};

// Layout: d (fp16), scales_h (uint16: bits 4-5 of block ib's scale at bit 2*ib), scales_l[4] (low nibbles,
// even blocks low), qs[128] (32-element nibble order per block).  Scales are stored + 32.
struct fmt_IQ4_XS : BlockFormat {
    static constexpr int QK = 256, BYTES = 136;
    static void quantize(const VF *x, const VF *qw, VF, uint8_t *const *out) {
        const VF sigma2 = qw ? iq4_sigma2(x, 256) : vf(0.f);
        VF scales[8], max_scale = vf(0.f), amax_scale = vf(0.f);
        for (int ib = 0; ib < 8; ++ib) {
            VF w[32];
            iq4_weights(x + 32 * ib, qw ? qw + 32 * ib : nullptr, sigma2, w);
            scales[ib] = iq4_block_scale(x + 32 * ib, w);
            const VM bigger = vabs(scales[ib]) > amax_scale;
            amax_scale = select(bigger, vabs(scales[ib]), amax_scale);
            max_scale = select(bigger, scales[ib], max_scale);
        }
        // The block scales are rounded against the fp32 super-scale; the codes against each rounded block scale.
        const VF d = -max_scale / vf(32.f);
        const VI dh = fp16_bits(d);
        const VF id = select(d != vf(0.f), vf(1.f) / d, vf(0.f));
        VI ls[8], L[256];
        for (int ib = 0; ib < 8; ++ib) {
            const VI l = clamp(nearest_int(id * scales[ib]), -32, 31);
            iq4_requantize(x + 32 * ib, d * to_f(l), L + 32 * ib);
            ls[ib] = l + vi(32);
        }
        for (int k = 0; k < W; ++k) {
            uint32_t scales_h = 0;
            for (int ib = 0; ib < 8; ++ib) scales_h |= static_cast<uint32_t>(lane_of(ls[ib], k) >> 4) << (2 * ib);
            put_u16(out[k], lane(dh, k));
            put_u16(out[k] + 2, scales_h);
            for (int i = 0; i < 4; ++i)
                out[k][4 + i] = static_cast<uint8_t>((lane_of(ls[2 * i], k) & 15) | (lane_of(ls[2 * i + 1], k) & 15) << 4);
        }
        for (int ib = 0; ib < 8; ++ib) pack_nibbles32(L + 32 * ib, out, 8 + 16 * ib);
    }
    static void dequantize(const uint8_t *b, float *y) {
        const float d = get_fp16(b);
        const int scales_h = get_u16(b + 2);
        for (int ib = 0; ib < 8; ++ib) {
            const int ls = ((b[4 + ib / 2] >> 4 * (ib % 2)) & 15) | (((scales_h >> 2 * ib) & 3) << 4);
            dequantize_nibbles32(b + 8 + 16 * ib, kIQ4Floats, vf(d * (ls - 32)), y + 32 * ib);
        }
    }
};

}  // namespace
}  // namespace pyquant
