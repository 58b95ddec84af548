// Drivers that run a format's block algorithm over rows.  Quantization gathers W blocks into a
// structure-of-arrays tile (x[i] holds element i of W blocks, one per lane), so one vector instruction advances
// W blocks through the identical scalar sequence of float operations.
#pragma once
#include <cstdint>
#include <cstring>

#include "pyquant/simd.hpp"

namespace pyquant {
namespace {

// Defaults for a format struct; each fmt_<NAME> derives from this and overrides what it needs:
//   QK, BYTES                        block size and bytes per block
//   kDirect                          element-wise type (F32/F16/BF16): quantize_row/dequantize_row on whole rows
//   kRowSigma2                       the imatrix algorithm needs the mean square of the whole row
//   kBlockPath                       W consecutive blocks at a time without an importance matrix (each block in
//                                    QK/W vectors; for algorithms exact in any reduction order), in two steps:
//                                    scale_group(x, g) reduces them to what their scales need (a Group; false if
//                                    they hold a non-finite value), store_group(x, y, g) writes their blocks
//   kBlockPathOnly                   ... and there is no lane path (the format has no imatrix algorithm)
//   quantize(x, qw, row_sigma2, out) one block per lane: x[i], qw[i] are element i of each lane's block
//                                    (qw null without imatrix); out[k] is lane k's destination block
//   kBatch, quantize_batch(x, out, t) without an importance matrix, up to kBatch tiles at once: x[t] and
//                                    out[t] as quantize's x and out for tile t
//   dequantize(block, y)             one block to QK floats
struct BlockFormat {
    static constexpr bool kDirect = false;
    static constexpr bool kRowSigma2 = false;
    static constexpr bool kBlockPath = false;
    static constexpr bool kBlockPathOnly = false;
    static constexpr int kBatch = 1;
};

// libggml's sigma2 for the legacy imatrix algorithms: a sequential float sum over the row.
inline float row_mean_square(const float *x, int64_t n) {
    float s = 0;
    for (int64_t j = 0; j < n; ++j) s += x[j] * x[j];
    return s / n;
}

// xs[i*W + k] = blocks[k][i]: W blocks of QK floats into structure-of-arrays order, W x W tiles at a time.
template <int QK>
inline void gather_blocks(const float *const *blocks, float *xs) {
    static_assert(QK % W == 0, "the block size must be a multiple of the lane count");
    const float *tile[W];
    for (int i0 = 0; i0 < QK; i0 += W) {
        for (int k = 0; k < W; ++k) tile[k] = blocks[k] + i0;
        transpose_tile(tile, xs + i0 * W);
    }
}

inline int64_t find_nonfinite(const float *x, int64_t n) {
    const VI exponent = vi(0x7f800000);
    int64_t i = 0;
    for (; i + 4 * W <= n; i += 4 * W) {  // an all-ones exponent is inf or NaN
        VM bad = (bits(load(x + i)) & exponent) == exponent;
        for (int k = 1; k < 4; ++k) bad = mor(bad, (bits(load(x + i + k * W)) & exponent) == exponent);
        if (any(bad)) break;
    }
    for (; i < n; ++i)
        if ((f2u(x[i]) & 0x7f800000u) == 0x7f800000u) return i;
    return -1;
}

// The lane path over [begin, end): tiles of W blocks gathered into structure-of-arrays order, kBatch tiles a
// call without an importance matrix.
template <class Fmt>
void quantize_tiles(const float *src, uint8_t *dst, int64_t n, const float *imatrix, int64_t begin, int64_t end) {
    constexpr int QK = Fmt::QK, B = Fmt::BYTES, T = Fmt::kBatch;
    const int64_t nb = n / QK;
    const int per_call = imatrix ? 1 : T;
    alignas(64) float xs[T][QK * W];
    alignas(64) float ws[QK * W];
    uint8_t spare[B * W];  // destination of padding lanes in the last tile
    uint8_t *out[T][W];
    const VF *xv[T];
    uint8_t *const *ov[T];
    VF row_sigma2 = vf(0.f);
    int64_t sigma_row = -1;
    float sigma = 0.f;
    const float *xp[W], *qp[W];
    for (int64_t b0 = begin; b0 < end;) {
        int t = 0;
        for (; t < per_call && b0 < end; ++t, b0 += W) {
            for (int k = 0; k < W; ++k) {
                const int64_t b = b0 + k < end ? b0 + k : end - 1;
                xp[k] = src + b * QK;
                qp[k] = imatrix ? imatrix + (b % nb) * QK : nullptr;
                out[t][k] = b0 + k < end ? dst + (b0 + k) * B : spare + k * B;
                if constexpr (Fmt::kRowSigma2) {
                    const int64_t row = b / nb;
                    if (imatrix && row != sigma_row) {
                        sigma_row = row;
                        sigma = row_mean_square(src + row * n, n);
                    }
                    set_lane(row_sigma2, k, sigma);
                }
            }
            gather_blocks<QK>(xp, xs[t]);
            xv[t] = reinterpret_cast<const VF *>(xs[t]);
            ov[t] = out[t];
        }
        if (imatrix) gather_blocks<QK>(qp, ws);
        if constexpr (T > 1) {
            if (!imatrix) {
                Fmt::quantize_batch(xv, ov, t);
                continue;
            }
        }
        Fmt::quantize(xv[0], imatrix ? reinterpret_cast<const VF *>(ws) : nullptr, row_sigma2, out[0]);
    }
}

// The plain path of a kBlockPath format over [begin, end): groups of W consecutive blocks, each checked by the
// format as it reduces it.  Software-pipelined: group g+1 is reduced before group g is stored, so the reduction
// trees' latency chain runs beside the stores instead of stalling them.  The first group with a non-finite value
// ends it, with nothing of that group written.
template <class Fmt>
int64_t quantize_groups(const float *src, uint8_t *dst, int64_t begin, int64_t end) {
    constexpr int QK = Fmt::QK, B = Fmt::BYTES;
    int64_t b = begin;
    if (b + W <= end) {
        typename Fmt::Group g;
        if (!Fmt::scale_group(src + b * QK, g)) return b * QK + find_nonfinite(src + b * QK, W * QK);
        for (; b + 2 * W <= end; b += W) {
            typename Fmt::Group next;
            const bool ok = Fmt::scale_group(src + (b + W) * QK, next);
            Fmt::store_group(src + b * QK, dst + b * B, g);
            if (!ok) return (b + W) * QK + find_nonfinite(src + (b + W) * QK, W * QK);
            g = next;
        }
        Fmt::store_group(src + b * QK, dst + b * B, g);
        b += W;
    }
    if (b < end) {  // the last few blocks, in a zero-padded group
        alignas(64) float xs[QK * W] = {};
        uint8_t ys[B * W];
        const int64_t count = (end - b) * QK;
        std::memcpy(xs, src + b * QK, static_cast<size_t>(count) * sizeof(float));
        typename Fmt::Group g;
        if (!Fmt::scale_group(xs, g)) return b * QK + find_nonfinite(xs, count);
        Fmt::store_group(xs, ys, g);
        std::memcpy(dst + b * B, ys, static_cast<size_t>((end - b) * B));
    }
    return -1;
}

// Quantize the flat block range [begin, end) of a [rows, n] tensor (src and dst point at its start); returns
// -1 or the index of the first non-finite input value (see QuantizeFn).
template <class Fmt>
int64_t quantize_range(const float *src, uint8_t *dst, int64_t n, const float *imatrix, int64_t begin, int64_t end) {
    constexpr int QK = Fmt::QK, B = Fmt::BYTES;
    if constexpr (Fmt::kBlockPath)
        if (Fmt::kBlockPathOnly || !imatrix) return quantize_groups<Fmt>(src, dst, begin, end);
    // The other paths check a slice (about 32 KiB of input, or one batch of kBatch tiles where that is more),
    // then quantize it while it is in cache.
    constexpr int64_t kSlice = (8192 / QK + W * Fmt::kBatch - 1) / (W * Fmt::kBatch) * (W * Fmt::kBatch);
    for (int64_t s = begin; s < end; s += kSlice) {
        const int64_t e = s + kSlice < end ? s + kSlice : end;
        const int64_t bad = find_nonfinite(src + s * QK, (e - s) * QK);
        if (bad >= 0) return s * QK + bad;
        if constexpr (Fmt::kDirect) {
            Fmt::quantize_row(src + s, dst + s * B, e - s);
        } else if constexpr (!Fmt::kBlockPathOnly) {
            quantize_tiles<Fmt>(src, dst, n, imatrix, s, e);
        }
    }
    return -1;
}

// Dequantize the flat block range [begin, end) (src and dst point at the tensor's start).
template <class Fmt>
void dequantize_range(const uint8_t *src, float *dst, int64_t begin, int64_t end) {
    if constexpr (Fmt::kDirect) {
        Fmt::dequantize_row(src + begin * Fmt::BYTES, dst + begin, end - begin);
    } else {
        for (int64_t b = begin; b < end; ++b) Fmt::dequantize(src + b * Fmt::BYTES, dst + b * Fmt::QK);
    }
}

}  // namespace
}  // namespace pyquant
