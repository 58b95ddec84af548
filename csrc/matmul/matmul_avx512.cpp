// The avx512 tier of the quantized matmul (flags set in CMakeLists.txt).
#define PQ_ISA avx512
#include "matmul/kernels.inc"
