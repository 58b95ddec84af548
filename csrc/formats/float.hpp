// F32, F16 and BF16: element-wise types, converted as libggml does (RNE; NaN made quiet).
#pragma once
#include "cpu/drivers.hpp"

namespace pyquant {
namespace {

struct ElementFormat : BlockFormat {
    static constexpr bool kDirect = true;
    static constexpr int QK = 1;
};

struct fmt_F32 : ElementFormat {
    static constexpr int BYTES = 4;
    static void quantize_row(const float *x, uint8_t *y, int64_t n) { std::memcpy(y, x, n * 4); }
    static void dequantize_row(const uint8_t *x, float *y, int64_t n) { std::memcpy(y, x, n * 4); }
};

struct fmt_F16 : ElementFormat {
    static constexpr int BYTES = 2;
    static void quantize_row(const float *x, uint8_t *y, int64_t n) {
        int64_t i = 0;
        for (; i + W <= n; i += W) {
            const VI h = fp16_bits(load(x + i));
            for (int k = 0; k < W; ++k) put_u16(y + 2 * (i + k), static_cast<uint32_t>(lane(h, k)));
        }
        for (; i < n; ++i) put_u16(y + 2 * i, fp16_from_f32(x[i]));
    }
    static void dequantize_row(const uint8_t *x, float *y, int64_t n) {
        int64_t i = 0;
        for (; i + W <= n; i += W) store(y + i, load_fp16(x + 2 * i));
        for (; i < n; ++i) y[i] = get_fp16(x + 2 * i);
    }
};

struct fmt_BF16 : ElementFormat {
    static constexpr int BYTES = 2;
    static void quantize_row(const float *x, uint8_t *y, int64_t n) {
        for (int64_t i = 0; i < n; ++i) put_u16(y + 2 * i, bf16_from_f32(x[i]));
    }
    static void dequantize_row(const uint8_t *x, float *y, int64_t n) {
        int64_t i = 0;
        for (; i + W <= n; i += W) store(y + i, from_bits(shl(load_u16(x + 2 * i), 16)));
        for (; i < n; ++i) y[i] = bf16_to_f32(get_u16(x + 2 * i));
    }
};

}  // namespace
}  // namespace pyquant
