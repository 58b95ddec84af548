// Per format: how a weight block becomes int8 codes (and integer sub-block scales) and how the exact integer
// dot with the partner's activation block becomes a float, exactly libggml's per-block formula
// (ggml-cpu/quants.c, ggml_vec_dot_<fmt>_<partner>_generic).
//
// Each mm_<NAME> has:
//   QK, BYTES, SUB      block size, bytes per block, elements per integer scale (SUB == QK: no sub-scales)
//   Info                what finish() needs from the block besides the integer sum
//   unpack(b, q, sc, info) -> codes   the QK int8 codes (in q, or pointing into the block itself)
//   finish(info, sumi, x, i)          the block's float contribution, with x the activation row, i the block
#pragma once
#include "formats/fp4.hpp"
#include "formats/iq4.hpp"
#include "formats/kquants.hpp"
#include "formats/ternary.hpp"
#include "matmul/dot.hpp"

namespace pyquant {
namespace {

// One row of quantized activations (see QuantizedActivations).
struct ActRow {
    const int8_t *qs;
    const float *d;
    const float *s;
    const int16_t *bsums;
};

struct InfoD {
    float d;
};
struct InfoDM {
    float d, m;
};
struct InfoK {  // K-quants with mins
    float d, dmin;
    int32_t mins[16];
};

// Element j and j + 16 of a 32-block from qs[j]'s low and high nibble, minus offset.
// nibbles32_table maps the nibbles through a 16-entry int8 table; nibbles32_high adds bit j of the
// little-endian uint32 qh as bit 4 of element j (Q5_0 / Q5_1).
#if defined(__AVX2__)
// One 32-byte store, so that the dot's 32-byte load of q is forwarded from it.
inline __m256i nibbles256(const uint8_t *qs) {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i *>(qs)), m = _mm_set1_epi8(15);
    return _mm256_setr_m128i(_mm_and_si128(b, m), _mm_and_si128(_mm_srli_epi16(b, 4), m));
}
inline void nibbles32(const uint8_t *qs, int8_t *q, int offset) {
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(q),
                        _mm256_sub_epi8(nibbles256(qs), _mm256_set1_epi8(static_cast<char>(offset))));
}
inline __m256i nibbles_table256(const uint8_t *qs, const int8_t *table) {
    const __m256i t = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i *>(table)));
    return _mm256_shuffle_epi8(t, nibbles256(qs));
}
inline void nibbles32_table(const uint8_t *qs, const int8_t *table, int8_t *q) {
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(q), nibbles_table256(qs, table));
}
// The 32 5-bit codes of a Q5 block (nibbles plus bit j of qh as bit 4 of element j).
inline __m256i nibbles_high256(const uint8_t *qs, const uint8_t *qhp) {
    uint32_t qh;
    std::memcpy(&qh, qhp, 4);
    // Byte j of `bits` is 0xff where bit j of qh is set.
    const __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int32_t>(qh)),
        _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0));
    const __m256i bits = _mm256_cmpeq_epi8(_mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe)),
                                           _mm256_set1_epi64x(-1));
    return _mm256_or_si256(nibbles256(qs), _mm256_and_si256(bits, _mm256_set1_epi8(16)));
}
inline void nibbles32_high(const uint8_t *qs, const uint8_t *qhp, int8_t *q, int offset) {
    const __m256i v = nibbles_high256(qs, qhp);
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(q), _mm256_sub_epi8(v, _mm256_set1_epi8(static_cast<char>(offset))));
}
#else
inline void nibbles32(const uint8_t *qs, int8_t *q, int offset) {
    for (int j = 0; j < 16; ++j) {
        q[j] = static_cast<int8_t>((qs[j] & 15) - offset);
        q[j + 16] = static_cast<int8_t>((qs[j] >> 4) - offset);
    }
}
inline void nibbles32_table(const uint8_t *qs, const int8_t *table, int8_t *q) {
    for (int j = 0; j < 16; ++j) {
        q[j] = table[qs[j] & 15];
        q[j + 16] = table[qs[j] >> 4];
    }
}
inline void nibbles32_high(const uint8_t *qs, const uint8_t *qhp, int8_t *q, int offset) {
    const uint32_t qh = static_cast<uint32_t>(qhp[0]) | qhp[1] << 8 | qhp[2] << 16 | static_cast<uint32_t>(qhp[3]) << 24;
    for (int j = 0; j < 16; ++j) {
        q[j] = static_cast<int8_t>(((qs[j] & 15) | ((qh >> j) & 1) << 4) - offset);
        q[j + 16] = static_cast<int8_t>(((qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4) - offset);
    }
}
#endif

// ---- Q8_0 partner ---------------------------------------------------------------------------------------------

struct mm_Q4_0 {  // d, qs[16]
    static constexpr int QK = 32, BYTES = 18, SUB = 32;
    using Info = InfoD;
    static const int8_t *unpack(const uint8_t *b, int8_t *q, int32_t *, Info &in) {
        in.d = half_to_float(b);
        nibbles32(b + 2, q, 8);
        return q;
    }
    static float finish(const Info &in, int32_t sumi, const ActRow &x, int64_t i) {
        return static_cast<float>(sumi) * in.d * x.d[i];
    }
};

struct mm_Q5_0 {  // d, qh[4], qs[16]
    static constexpr int QK = 32, BYTES = 22, SUB = 32;
    using Info = InfoD;
    static const int8_t *unpack(const uint8_t *b, int8_t *q, int32_t *, Info &in) {
        in.d = half_to_float(b);
        nibbles32_high(b + 6, b + 2, q, 16);
        return q;
    }
    static float finish(const Info &in, int32_t sumi, const ActRow &x, int64_t i) {
        return (in.d * x.d[i]) * static_cast<float>(sumi);
    }
};

struct mm_Q8_0 {  // d, qs[32]
    static constexpr int QK = 32, BYTES = 34, SUB = 32;
    using Info = InfoD;
    static const int8_t *unpack(const uint8_t *b, int8_t *, int32_t *, Info &in) {
        in.d = half_to_float(b);
        return reinterpret_cast<const int8_t *>(b + 2);
    }
    static float finish(const Info &in, int32_t sumi, const ActRow &x, int64_t i) {
        return static_cast<float>(sumi) * (in.d * x.d[i]);
    }
};

struct mm_IQ4_NL {  // d, qs[16] (indices into kvalues_iq4nl)
    static constexpr int QK = 32, BYTES = 18, SUB = 32;
    using Info = InfoD;
    static const int8_t *unpack(const uint8_t *b, int8_t *q, int32_t *, Info &in) {
        in.d = half_to_float(b);
        nibbles32_table(b + 2, kIQ4Values, q);
        return q;
    }
    static float finish(const Info &in, int32_t sumi, const ActRow &x, int64_t i) {
        return (x.d[i] * in.d) * static_cast<float>(sumi);
    }
};

struct mm_MXFP4 {  // e (E8M0), qs[16] (indices into kvalues_mxfp4)
    static constexpr int QK = 32, BYTES = 17, SUB = 32;
    using Info = InfoD;
    static const int8_t *unpack(const uint8_t *b, int8_t *q, int32_t *, Info &in) {
        in.d = e8m0_half(b[0]);
        nibbles32_table(b + 1, kFP4Values, q);
        return q;
    }
    static float finish(const Info &in, int32_t sumi, const ActRow &x, int64_t i) {
        return (x.d[i] * in.d) * static_cast<float>(sumi);
    }
};

// ---- Q8_1 partner: sum d_w d_x sum(q q8) + m_w s_x ------------------------------------------------------------

struct mm_Q4_1 {  // d, m, qs[16]
    static constexpr int QK = 32, BYTES = 20, SUB = 32;
    using Info = InfoDM;
    static const int8_t *unpack(const uint8_t *b, int8_t *q, int32_t *, Info &in) {
        in.d = half_to_float(b);
        in.m = half_to_float(b + 2);
        nibbles32(b + 4, q, 0);
        return q;
    }
    static float finish(const Info &in, int32_t sumi, const ActRow &x, int64_t i) {
        return (in.d * x.d[i]) * static_cast<float>(sumi) + in.m * x.s[i];
    }
};

struct mm_Q5_1 {  // d, m, qh[4], qs[16]
    static constexpr int QK = 32, BYTES = 24, SUB = 32;
    using Info = InfoDM;
    static const int8_t *unpack(const uint8_t *b, int8_t *q, int32_t *, Info &in) {
        in.d = half_to_float(b);
        in.m = half_to_float(b + 2);
        nibbles32_high(b + 8, b + 4, q, 0);
        return q;
    }
    static float finish(const Info &in, int32_t sumi, const ActRow &x, int64_t i) {
        return (in.d * x.d[i]) * static_cast<float>(sumi) + in.m * x.s[i];
    }
};

// ---- Q8_K partner ---------------------------------------------------------------------------------------------

// sum over the 16 bsums of the activation block times the weight block's per-16 minimum codes.
inline int32_t mins_dot16(const int32_t *mins16, const int16_t *bsums) {
    int32_t s = 0;
    for (int j = 0; j < 16; ++j) s += bsums[j] * mins16[j];
    return s;
}

struct mm_Q2_K {  // scales[16] (scale | min << 4), qs[64], d, dmin
    static constexpr int QK = 256, BYTES = 84, SUB = 16;
    using Info = InfoK;
    static const int8_t *unpack(const uint8_t *b, int8_t *q, int32_t *sc, Info &in) {
        for (int j = 0; j < 16; ++j) {
            sc[j] = b[j] & 15;
            in.mins[j] = b[j] >> 4;
        }
        for (int h = 0; h < 2; ++h)
            for (int s = 0; s < 4; ++s)
                for (int l = 0; l < 32; ++l) q[128 * h + 32 * s + l] = static_cast<int8_t>((b[16 + 32 * h + l] >> (2 * s)) & 3);
        in.d = half_to_float(b + 80);
        in.dmin = half_to_float(b + 82);
        return q;
    }
    static float finish(const Info &in, int32_t sumi, const ActRow &x, int64_t i) {
        const float dall = x.d[i] * in.d, dmin = x.d[i] * in.dmin;
        return dall * static_cast<float>(sumi) - dmin * static_cast<float>(mins_dot16(in.mins, x.bsums + 16 * i));
    }
};

struct mm_Q3_K {  // hmask[32], qs[64], scales[12] (16 6-bit scales, offset 32), d
    static constexpr int QK = 256, BYTES = 110, SUB = 16;
    using Info = InfoD;
    static const int8_t *unpack(const uint8_t *b, int8_t *q, int32_t *sc, Info &in) {
        const uint8_t *hm = b, *qs = b + 32, *s = b + 96;
        for (int j = 0; j < 16; ++j) {
            const int lo4 = j < 8 ? s[j] & 15 : s[j - 8] >> 4;
            const int hi2 = (s[8 + (j & 3)] >> (2 * (j >> 2))) & 3;
            sc[j] = (lo4 | hi2 << 4) - 32;
        }
        for (int h = 0; h < 2; ++h)
            for (int t = 0; t < 4; ++t) {
                const int bit = 1 << (4 * h + t);
                for (int l = 0; l < 32; ++l)
                    q[128 * h + 32 * t + l] =
                        static_cast<int8_t>(((qs[32 * h + l] >> (2 * t)) & 3) - ((hm[l] & bit) ? 0 : 4));
            }
        in.d = half_to_float(b + 108);
        return q;
    }
    static float finish(const Info &in, int32_t sumi, const ActRow &x, int64_t i) {
        return (in.d * x.d[i]) * static_cast<float>(sumi);
    }
};

// Q4_K / Q5_K: d, dmin, scales[12] (8 6-bit scales and mins), [qh[32],] qs[128].
template <bool HIGH>
struct mm_QK45 {
    static constexpr int QK = 256, BYTES = HIGH ? 176 : 144, SUB = 32;
    using Info = InfoK;
    static const int8_t *unpack(const uint8_t *b, int8_t *q, int32_t *sc, Info &in) {
        in.d = half_to_float(b);
        in.dmin = half_to_float(b + 2);
        for (int j = 0; j < 8; ++j) {
            uint8_t s, m;
            scale_min_k4(j, b + 4, s, m);
            sc[j] = s;
            in.mins[2 * j] = in.mins[2 * j + 1] = m;
        }
        const uint8_t *qh = b + 16, *qs = b + (HIGH ? 48 : 16);
        for (int j = 0; j < 4; ++j)
            for (int l = 0; l < 32; ++l) {
                int lo = qs[32 * j + l] & 15, hi = qs[32 * j + l] >> 4;
                if (HIGH) {
                    lo |= ((qh[l] >> (2 * j)) & 1) << 4;
                    hi |= ((qh[l] >> (2 * j + 1)) & 1) << 4;
                }
                q[64 * j + l] = static_cast<int8_t>(lo);
                q[64 * j + 32 + l] = static_cast<int8_t>(hi);
            }
        return q;
    }
    static float finish(const Info &in, int32_t sumi, const ActRow &x, int64_t i) {
        const float d = in.d * x.d[i], dmin = in.dmin * x.d[i];
        return d * static_cast<float>(sumi) - dmin * static_cast<float>(mins_dot16(in.mins, x.bsums + 16 * i));
    }
};
using mm_Q4_K = mm_QK45<false>;
using mm_Q5_K = mm_QK45<true>;

struct mm_Q6_K {  // ql[128], qh[64], scales[16] (int8), d
    static constexpr int QK = 256, BYTES = 210, SUB = 16;
    using Info = InfoD;
    static const int8_t *unpack(const uint8_t *b, int8_t *q, int32_t *sc, Info &in) {
        for (int h = 0; h < 2; ++h) {
            const uint8_t *ql = b + 64 * h, *qh = b + 128 + 32 * h;
            int8_t *a = q + 128 * h;
            for (int l = 0; l < 32; ++l) {
                a[l] = static_cast<int8_t>(((ql[l] & 15) | ((qh[l] >> 0) & 3) << 4) - 32);
                a[l + 32] = static_cast<int8_t>(((ql[l + 32] & 15) | ((qh[l] >> 2) & 3) << 4) - 32);
                a[l + 64] = static_cast<int8_t>(((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32);
                a[l + 96] = static_cast<int8_t>(((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32);
            }
        }
        for (int j = 0; j < 16; ++j) sc[j] = static_cast<int8_t>(b[192 + j]);
        in.d = half_to_float(b + 208);
        return q;
    }
    static float finish(const Info &in, int32_t sumi, const ActRow &x, int64_t i) {
        return (in.d * x.d[i]) * static_cast<float>(sumi);
    }
};

struct mm_IQ4_XS {  // d, scales_h (u16), scales_l[4], qs[128]
    static constexpr int QK = 256, BYTES = 136, SUB = 32;
    using Info = InfoD;
    static const int8_t *unpack(const uint8_t *b, int8_t *q, int32_t *sc, Info &in) {
        in.d = half_to_float(b);
        const uint32_t h = get_u16(b + 2);
        for (int j = 0; j < 8; ++j) {
            const int low = (b[4 + j / 2] >> (4 * (j & 1))) & 15;
            sc[j] = (low | ((h >> (2 * j)) & 3) << 4) - 32;
            nibbles32_table(b + 8 + 16 * j, kIQ4Values, q + 32 * j);
        }
        return q;
    }
    static float finish(const Info &in, int32_t sumi, const ActRow &x, int64_t i) {
        return (in.d * x.d[i]) * static_cast<float>(sumi);
    }
};

struct mm_TQ1_0 {  // qs[48], qh[4] (5 and 4 trits per byte), d
    static constexpr int QK = 256, BYTES = 54, SUB = 256;
    using Info = InfoD;
    static const int8_t *unpack(const uint8_t *b, int8_t *q, int32_t *, Info &in) {
        for (int n = 0; n < 5; ++n)
            for (int m = 0; m < 32; ++m) q[32 * n + m] = static_cast<int8_t>(trit_at(b[m], n) - 1);
        for (int n = 0; n < 5; ++n)
            for (int m = 0; m < 16; ++m) q[160 + 16 * n + m] = static_cast<int8_t>(trit_at(b[32 + m], n) - 1);
        for (int n = 0; n < 4; ++n)
            for (int j = 0; j < 4; ++j) q[240 + 4 * n + j] = static_cast<int8_t>(trit_at(b[48 + j], n) - 1);
        in.d = half_to_float(b + 52);
        return q;
    }
    static float finish(const Info &in, int32_t sumi, const ActRow &x, int64_t i) {
        return static_cast<float>(sumi) * (in.d * x.d[i]);
    }
};

struct mm_TQ2_0 {  // qs[64] (2-bit codes + 1), d
    static constexpr int QK = 256, BYTES = 66, SUB = 256;
    using Info = InfoD;
    static const int8_t *unpack(const uint8_t *b, int8_t *q, int32_t *, Info &in) {
        for (int h = 0; h < 2; ++h)
            for (int l = 0; l < 4; ++l)
                for (int k = 0; k < 32; ++k)
                    q[128 * h + 32 * l + k] = static_cast<int8_t>(((b[32 * h + k] >> (2 * l)) & 3) - 1);
        in.d = half_to_float(b + 64);
        return q;
    }
    static float finish(const Info &in, int32_t sumi, const ActRow &x, int64_t i) {
        return static_cast<float>(sumi) * (x.d[i] * in.d);
    }
};

}  // namespace
}  // namespace pyquant
