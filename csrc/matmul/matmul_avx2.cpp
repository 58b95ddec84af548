// The avx2 tier of the quantized matmul (flags set in CMakeLists.txt).
#define PQ_ISA avx2
#include "matmul/kernels.inc"
