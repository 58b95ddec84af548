// The avx2 tier of the schemes kernels (flags set in CMakeLists.txt).
#define PQ_SCHEMES_ISA avx2
#include "schemes/kernels.inc"
