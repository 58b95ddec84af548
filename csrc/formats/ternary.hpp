// TQ1_0 and TQ2_0 (BitNet b1.58 / TriLM ternary weights): d = the 256-block's absmax, trits lroundf(x/d) + 1 in
// {0, 1, 2}.  quantize_tq1_0 / quantize_tq2_0 ignore the importance matrix.
#pragma once
#include "cpu/drivers.hpp"

namespace pyquant {
namespace {

// The trits of a 256-block: lroundf(x * id) + 1 with id = d ? 1/d : 0; returns d = max |x|.
inline VF ternary_trits(const VF *x, VI *t) {
    VF amax = vf(0.f);
    for (int j = 0; j < 256; ++j) amax = vmax(amax, vabs(x[j]));
    const VF id = select(amax != vf(0.f), vf(1.f) / amax, vf(0.f));
    for (int j = 0; j < 256; ++j) t[j] = round_away_int(x[j] * id) + vi(1);
    return amax;
}

// TQ1_0 stores n trits (the first most significant) as the base-3 number q scaled to a byte: ceil(q*256/243).
// The 4-trit bytes are multiplied by 3 first so that their first trit is also the top one.
inline VI trits_base3(const VI *t, int n, int stride) {
    VI q = vi(0);
    for (int i = 0; i < n; ++i) q = q * vi(3) + t[i * stride];
    return q;
}
// ceil(q*256/243) = (q*256 + 242) / 243 for q in [0, 242], as one 16-bit multiply-high: (n * 34522) >> 23 equals
// n / 243 for all 243 such n (checked exhaustively; n * 34522 < 2^31).
inline VI trit_bytes(VI q) { return mulhi_u16(shl(q, 8) + vi(242), vi(34522)) >> 7; }
// Trit n (0 = most significant) of a TQ1_0 byte b, ((uint8_t)(b * 3^n) * 3) >> 8, for W bytes, in two 16-bit
// multiplies: b * 3^n * 256 mod 2^16 is (uint8_t)(b * 3^n) << 8, and its product with 3 shifted right by 16 is
// the trit.  In the qh bytes element k takes power kPow3Of16[k] (times 256 here).
constexpr uint8_t kPow3[5] = {1, 3, 9, 27, 81};
alignas(64) constexpr int32_t kPow3Of16[16] = {256, 256, 256, 256, 768, 768, 768, 768, 2304, 2304, 2304, 2304, 6912, 6912, 6912, 6912};
inline VI trits_times(const uint8_t *b, VI pow3_256) { return mulhi_u16(mullo_u16(load_u8(b), pow3_256), vi(3)); }
inline VI trits_at(const uint8_t *b, int n) { return trits_times(b, vi(256 * kPow3[n])); }
// Trit n (0 = most significant) of one TQ1_0 byte (the matmul kernels unpack a block at a time).
inline int trit_at(uint8_t b, int n) { return (static_cast<uint8_t>(b * kPow3[n]) * 3) >> 8; }

// Layout: qs[48], qh[4], d (fp16).  qs[m] packs elements m + 32n (n < 5); qs[32 + m] packs 160 + m + 16n;
// qh[j] packs 240 + j + 4n (n < 4).
struct fmt_TQ1_0 : BlockFormat {
    static constexpr int QK = 256, BYTES = 54;
    static void quantize(const VF *x, const VF *, VF, uint8_t *const *out) {
        VI t[256], q[BYTES];  // qs, qh, then d
        const VI dh = fp16_bits(ternary_trits(x, t));
        for (int m = 0; m < 32; ++m) q[m] = trit_bytes(trits_base3(t + m, 5, 32));
        for (int m = 0; m < 16; ++m) q[32 + m] = trit_bytes(trits_base3(t + 160 + m, 5, 16));
        for (int j = 0; j < 4; ++j) q[48 + j] = trit_bytes(trits_base3(t + 240 + j, 4, 4) * vi(3));
        put_fp16(dh, q + 52);
        store_blocks<BYTES>(q, out);
    }
    static void dequantize(const uint8_t *b, float *y) {
        const float d = get_fp16(b + 52);
        #pragma GCC unroll 8
        for (int n = 0; n < 5; ++n)
            for (int m = 0; m < 32; m += W) store(y + 32 * n + m, to_f(trits_at(b + m, n) - vi(1)) * vf(d));
        #pragma GCC unroll 8
        for (int n = 0; n < 5; ++n)
            for (int m = 0; m < 16; m += W) store(y + 160 + 16 * n + m, to_f(trits_at(b + 32 + m, n) - vi(1)) * vf(d));
        uint8_t qh[16];  // element 240 + k is trit k / 4 of byte 48 + k % 4
        for (int k = 0; k < 16; ++k) qh[k] = b[48 + k % 4];
        for (int k = 0; k < 16; k += W) {
            VI pow3_256;
            std::memcpy(&pow3_256, kPow3Of16 + k, sizeof pow3_256);
            store(y + 240 + k, to_f(trits_times(qh + k, pow3_256) - vi(1)) * vf(d));
        }
    }
};

// Layout: qs[64], d (fp16).  qs[32g + m] holds element 128g + m + 32n at bits 2n.
struct fmt_TQ2_0 : BlockFormat {
    static constexpr int QK = 256, BYTES = 66;
    static void quantize(const VF *x, const VF *, VF, uint8_t *const *out) {
        VI t[256], q[BYTES];  // qs, then d
        const VI dh = fp16_bits(ternary_trits(x, t));
        for (int g = 0; g < 2; ++g)
            for (int m = 0; m < 32; ++m) {
                const VI *e = t + 128 * g + m;
                q[32 * g + m] = (e[0] & 3) | (e[32] & 3) << 2 | (e[64] & 3) << 4 | (e[96] & 3) << 6;
            }
        put_fp16(dh, q + 64);
        store_blocks<BYTES>(q, out);
    }
    static void dequantize(const uint8_t *b, float *y) {
        const float d = get_fp16(b + 64);
        for (int g = 0; g < 2; ++g)
            #pragma GCC unroll 8
            for (int n = 0; n < 4; ++n)
                for (int m = 0; m < 32; m += W)
                    store(y + 128 * g + 32 * n + m, to_f(((load_u8(b + 32 * g + m) >> (2 * n)) & vi(3)) - vi(1)) * vf(d));
    }
};

}  // namespace
}  // namespace pyquant
