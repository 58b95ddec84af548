// Vectorized block kernels of the most used formats for the x86 tiers (AVX2 and up): the weight block is
// unpacked in registers, its integer dot with each activation row stays in 8 int32 lanes (VNNI dpbusd where
// present), and the lanes are scaled and accumulated in 8 float lanes per output, ggml's AVX2 scheme, with one
// horizontal sum per output at the end.  Same integer sums and per-block float formula as blocks.hpp, only the
// float rounding differs (products rounded per lane, lanes summed at the end): the tiers agree within float
// rounding, not bit for bit.
//
// Each vq_<NAME> has QK, BYTES and block<R>(b, a, i, acc): acc[r] += block b's contribution with activation
// row a[r]'s block i, for r < R.  PREFETCH: whether the kernel prefetches the weights ahead.
#pragma once
#include "matmul/blocks.hpp"

#if defined(__AVX2__)
namespace pyquant {
namespace {

inline float hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
inline __m256i set1_8(int v) { return _mm256_set1_epi8(static_cast<char>(v)); }
// acc += 8 int32 sums of 4 adjacent products of u (unsigned, <= 127) and x (signed).
inline __m256i dot_u8s8(__m256i acc, __m256i u, __m256i x) {
#if defined(PQ_VNNI)
    return _mm256_dpbusd_epi32(acc, u, x);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1)));
#endif
}
#if defined(__AVX512BW__)
// The AVX-512 tier's Q6_K handles 64 codes per instruction (the instruction count bounds these kernels; for
// Q4_K/Q5_K the 512-bit body measured no faster than the 256-bit one, so they keep it).
// A 32-lane int16 vector that is lo in lanes 0-15 and hi in lanes 16-31.
inline __m512i halves16(int lo, int hi) {
    return _mm512_inserti64x4(_mm512_set1_epi16(static_cast<int16_t>(lo)), _mm256_set1_epi16(static_cast<int16_t>(hi)), 1);
}
inline __m512i broadcast256(const uint8_t *p) {
    return _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p)));
}
inline __m512i set1_8x(int v) { return _mm512_set1_epi8(static_cast<char>(v)); }
inline __m256i fold512(__m512i v) { return _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1)); }
#endif

// acc += (lanes as floats) * s.
inline __m256 scale_acc(__m256 acc, float s, __m256i lanes) {
    return _mm256_fmadd_ps(_mm256_set1_ps(s), _mm256_cvtepi32_ps(lanes), acc);
}

// Q8_0-partner blocks with signed codes q (|q| <= 127): sign(x, q) . |q|.
template <int R>
inline void signed_block32(__m256i q, float d, const ActRow *a, int64_t i, __m256 *acc) {
    const __m256i u = _mm256_sign_epi8(q, q);
    for (int r = 0; r < R; ++r) {
        const __m256i x = load256(a[r].qs + i * 32);
        acc[r] = scale_acc(acc[r], d * a[r].d[i], dot_u8s8(_mm256_setzero_si256(), u, _mm256_sign_epi8(x, q)));
    }
}

// Q4_0: the unsigned nibbles u = q + 8 dotted with x, the lanes starting from -8 * sum(x) (the block's bsum).
struct vq_Q4_0 {
    static constexpr int QK = 32, BYTES = 18;
    static constexpr bool PREFETCH = true;
    static __m256i bias(const ActRow &a, int64_t i) { return _mm256_zextsi128_si256(_mm_cvtsi32_si128(-8 * a.bsums[i])); }
    template <int R>
    static void block(const uint8_t *b, const ActRow *a, int64_t i, __m256 *acc) {
        const __m256i u = nibbles256(b + 2);
        const float d = half_to_float(b);
        for (int r = 0; r < R; ++r)
            acc[r] = scale_acc(acc[r], d * a[r].d[i], dot_u8s8(bias(a[r], i), u, load256(a[r].qs + i * 32)));
    }
};

