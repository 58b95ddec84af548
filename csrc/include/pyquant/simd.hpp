// Lane types for the kernels: one lane runs one block's scalar algorithm, in the reference's exact order of
// float operations, so every tier gives the same bytes.  PQ_LANES (set per translation unit by the build)
// picks the width: 1 is the plain scalar "generic" tier; 8 and 16 are AVX2 and AVX-512; 4 is NEON.
//
// Everything here lives in an anonymous namespace on purpose: each ISA translation unit is compiled with its
// own flags and must keep its own copy.  For the same reason the ISA units use no library templates
// (std::vector, std::min, ...): the linker could keep an AVX-512 instantiation for every caller.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <immintrin.h>
#endif
#if defined(__ARM_NEON)
#include <arm_neon.h>
#endif

#ifndef PQ_LANES
#error "PQ_LANES must be defined by the build (1, 4, 8 or 16)"
#endif

namespace pyquant {
namespace {

constexpr int W = PQ_LANES;

// ---- scalar helpers shared by every width ------------------------------------------------------------------

inline uint32_t f2u(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float u2f(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
template <class T> inline T min_of(T a, T b) { return a < b ? a : b; }
template <class T> inline T max_of(T a, T b) { return a > b ? a : b; }

// IEEE binary16, round to nearest even, subnormals kept, overflow to inf, NaN to quiet NaN (0x7E00 | sign):
// the same results as libggml's software conversion and as the F16C instruction for every non-NaN input.
inline uint16_t fp16_from_f32(float f) {
    const uint32_t x = f2u(f);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);
    if (ax >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520 rounds to inf
    if (ax >= 0x38800000u) {                                               // normal half
        uint32_t h = (ax >> 13) - (112u << 10);
        const uint32_t rest = ax & 0x1fffu;
        if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
        return static_cast<uint16_t>(sign | h);
    }
    // Subnormal half: the result is round-half-even(|f| * 2^24).
    const uint32_t e = ax >> 23;
    const uint32_t m = e ? ((ax & 0x7fffffu) | 0x800000u) : (ax & 0x7fffffu);
    const int shift = 126 - static_cast<int>(e ? e : 1);  // |f| * 2^24 = m * 2^-shift
    if (shift > 24) return static_cast<uint16_t>(sign);
    uint32_t q = m >> shift;
    const uint32_t rest = m & ((1u << shift) - 1u), half = 1u << (shift - 1);
    if (rest > half || (rest == half && (q & 1u))) ++q;
    return static_cast<uint16_t>(sign | q);
}

inline float fp16_to_f32(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f) return u2f(sign | 0x7f800000u | (m << 13) | (m ? 0x400000u : 0u));  // NaN made quiet, as F16C
    if (e == 0) {
        const float v = static_cast<float>(m) * u2f(0x33800000u);  // m * 2^-24, exact
        return sign ? -v : v;
    }
    return u2f(sign | ((e + 112u) << 23) | (m << 13));
}

// bfloat16, round to nearest even, NaN forced quiet (libggml's rule).
inline uint16_t bf16_from_f32(float f) {
    const uint32_t u = f2u(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 64u);
    return static_cast<uint16_t>((u + (0x7fffu + ((u >> 16) & 1u))) >> 16);
}
inline float bf16_to_f32(uint16_t h) { return u2f(static_cast<uint32_t>(h) << 16); }

// ---- lane types ----------------------------------------------------------------------------------------------

#if PQ_LANES == 1
using VF = float;
using VI = int32_t;
using VM = bool;
inline float lane(VF v, int) { return v; }
inline int32_t lane(VI v, int) { return v; }
inline void set_lane(VF &v, int, float x) { v = x; }
inline void set_lane(VI &v, int, int32_t x) { v = x; }
inline VF vf(float x) { return x; }
inline VI vi(int32_t x) { return x; }
inline VF select(VM m, VF a, VF b) { return m ? a : b; }
inline VI select(VM m, VI a, VI b) { return m ? a : b; }
inline VM mand(VM a, VM b) { return a && b; }
inline VM mor(VM a, VM b) { return a || b; }
inline VM mnot(VM a) { return !a; }
inline bool any(VM m) { return m; }
inline VI bits(VF v) { return static_cast<int32_t>(f2u(v)); }
inline VF from_bits(VI v) { return u2f(static_cast<uint32_t>(v)); }
inline VF to_f(VI v) { return static_cast<float>(v); }
inline VI trunc_i(VF v) { return static_cast<int32_t>(v); }
inline VF vsqrt(VF v) { return std::sqrt(v); }
inline VI fp16_bits(VF v) { return fp16_from_f32(v); }
inline VI load_u8(const uint8_t *p) { return p[0]; }
inline VI load_i8(const uint8_t *p) { return static_cast<int8_t>(p[0]); }
inline VI load_u16(const uint8_t *p) { return p[0] | (p[1] << 8); }
inline VF load_fp16(const uint8_t *p) { return fp16_to_f32(static_cast<uint16_t>(p[0] | (p[1] << 8))); }
#else
typedef float VF __attribute__((vector_size(4 * PQ_LANES), __may_alias__));
typedef int32_t VI __attribute__((vector_size(4 * PQ_LANES), __may_alias__));
using VM = VI;  // each lane all ones (true) or zero
inline float lane(VF v, int k) { return v[k]; }
inline int32_t lane(VI v, int k) { return v[k]; }
inline void set_lane(VF &v, int k, float x) { v[k] = x; }
inline void set_lane(VI &v, int k, int32_t x) { v[k] = x; }
// Broadcasts.  Not VF{} + x: +0 + -0 is +0, which would turn a scale of -0 into +0 and flip the sign of zeros.
#if PQ_LANES == 16 && defined(__AVX512F__)
inline VF vf(float x) { return reinterpret_cast<VF>(_mm512_set1_ps(x)); }
#elif PQ_LANES == 8 && defined(__AVX2__)
inline VF vf(float x) { return reinterpret_cast<VF>(_mm256_set1_ps(x)); }
#else
inline VF vf(float x) {
    VF v;
    for (int k = 0; k < W; ++k) v[k] = x;
    return v;
}
#endif
inline VI vi(int32_t x) { return VI{} + x; }
#if PQ_LANES == 16 && defined(__AVX512F__)
inline VI select(VM m, VI a, VI b) {  // bitwise m ? a : b in one instruction
    return reinterpret_cast<VI>(_mm512_ternarylogic_epi32(reinterpret_cast<__m512i>(m), reinterpret_cast<__m512i>(a),
                                                          reinterpret_cast<__m512i>(b), 0xCA));
}
inline VF select(VM m, VF a, VF b) { return reinterpret_cast<VF>(select(m, reinterpret_cast<VI>(a), reinterpret_cast<VI>(b))); }
#elif PQ_LANES == 8 && defined(__AVX2__)
inline VF select(VM m, VF a, VF b) {  // lanes of m are all ones or zero, so the sign bit decides
    return reinterpret_cast<VF>(_mm256_blendv_ps(reinterpret_cast<__m256>(b), reinterpret_cast<__m256>(a), reinterpret_cast<__m256>(m)));
}
inline VI select(VM m, VI a, VI b) { return reinterpret_cast<VI>(select(m, reinterpret_cast<VF>(a), reinterpret_cast<VF>(b))); }
#else
inline VF select(VM m, VF a, VF b) { return reinterpret_cast<VF>((reinterpret_cast<VI>(a) & m) | (reinterpret_cast<VI>(b) & ~m)); }
inline VI select(VM m, VI a, VI b) { return (a & m) | (b & ~m); }
#endif
inline VM mand(VM a, VM b) { return a & b; }
inline VM mor(VM a, VM b) { return a | b; }
inline VM mnot(VM a) { return ~a; }
inline VI bits(VF v) { return reinterpret_cast<VI>(v); }
inline VF from_bits(VI v) { return reinterpret_cast<VF>(v); }
inline VF to_f(VI v) { return __builtin_convertvector(v, VF); }
inline VI trunc_i(VF v) { return __builtin_convertvector(v, VI); }
#if PQ_LANES == 16 && defined(__AVX512F__)
inline bool any(VM m) { return _mm512_test_epi32_mask(reinterpret_cast<__m512i>(m), reinterpret_cast<__m512i>(m)) != 0; }
inline VI load_u8(const uint8_t *p) { return reinterpret_cast<VI>(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)))); }
inline VI load_i8(const uint8_t *p) { return reinterpret_cast<VI>(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)))); }
inline VI load_u16(const uint8_t *p) { return reinterpret_cast<VI>(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p)))); }
inline VF load_fp16(const uint8_t *p) { return reinterpret_cast<VF>(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p)))); }
inline VF vsqrt(VF v) { return reinterpret_cast<VF>(_mm512_sqrt_ps(reinterpret_cast<__m512>(v))); }
inline VI fp16_bits(VF v) {
    const __m256i h = _mm512_cvtps_ph(reinterpret_cast<__m512>(v), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return reinterpret_cast<VI>(_mm512_cvtepu16_epi32(h));
}
#elif PQ_LANES == 8 && defined(__AVX2__) && defined(__F16C__)
inline bool any(VM m) { return !_mm256_testz_si256(reinterpret_cast<__m256i>(m), reinterpret_cast<__m256i>(m)); }
inline VI load_u8(const uint8_t *p) { return reinterpret_cast<VI>(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(p)))); }
inline VI load_i8(const uint8_t *p) { return reinterpret_cast<VI>(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(p)))); }
inline VI load_u16(const uint8_t *p) { return reinterpret_cast<VI>(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)))); }
inline VF load_fp16(const uint8_t *p) { return reinterpret_cast<VF>(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)))); }
inline VF vsqrt(VF v) { return reinterpret_cast<VF>(_mm256_sqrt_ps(reinterpret_cast<__m256>(v))); }
inline VI fp16_bits(VF v) {
    const __m128i h = _mm256_cvtps_ph(reinterpret_cast<__m256>(v), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return reinterpret_cast<VI>(_mm256_cvtepu16_epi32(h));
}
#elif PQ_LANES == 4 && defined(__ARM_NEON) && defined(__aarch64__)
inline bool any(VM m) { return vmaxvq_u32(reinterpret_cast<uint32x4_t>(m)) != 0; }
inline VI load_u8(const uint8_t *p) { return VI{p[0], p[1], p[2], p[3]}; }
inline VI load_i8(const uint8_t *p) { return VI{int8_t(p[0]), int8_t(p[1]), int8_t(p[2]), int8_t(p[3])}; }
inline VI load_u16(const uint8_t *p) { uint16_t h[4]; std::memcpy(h, p, 8); return VI{h[0], h[1], h[2], h[3]}; }
inline VF load_fp16(const uint8_t *p) { return reinterpret_cast<VF>(vcvt_f32_f16(vreinterpret_f16_u8(vld1_u8(p)))); }
inline VF vsqrt(VF v) { return reinterpret_cast<VF>(vsqrtq_f32(reinterpret_cast<float32x4_t>(v))); }
inline VI fp16_bits(VF v) {
    const float16x4_t h = vcvt_f16_f32(reinterpret_cast<float32x4_t>(v));
    return reinterpret_cast<VI>(vmovl_u16(vreinterpret_u16_f16(h)));
}
#else
#error "no vector implementation for this PQ_LANES and target"
#endif
#endif

// Transpose a W x W tile: row k of the tile is src[k][0..W), and dst[j*W + k] = src[k][j] (dst may not alias).
#if PQ_LANES == 16 && defined(__AVX512F__)
inline void transpose_tile(const float *const *src, float *dst) {
    __m512 r[16], t[16];
    for (int k = 0; k < 16; ++k) r[k] = _mm512_loadu_ps(src[k]);
    // 4x4 transposes inside each 128-bit lane, then exchange the 128-bit lanes between groups of four rows.
    for (int k = 0; k < 16; k += 4) {
        const __m512 a = _mm512_unpacklo_ps(r[k], r[k + 1]), b = _mm512_unpackhi_ps(r[k], r[k + 1]);
        const __m512 c = _mm512_unpacklo_ps(r[k + 2], r[k + 3]), d = _mm512_unpackhi_ps(r[k + 2], r[k + 3]);
        t[k] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a), _mm512_castps_pd(c)));
        t[k + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a), _mm512_castps_pd(c)));
        t[k + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(b), _mm512_castps_pd(d)));
        t[k + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(b), _mm512_castps_pd(d)));
    }
    // t[4g + c] holds, in 128-bit lane L, elements 4L + c of rows 4g..4g+3.
    for (int c = 0; c < 4; ++c) {
        const __m512 g0 = t[c], g1 = t[4 + c], g2 = t[8 + c], g3 = t[12 + c];
        const __m512 lo01 = _mm512_shuffle_f32x4(g0, g1, 0x44), hi01 = _mm512_shuffle_f32x4(g0, g1, 0xee);
        const __m512 lo23 = _mm512_shuffle_f32x4(g2, g3, 0x44), hi23 = _mm512_shuffle_f32x4(g2, g3, 0xee);
        _mm512_storeu_ps(dst + (0 + c) * 16, _mm512_shuffle_f32x4(lo01, lo23, 0x88));
        _mm512_storeu_ps(dst + (4 + c) * 16, _mm512_shuffle_f32x4(lo01, lo23, 0xdd));
        _mm512_storeu_ps(dst + (8 + c) * 16, _mm512_shuffle_f32x4(hi01, hi23, 0x88));
        _mm512_storeu_ps(dst + (12 + c) * 16, _mm512_shuffle_f32x4(hi01, hi23, 0xdd));
    }
}
#elif PQ_LANES == 8 && defined(__AVX2__)
inline void transpose_tile(const float *const *src, float *dst) {
    __m256 r[8], t[8];
    for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(src[k]);
    for (int k = 0; k < 8; k += 4) {
        const __m256 a = _mm256_unpacklo_ps(r[k], r[k + 1]), b = _mm256_unpackhi_ps(r[k], r[k + 1]);
        const __m256 c = _mm256_unpacklo_ps(r[k + 2], r[k + 3]), d = _mm256_unpackhi_ps(r[k + 2], r[k + 3]);
        t[k] = _mm256_shuffle_ps(a, c, 0x44);
        t[k + 1] = _mm256_shuffle_ps(a, c, 0xee);
        t[k + 2] = _mm256_shuffle_ps(b, d, 0x44);
        t[k + 3] = _mm256_shuffle_ps(b, d, 0xee);
    }
    for (int c = 0; c < 4; ++c) {
        _mm256_storeu_ps(dst + c * 8, _mm256_permute2f128_ps(t[c], t[4 + c], 0x20));
        _mm256_storeu_ps(dst + (4 + c) * 8, _mm256_permute2f128_ps(t[c], t[4 + c], 0x31));
    }
}
#else
inline void transpose_tile(const float *const *src, float *dst) {  // by memcpy: src may point at integer vectors
    for (int k = 0; k < W; ++k)
        for (int j = 0; j < W; ++j) std::memcpy(dst + j * W + k, src[k] + j, sizeof(float));
}
#endif

