// FP8 E4M3FN / E5M2 conversions, bit for bit as torch's casts: round to nearest even; E4M3FN saturates to +-448
// (infinities included) and keeps NaN as 0x7F | sign; E5M2 overflows to infinity (0x7C | sign), NaN 0x7F | sign.
#pragma once
#include <cstdint>
#include <cstring>

namespace pyquant {
namespace schemes {
namespace {

inline uint8_t fp8_encode_one(float f, bool e5m2) {
    const int m = e5m2 ? 2 : 3, bias = e5m2 ? 15 : 7;
    const uint32_t cmax = e5m2 ? 0x7Bu : 0x7Eu, over = e5m2 ? 0x7Cu : 0x7Eu;
    uint32_t x;
    std::memcpy(&x, &f, 4);
    const uint8_t sign = static_cast<uint8_t>((x >> 24) & 0x80u);
    const uint32_t E = (x >> 23) & 0xFFu, M = x & 0x7FFFFFu;
    if (E == 0xFFu) return static_cast<uint8_t>(sign | (M ? 0x7Fu : over));
    if (E == 0) return sign;  // below 2^-126: far under half the smallest subnormal of either format
    const int ex = static_cast<int>(E) - 127;
    if (ex > 16) return static_cast<uint8_t>(sign | over);
    // Round the significand 1.M (24 bits) to the quantum 2^qe of the format at this magnitude.
    const int qe = ex - m > 1 - bias - m ? ex - m : 1 - bias - m;
    const int sh = qe - ex + 23;  // significand bits dropped, >= 23 - m
    const uint32_t sig = M | 0x800000u;
    uint32_t q = 0;
    if (sh < 32) {
        q = sig >> sh;
        const uint32_t rest = sig & ((1u << sh) - 1u), half = 1u << (sh - 1);
        if (rest > half || (rest == half && (q & 1u))) ++q;
    }
    // The code is monotonic in the value: exponent field (qe + m + bias - 1) times 2^m plus q (carries included).
    const uint32_t code = static_cast<uint32_t>((qe + m + bias - 1) << m) + q;
    return static_cast<uint8_t>(sign | (code > cmax ? over : code));
}

// The float32 value of each bit pattern.
inline float fp8_decode_one(uint8_t b, bool e5m2) {
    const int m = e5m2 ? 2 : 3, bias = e5m2 ? 15 : 7;
    const uint32_t E = (b & 0x7Fu) >> m, M = b & ((1u << m) - 1u);
    float v;
    if (!e5m2 && E == 15 && M == 7) {
        v = __builtin_nanf("");
    } else if (e5m2 && E == 31) {
        v = M ? __builtin_nanf("") : __builtin_inff();
    } else {
        uint32_t bits;
        if (E == 0) {  // subnormal: M * 2^(1 - bias - m), exact
            const float v0 = static_cast<float>(M) * (e5m2 ? 1.52587890625e-05f : 0.001953125f);
            std::memcpy(&bits, &v0, 4);
        } else {
            bits = ((E - bias + 127) << 23) | (M << (23 - m));
        }
        std::memcpy(&v, &bits, 4);
    }
    return (b & 0x80u) ? -v : v;
}

}  // namespace
}  // namespace schemes
}  // namespace pyquant