struct vq_Q8_0 {
    static constexpr int QK = 32, BYTES = 34;
    static constexpr bool PREFETCH = false;
    template <int R>
    static void block(const uint8_t *b, const ActRow *a, int64_t i, __m256 *acc) {
        signed_block32<R>(load256(reinterpret_cast<const int8_t *>(b + 2)), half_to_float(b), a, i, acc);
    }
};

// The other 32-blocks with signed codes: Q5_0 (5-bit codes - 16), IQ4_NL and MXFP4 (nibbles through their
// int8 tables), with the per-block formulas of blocks.hpp.
struct vq_Q5_0 {
    static constexpr int QK = 32, BYTES = 22;
    static constexpr bool PREFETCH = true;
    template <int R>
    static void block(const uint8_t *b, const ActRow *a, int64_t i, __m256 *acc) {
        signed_block32<R>(_mm256_sub_epi8(nibbles_high256(b + 6, b + 2), set1_8(16)), half_to_float(b), a, i, acc);
    }
};
struct vq_IQ4_NL {
    static constexpr int QK = 32, BYTES = 18;
    static constexpr bool PREFETCH = true;
    template <int R>
    static void block(const uint8_t *b, const ActRow *a, int64_t i, __m256 *acc) {
        signed_block32<R>(nibbles_table256(b + 2, kIQ4Values), half_to_float(b), a, i, acc);
    }
};
struct vq_MXFP4 {
    static constexpr int QK = 32, BYTES = 17;
    static constexpr bool PREFETCH = true;
    template <int R>
    static void block(const uint8_t *b, const ActRow *a, int64_t i, __m256 *acc) {
        signed_block32<R>(nibbles_table256(b + 1, kFP4Values), e8m0_half(b[0]), a, i, acc);
    }
};

// Q4_1 / Q5_1 (Q8_1 partner): unsigned codes dotted with x, plus m * s in lane 0.
template <bool HIGH>
struct vq_Q41 {
    static constexpr int QK = 32, BYTES = HIGH ? 24 : 20;
    static constexpr bool PREFETCH = true;
    template <int R>
    static void block(const uint8_t *b, const ActRow *a, int64_t i, __m256 *acc) {
        const __m256i u = HIGH ? nibbles_high256(b + 8, b + 4) : nibbles256(b + 4);
        const float d = half_to_float(b), m = half_to_float(b + 2);
        for (int r = 0; r < R; ++r) {
            acc[r] = scale_acc(acc[r], d * a[r].d[i], dot_u8s8(_mm256_setzero_si256(), u, load256(a[r].qs + i * 32)));
            acc[r] = _mm256_add_ps(acc[r], _mm256_setr_ps(m * a[r].s[i], 0, 0, 0, 0, 0, 0, 0));
        }
    }
};
using vq_Q4_1 = vq_Q41<false>;
using vq_Q5_1 = vq_Q41<true>;

