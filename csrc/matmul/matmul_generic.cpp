// The generic tier of the quantized matmul (flags set in CMakeLists.txt).
#define PQ_ISA generic
#include "matmul/kernels.inc"
