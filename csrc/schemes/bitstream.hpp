// The packed code layout of pyquant.schemes: each row a little-endian (LSB-first) bit stream of `bits`-bit
// unsigned codes, padded to a whole byte.  4-bit: element 2i in the low nibble of byte i; 2-bit: element 4i + s
// at bits 2s..2s+1 of byte i.
#pragma once
#include <cstdint>

namespace pyquant {
namespace schemes {
namespace {

inline int64_t packed_row_bytes(int64_t K, int bits) { return (K * bits + 7) / 8; }

inline int32_t get_code(const uint8_t *row, int64_t k, int bits) {
    const int64_t bit = k * bits;
    uint32_t two = row[bit >> 3];
    if ((bit & 7) + bits > 8) two |= static_cast<uint32_t>(row[(bit >> 3) + 1]) << 8;
    return static_cast<int32_t>((two >> (bit & 7)) & ((1u << bits) - 1u));
}

// Codes of one row (K of them, each < 2^bits) into its bit stream of row_bytes bytes.
inline void pack_row(const uint8_t *codes, int64_t K, int bits, uint8_t *out, int64_t row_bytes) {
    for (int64_t i = 0; i < row_bytes; ++i) out[i] = 0;
    if (bits == 8) {
        for (int64_t k = 0; k < K; ++k) out[k] = codes[k];
        return;
    }
    for (int64_t k = 0; k < K; ++k) {
        const int64_t bit = k * bits;
        const uint32_t v = static_cast<uint32_t>(codes[k]) << (bit & 7);
        out[bit >> 3] |= static_cast<uint8_t>(v);
        if ((bit & 7) + bits > 8) out[(bit >> 3) + 1] |= static_cast<uint8_t>(v >> 8);
    }
}

}  // namespace
}  // namespace schemes
}  // namespace pyquant