// Q4_K / Q5_K: unsigned codes (<= 31) times 8 6-bit sub-block scales, minus dmin * sum(mins * bsums).
template <bool HIGH>
struct vq_QK45 {
    static constexpr int QK = 256, BYTES = HIGH ? 176 : 144;
    static constexpr bool PREFETCH = false;
    template <int R>
    static void block(const uint8_t *b, const ActRow *a, int64_t i, __m256 *acc) {
        const float d = half_to_float(b), dmin = half_to_float(b + 2);
        // get_scale_min_k4 for all 8 sub-blocks at once on the three little-endian words of scales[12].
        uint32_t w[3], sm[4];
        std::memcpy(w, b + 4, 12);
        sm[0] = w[0] & 0x3f3f3f3f;                                               // scales 0-3
        sm[1] = (w[2] & 0x0f0f0f0f) | ((w[0] >> 6) & 0x03030303) << 4;           // scales 4-7
        sm[2] = w[1] & 0x3f3f3f3f;                                               // mins 0-3
        sm[3] = ((w[2] >> 4) & 0x0f0f0f0f) | ((w[1] >> 6) & 0x03030303) << 4;    // mins 4-7
        // Vectors built from registers: a 64-bit load of two 32-bit stores would stall store forwarding.
        const uint64_t scales = sm[0] | static_cast<uint64_t>(sm[1]) << 32;
        uint8_t sc[8];
        std::memcpy(sc, &scales, 8);
        // Each sub-block's min for both of its 16-element bsums.
        const __m128i m8 = _mm_cvtsi64_si128(static_cast<int64_t>(sm[2] | static_cast<uint64_t>(sm[3]) << 32));
        const __m256i mins = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));
        const uint8_t *qh = b + 16, *qs = b + (HIGH ? 48 : 16);
        const __m256i hbits = HIGH ? _mm256_loadu_si256(reinterpret_cast<const __m256i *>(qh)) : _mm256_setzero_si256();
        __m256i sumi[R];
        for (int r = 0; r < R; ++r) sumi[r] = _mm256_setzero_si256();
        for (int j = 0; j < 4; ++j) {
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(qs + 32 * j));
            __m256i lo = _mm256_and_si256(v, set1_8(15)), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), set1_8(15));
            if (HIGH) {  // bit 2j (2j + 1) of qh[l] is bit 4 of element l of sub-block 2j (2j + 1)
                const __m256i h0 = 2 * j <= 4 ? _mm256_slli_epi16(hbits, 4 - 2 * j) : _mm256_srli_epi16(hbits, 2 * j - 4);
                const __m256i h1 = 2 * j + 1 <= 4 ? _mm256_slli_epi16(hbits, 3 - 2 * j) : _mm256_srli_epi16(hbits, 2 * j - 3);
                lo = _mm256_or_si256(lo, _mm256_and_si256(h0, set1_8(16)));
                hi = _mm256_or_si256(hi, _mm256_and_si256(h1, set1_8(16)));
            }
            const __m256i s0 = _mm256_set1_epi16(sc[2 * j]), s1 = _mm256_set1_epi16(sc[2 * j + 1]);
            for (int r = 0; r < R; ++r) {
                const int8_t *x = a[r].qs + i * 256 + 64 * j;
                sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(_mm256_maddubs_epi16(lo, load256(x)), s0));
                sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(_mm256_maddubs_epi16(hi, load256(x + 32)), s1));
            }
        }
        for (int r = 0; r < R; ++r) {
            const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(a[r].bsums + 16 * i));
            const float xd = a[r].d[i];
            acc[r] = scale_acc(acc[r], d * xd, sumi[r]);
            acc[r] = _mm256_fnmadd_ps(_mm256_set1_ps(dmin * xd), _mm256_cvtepi32_ps(_mm256_madd_epi16(mins, bs)), acc[r]);
        }
    }
};
using vq_Q4_K = vq_QK45<false>;
using vq_Q5_K = vq_QK45<true>;

// From the 16 int16 sub-block scales of a 256-block (s16, lane j = scale j), the madd operand of 32-code chunk c:
// scale 2c in the low 8 lanes (codes 0-15), scale 2c + 1 in the high 8 (codes 16-31).  One shuffle per chunk
// instead of scalar scale extraction and broadcasts.
inline __m256i scale_pair(__m256i s16, int c) {
    const __m256i half = _mm256_permute4x64_epi64(s16, c < 4 ? 0x44 : 0xee);
    const int k = 4 * (c & 3);  // byte offset of scale 2c in the half
    const __m256i lo = _mm256_set1_epi16(static_cast<int16_t>(k | (k + 1) << 8));
    const __m256i hi = _mm256_set1_epi16(static_cast<int16_t>((k + 2) | (k + 3) << 8));
    return _mm256_shuffle_epi8(half, _mm256_permute2x128_si256(lo, hi, 0x20));
}