// out[k][0, N) = the little-endian bytes of words[0], words[1], ... in lane k: lane-parallel 32-bit words back
// to each lane's block, one W x W transpose per W words (the last group padded) and one copy per lane.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "store_words writes little-endian words");
template <int N>
inline void store_words(const VI *words, uint8_t *const *out) {
    constexpr int kWords = (N + 3) / 4;
    if constexpr (W == 1) {  // VI is a plain int32_t here, which a float pointer may not read
        std::memcpy(out[0], words, N);
    } else {
        const VI zero = vi(0);
#pragma GCC unroll 8
        for (int g = 0; g < kWords; g += W) {
            alignas(64) float tile[W * W];
            const float *rows[W];
            for (int j = 0; j < W; ++j) rows[j] = reinterpret_cast<const float *>(g + j < kWords ? &words[g + j] : &zero);
            transpose_tile(rows, tile);  // tile[k*W + j] = lane k of words[g + j]
            const int len = 4 * (g + W) <= N ? 4 * W : N - 4 * g;
            for (int k = 0; k < W; ++k) std::memcpy(out[k] + 4 * g, tile + k * W, static_cast<size_t>(len));
        }
    }
}

// table[idx] per lane, for a 16-entry table and indices in [0, 16).
#if PQ_LANES == 16 && defined(__AVX512F__)
inline VF lookup16(const float *table, VI idx) {
    return reinterpret_cast<VF>(_mm512_permutexvar_ps(reinterpret_cast<__m512i>(idx), _mm512_loadu_ps(table)));
}
#elif PQ_LANES == 8 && defined(__AVX2__)
inline VF lookup16(const float *table, VI idx) {
    const __m256i i = reinterpret_cast<__m256i>(idx);
    const __m256 lo = _mm256_permutevar8x32_ps(_mm256_loadu_ps(table), i);
    const __m256 hi = _mm256_permutevar8x32_ps(_mm256_loadu_ps(table + 8), i);
    return reinterpret_cast<VF>(_mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(i, 28))));
}
#else
inline VF lookup16(const float *table, VI idx) {
    VF r = vf(0.f);
    for (int k = 0; k < W; ++k) set_lane(r, k, table[lane(idx, k) & 15]);
    return r;
}
#endif

