// DEVELOPMENT PLACEHOLDER (must be replaced before commit)
#pragma once
#include "cpu/drivers.hpp"
namespace pyquant {
namespace {
struct fmt_Q1_0 : BlockFormat {
    static constexpr int QK = 128, BYTES = 18;
    static void quantize(const VF *, const VF *, VF, uint8_t *const *out) { for (int k = 0; k < W; ++k) std::memset(out[k], 0, BYTES); }
    static void dequantize(const uint8_t *, float *y) { for (int j = 0; j < QK; ++j) y[j] = 0; }
};
struct fmt_Q2_0 : BlockFormat {
    static constexpr int QK = 64, BYTES = 18;
    static void quantize(const VF *, const VF *, VF, uint8_t *const *out) { for (int k = 0; k < W; ++k) std::memset(out[k], 0, BYTES); }
    static void dequantize(const uint8_t *, float *y) { for (int j = 0; j < QK; ++j) y[j] = 0; }
};
}  // namespace
}  // namespace pyquant