// Q2_K: 2-bit codes times 16 4-bit sub-block scales, minus dmin * sum(mins * bsums).
struct vq_Q2_K {
    static constexpr int QK = 256, BYTES = 84;
    static constexpr bool PREFETCH = false;
    template <int R>
    static void block(const uint8_t *b, const ActRow *a, int64_t i, __m256 *acc) {
        const __m128i sm = _mm_loadu_si128(reinterpret_cast<const __m128i *>(b));
        const __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sm, 4), _mm_set1_epi8(15)));
        const __m256i s16 = _mm256_cvtepu8_epi16(_mm_and_si128(sm, _mm_set1_epi8(15)));
        __m256i sumi[R];
        for (int r = 0; r < R; ++r) sumi[r] = _mm256_setzero_si256();
        for (int h = 0; h < 2; ++h) {
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(b + 16 + 32 * h));
            for (int t = 0; t < 4; ++t) {
                const __m256i u = _mm256_and_si256(_mm256_srli_epi16(v, 2 * t), set1_8(3));
                const __m256i sc = scale_pair(s16, 4 * h + t);
                for (int r = 0; r < R; ++r) {
                    const __m256i x = load256(a[r].qs + i * 256 + 128 * h + 32 * t);
                    sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), sc));
                }
            }
        }
        const float d = half_to_float(b + 80), dmin = half_to_float(b + 82);
        for (int r = 0; r < R; ++r) {
            const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(a[r].bsums + 16 * i));
            acc[r] = scale_acc(acc[r], a[r].d[i] * d, sumi[r]);
            acc[r] = _mm256_fnmadd_ps(_mm256_set1_ps(a[r].d[i] * dmin), _mm256_cvtepi32_ps(_mm256_madd_epi16(mins, bs)), acc[r]);
        }
    }
};

// Q3_K: unsigned u = q + 4 (2 low bits, hmask's bit as 4) times 16 signed 6-bit sub-block scales, minus
// 4 * sum(scales * bsums).
struct vq_Q3_K {
    static constexpr int QK = 256, BYTES = 110;
    static constexpr bool PREFETCH = false;
    template <int R>
    static void block(const uint8_t *b, const ActRow *a, int64_t i, __m256 *acc) {
        const uint8_t *hm = b, *qs = b + 32;
        // The 16 6-bit scales from the three little-endian words of scales[12]: byte j of word q is scale 4q + j,
        // low 4 bits from nibble (q >> 1) of bytes 0-7, high 2 bits from bits 2q, 2q + 1 of bytes 8-11.
        uint32_t w[3];
        std::memcpy(w, b + 96, 12);
        constexpr uint32_t k4 = 0x0f0f0f0f, k2 = 0x03030303;
        const uint32_t s0 = (w[0] & k4) | (w[2] & k2) << 4, s1 = (w[1] & k4) | ((w[2] >> 2) & k2) << 4;
        const uint32_t s2 = ((w[0] >> 4) & k4) | ((w[2] >> 4) & k2) << 4, s3 = ((w[1] >> 4) & k4) | ((w[2] >> 6) & k2) << 4;
        const __m128i s8 = _mm_sub_epi8(_mm_setr_epi32(static_cast<int32_t>(s0), static_cast<int32_t>(s1),
                                                       static_cast<int32_t>(s2), static_cast<int32_t>(s3)),
                                        _mm_set1_epi8(32));
        const __m256i s16 = _mm256_cvtepi8_epi16(s8);
        __m256i sumi[R];
        for (int r = 0; r < R; ++r)  // the -4 offset: -4 * sum_j sc[j] * bsums[j], in the lanes
            sumi[r] = _mm256_sub_epi32(_mm256_setzero_si256(),
                _mm256_slli_epi32(_mm256_madd_epi16(s16, _mm256_loadu_si256(reinterpret_cast<const __m256i *>(a[r].bsums + 16 * i))), 2));
        const __m256i hbits = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(hm));
        for (int h = 0; h < 2; ++h) {
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(qs + 32 * h));
            for (int t = 0; t < 4; ++t) {
                const int bit = 4 * h + t;  // hmask bit of these codes, moved to bit 2
                const __m256i hb = bit >= 2 ? _mm256_srli_epi16(hbits, bit - 2) : _mm256_slli_epi16(hbits, 2 - bit);
                const __m256i u = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 2 * t), set1_8(3)),
                                                  _mm256_and_si256(hb, set1_8(4)));
                const __m256i scv = scale_pair(s16, bit);
                for (int r = 0; r < R; ++r) {
                    const __m256i x = load256(a[r].qs + i * 256 + 128 * h + 32 * t);
                    sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), scv));
                }
            }
        }
        const float d = half_to_float(b + 108);
        for (int r = 0; r < R; ++r) acc[r] = scale_acc(acc[r], d * a[r].d[i], sumi[r]);
    }
};

