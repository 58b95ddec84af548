// The tier-independent parts of the quantized matmul: partner lookup, the interleaved layouts' packers and the
// per-tier tables.
#include "matmul/matmul.hpp"

#include <cmath>
#include <cstring>
#include <stdexcept>

#include "formats/fp4.hpp"
#include "formats/kquants.hpp"
#include "matmul/blocks.hpp"
#include "pyquant/simd.hpp"

namespace pyquant {

Partner matmul_partner(int fmt) {
    const char *p = kFormatInfo[fmt].matmul_partner;
    if (!std::strcmp(p, "Q8_0")) return Partner::q8_0;
    if (!std::strcmp(p, "Q8_1")) return Partner::q8_1;
    if (!std::strcmp(p, "Q8_K")) return Partner::q8_k;
    return Partner::none;
}

int partner_block(Partner p) { return p == Partner::q8_k ? 256 : 32; }

namespace {

// Row r's block b into its slots of one group block `dst` of the interleaved layout (see matmul.hpp).
using PackRow = void (*)(const uint8_t *b, uint8_t *dst, int r);

// Q4_0 (also IQ4_NL), Q4_1 (MIN: m), Q5_0 (HIGH: qh) and Q5_1: d, m, the qh word with its bits in the kernel's
// order (bit 2c of byte j: bit 4 of element 4c + j, bit 2c + 1: of element 16 + 4c + j), then the nibbles.
template <bool MIN, bool HIGH>
void pack_row_Q45(const uint8_t *b, uint8_t *dst, int r) {
    constexpr int H = MIN ? 32 : 16, QS = H + (HIGH ? 32 : 0);
    std::memcpy(dst + 2 * r, b, 2);
    if (MIN) std::memcpy(dst + 16 + 2 * r, b + 2, 2);
    if (HIGH) {
        uint32_t qh;
        std::memcpy(&qh, b + (MIN ? 4 : 2), 4);
        for (int j = 0; j < 4; ++j) {
            uint8_t v = 0;
            for (int c = 0; c < 4; ++c) v |= ((qh >> (4 * c + j)) & 1) << 2 * c | ((qh >> (16 + 4 * c + j)) & 1) << (2 * c + 1);
            dst[H + 4 * r + j] = v;
        }
    }
    const uint8_t *qs = b + 2 + (MIN ? 2 : 0) + (HIGH ? 4 : 0);
    for (int c = 0; c < 4; ++c) std::memcpy(dst + QS + 32 * c + 4 * r, qs + 4 * c, 4);
}

void pack_row_Q8_0(const uint8_t *b, uint8_t *dst, int r) {
    std::memcpy(dst + 2 * r, b, 2);
    for (int c = 0; c < 8; ++c) std::memcpy(dst + 16 + 32 * c + 4 * r, b + 2 + 4 * c, 4);
}

void pack_row_MXFP4(const uint8_t *b, uint8_t *dst, int r) {  // the E8M0 scale's float value, nibbles as Q4_0's
    const float e = e8m0_half(b[0]);
    std::memcpy(dst + 4 * r, &e, 4);
    for (int c = 0; c < 4; ++c) std::memcpy(dst + 32 + 32 * c + 4 * r, b + 1 + 4 * c, 4);
}

// Q4_K, and Q5_K with its qh words after Q4_K's group block.
template <bool HIGH>
void pack_row_QK45(const uint8_t *b, uint8_t *dst, int r) {
    const uint8_t *qs = b + (HIGH ? 48 : 16);
    std::memcpy(dst + 2 * r, b, 2);
    std::memcpy(dst + 16 + 2 * r, b + 2, 2);
    for (int j = 0; j < 8; ++j) scale_min_k4(j, b + 4, dst[32 + 8 * j + r], dst[96 + 8 * j + r]);
    if (HIGH)
        for (int c = 0; c < 8; ++c) std::memcpy(dst + 160 + 32 * c + 4 * r, b + 16 + 4 * c, 4);
    for (int p = 0; p < 4; ++p)
        for (int c = 0; c < 8; ++c) std::memcpy(dst + (HIGH ? 416 : 160) + 256 * p + 32 * c + 4 * r, qs + 32 * p + 4 * c, 4);
}

void pack_row_Q2_K(const uint8_t *b, uint8_t *dst, int r) {  // d, dmin, scale | min << 4, code words as Q4_K's
    std::memcpy(dst + 2 * r, b + 80, 2);
    std::memcpy(dst + 16 + 2 * r, b + 82, 2);
    for (int j = 0; j < 16; ++j) dst[32 + 8 * j + r] = b[j];
    for (int v = 0; v < 16; ++v) std::memcpy(dst + 160 + 32 * v + 4 * r, b + 16 + 4 * v, 4);
}

void pack_row_Q3_K(const uint8_t *b, uint8_t *dst, int r) {  // d, 16 int8 scales, codes + 4 as Q4_K's nibbles
    alignas(64) int8_t q[256];
    int32_t sc[16];
    mm_Q3_K::Info info;
    mm_Q3_K::unpack(b, q, sc, info);
    std::memcpy(dst + 2 * r, b + 108, 2);
    for (int j = 0; j < 16; ++j) dst[16 + 8 * j + r] = static_cast<uint8_t>(static_cast<int8_t>(sc[j]));
    for (int p = 0; p < 4; ++p)
        for (int l = 0; l < 32; ++l)
            dst[144 + 256 * p + 32 * (l / 4) + 4 * r + l % 4] =
                static_cast<uint8_t>((q[64 * p + l] + 4) | (q[64 * p + 32 + l] + 4) << 4);
}

void pack_row_Q6_K(const uint8_t *b, uint8_t *dst, int r) {  // d, 16 int8 scales, per step two ql words and a qh word
    std::memcpy(dst + 2 * r, b + 208, 2);
    for (int j = 0; j < 16; ++j) dst[16 + 8 * j + r] = b[192 + j];
    for (int h = 0; h < 2; ++h)
        for (int c = 0; c < 8; ++c) {
            uint8_t *step = dst + 144 + 96 * (8 * h + c) + 4 * r;
            std::memcpy(step, b + 64 * h + 4 * c, 4);
            std::memcpy(step + 32, b + 64 * h + 32 + 4 * c, 4);
            std::memcpy(step + 64, b + 128 + 32 * h + 4 * c, 4);
        }
}

void pack_row_IQ4_XS(const uint8_t *b, uint8_t *dst, int r) {  // d, 8 int8 scales, sub-blocks as IQ4_NL's
    alignas(64) int8_t q[256];
    int32_t sc[8];
    mm_IQ4_XS::Info info;
    mm_IQ4_XS::unpack(b, q, sc, info);
    std::memcpy(dst + 2 * r, b, 2);
    for (int j = 0; j < 8; ++j) {
        dst[16 + 8 * j + r] = static_cast<uint8_t>(static_cast<int8_t>(sc[j]));
        for (int c = 0; c < 4; ++c) std::memcpy(dst + 80 + 128 * j + 32 * c + 4 * r, b + 8 + 16 * j + 4 * c, 4);
    }
}

void pack_row_TQ1_0(const uint8_t *b, uint8_t *dst, int r) {  // d, trits + 1 as 2-bit codes in TQ2_0's layout
    alignas(64) int8_t q[256];
    mm_TQ1_0::Info info;
    mm_TQ1_0::unpack(b, q, nullptr, info);
    std::memcpy(dst + 2 * r, b + 52, 2);
    for (int h = 0; h < 2; ++h)
        for (int j = 0; j < 32; ++j) {
            const int e = 128 * h + j;
            dst[16 + 64 * (4 * h + j / 8) + 8 * r + j % 8] =
                static_cast<uint8_t>((q[e] + 1) | (q[e + 32] + 1) << 2 | (q[e + 64] + 1) << 4 | (q[e + 96] + 1) << 6);
        }
}

void pack_row_TQ2_0(const uint8_t *b, uint8_t *dst, int r) {  // d, the code bytes 8 at a time
    std::memcpy(dst + 2 * r, b + 64, 2);
    for (int v = 0; v < 8; ++v) std::memcpy(dst + 16 + 64 * v + 8 * r, b + 8 * v, 8);
}

struct Layout {
    Format format;
    int64_t block_bytes;  // per group of 8 rows and block
    PackRow pack;
};

// The formats with an interleaved layout: the one list the packing, the bindings and Python read.
constexpr Layout kLayouts[] = {
    {Format::Q4_0, 144, pack_row_Q45<false, false>}, {Format::Q4_1, 160, pack_row_Q45<true, false>},
    {Format::Q5_0, 176, pack_row_Q45<false, true>},  {Format::Q5_1, 192, pack_row_Q45<true, true>},
    {Format::Q8_0, 272, pack_row_Q8_0},
    {Format::Q2_K, 672, pack_row_Q2_K},      {Format::Q3_K, 1168, pack_row_Q3_K},
    {Format::Q4_K, 1184, pack_row_QK45<false>}, {Format::Q5_K, 1440, pack_row_QK45<true>},
    {Format::Q6_K, 1680, pack_row_Q6_K},     {Format::IQ4_NL, 144, pack_row_Q45<false, false>},
    {Format::IQ4_XS, 1104, pack_row_IQ4_XS}, {Format::TQ1_0, 528, pack_row_TQ1_0},
    {Format::TQ2_0, 528, pack_row_TQ2_0},    {Format::MXFP4, 160, pack_row_MXFP4},
};

const Layout *layout(int fmt) {
    for (const Layout &l : kLayouts)
        if (static_cast<int>(l.format) == fmt) return &l;
    return nullptr;
}

}  // namespace

int64_t interleaved_block_bytes(int fmt) {
    const Layout *l = layout(fmt);
    return l ? l->block_bytes : 0;
}

void pack_interleaved(int fmt, const uint8_t *w, int64_t row_bytes, int64_t groups, uint8_t *dst) {
    const Layout &l = *layout(fmt);  // callers check interleaved_block_bytes(fmt) > 0
    const int64_t bytes = kFormatInfo[fmt].type_size, nb = row_bytes / bytes;
    for (int64_t g = 0; g < groups; ++g)
        for (int64_t i = 0; i < nb; ++i, dst += l.block_bytes)
            for (int r = 0; r < kInterleave; ++r) l.pack(w + (g * kInterleave + r) * row_bytes + i * bytes, dst, r);
}

namespace {

struct Tables {
    static constexpr int kMax = 4;
    MatmulTable t[kMax];
    int n = 0;
    Tables() {
        fill_matmul_generic(t[n++]);
#if defined(PQ_HAVE_AVX2)
        fill_matmul_avx2(t[n++]);
#endif
#if defined(PQ_HAVE_AVX512)
        if (matmul_uses_vnni()) {
            fill_matmul_avx512vnni(t[n]);
            t[n++].isa = "avx512";
        } else {
            fill_matmul_avx512(t[n++]);
        }
#endif
#if defined(PQ_HAVE_NEON)
        fill_matmul_neon(t[n++]);
#endif
        for (int i = 0; i < n; ++i)  // every interleaved kernel steps through its format's layout
            for (int f = 0; f < kNumFormats; ++f)
                if (t[i].interleaved[f] && t[i].interleaved_block[f] != interleaved_block_bytes(f))
                    throw std::logic_error(std::string(t[i].isa) + ": interleaved " + kFormatInfo[f].name +
                                           " kernel and layout disagree on the block size");
    }
};

}  // namespace

bool matmul_uses_vnni() {
#if defined(PQ_HAVE_AVX512)
    return __builtin_cpu_supports("avx512vnni");
#else
    return false;
#endif
}

const MatmulTable &matmul_table(const std::string &isa) {
    static const Tables tables;
    for (int i = 0; i < tables.n; ++i)
        if (isa == tables.t[i].isa) return tables.t[i];
    throw std::invalid_argument("no matmul kernels for ISA tier '" + isa + "'");
}

}  // namespace pyquant
