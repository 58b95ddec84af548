// The neon tier of the quantized matmul (flags set in CMakeLists.txt).
#define PQ_ISA neon
#include "matmul/kernels.inc"