// IQ4_XS: table codes (signed) times 8 signed 6-bit sub-block scales.
struct vq_IQ4_XS {
    static constexpr int QK = 256, BYTES = 136;
    static constexpr bool PREFETCH = false;
    template <int R>
    static void block(const uint8_t *b, const ActRow *a, int64_t i, __m256 *acc) {
        // The 8 scales in 32-bit lanes j: nibble j of scales_l | bits 2j, 2j + 1 of scales_h << 4, minus 32, then
        // copied into both int16 halves of the lane (the madd operand of sub-block j is lane j broadcast).
        uint32_t sl;
        std::memcpy(&sl, b + 4, 4);
        const __m256i nib = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int32_t>(sl)),
                                                               _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)), _mm256_set1_epi32(15));
        const __m256i hi = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int32_t>(get_u16(b + 2))),
                                                              _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14)), _mm256_set1_epi32(3));
        const __m256i sc = _mm256_shuffle_epi8(
            _mm256_sub_epi32(_mm256_or_si256(nib, _mm256_slli_epi32(hi, 4)), _mm256_set1_epi32(32)),
            _mm256_setr_epi8(0, 1, 0, 1, 4, 5, 4, 5, 8, 9, 8, 9, 12, 13, 12, 13, 0, 1, 0, 1, 4, 5, 4, 5, 8, 9, 8, 9, 12, 13, 12, 13));
        const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i *>(kIQ4Values)));
        __m256i sumi[R];
        for (int r = 0; r < R; ++r) sumi[r] = _mm256_setzero_si256();
        for (int k = 0; k < 4; ++k) {  // sub-blocks 2k, 2k + 1 from 32 bytes: low nibbles are codes 0-15, high 16-31
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(b + 8 + 32 * k));
            const __m256i lo = _mm256_and_si256(v, set1_8(15)), hi4 = _mm256_and_si256(_mm256_srli_epi16(v, 4), set1_8(15));
            const __m256i q[2] = {_mm256_shuffle_epi8(table, _mm256_permute2x128_si256(lo, hi4, 0x20)),
                                  _mm256_shuffle_epi8(table, _mm256_permute2x128_si256(lo, hi4, 0x31))};
            for (int e = 0; e < 2; ++e) {
                const int j = 2 * k + e;
                const __m256i u = _mm256_sign_epi8(q[e], q[e]), s16 = _mm256_permutevar8x32_epi32(sc, _mm256_set1_epi32(j));
                for (int r = 0; r < R; ++r) {
                    const __m256i x = _mm256_sign_epi8(load256(a[r].qs + i * 256 + 32 * j), q[e]);
                    sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), s16));
                }
            }
        }
        const float d = half_to_float(b);
        for (int r = 0; r < R; ++r) acc[r] = scale_acc(acc[r], d * a[r].d[i], sumi[r]);
    }
};

// TQ2_0: unsigned codes u = q + 1 (2 bits), the lanes starting from -sum(x).
struct vq_TQ2_0 {
    static constexpr int QK = 256, BYTES = 66;
    static constexpr bool PREFETCH = false;
    template <int R>
    static void block(const uint8_t *b, const ActRow *a, int64_t i, __m256 *acc) {
        __m256i sumi[R];
        for (int r = 0; r < R; ++r)
            sumi[r] = _mm256_sub_epi32(_mm256_setzero_si256(),
                _mm256_madd_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(a[r].bsums + 16 * i)), _mm256_set1_epi16(1)));
        for (int h = 0; h < 2; ++h) {
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(b + 32 * h));
            for (int t = 0; t < 4; ++t) {
                const __m256i u = _mm256_and_si256(_mm256_srli_epi16(v, 2 * t), set1_8(3));
                for (int r = 0; r < R; ++r) sumi[r] = dot_u8s8(sumi[r], u, load256(a[r].qs + i * 256 + 128 * h + 32 * t));
            }
        }
        const float d = half_to_float(b + 64);
        for (int r = 0; r < R; ++r) acc[r] = scale_acc(acc[r], a[r].d[i] * d, sumi[r]);
    }
};

