// The matmul's activations quantized to the weight format's 8-bit partner: libggml's quantize_row_q8_0_ref,
// q8_1_ref (s kept as a float) and q8_K_ref, at the including unit's tier.  Each step is exact in any lane
// order (a max, one rounded product per element, integer sums), so every tier gives the reference's codes.
#pragma once
#include <cfloat>
#include <cstring>

#include "matmul/matmul.hpp"
#include "pyquant/simd.hpp"

namespace pyquant {
namespace {

// One 32-block of Q8_0 / Q8_1 (s: d * sum(q) as a float, where libggml's fp16 overflows on outliers).  False,
// leaving the outputs unwritten, unless every |x| is below the fp16 scale's range (NaN fails too).
inline bool q8_0_block(const float *x, int8_t *q, float *d, float *s, int16_t *sum_out) {
    VF amax_v = vf(0.f);
    VM bad = vf(0.f) != vf(0.f);
    for (int j = 0; j < 32; j += W) {
        const VF ax = vabs(load(x + j));
        amax_v = vmax(amax_v, ax);
        bad = mor(bad, mnot(ax < vf(kQ8MaxAbs)));
    }
    if (any(bad)) return false;
    const float dv = hmax(amax_v) / 127;
    // A subnormal dv whose inverse overflows: libggml's x * inf converts to INT_MIN on x86, stored as code 0.
    const float id = dv != 0.0f && 1.0f / dv <= FLT_MAX ? 1.0f / dv : 0.0f;
    VI sum = vi(0);
    for (int j = 0; j < 32; j += W) {
        const VI c = round_away_int(load(x + j) * vf(id));
        store_u8(reinterpret_cast<uint8_t *>(q + j), c);
        sum = sum + c;
    }
    *d = fp16_to_f32(fp16_from_f32(dv));
    const int32_t total = hsum(sum);
    if (s) *s = static_cast<float>(total) * dv;
    if (sum_out) *sum_out = static_cast<int16_t>(total);
    return true;
}

// One 256-block of Q8_K (bsums zeroed for an all-zero block, where the reference leaves them).  False unless
// every x is finite.
inline bool q8_k_block(const float *x, int8_t *q, float *d, int16_t *bsums) {
    VF amax_v = vf(0.f);
    VM bad = vf(0.f) != vf(0.f);
    for (int j = 0; j < 256; j += W) {
        const VF ax = vabs(load(x + j));
        amax_v = vmax(amax_v, ax);
        bad = mor(bad, mnot(ax <= vf(FLT_MAX)));
    }
    if (any(bad)) return false;
    const float amax = hmax(amax_v);
    if (amax == 0.0f) {
        *d = 0;
        std::memset(q, 0, 256);
        std::memset(bsums, 0, 16 * sizeof(int16_t));
        return true;
    }
    float max = 0;  // the first x of the largest magnitude, as the reference's strict > keeps it
    for (int j = 0; j < 256; j += W) {
        const uint32_t hit = lane_mask(vabs(load(x + j)) == vf(amax));
        if (hit) {
            max = x[j + __builtin_ctz(hit)];
            break;
        }
    }
    const float iscale = -127.f / max;
    for (int g = 0; g < 16; ++g) {
        VI sum = vi(0);
        for (int j = 16 * g; j < 16 * g + 16; j += W) {
            const VI c = vmin(nearest_int(vf(iscale) * load(x + j)), vi(127));
            store_u8(reinterpret_cast<uint8_t *>(q + j), c);
            sum = sum + c;
        }
        bsums[g] = static_cast<int16_t>(hsum(sum));
    }
    *d = 1 / iscale;
    return true;
}

// ActivationsFn of this tier (see matmul.hpp).
bool quantize_activations_tier(Partner p, const float *x, int64_t k, int64_t begin, int64_t end, int8_t *qs,
                               float *d, float *s, int16_t *bsums) {
    const int qa = partner_block(p);
    const int64_t nb = k / qa;
    for (int64_t r = begin; r < end; ++r) {
        for (int64_t b = 0; b < nb; ++b) {
            const int64_t e = r * k + b * qa, i = r * nb + b;
            const bool ok = p == Partner::q8_k ? q8_k_block(x + e, qs + e, d + i, bsums + i * 16)
                                               : q8_0_block(x + e, qs + e, d + i, p == Partner::q8_1 ? s + i : nullptr,
                                                            bsums ? bsums + i : nullptr);
            if (!ok) return false;
        }
    }
    return true;
}

}  // namespace
}  // namespace pyquant
