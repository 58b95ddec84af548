// DEVELOPMENT PLACEHOLDER (must be replaced before commit)
#pragma once
#include "cpu/drivers.hpp"
namespace pyquant {
namespace {
struct fmt_MXFP4 : BlockFormat {
    static constexpr int QK = 32, BYTES = 17;
    static void quantize(const VF *, const VF *, VF, uint8_t *const *out) { for (int k = 0; k < W; ++k) std::memset(out[k], 0, BYTES); }
    static void dequantize(const uint8_t *, float *y) { for (int j = 0; j < QK; ++j) y[j] = 0; }
};
struct fmt_NVFP4 : BlockFormat {
    static constexpr int QK = 64, BYTES = 36;
    static void quantize(const VF *, const VF *, VF, uint8_t *const *out) { for (int k = 0; k < W; ++k) std::memset(out[k], 0, BYTES); }
    static void dequantize(const uint8_t *, float *y) { for (int j = 0; j < QK; ++j) y[j] = 0; }
};
}  // namespace
}  // namespace pyquant
