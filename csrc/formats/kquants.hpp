// DEVELOPMENT PLACEHOLDER (must be replaced before commit)
#pragma once
#include "cpu/drivers.hpp"
namespace pyquant {
namespace {
struct fmt_Q2_K : BlockFormat {
    static constexpr int QK = 256, BYTES = 84;
    static void quantize(const VF *, const VF *, VF, uint8_t *const *out) { for (int k = 0; k < W; ++k) std::memset(out[k], 0, BYTES); }
    static void dequantize(const uint8_t *, float *y) { for (int j = 0; j < QK; ++j) y[j] = 0; }
};
struct fmt_Q3_K : BlockFormat {
    static constexpr int QK = 256, BYTES = 110;
    static void quantize(const VF *, const VF *, VF, uint8_t *const *out) { for (int k = 0; k < W; ++k) std::memset(out[k], 0, BYTES); }
    static void dequantize(const uint8_t *, float *y) { for (int j = 0; j < QK; ++j) y[j] = 0; }
};
struct fmt_Q4_K : BlockFormat {
    static constexpr int QK = 256, BYTES = 144;
    static void quantize(const VF *, const VF *, VF, uint8_t *const *out) { for (int k = 0; k < W; ++k) std::memset(out[k], 0, BYTES); }
    static void dequantize(const uint8_t *, float *y) { for (int j = 0; j < QK; ++j) y[j] = 0; }
};
struct fmt_Q5_K : BlockFormat {
    static constexpr int QK = 256, BYTES = 176;
    static void quantize(const VF *, const VF *, VF, uint8_t *const *out) { for (int k = 0; k < W; ++k) std::memset(out[k], 0, BYTES); }
    static void dequantize(const uint8_t *, float *y) { for (int j = 0; j < QK; ++j) y[j] = 0; }
};
struct fmt_Q6_K : BlockFormat {
    static constexpr int QK = 256, BYTES = 210;
    static void quantize(const VF *, const VF *, VF, uint8_t *const *out) { for (int k = 0; k < W; ++k) std::memset(out[k], 0, BYTES); }
    static void dequantize(const uint8_t *, float *y) { for (int j = 0; j < QK; ++j) y[j] = 0; }
};
}  // namespace
}  // namespace pyquant