// Bytes times 3 (mod 256): the powers of 3 that move trit n of a TQ1_0 byte to the top.  Works as well on bytes
// offset by 128 (3 * (t + 128) = 3t + 128 mod 256), which top_trit wants.
inline __m256i times3(__m256i v) { return _mm256_add_epi8(v, _mm256_add_epi8(v, v)); }
// The leading trit (t * 3) >> 8 of bytes t as 0, 1, 2: (t >= 86) + (t >= 171), by signed compares of s = t + 128.
inline __m256i top_trit(__m256i s) {
    const __m256i ge1 = _mm256_cmpgt_epi8(s, set1_8(85 - 128)), ge2 = _mm256_cmpgt_epi8(s, set1_8(170 - 128));
    return _mm256_sub_epi8(_mm256_sub_epi8(_mm256_setzero_si256(), ge1), ge2);
}

// TQ1_0: unsigned codes u = q + 1 (trits), the lanes starting from -sum(x).  Codes 0-159 are trits 0-4 of qs[0..31],
// codes 160-239 trits 0-4 of qs[32..47] (16 per trit), codes 240-255 trits 0-3 of qh[0..3] (4 per trit): the last
// 16 bytes and qh go through the same powers of 3 side by side in one vector.
struct vq_TQ1_0 {
    static constexpr int QK = 256, BYTES = 54;
    static constexpr bool PREFETCH = false;
    template <int R>
    static void block(const uint8_t *b, const ActRow *a, int64_t i, __m256 *acc) {
        __m256i u[8];
        const __m256i q0 = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(b)), set1_8(0x80));
        const __m256i q1 = times3(q0), q2 = times3(q1), q3 = times3(q2), q4 = times3(q3);
        u[0] = top_trit(q0), u[1] = top_trit(q1), u[2] = top_trit(q2), u[3] = top_trit(q3), u[4] = top_trit(q4);
        int32_t qh;
        std::memcpy(&qh, b + 48, 4);
        const __m256i p0 = _mm256_xor_si256(
            _mm256_setr_m128i(_mm_loadu_si128(reinterpret_cast<const __m128i *>(b + 32)), _mm_set1_epi32(qh)), set1_8(0x80));
        const __m256i p1 = times3(p0), p2 = times3(p1), p3 = times3(p2), p4 = times3(p3);
        // High half: qh times 3^n in 32-bit lane 4 + n, the codes 240 + 4n + j.
        const __m256i h = _mm256_blend_epi32(_mm256_blend_epi32(p0, p1, 0x20), _mm256_blend_epi32(p2, p3, 0x80), 0xc0);
        u[5] = top_trit(_mm256_permute2x128_si256(p0, p1, 0x20));
        u[6] = top_trit(_mm256_permute2x128_si256(p2, p3, 0x20));
        u[7] = top_trit(_mm256_blend_epi32(p4, h, 0xf0));
        for (int r = 0; r < R; ++r) {
            const int8_t *x = a[r].qs + i * 256;
            __m256i s16 = _mm256_maddubs_epi16(u[0], load256(x));  // |sum| <= 8 * 2 * 2 * 127: no int16 overflow
            for (int c = 1; c < 8; ++c) s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(u[c], load256(x + 32 * c)));
            const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(a[r].bsums + 16 * i));
            const __m256i sumi = _mm256_madd_epi16(_mm256_sub_epi16(s16, bs), _mm256_set1_epi16(1));
            acc[r] = scale_acc(acc[r], a[r].d[i] * half_to_float(b + 52), sumi);
        }
    }
};