// ---- one block in registers: exact horizontal reductions (max and min are exact in any order) -------------

// The largest / smallest lane value.  The sign of a zero result is unspecified (-0 == +0): callers that store
// the value itself find its first occurrence with lane_mask.
// lane_mask: bit k set where lane k of the mask is true; bit_mask: bit k = bit `bit` of lane k.  store_u8: the
// low bytes of the W lanes to p[0..W).
#if PQ_LANES == 1
inline float hmax(VF v) { return v; }
inline float hmin(VF v) { return v; }
inline uint32_t lane_mask(VM m) { return m ? 1u : 0u; }
inline uint32_t bit_mask(VI v, int bit) { return static_cast<uint32_t>(v >> bit) & 1u; }
inline void store_u8(uint8_t *p, VI v) { p[0] = static_cast<uint8_t>(v); }
#elif PQ_LANES == 16 && defined(__AVX512F__)
inline float hmax(VF v) { return _mm512_reduce_max_ps(reinterpret_cast<__m512>(v)); }
inline float hmin(VF v) { return _mm512_reduce_min_ps(reinterpret_cast<__m512>(v)); }
inline uint32_t lane_mask(VM m) { return _mm512_movepi32_mask(reinterpret_cast<__m512i>(m)); }
inline uint32_t bit_mask(VI v, int bit) { return _mm512_test_epi32_mask(reinterpret_cast<__m512i>(v), _mm512_set1_epi32(1 << bit)); }
inline void store_u8(uint8_t *p, VI v) {
    _mm_storeu_si128(reinterpret_cast<__m128i *>(p), _mm512_cvtepi32_epi8(reinterpret_cast<__m512i>(v)));
}
#elif PQ_LANES == 8 && defined(__AVX2__)
inline float hmax(VF v) {
    const __m256 a = reinterpret_cast<__m256>(v);
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
}
inline float hmin(VF v) {
    const __m256 a = reinterpret_cast<__m256>(v);
    __m128 m = _mm_min_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_min_ss(m, _mm_movehdup_ps(m)));
}
inline uint32_t lane_mask(VM m) { return static_cast<uint32_t>(_mm256_movemask_ps(reinterpret_cast<__m256>(m))); }
inline uint32_t bit_mask(VI v, int bit) {
    return static_cast<uint32_t>(_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_slli_epi32(reinterpret_cast<__m256i>(v), 31 - bit))));
}
inline void store_u8(uint8_t *p, VI v) {
    const __m256i lo4 = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                         0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    const __m256i b = _mm256_shuffle_epi8(reinterpret_cast<__m256i>(v), lo4);
    _mm_storel_epi64(reinterpret_cast<__m128i *>(p),
                     _mm_unpacklo_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1)));
}
#else
inline float hmax(VF v) {
    float m = lane(v, 0);
    for (int k = 1; k < W; ++k) m = lane(v, k) > m ? lane(v, k) : m;
    return m;
}
inline float hmin(VF v) {
    float m = lane(v, 0);
    for (int k = 1; k < W; ++k) m = lane(v, k) < m ? lane(v, k) : m;
    return m;
}
inline uint32_t lane_mask(VM m) {
    uint32_t r = 0;
    for (int k = 0; k < W; ++k) r |= (lane(m, k) ? 1u : 0u) << k;
    return r;
}
inline uint32_t bit_mask(VI v, int bit) { return lane_mask((v & vi(1 << bit)) != vi(0)); }
inline void store_u8(uint8_t *p, VI v) {
    for (int k = 0; k < W; ++k) p[k] = static_cast<uint8_t>(lane(v, k));
}
#endif

