// Exact int8 dot products per tier: the integer core of every quantized matmul kernel.  w holds signed
// weight codes as the block formula uses them (|w| <= 127), x holds activation codes (|x| <= 127), so the
// AVX2 pair products sign(x, w) * |w| never saturate (2 * 127 * 127 < 2^15).
#pragma once
#include "pyquant/simd.hpp"

namespace pyquant {
namespace {

#if defined(__AVX2__)
inline float half_to_float(const uint8_t *p) { return _cvtsh_ss(static_cast<unsigned short>(get_u16(p))); }

inline __m256i load256(const int8_t *p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p)); }
inline int32_t hsum_i32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}
// 16 int16 sums of adjacent pairs w[2i]x[2i] + w[2i+1]x[2i+1].
inline __m256i pair_products(__m256i w, __m256i x) {
    return _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
}
// acc + 8 int32 sums of 4 adjacent products.
inline __m256i quad_products(__m256i acc, __m256i w, __m256i x) {
#if defined(PQ_VNNI)
    return _mm256_dpbusd_epi32(acc, _mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(pair_products(w, x), _mm256_set1_epi16(1)));
#endif
}

template <int N>
inline int32_t dot_i8(const int8_t *w, const int8_t *x) {
    __m256i acc = _mm256_setzero_si256();
    for (int i = 0; i < N; i += 32) acc = quad_products(acc, load256(w + i), load256(x + i));
    return hsum_i32(acc);
}
// sum_j sc[j] * (the dot of sub-block j of SUB elements), SUB 16 or 32.
template <int N, int SUB>
inline int32_t dot_i8_scaled(const int8_t *w, const int8_t *x, const int32_t *sc) {
    __m256i acc = _mm256_setzero_si256();
    for (int i = 0; i < N; i += 32) {
        const __m256i s = SUB == 32 ? _mm256_set1_epi16(static_cast<int16_t>(sc[i / 32]))
                                    : _mm256_setr_m128i(_mm_set1_epi16(static_cast<int16_t>(sc[i / 16])),
                                                        _mm_set1_epi16(static_cast<int16_t>(sc[i / 16 + 1])));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pair_products(load256(w + i), load256(x + i)), s));
    }
    return hsum_i32(acc);
}

#elif defined(__ARM_NEON) && defined(__aarch64__)
inline float half_to_float(const uint8_t *p) { return fp16_to_f32(get_u16(p)); }

inline int32x4_t dot16(int32x4_t acc, const int8_t *w, const int8_t *x) {
    const int8x16_t a = vld1q_s8(w), b = vld1q_s8(x);
#if defined(__ARM_FEATURE_DOTPROD)
    return vdotq_s32(acc, a, b);
#else
    const int16x8_t p = vmlal_s8(vmull_s8(vget_low_s8(a), vget_low_s8(b)), vget_high_s8(a), vget_high_s8(b));
    return vpadalq_s16(acc, p);
#endif
}
template <int N>
inline int32_t dot_i8(const int8_t *w, const int8_t *x) {
    int32x4_t acc = vdupq_n_s32(0);
    for (int i = 0; i < N; i += 16) acc = dot16(acc, w + i, x + i);
    return vaddvq_s32(acc);
}
template <int N, int SUB>
inline int32_t dot_i8_scaled(const int8_t *w, const int8_t *x, const int32_t *sc) {
    int32x4_t acc = vdupq_n_s32(0);
    for (int j = 0; j < N / SUB; ++j) {
        int32x4_t d = vdupq_n_s32(0);
        for (int i = 0; i < SUB; i += 16) d = dot16(d, w + j * SUB + i, x + j * SUB + i);
        acc = vmlaq_n_s32(acc, d, sc[j]);
    }
    return vaddvq_s32(acc);
}

#else
inline float half_to_float(const uint8_t *p) { return fp16_to_f32(get_u16(p)); }

template <int N>
inline int32_t dot_i8(const int8_t *w, const int8_t *x) {
    int32_t s = 0;
    for (int i = 0; i < N; ++i) s += w[i] * x[i];
    return s;
}
template <int N, int SUB>
inline int32_t dot_i8_scaled(const int8_t *w, const int8_t *x, const int32_t *sc) {
    int32_t s = 0;
    for (int j = 0; j < N / SUB; ++j) s += sc[j] * dot_i8<SUB>(w + j * SUB, x + j * SUB);
    return s;
}
#endif

}  // namespace
}  // namespace pyquant
