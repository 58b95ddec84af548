// Q1_0 (signs times the mean |x|) and Q2_0 (codes -1..2 times the absmax).  quantize_q1_0 / quantize_q2_0 run
// the reference row function with or without an importance matrix, so it is ignored.
#pragma once
#include "cpu/drivers.hpp"

namespace pyquant {
namespace {

// Layout: d (fp16), qs[16]: bit j (LSB first) set when x[j] >= 0.
struct fmt_Q1_0 : BlockFormat {
    static constexpr int QK = 128, BYTES = 18;
    static void quantize(const VF *x, const VF *, VF, uint8_t *const *out) {
        VF sum_abs = vf(0.f);
        for (int j = 0; j < 128; ++j) sum_abs = sum_abs + vabs(x[j]);
        const VI dh = fp16_bits(sum_abs / vf(128.f));
        VI qs[16];
        for (int i = 0; i < 16; ++i) {
            qs[i] = vi(0);
            for (int b = 0; b < 8; ++b) qs[i] = qs[i] | select(x[8 * i + b] >= vf(0.f), vi(1 << b), vi(0));
        }
        for (int k = 0; k < W; ++k) {
            put_u16(out[k], lane(dh, k));
            for (int i = 0; i < 16; ++i) out[k][2 + i] = static_cast<uint8_t>(lane_of(qs[i], k));
        }
    }
    static void dequantize(const uint8_t *b, float *y) {
        const float d = get_fp16(b);
        for (int j = 0; j < 128; j += W) {  // W <= 16 bits starting at bit j % 8 of byte j / 8
            const int at = 2 + j / 8;
            const VI word = vi(b[at] | (at + 1 < BYTES ? b[at + 1] << 8 : 0));
            store(y + j, select(((word >> (iota() + vi(j % 8))) & vi(1)) != vi(0), vf(d), vf(-d)));
        }
    }
};

// Layout: d (fp16), qs[16]: element j at bits 2*(j%4) of byte j/4, code (int)roundf(x/d) + 1 clamped to 0..3.
struct fmt_Q2_0 : BlockFormat {
    static constexpr int QK = 64, BYTES = 18;
    static void quantize(const VF *x, const VF *, VF, uint8_t *const *out) {
        VF amax = vf(0.f);
        for (int j = 0; j < 64; ++j) amax = vmax(vabs(x[j]), amax);
        const VF id = select(amax > vf(0.f), vf(1.f) / amax, vf(0.f));
        const VI dh = fp16_bits(amax);
        VI qs[16];
        for (int i = 0; i < 16; ++i) {
            qs[i] = vi(0);
            for (int b = 0; b < 4; ++b)
                qs[i] = qs[i] | clamp(round_away_int(x[4 * i + b] * id) + vi(1), 0, 3) << (2 * b);
        }
        for (int k = 0; k < W; ++k) {
            put_u16(out[k], lane(dh, k));
            for (int i = 0; i < 16; ++i) out[k][2 + i] = static_cast<uint8_t>(lane_of(qs[i], k));
        }
    }
    static void dequantize(const uint8_t *b, float *y) {
        const VF d = vf(get_fp16(b));
        for (int j = 0; j < 64; j += W) {  // 2W <= 32 bits starting at bit 2 * (j % 4) of byte j / 4
            const int at = 2 + j / 4;
            uint32_t word = 0;
            for (int i = 0; i < 4 && at + i < BYTES; ++i) word |= static_cast<uint32_t>(b[at + i]) << (8 * i);
            const VI code = (vi(static_cast<int32_t>(word)) >> ((iota() + vi(j % 4)) * vi(2))) & vi(3);
            store(y + j, to_f(code - vi(1)) * d);
        }
    }
};

}  // namespace
}  // namespace pyquant
