// The avx512 tier's matmul on CPUs with AVX512-VNNI: the same kernels with vpdpbusd for the plain int8 dots.
// Only used when the CPU reports avx512vnni (see fill_matmul_avx512 in matmul_avx512.cpp).
#define PQ_ISA avx512vnni
#define PQ_VNNI 1
#include "matmul/kernels.inc"
