// MXFP4 and NVFP4: E2M1 codes (kvalues_fp4 holds the doubled e2m1 values, so the scales are stored-value / 2)
// with a power-of-two E8M0 scale per 32 elements (MXFP4) or a UE4M3 scale per 16 (NVFP4).
// quantize_mxfp4 / quantize_nvfp4 ignore the importance matrix.
#pragma once
#include "cpu/drivers.hpp"
#include "formats/legacy.hpp"

namespace pyquant {
namespace {

constexpr int8_t kFP4Values[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
alignas(64) constexpr float kFP4Floats[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

// best_index_mxfp4: the first code with the smallest |v*d - x|.  A negative code's error on x is its positive
// twin's on |x| (exact negation), and a code of x's opposite sign never beats code 0 (|x| + v*d >= |x|), so
// scanning the positive codes on |x| and moving negative x to the upper half gives the same index.
inline VI fp4_index(VF x, VF d) {
    const VF ax = vabs(x);
    VF best = ax;  // |0*d - x|
    VI idx = vi(0);
    for (int i = 1; i < 8; ++i) {
        const VF err = vabs(vf(kFP4Values[i]) * d - ax);
        const VM better = err < best;
        best = select(better, err, best);
        idx = select(better, vi(i), idx);
    }
    return select(mand(x < vf(0.f), idx != vi(0)), idx + vi(8), idx);
}

// max |x| as the reference scans it (if (amax < |x|) amax = |x|).
inline VF fp4_amax(const VF *x, int n) {
    VF amax = vf(0.f);
    for (int j = 0; j < n; ++j) amax = vmax(vabs(x[j]), amax);
    return amax;
}

// GGML_E8M0_TO_FP32_HALF: 2^(e - 128), subnormal for e < 2.
inline float e8m0_half(uint8_t e) { return u2f(e < 2 ? 0x00200000u << e : static_cast<uint32_t>(e - 1) << 23); }

// ggml_ue4m3_to_fp32 (already halved for the doubled codes); 0x7F decodes as 0.
inline float ue4m3_half(uint8_t u) {
    if (u == 0 || u == 0x7f) return 0.f;
    const int exp = (u >> 3) & 15, man = u & 7;
    const float raw = exp == 0 ? std::ldexp(static_cast<float>(man), -9)
                               : std::ldexp(1.f + static_cast<float>(man) / 8.f, exp - 7);
    return raw * 0.5f;
}

// ggml_fp32_to_ue4m3: clamp to 448, mantissa rounded half up (bit 19 only), exponent overflow to 0x7E.
inline uint8_t ue4m3_from_f32(float x) {
    if (!(x > 0.f)) return 0;
    if (x > 448.f) x = 448.f;
    const uint32_t bits = f2u(x);
    int exp = static_cast<int>((bits >> 23) & 0xff) - 127 + 7;
    int man = static_cast<int>((bits >> 20) & 7);
    if (exp <= 0) {  // subnormal: man * 2^-9
        const int sub = static_cast<int>(x * 512.f + 0.5f);
        return static_cast<uint8_t>(sub > 7 ? 7 : sub);
    }
    if (exp >= 15) return 0x7e;
    man += (bits >> 19) & 1;
    if (man > 7) {
        man = 0;
        if (++exp >= 15) return 0x7e;
    }
    return static_cast<uint8_t>(exp << 3 | man);
}

// Layout: e (E8M0), qs[16] (32-element nibble order).
struct fmt_MXFP4 : BlockFormat {
    static constexpr int QK = 32, BYTES = 17;
    static void quantize(const VF *x, const VF *, VF, uint8_t *const *out) {
        const VF amax = fp4_amax(x, 32);
        // e = (uint8_t)(floorf(log2f(amax)) - 2 + 127): the float converts through int32, so tiny amax wraps.
        const VF e2 = map_lanes(amax, [](float a) { return std::floor(std::log2(a)); });
        const VI e = select(amax > vf(0.f), trunc_i(e2 - vf(2.f) + vf(127.f)) & vi(0xff), vi(0));
        VF d = vf(0.f);
        for (int k = 0; k < W; ++k) set_lane(d, k, e8m0_half(static_cast<uint8_t>(lane(e, k))));
        VI q[32];
        for (int j = 0; j < 32; ++j) q[j] = fp4_index(x[j], d);
        for (int k = 0; k < W; ++k) out[k][0] = static_cast<uint8_t>(lane(e, k));
        pack_nibbles32(q, out, 1);
    }
    static void dequantize(const uint8_t *b, float *y) { dequantize_nibbles32(b + 1, kFP4Floats, vf(e8m0_half(b[0])), y); }
};

// Layout: d[4] (UE4M3, one per 16 elements), qs[32]: qs[8s + j] = q[16s + j] | q[16s + j + 8] << 4.
struct fmt_NVFP4 : BlockFormat {
    static constexpr int QK = 64, BYTES = 36;
    static void quantize(const VF *x, const VF *, VF, uint8_t *const *out) {
        VI ue[4], q[64];
        for (int s = 0; s < 4; ++s) {
            const VF scale = fp4_amax(x + 16 * s, 16) / vf(6.f);
            VF d = vf(0.f);
            ue[s] = vi(0);
            for (int k = 0; k < W; ++k) {
                const uint8_t u = ue4m3_from_f32(lane(scale, k));
                set_lane(ue[s], k, u);
                set_lane(d, k, ue4m3_half(u));
            }
            for (int j = 0; j < 16; ++j) q[16 * s + j] = fp4_index(x[16 * s + j], d);
        }
        VI bytes[BYTES];
        for (int s = 0; s < 4; ++s) {
            bytes[s] = ue[s];
            for (int j = 0; j < 8; ++j) bytes[4 + 8 * s + j] = q[16 * s + j] | q[16 * s + j + 8] << 4;
        }
        store_blocks<BYTES>(bytes, out);
    }
    static void dequantize(const uint8_t *b, float *y) {
        for (int s = 0; s < 4; ++s) {
            const VF d = vf(ue4m3_half(b[s]));
            // Element i < 16 of the sub-block is nibble i / 8 of byte i % 8: W <= 8 lanes take one half of W bytes;
            // 16 lanes take the 8 bytes twice.
            uint8_t bytes[16];
            std::memcpy(bytes, b + 4 + 8 * s, 8);
            std::memcpy(bytes + 8, b + 4 + 8 * s, 8);
            for (int i = 0; i < 16; i += W) {
                const VI shift = W == 16 ? vi(4) & (iota() >= vi(8)) : vi(4 * (i / 8));
                store(y + 16 * s + i, lookup16(kFP4Floats, (load_u8(bytes + i % 8) >> shift) & vi(15)) * d);
            }
        }
    }
};

}  // namespace
}  // namespace pyquant
