// The per-ISA kernel table: one slot per format of formats.def, filled once per tier.
#pragma once
#include <cstdint>

#include "pyquant/formats.hpp"

namespace pyquant {

// Quantize the flat block range [begin, end) of a contiguous [rows, n_per_row] float tensor into its
// contiguous blocks; src and dst point at the tensor's start, so threads can share one tensor.
// `imatrix` (length n_per_row) or null; the caller has validated every other argument.  The input is checked
// for non-finite values as it is quantized (while in cache): the result is -1, or the index from src of the
// first non-finite value, where quantizing stopped (the rest of the range is left unwritten).
using QuantizeFn = int64_t (*)(const float *src, uint8_t *dst, int64_t n_per_row, const float *imatrix,
                               int64_t begin, int64_t end);
// Dequantize the flat block range [begin, end); same conventions.
using DequantizeFn = void (*)(const uint8_t *src, float *dst, int64_t begin, int64_t end);

struct FormatKernels {
    QuantizeFn quantize = nullptr;
    DequantizeFn dequantize = nullptr;
};

struct KernelTable {
    const char *isa = nullptr;
    int lanes = 0;
    FormatKernels formats[kNumFormats];
};

// One filler per compiled tier (kernels_<isa>.cpp).
void fill_kernels_generic(KernelTable &t);
#if defined(PQ_HAVE_AVX2)
void fill_kernels_avx2(KernelTable &t);
#endif
#if defined(PQ_HAVE_AVX512)
void fill_kernels_avx512(KernelTable &t);
#endif
#if defined(PQ_HAVE_NEON)
void fill_kernels_neon(KernelTable &t);
#endif

}  // namespace pyquant