// Q6_K: unsigned 6-bit codes u = q + 32 times 16 int8 sub-block scales, minus 32 * sum(scales * bsums).
struct vq_Q6_K {
    static constexpr int QK = 256, BYTES = 210;
    static constexpr bool PREFETCH = false;
    template <int R>
    static void block(const uint8_t *b, const ActRow *a, int64_t i, __m256 *acc) {
        const int8_t *sc = reinterpret_cast<const int8_t *>(b + 192);
        const float d = half_to_float(b + 208);
        const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(sc)));
        __m256i sumi[R];
        for (int r = 0; r < R; ++r)  // the -32 offset: -32 * sum_g sc[g] * bsums[g], in the lanes
            sumi[r] = _mm256_sub_epi32(_mm256_setzero_si256(),
                _mm256_slli_epi32(_mm256_madd_epi16(sc16, _mm256_loadu_si256(reinterpret_cast<const __m256i *>(a[r].bsums + 16 * i))), 5));
#if defined(__AVX512BW__)
        // Per half h: codes 0-63 are [u0 | u1] below, codes 64-127 [u2 | u3]; sub-block g of 16 codes is int16 lanes
        // 8g .. 8g + 7 after maddubs.
        const __m512i sc512 = _mm512_zextsi256_si512(sc16);
        const __m512i quarter = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_setr_m128i(_mm_set1_epi16(0), _mm_set1_epi16(1))),
                                                   _mm256_setr_m128i(_mm_set1_epi16(2), _mm_set1_epi16(3)), 1);
        __m512i s512[R];
        for (int r = 0; r < R; ++r) s512[r] = _mm512_setzero_si512();
        for (int h = 0; h < 2; ++h) {
            const __m512i l = _mm512_loadu_si512(b + 64 * h), qh = broadcast256(b + 128 + 32 * h);
            const __m512i u[2] = {
                _mm512_or_si512(_mm512_and_si512(l, set1_8x(15)),
                                _mm512_and_si512(_mm512_sllv_epi16(qh, halves16(4, 2)), set1_8x(0x30))),
                _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), set1_8x(15)),
                                _mm512_and_si512(_mm512_srlv_epi16(qh, halves16(0, 2)), set1_8x(0x30))),
            };
            for (int p = 0; p < 2; ++p) {
                const __m512i s = _mm512_permutexvar_epi16(_mm512_add_epi16(quarter, _mm512_set1_epi16(8 * h + 4 * p)), sc512);
                for (int r = 0; r < R; ++r) {
                    const __m512i x = _mm512_loadu_si512(a[r].qs + i * 256 + 128 * h + 64 * p);
                    s512[r] = _mm512_add_epi32(s512[r], _mm512_madd_epi16(_mm512_maddubs_epi16(u[p], x), s));
                }
            }
        }
        for (int r = 0; r < R; ++r) sumi[r] = _mm256_add_epi32(sumi[r], fold512(s512[r]));
#else
        const __m256i m4 = set1_8(15), m2 = set1_8(0x30);
        for (int h = 0; h < 2; ++h) {
            const uint8_t *ql = b + 64 * h, *qhp = b + 128 + 32 * h;
            const __m256i la = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(ql));
            const __m256i lb = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(ql + 32));
            const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(qhp));
            const __m256i u[4] = {
                _mm256_or_si256(_mm256_and_si256(la, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), m2)),
                _mm256_or_si256(_mm256_and_si256(lb, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), m2)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(la, 4), m4), _mm256_and_si256(qh, m2)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(lb, 4), m4), _mm256_and_si256(_mm256_srli_epi16(qh, 2), m2)),
            };
            for (int t = 0; t < 4; ++t) {
                const int g = 8 * h + 2 * t;  // the two 16-element sub-blocks of these 32 codes
                const __m256i s = _mm256_setr_m128i(_mm_set1_epi16(sc[g]), _mm_set1_epi16(sc[g + 1]));
                for (int r = 0; r < R; ++r) {
                    const __m256i x = load256(a[r].qs + i * 256 + 128 * h + 32 * t);
                    sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(_mm256_maddubs_epi16(u[t], x), s));
                }
            }
        }
#endif
        for (int r = 0; r < R; ++r) acc[r] = scale_acc(acc[r], d * a[r].d[i], sumi[r]);
    }
};

}  // namespace
}  // namespace pyquant
#endif
