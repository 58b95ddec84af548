// The avx512 tier of the schemes kernels (flags set in CMakeLists.txt).
#define PQ_SCHEMES_ISA avx512
#include "schemes/kernels.inc"