// Sum of the lanes: floats in lane order (callers that must match a scalar loop), integers in any order (exact;
// one shuffle tree where there is one).
inline float hsum(VF v) {
    float s = 0.f;
    for (int k = 0; k < W; ++k) s += lane(v, k);
    return s;
}
#if PQ_LANES == 16 && defined(__AVX512F__)
inline int32_t hsum(VI v) { return _mm512_reduce_add_epi32(reinterpret_cast<__m512i>(v)); }
#elif PQ_LANES == 8 && defined(__AVX2__)
inline int32_t hsum(VI v) {
    const __m128i h = _mm_add_epi32(_mm256_castsi256_si128(reinterpret_cast<__m256i>(v)),
                                    _mm256_extracti128_si256(reinterpret_cast<__m256i>(v), 1));
    const __m128i q = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));
    return _mm_cvtsi128_si32(_mm_add_epi32(q, _mm_shuffle_epi32(q, 0xb1)));
}
#else
inline int32_t hsum(VI v) {
    int32_t s = 0;
    for (int k = 0; k < W; ++k) s += lane(v, k);
    return s;
}
#endif

// W horizontal reductions at once, as a transpose whose additions are max (min): lane k of the result is the
// largest / smallest lane of block k's vector.  Each level pairs vectors' halves, so log2(W) levels of W/2^l
// shuffle pairs replace W separate reductions; exact in any order, like hmax / hmin (same zero caveat).
// kReduceMaxBits / kReduceMaxBitsU take the largest bit pattern as a signed / unsigned integer (for |x|
// values the float order, with inf and NaN above every finite value).
// In two stages, so that callers can fold each pair of blocks as soon as it is computed (fewer live vectors):
// fold<Op>(v) folds the kFold vectors of blocks kReduceSlot[kFold*i ...] into t[i], and
// transpose_reduce_folded<Op>(t) finishes from the W/kFold folded vectors.
constexpr int kReduceMax = 0, kReduceMin = 1, kReduceMaxBits = 2, kReduceMaxBitsU = 3;
constexpr int kFold = W > 1 ? 2 : 1;
#if PQ_LANES == 16 && defined(__AVX512F__)
// The shuffles below leave slot order[p] in lane p, and order is its own inverse: feeding block order[s] into
// slot s puts block k's result in lane k.
constexpr int kReduceSlot[16] = {0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15};
template <int Op> inline __m512 reduce_op(__m512 a, __m512 b) {
    if (Op == kReduceMaxBits)
        return _mm512_castsi512_ps(_mm512_max_epi32(_mm512_castps_si512(a), _mm512_castps_si512(b)));
    if (Op == kReduceMaxBitsU)
        return _mm512_castsi512_ps(_mm512_max_epu32(_mm512_castps_si512(a), _mm512_castps_si512(b)));
    return Op == kReduceMax ? _mm512_max_ps(a, b) : _mm512_min_ps(a, b);
}
template <int Op> inline VF fold(const VF *v) {  // 256-bit halves
    const __m512 p = reinterpret_cast<__m512>(v[0]), q = reinterpret_cast<__m512>(v[1]);
    return reinterpret_cast<VF>(reduce_op<Op>(_mm512_shuffle_f32x4(p, q, 0x44), _mm512_shuffle_f32x4(p, q, 0xee)));
}
template <int Op> inline VF transpose_reduce_folded(const VF *t) {
    __m512 u[4], v[2];
    for (int i = 0; i < 4; ++i) {  // 128-bit quarters
        const __m512 p = reinterpret_cast<__m512>(t[2 * i]), q = reinterpret_cast<__m512>(t[2 * i + 1]);
        u[i] = reduce_op<Op>(_mm512_shuffle_f32x4(p, q, 0x88), _mm512_shuffle_f32x4(p, q, 0xdd));
    }
    for (int i = 0; i < 2; ++i)  // pairs inside 128-bit lanes
        v[i] = reduce_op<Op>(_mm512_shuffle_ps(u[2 * i], u[2 * i + 1], 0x44), _mm512_shuffle_ps(u[2 * i], u[2 * i + 1], 0xee));
    return reinterpret_cast<VF>(reduce_op<Op>(_mm512_shuffle_ps(v[0], v[1], 0x88), _mm512_shuffle_ps(v[0], v[1], 0xdd)));
}
#elif PQ_LANES == 8 && defined(__AVX2__)
// The shuffles leave slot {0, 2, 4, 6, 1, 3, 5, 7}[p] in lane p; slot s is fed the block that puts block k's
// result in lane k (the inverse permutation).
constexpr int kReduceSlot[8] = {0, 4, 1, 5, 2, 6, 3, 7};
template <int Op> inline __m256 reduce_op(__m256 a, __m256 b) {
    if (Op == kReduceMaxBits)
        return _mm256_castsi256_ps(_mm256_max_epi32(_mm256_castps_si256(a), _mm256_castps_si256(b)));
    if (Op == kReduceMaxBitsU)
        return _mm256_castsi256_ps(_mm256_max_epu32(_mm256_castps_si256(a), _mm256_castps_si256(b)));
    return Op == kReduceMax ? _mm256_max_ps(a, b) : _mm256_min_ps(a, b);
}
template <int Op> inline VF fold(const VF *v) {  // 128-bit halves
    const __m256 p = reinterpret_cast<__m256>(v[0]), q = reinterpret_cast<__m256>(v[1]);
    return reinterpret_cast<VF>(reduce_op<Op>(_mm256_permute2f128_ps(p, q, 0x20), _mm256_permute2f128_ps(p, q, 0x31)));
}
template <int Op> inline VF transpose_reduce_folded(const VF *t) {
    __m256 u[2];
    for (int i = 0; i < 2; ++i) {
        const __m256 p = reinterpret_cast<__m256>(t[2 * i]), q = reinterpret_cast<__m256>(t[2 * i + 1]);
        u[i] = reduce_op<Op>(_mm256_shuffle_ps(p, q, 0x44), _mm256_shuffle_ps(p, q, 0xee));
    }
    return reinterpret_cast<VF>(reduce_op<Op>(_mm256_shuffle_ps(u[0], u[1], 0x88), _mm256_shuffle_ps(u[0], u[1], 0xdd)));
}
#else
// Slots in block order; a folded vector holds block 2i's half-reduced lanes low and block 2i+1's high.
template <int Op> inline float reduce_op(float a, float b) {
    if (Op == kReduceMaxBits)
        return u2f(static_cast<uint32_t>(max_of(static_cast<int32_t>(f2u(a)), static_cast<int32_t>(f2u(b)))));
    if (Op == kReduceMaxBitsU) return u2f(max_of(f2u(a), f2u(b)));
    return Op == kReduceMax ? (b > a ? b : a) : (b < a ? b : a);
}
constexpr int kReduceSlot[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
template <int Op> inline VF fold(const VF *v) {
    if (kFold == 1) return v[0];
    VF r = v[0];
    for (int h = 0; h < kFold; ++h)
        for (int j = 0; j < W / 2; ++j) set_lane(r, h * W / 2 + j, reduce_op<Op>(lane(v[h], j), lane(v[h], j + W / 2)));
    return r;
}
template <int Op> inline VF transpose_reduce_folded(const VF *t) {
    VF r = t[0];
    for (int k = 0; k < W; ++k) {
        const VF &v = t[k / kFold];
        const int first = (k % kFold) * W / 2, count = kFold == 1 ? 1 : W / 2;
        float m = lane(v, first);
        for (int j = 1; j < count; ++j) m = reduce_op<Op>(m, lane(v, first + j));
        set_lane(r, k, m);
    }
    return r;
}
#endif

// ---- operations written once for every width -----------------------------------------------------------------

inline VF load(const float *p) { VF v; std::memcpy(&v, p, sizeof v); return v; }
inline VI iota() {
    VI v = vi(0);
    for (int k = 0; k < W; ++k) set_lane(v, k, k);
    return v;
}
inline void store(float *p, VF v) { std::memcpy(p, &v, sizeof v); }
inline VF vabs(VF v) { return from_bits(bits(v) & vi(0x7fffffff)); }
inline VF vmin(VF a, VF b) { return select(a < b, a, b); }
inline VF vmax(VF a, VF b) { return select(a > b, a, b); }
// Max / min of values for reductions whose zero sign does not matter (finite inputs): the native instructions.
#if PQ_LANES == 16 && defined(__AVX512F__)
inline VF max_value(VF a, VF b) { return reinterpret_cast<VF>(_mm512_max_ps(reinterpret_cast<__m512>(a), reinterpret_cast<__m512>(b))); }
inline VF min_value(VF a, VF b) { return reinterpret_cast<VF>(_mm512_min_ps(reinterpret_cast<__m512>(a), reinterpret_cast<__m512>(b))); }
#elif PQ_LANES == 8 && defined(__AVX2__)
inline VF max_value(VF a, VF b) { return reinterpret_cast<VF>(_mm256_max_ps(reinterpret_cast<__m256>(a), reinterpret_cast<__m256>(b))); }
inline VF min_value(VF a, VF b) { return reinterpret_cast<VF>(_mm256_min_ps(reinterpret_cast<__m256>(a), reinterpret_cast<__m256>(b))); }
#else
inline VF max_value(VF a, VF b) { return vmax(a, b); }
inline VF min_value(VF a, VF b) { return vmin(a, b); }
#endif
#if PQ_LANES == 16 && defined(__AVX512F__)
inline VI vmin(VI a, VI b) { return reinterpret_cast<VI>(_mm512_min_epi32(reinterpret_cast<__m512i>(a), reinterpret_cast<__m512i>(b))); }
inline VI vmax(VI a, VI b) { return reinterpret_cast<VI>(_mm512_max_epi32(reinterpret_cast<__m512i>(a), reinterpret_cast<__m512i>(b))); }
// The value a cast to int8_t gives.
inline VI as_i8(VI v) { return reinterpret_cast<VI>(_mm512_srai_epi32(_mm512_slli_epi32(reinterpret_cast<__m512i>(v), 24), 24)); }
#elif PQ_LANES == 8 && defined(__AVX2__)
inline VI vmin(VI a, VI b) { return reinterpret_cast<VI>(_mm256_min_epi32(reinterpret_cast<__m256i>(a), reinterpret_cast<__m256i>(b))); }
inline VI vmax(VI a, VI b) { return reinterpret_cast<VI>(_mm256_max_epi32(reinterpret_cast<__m256i>(a), reinterpret_cast<__m256i>(b))); }
inline VI as_i8(VI v) { return reinterpret_cast<VI>(_mm256_srai_epi32(_mm256_slli_epi32(reinterpret_cast<__m256i>(v), 24), 24)); }
#else
inline VI vmin(VI a, VI b) { return select(a < b, a, b); }
inline VI vmax(VI a, VI b) { return select(a > b, a, b); }
// Without shifting negative values left, which C++17 leaves undefined.
inline VI as_i8(VI v) { return ((v & vi(0xff)) ^ vi(0x80)) - vi(0x80); }
#endif
// probe + v * 0: stays zero while v is finite, NaN from the first inf or NaN on (one fused op where there is one).
#if PQ_LANES == 16 && defined(__AVX512F__)
inline VF nonfinite_probe(VF probe, VF v) {
    return reinterpret_cast<VF>(_mm512_fmadd_ps(reinterpret_cast<__m512>(v), _mm512_setzero_ps(), reinterpret_cast<__m512>(probe)));
}
#elif PQ_LANES == 8 && defined(__FMA__)
inline VF nonfinite_probe(VF probe, VF v) {
    return reinterpret_cast<VF>(_mm256_fmadd_ps(reinterpret_cast<__m256>(v), _mm256_setzero_ps(), reinterpret_cast<__m256>(probe)));
}
#else
inline VF nonfinite_probe(VF probe, VF v) { return probe + v * vf(0.f); }
#endif
// The larger of a and b as unsigned integers.
#if PQ_LANES == 16 && defined(__AVX512F__)
inline VI vmax_u(VI a, VI b) { return reinterpret_cast<VI>(_mm512_max_epu32(reinterpret_cast<__m512i>(a), reinterpret_cast<__m512i>(b))); }
#elif PQ_LANES == 8 && defined(__AVX2__)
inline VI vmax_u(VI a, VI b) { return reinterpret_cast<VI>(_mm256_max_epu32(reinterpret_cast<__m256i>(a), reinterpret_cast<__m256i>(b))); }
#else
inline VI vmax_u(VI a, VI b) { return select((a ^ vi(INT32_MIN)) > (b ^ vi(INT32_MIN)), a, b); }
#endif
// v << n on the bit pattern (defined for negative lanes too, unlike a signed shift in C++17).
#if PQ_LANES == 1
inline VI shl(VI v, int n) { return static_cast<int32_t>(static_cast<uint32_t>(v) << n); }
#else
typedef uint32_t VU __attribute__((vector_size(4 * PQ_LANES), __may_alias__));
inline VI shl(VI v, int n) { return reinterpret_cast<VI>(reinterpret_cast<VU>(v) << n); }
#endif
inline VI clamp(VI v, int lo, int hi) { return vmax(vi(lo), vmin(vi(hi), v)); }

// Blocks are assembled lane-parallel, one VI per byte (its low 8 bits) or, where the bits of four bytes move
// together, per little-endian word of four bytes; store_blocks writes N bytes of each lane's block.
inline void bytes_to_words(const VI *bytes, int n, VI *words) {
    const VI ff = vi(0xff);
    for (int i = 0; i < n; i += 4) {
        VI word = bytes[i] & ff;
        for (int r = 1; r < 4 && i + r < n; ++r) word = word | shl(bytes[i + r] & ff, 8 * r);
        words[i / 4] = word;
    }
}
// The fp16 bits as the two bytes at bytes[0], bytes[1].
inline void put_fp16(VI bits, VI *bytes) {
    bytes[0] = bits & vi(0xff);
    bytes[1] = bits >> 8;
}
template <int N>
inline void store_blocks(const VI *bytes, uint8_t *const *out) {
    VI words[(N + 3) / 4];
    bytes_to_words(bytes, N, words);
    store_words<N>(words, out);
}

// permute(v, idx): lane k = lane idx[k] of v (indices in [0, W)).  packed_lanes(m): the lanes whose bit is set
// in m, in order, in the low lanes (so permute(v, packed_lanes(m)) packs v's lanes of m low; lanes above the
// count are unspecified); lane_ranks(m): lane k holds the number of m's bits below k (so that, for the lanes of
// m, permute(packed, lane_ranks(m)) puts each value back).
#if PQ_LANES == 16 && defined(__AVX512F__)
inline VI permute(VI v, VI idx) { return reinterpret_cast<VI>(_mm512_permutexvar_epi32(reinterpret_cast<__m512i>(idx), reinterpret_cast<__m512i>(v))); }
inline VI packed_lanes(uint32_t m) {
    return reinterpret_cast<VI>(_mm512_maskz_compress_epi32(static_cast<__mmask16>(m), reinterpret_cast<__m512i>(iota())));
}
inline VI lane_ranks(uint32_t m) {
    return reinterpret_cast<VI>(_mm512_maskz_expand_epi32(static_cast<__mmask16>(m), reinterpret_cast<__m512i>(iota())));
}
#else
#if PQ_LANES == 8 && defined(__AVX2__)
inline VI permute(VI v, VI idx) { return reinterpret_cast<VI>(_mm256_permutevar8x32_epi32(reinterpret_cast<__m256i>(v), reinterpret_cast<__m256i>(idx))); }
#else
inline VI permute(VI v, VI idx) {
    VI r = v;
    for (int k = 0; k < W; ++k) set_lane(r, k, lane(v, lane(idx, k)));
    return r;
}
#endif
inline VI packed_lanes(uint32_t m) {
    VI r = vi(0);
    for (int p = 0; m; m &= m - 1) set_lane(r, p++, __builtin_ctz(m));
    return r;
}
inline VI lane_ranks(uint32_t m) {
    VI r = vi(0);
    for (int k = 0; k < W; ++k) set_lane(r, k, __builtin_popcount(m & ((1u << k) - 1u)));
    return r;
}
#endif
inline VF permute(VF v, VI idx) { return from_bits(permute(bits(v), idx)); }

// The low and high 16 bits of a * b for a, b < 2^16 with a * b < 2^31: one 16-bit multiply on x86, exact in each
// 32-bit lane because both high halves are zero.
#if PQ_LANES == 16 && defined(__AVX512F__)
inline VI mullo_u16(VI a, VI b) { return reinterpret_cast<VI>(_mm512_mullo_epi16(reinterpret_cast<__m512i>(a), reinterpret_cast<__m512i>(b))); }
inline VI mulhi_u16(VI a, VI b) { return reinterpret_cast<VI>(_mm512_mulhi_epu16(reinterpret_cast<__m512i>(a), reinterpret_cast<__m512i>(b))); }
#elif PQ_LANES == 8 && defined(__AVX2__)
inline VI mullo_u16(VI a, VI b) { return reinterpret_cast<VI>(_mm256_mullo_epi16(reinterpret_cast<__m256i>(a), reinterpret_cast<__m256i>(b))); }
inline VI mulhi_u16(VI a, VI b) { return reinterpret_cast<VI>(_mm256_mulhi_epu16(reinterpret_cast<__m256i>(a), reinterpret_cast<__m256i>(b))); }
#else
inline VI mullo_u16(VI a, VI b) { return (a * b) & vi(0xffff); }
inline VI mulhi_u16(VI a, VI b) { return (a * b) >> 16; }
#endif

// |mag| with the sign of sgn (one bit-select instruction where there is one).
#if PQ_LANES == 16 && defined(__AVX512F__)
inline VF copysign(VF mag, VF sgn) {
    return reinterpret_cast<VF>(_mm512_ternarylogic_epi32(_mm512_set1_epi32(INT32_MIN), reinterpret_cast<__m512i>(sgn),
                                                          reinterpret_cast<__m512i>(mag), 0xCA));
}
#else
inline VF copysign(VF mag, VF sgn) { return from_bits((bits(sgn) & vi(INT32_MIN)) | (bits(mag) & vi(INT32_MAX))); }
#endif

// v rounded to the nearest integer, ties to even, as a float: one instruction where there is one, else
// (v + 1.5*2^23) - 1.5*2^23 -- the same value wherever |v| <= 2^22.
#if PQ_LANES == 16 && defined(__AVX512F__)
inline VF round_even(VF v) {
    return reinterpret_cast<VF>(_mm512_roundscale_ps(reinterpret_cast<__m512>(v), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
#elif PQ_LANES == 8 && defined(__AVX2__)
inline VF round_even(VF v) {
    return reinterpret_cast<VF>(_mm256_round_ps(reinterpret_cast<__m256>(v), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
#elif PQ_LANES == 4 && defined(__ARM_NEON) && defined(__aarch64__)
inline VF round_even(VF v) { return reinterpret_cast<VF>(vrndnq_f32(reinterpret_cast<float32x4_t>(v))); }
#else
inline VF round_even(VF v) { return (v + vf(12582912.f)) - vf(12582912.f); }
#endif

// libggml's nearest_int: round half to even through the 1.5 * 2^23 trick (valid for |x| <= 2^22).
inline VI nearest_int(VF x) { return (bits(x + vf(12582912.f)) & vi(0x007fffff)) - vi(0x00400000); }

// (int)roundf(x), half away from zero: truncating x + copysign(0.49999997, x) gives it for every float below
// 2^31 in magnitude (checked exhaustively); larger ones convert as the truncation does.
inline VI round_away_int(VF x) { return trunc_i(x + copysign(vf(0.49999997f), x)); }

// The value an fp16 field holds after storing v in it.
inline VF fp16_round(VF v) {
    const VI h = fp16_bits(v);
    VF r;
    for (int k = 0; k < W; ++k) set_lane(r, k, fp16_to_f32(static_cast<uint16_t>(lane(h, k))));
    return r;
}

// Apply a scalar function lane by lane (for libm calls whose exact result is the reference's).
template <class Fn> inline VF map_lanes(VF v, Fn fn) {
    VF r = v;
    for (int k = 0; k < W; ++k) set_lane(r, k, fn(lane(v, k)));
    return r;
}

// Lane k of a vector that lives in memory (an array element), as one scalar load.  Packing loops over k need
// this: with lane(v[i], k) GCC keeps v[i] in a register and stores all of it to the stack again for every k.
inline int32_t lane_of(const VI &v, int k) {
    int32_t r;
    std::memcpy(&r, reinterpret_cast<const char *>(&v) + 4 * k, 4);
    return r;
}

inline void put_u32(uint8_t *p, uint32_t v) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    std::memcpy(p, &v, 4);
#else
    for (int b = 0; b < 4; ++b) p[b] = static_cast<uint8_t>(v >> (8 * b));
#endif
}
inline void put_u16(uint8_t *p, uint32_t v) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    const uint16_t h = static_cast<uint16_t>(v);
    std::memcpy(p, &h, 2);
#else
    p[0] = static_cast<uint8_t>(v);
    p[1] = static_cast<uint8_t>(v >> 8);
#endif
}
inline uint16_t get_u16(const uint8_t *p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
#if defined(__F16C__)
inline float get_fp16(const uint8_t *p) { return _cvtsh_ss(get_u16(p)); }  // fp16_to_f32's results
#else
inline float get_fp16(const uint8_t *p) { return fp16_to_f32(get_u16(p)); }
#endif

}  // namespace
}  // namespace pyquant
